"""What makes the first `planner recommend` after an install fast gives the answers the plain computation gives:
one pass per format for the layout and the quality model's inputs, gguf_mix's remembered tensor facts, the layout and
quality-fit caches."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from planner.cost import quality as Q
from planner.cost.model import ModelCost
from planner.formats import FORMATS, GroupQuant, ShapeError, gguf_mix
from planner.models.profiles import load_registry

# a GGUF ladder and the GPU families a ranking plans (group-wise, per-channel, float, MLX, bitsandbytes)
FORMAT_IDS = ["Q5_K_M", "Q4_K_M", "IQ4_XS", "Q3_K_M", "IQ2_XXS", "Q4_K_L", "MXFP4_MOE", "awq-int4", "gptq-int8", "fp8",
              "nf4", "mlx-4bit"]


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def _plain_linear_and_head(assigned, mc, gguf: str) -> tuple[float, int, float, float]:  # type: ignore[no-untyped-def]
    """The quality model's inputs computed the plain way, tensor by tensor, from a format's assignments (a GGUF mix's
    bits: its equal-noise bits, -log4 of the mean 4^-bits, each tensor credited for its own type's leaner scales, less
    the file type `gguf`'s credit; '' for a GPU format)."""
    bits = elems = 0
    noise = 0.0
    groups: dict[int, int] = {}
    head_bits, head_elems = 16.0, 0
    for a in assigned:
        t = a.tensor
        if not t.is_matrix:
            continue
        if t.layer is None:
            if t.name != "token_embd.weight" or mc.spec.tie_word_embeddings:
                head_bits, head_elems = a.nbytes * 8 / t.n_elements, t.n_elements
            continue
        if a.nbytes * 8 >= 15 * t.n_elements:
            continue
        bits += a.nbytes * 8
        elems += t.n_elements
        credit = Q.scale_credit(a.encoding.name) if gguf else 0.0
        noise += t.n_elements * 4.0 ** (-a.nbytes * 8 / t.n_elements - credit)
        if isinstance(a.encoding, GroupQuant):
            g = a.encoding.group_size or 0
            groups[g] = groups.get(g, 0) + t.n_elements
    if not elems:
        return 16.0, 0, head_bits, 0.0
    mean_bits = -math.log(noise / elems, 4) - Q.scale_credit(gguf) if gguf else bits / elems
    return mean_bits, max(groups, key=groups.get) if groups else 0, head_bits, head_elems / elems


def test_the_layout_pass_gives_the_quality_inputs_and_bytes_of_a_plain_sum(registry, monkeypatch):
    monkeypatch.setenv("PLANNER_NO_CACHE", "1")
    fmts = [FORMATS[f] for f in FORMAT_IDS if f in FORMATS]
    assert len(fmts) == len(FORMAT_IDS)
    checked = 0
    for spec in registry:
        mc = ModelCost(spec)
        for fmt in fmts:
            try:
                lay = mc.layout(fmt)
            except ShapeError:
                with pytest.raises(ShapeError):
                    sum(a.nbytes for a in fmt.assignments(spec, mc.tensors))
                continue
            assigned = fmt.assignments(spec, mc.tensors)
            plain = _plain_linear_and_head(assigned, mc, Q._gguf_type(fmt) if fmt.family == "gguf" else "")
            assert Q._linear_and_head(fmt, mc) == pytest.approx(plain, rel=1e-12), (spec.id, fmt.id)
            assert lay.stored_bytes == sum(a.nbytes for a in assigned), (spec.id, fmt.id)
            per_layer = [0] * spec.num_layers
            for a in assigned:
                if a.tensor.layer is not None:
                    per_layer[a.tensor.layer] += a.nbytes
            assert lay.layer_bytes == per_layer, (spec.id, fmt.id)
            checked += 1
    assert checked > 400


def test_layouts_read_back_from_the_cache_equal_computed_ones(registry, monkeypatch, tmp_path):
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path))
    spec = registry.get("qwen3-30b-a3b")  # MoE: routed experts make the active bytes differ from the resident
    fresh = ModelCost(spec)
    computed = {f: fresh.layout(FORMATS[f]) for f in ("Q4_K_M", "awq-int4", "IQ2_XXS")}
    computed["Q4_K_M-f16"] = fresh.layout(FORMATS["Q4_K_M"], dequant_to="fp16")
    fresh.flush()
    assert len(list(tmp_path.glob("layouts-qwen3-30b-a3b-*.json"))) == 1
    again = ModelCost(spec)
    for key, lay in computed.items():
        fid, _, dq = key.partition("-f16")
        got = again.layout(FORMATS[fid], dequant_to="fp16" if key.endswith("-f16") else None)
        assert dataclasses.asdict(got) == dataclasses.asdict(lay), key
    assert not again._dirty  # all four were read, none recomputed


