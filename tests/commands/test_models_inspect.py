"""`planner models inspect ORG/NAME` and `--model ORG/NAME` in recommend/estimate, against a loopback fake Hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakehub import SHA, TINY_CONFIG, FakeHub, awq_repo, gguf_repo, safetensors_repo, use_hf_cache

from planner.cli import main


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    tmp = tmp_path_factory.mktemp("repos")
    for d in ("st", "awq", "gguf"):
        (tmp / d).mkdir()
    return {"acme/tiny": safetensors_repo(tmp / "st", TINY_CONFIG), "acme/tiny-awq": awq_repo(tmp / "awq"),
            "acme/tiny-GGUF": gguf_repo(tmp / "gguf")}


@pytest.fixture()
def hub(repo_files, monkeypatch, tmp_path):
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path / "planner-cache"))
    use_hf_cache(monkeypatch, tmp_path / "hf-hub")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("HF_TOKEN", "PLANNER_ONLINE", "PLANNER_HUB_TIMEOUT", "HF_HOME", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    server = FakeHub(repos={k: dict(v) for k, v in repo_files.items()})
    server.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    yield server
    server.stop()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_safetensors_repo_json(hub: FakeHub, capsys, tmp_path: Path) -> None:
    code, out, err = run(capsys, "models", "inspect", "acme/tiny", "--online", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert (d["resolved"], d["repo"], d["sha"], d["kind"]) == ("hub", "acme/tiny", SHA, "safetensors")
    assert d["spec"]["hidden_size"] == 64 and d["spec"]["hf_repo"] == "acme/tiny" and d["pre_quantized"] is False
    assert d["n_tensors"] == 21 and d["tensor_dtypes"] == {"F16": 16, "F32": 5}
    assert d["file_bytes"] == sum(len(v) for k, v in hub.repos["acme/tiny"].items() if k.endswith(".safetensors"))
    assert d["cache_file"] == str(tmp_path / "planner-cache" / "hub" / "acme--tiny--main.json")
    assert d["requests"] == len(hub.log) and d["bytes_read"] > 0
    hub.log.clear()
    code, out, _ = run(capsys, "models", "inspect", "acme/tiny", "--json")  # second time: from the cache, offline
    assert code == 0 and json.loads(out)["resolved"] == "hub-cache" and hub.log == []


def test_inspect_awq_and_gguf_text(hub: FakeHub, capsys) -> None:
    code, out, err = run(capsys, "models", "inspect", "acme/tiny-awq", "--online")
    assert code == 0, err
    assert "awq, 4-bit, group 128" in out and "awq-int4" in out and "the Hugging Face Hub" in out
    code, out, err = run(capsys, "models", "inspect", "acme/tiny-GGUF", "--online")
    assert code == 0, err
    assert "Quants in the repo" in out and "Q8_0" in out and "F16 *" in out and "GGUF, file type F16" in out


def test_inspect_gguf_quant_json(hub: FakeHub, capsys) -> None:
    code, out, err = run(capsys, "models", "inspect", "acme/tiny-GGUF:Q8_0", "--online", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["selected"] == "Q8_0" and d["planner_format"] == "Q8_0" and d["quantization"]["file_type"] == "Q8_0"
    assert {v["label"]: v["header_read"] for v in d["variants"]} == {"F16": False, "Q8_0": True}


def test_inspect_without_online_asks_for_it_and_stays_offline(hub: FakeHub, capsys, tmp_path: Path) -> None:
    code, out, err = run(capsys, "models", "inspect", "acme/tiny")
    assert code == 1 and out == ""
    assert "pass --online (or set PLANNER_ONLINE=1)" in err and "Traceback" not in err
    assert hub.log == [] and not (tmp_path / "planner-cache" / "hub").exists()


def test_inspect_local_hf_cache(hub: FakeHub, capsys, tmp_path: Path) -> None:
    snap = tmp_path / "hf-hub" / "models--org--name" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(TINY_CONFIG))
    code, out, err = run(capsys, "models", "inspect", "org/name", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["resolved"] == "hf-cache" and d["location"] == str(snap) and d["kind"] == "config" and d["notes"]
    assert hub.log == []


def test_inspect_gated_and_missing(hub: FakeHub, capsys) -> None:
    hub.behaviour["acme/tiny"] = {"status": 401, "error_code": "GatedRepo"}
    code, _, err = run(capsys, "models", "inspect", "acme/tiny", "--online")
    assert code == 1 and "is gated (HTTP 401)" in err and "HF_TOKEN" in err
    code, _, err = run(capsys, "models", "inspect", "acme/none", "--online")
    assert code == 1 and "not found" in err and "(HTTP 404)" in err


def test_inspect_malformed_shard_header_is_one_line_exit_2(hub: FakeHub, capsys, tmp_path: Path) -> None:
    header = b'{"w": {"dtype": "F16", "shape": [4, 4], "data_offsets": [0, 32]}}'
    shard = len(header).to_bytes(8, "little") + header + b"\0" * 16  # the tensors need 32 bytes; 16 are there
    hub.repos["acme/bad"] = {"config.json": json.dumps(TINY_CONFIG).encode(), "model.safetensors": shard}
    code, out, err = run(capsys, "models", "inspect", "acme/bad", "--online")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "acme/bad/model.safetensors: data_offsets: file truncated" in err and "Traceback" not in err
    hub.repos["acme/bad"]["model.safetensors"] = (9).to_bytes(8, "little") + b"{not json"
    code, _, err = run(capsys, "models", "inspect", "acme/bad", "--online")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "acme/bad: safetensors headers:" in err
    assert not (tmp_path / "planner-cache" / "hub").exists() or not any((tmp_path / "planner-cache" / "hub").iterdir())


def test_inspect_profile_name_repo_not_cached_points_to_show(hub: FakeHub, capsys, registry) -> None:
    spec = next(m for m in registry if m.hf_repo)
    code, _, err = run(capsys, "models", "inspect", spec.hf_repo)
    assert code == 1 and f"planner models show {spec.id}" in err and hub.log == []


def test_recommend_gguf_repo_compares_its_quants(hub: FakeHub, capsys) -> None:
    code, out, err = run(capsys, "recommend", "--model", "acme/tiny-GGUF", "--online", "--memory", "8GiB", "--json")
    assert code == 0, err
    d = json.loads(out)
    # each quant is planned exactly as stored (its own tensor table and file size)
    assert d["recommended"]["format"] in ("F16-as-stored", "Q8_0-as-stored")
    assert {a["format"] for a in d["alternatives"]} <= {"F16-as-stored", "Q8_0-as-stored"}
    assert "stored as F16-as-stored, Q8_0-as-stored: planned as it is" in d["model"]["resolved_from"]
    hub.log.clear()
    code, out, _ = run(capsys, "recommend", "--model", "acme/tiny-GGUF", "--memory", "8GiB", "--format", "Q4_0", "--json")
    assert code == 0 and json.loads(out)["recommended"]["format"] == "Q4_0" and hub.log == []


def test_recommend_without_online_says_so(hub: FakeHub, capsys) -> None:
    code, _, err = run(capsys, "recommend", "--model", "acme/tiny", "--memory", "8GiB")
    assert code == 1 and "not a bundled profile" in err and "--online" in err and hub.log == []


def test_estimate_awq_repo_as_stored_and_requantized(hub: FakeHub, capsys, monkeypatch) -> None:
    monkeypatch.setenv("PLANNER_ONLINE", "1")
    code, out, err = run(capsys, "estimate", "--model", "acme/tiny-awq", "--format", "awq-int4", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["format"] == "awq-int4" and d["file_size_bytes"] > 0 and "stored as awq-int4" in d["resolved_from"]
    code, out, err = run(capsys, "estimate", "--model", "acme/tiny-awq", "--format", "Q8_0", "--json")
    assert code == 0, err
    assert "--format Q8_0 plans a re-quantized copy" in json.loads(out)["resolved_from"]


def test_models_show_repo_id(hub: FakeHub, capsys) -> None:
    code, out, err = run(capsys, "models", "show", "acme/tiny", "--online", "--json")
    assert code == 0, err
    assert json.loads(out)["hf_repo"] == "acme/tiny"


def test_recommend_from_the_local_hf_cache_offline(hub: FakeHub, capsys, tmp_path: Path) -> None:
    snap = tmp_path / "hf-hub" / "models--org--tiny" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(TINY_CONFIG))
    code, out, err = run(capsys, "recommend", "--model", "org/tiny", "--memory", "8GiB", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["model"]["id"] == "tiny" and "local HF cache" in d["model"]["resolved_from"]
    assert len({a["format"] for a in d["alternatives"]}) > 2  # a float checkpoint: every format is compared
    assert hub.log == []
