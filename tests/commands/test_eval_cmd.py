"""`planner eval` through main(argv), with a fake runtime in place of llama.cpp: the table, --json, results stored
under the data directory, Ctrl-C keeping finished formats (exit 130), and exit 2 for an empty or binary text file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.cli import main
from planner.measure.quality import core
from fake_runtime import fake_runtime
from quantize_models import make_hf_model, needs_torch


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


Fake = fake_runtime({"F16": 0, "Q8_0": 0.05, "Q5_K_M": 0.2, "Q4_K_M": 0.4, "Q3_K_M": 1.0, "Q4_0": 0.6, "nf4": 0.5,
                     "gptq-int4": 0.45})


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / "tiny"
    make_hf_model(path, vocab=300, layers=1)
    return path


@pytest.fixture(autouse=True)
def fake_runtime(monkeypatch):
    monkeypatch.setattr(core, "_open_llama", Fake)


def test_eval_table_and_saved(capsys, model, tmp_path, monkeypatch):
    monkeypatch.setenv("PLANNER_DATA_DIR", str(tmp_path / "data"))
    code, out, err = run(capsys, "eval", str(model), "--ctx", "64", "--chunks", "3")
    assert code == 0, err
    for fmt in ("F16", "Q8_0", "Q5_K_M", "Q4_K_M", "Q3_K_M"):
        assert fmt in out
    assert "KLD mean" in out and "top-1" in out and "reference" in out and "knee" in out
    saved = list((tmp_path / "data" / "eval").glob("*.json"))
    assert len(saved) == 1
    data = json.loads(saved[0].read_text())
    assert data["chunks"] == 3 and len(data["results"]) == 5


def test_eval_json(capsys, model, tmp_path):
    text = tmp_path / "mine.txt"
    text.write_text("My own words about my own use of the model, repeated. " * 40)
    code, out, err = run(capsys, "eval", str(model), "--formats", "Q8_0,Q4_0", "--text", str(text), "--ctx", "64",
                         "--json", "--no-save")
    assert code == 0, err
    data = json.loads(out)
    assert data["saved"] is None and data["text"] == str(text)
    sizes = [r["file_bytes"] for r in data["results"]]
    assert sizes == sorted(sizes)
    by = {r["format"]: r for r in data["results"]}
    assert 0 < by["Q8_0"]["kld_mean"] < by["Q4_0"]["kld_mean"]
    assert by["F16"]["reference"] is True


@pytest.mark.parametrize("content", [b"", b"   \n", b"\xff\xfe\x00garbage\x00", b"ok\x00\x00\x00 binary data here"])
def test_eval_bad_text_is_exit_2(capsys, model, tmp_path, content):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    code, out, err = run(capsys, "eval", str(model), "--text", str(bad))
    assert code == 2
    assert err.startswith("planner: error:") and str(bad) in err and len(err.strip().splitlines()) == 1


@pytest.mark.real_runtime
@needs_torch
def test_eval_weight_only_formats_table(capsys, model, tmp_path, monkeypatch):
    monkeypatch.setenv("PLANNER_DATA_DIR", str(tmp_path / "data"))
    code, out, err = run(capsys, "eval", str(model), "--formats", "Q8_0,nf4,gptq-int4", "--ctx", "64", "--chunks", "2")
    assert code == 0, err
    flat = " ".join(out.split())
    assert "gptq-int4 (GPTQ 4-bit g128, act-order, damp 0.1," in flat and "calibrated by planner quantize" in flat
    assert "nf4 (bitsandbytes NF4" in out and "dequantized to an F32 GGUF" in flat
    data = json.loads(next((tmp_path / "data" / "eval").glob("*.json")).read_text())
    assert {r["format"] for r in data["results"]} == {"F16", "Q8_0", "nf4", "gptq-int4"}


def test_eval_short_text_and_bad_format(capsys, model, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Only a sentence or two of text here.")
    code, _, err = run(capsys, "eval", str(model), "--text", str(short), "--ctx", "512")
    assert code == 2 and "fewer than one chunk" in err
    code, _, err = run(capsys, "eval", str(model), "--formats", "Q8_0,w8a8-int8", "--ctx", "64")
    assert code == 2 and "activations" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "eval", str(model), "--dataset", "nope")
    assert code == 1 and "unknown dataset" in err


def test_eval_ctrl_c_keeps_finished(capsys, model, tmp_path, monkeypatch):
    class Stop(Fake):
        def logits(self, tokens):
            if self.fmt == "Q4_K_M":
                raise KeyboardInterrupt
            return super().logits(tokens)

    monkeypatch.setattr(core, "_open_llama", Stop)
    monkeypatch.setenv("PLANNER_DATA_DIR", str(tmp_path / "data"))
    code, out, err = run(capsys, "eval", str(model), "--ctx", "64", "--chunks", "2", "--json")
    assert code == 130 and "interrupted" in err
    data = json.loads(out)
    assert data["interrupted"] is True
    assert {r["format"] for r in data["results"]} == {"F16", "Q8_0", "Q5_K_M"}
    assert data["saved"] and Path(data["saved"]).is_file()