def test_gguf_mix_sees_a_tensor_list_changed_in_place(registry):
    """The remembered tensor facts belong to the list's elements, not to the list object."""
    spec = registry.get("llama-3.1-8b")
    tensors = list(ModelCost(spec).tensors)
    before = {a.tensor.name: a.encoding.name for a in gguf_mix("Q4_K_M", spec, tensors)}
    assert before["output.weight"] == "Q6_K"
    tensors[:] = [t for t in tensors if t.name != "output.weight"]  # now tied: token_embd is read as the head
    after = {a.tensor.name: a.encoding.name for a in gguf_mix("Q4_K_M", spec, tensors)}
    assert "output.weight" not in after and after["token_embd.weight"] == "Q6_K" != before["token_embd.weight"]
    # same length, one element replaced: a row length no k-quant block divides takes llama.cpp's fallback type
    i = next(k for k, t in enumerate(tensors) if t.name == "blk.0.ffn_down.weight")
    tensors[i] = dataclasses.replace(tensors[i], shape=(tensors[i].shape[0], 14336 + 32))
    odd = {a.tensor.name: a.encoding.name for a in gguf_mix("Q4_K_M", spec, tensors)}
    assert after["blk.0.ffn_down.weight"] == "Q6_K" and odd["blk.0.ffn_down.weight"] == "Q8_0"


def test_quality_fits_round_trip_through_their_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path))
    fits = Q.apply_spread(Q.fit_all(Q.fit_rows()), Q.stored_spread())  # what _fits keeps: with the held-out spread
    assert {k: Q.fit_from_json(json.loads(json.dumps(Q.fit_to_json(v)))) for k, v in fits.items()} == fits
    Q._fits.cache_clear()
    try:
        assert Q._fits() == fits  # fitted, and written
        (cached,) = tmp_path.glob("quality-fits-*.json")
        Q._fits.cache_clear()
        assert Q._fits() == fits  # read back
        cached.write_text("{not json")
        Q._fits.cache_clear()
        assert Q._fits() == fits  # a broken file is refitted and replaced
        assert json.loads(cached.read_text())
    finally:
        Q._fits.cache_clear()


def test_the_shipped_validated_catalog_and_profiles_are_current():
    """Regenerating planner/data/validated/ gives the same bytes (else: python benchmarks/build_validated.py)."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "build_validated.py"
    spec = importlib.util.spec_from_file_location("build_validated", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    for path, text in mod.expected().items():
        assert path.read_text(encoding="utf-8") == text, f"{path.name} is stale: run python benchmarks/build_validated.py"


def test_a_first_run_reads_the_shipped_copy_and_a_changed_file_is_validated_again(monkeypatch, tmp_path):
    import shutil

    from planner.cache import fingerprint
    from planner.hardware.catalog import load_catalog, parse_catalog_files
    from planner.paths import data_dir
    from planner.yamlio import load_yaml_dir

    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path / "cache"))
    validated = parse_catalog_files(load_yaml_dir(data_dir("hwdb")))
    shipped = list(load_catalog())  # a fresh cache: from the shipped copy, as Records
    assert [type(d).__name__ for d in shipped[:1]] == ["DeviceRecord"]
    assert [fingerprint(d) for d in shipped] == [fingerprint(d) for d in validated]
    # the same files elsewhere (an install) still match; one changed byte does not, and is validated from the YAML
    copy = tmp_path / "hwdb"
    shutil.copytree(data_dir("hwdb"), copy)
    calls: list[int] = []
    monkeypatch.setattr("planner.hardware.catalog.parse_catalog_files",
                        lambda files: calls.append(len(files)) or parse_catalog_files(files))
    same = load_catalog(builtin=False, extra_dirs=[copy])
    assert not calls and [fingerprint(d) for d in same] == [fingerprint(d) for d in validated]
    f = sorted(copy.glob("*.yaml"))[0]
    f.write_text(f.read_text(encoding="utf-8") + "\n# a comment\n", encoding="utf-8")
    again = load_catalog(builtin=False, extra_dirs=[copy])
    assert calls and [fingerprint(d) for d in again] == [fingerprint(d) for d in validated]
