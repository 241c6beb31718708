"""`planner quantize` through main(argv): JSON and text reports, atomic output (existing OUT refused, nothing left
behind after an error or Ctrl-C), and one clear line with exit 2 for corrupt, truncated or unsupported inputs."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from planner.cli import main
from quantize_models import make_hf_model, needs_torch


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / "tiny"
    make_hf_model(path)
    return path


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".partial" in p.name or ".old-" in p.name)


def test_quantize_json(capsys, model, tmp_path):
    out = tmp_path / "m.gguf"
    code, stdout, _ = run(capsys, "quantize", str(model), "--format", "q4_k_m", "-o", str(out), "--json")
    assert code == 0
    data = json.loads(stdout)
    assert data["format"] == "Q4_K_M" and data["kind"] == "gguf" and out.is_file()
    assert data["tensor_bytes"] == data["predicted_tensor_bytes"]
    assert data["file_bytes"] == out.stat().st_size
    assert abs(data["file_bytes"] - data["predicted_file_bytes"]) < 64 * 1024  # header estimate
    assert data["tensors"][0]["sqnr_db"] == data["min_sqnr_db"] > 18
    # `planner estimate` on the same directory predicts the same bytes
    code, stdout, _ = run(capsys, "estimate", "--model", str(model), "--format", "Q4_K_M", "--json")
    assert code == 0 and json.loads(stdout)["file_size_bytes"] == data["predicted_file_bytes"]


@pytest.mark.real_runtime
@needs_torch
def test_quantize_text_report(capsys, model, tmp_path):
    code, stdout, err = run(capsys, "quantize", str(model), "-f", "gptq-int4", "-o", str(tmp_path / "gptq"), "--worst", "3")
    assert code == 0, err
    assert "as predicted" in stdout and "bits per weight" in stdout and "SQNR" in stdout
    assert (tmp_path / "gptq" / "quantize_config.json").is_file()


def test_existing_output_refused_then_forced(capsys, model, tmp_path):
    out = tmp_path / "m.gguf"
    out.write_bytes(b"keep me")
    code, _, err = run(capsys, "quantize", str(model), "-f", "Q8_0", "-o", str(out))
    assert code == 1 and "already exists" in err and "--force" in err
    assert out.read_bytes() == b"keep me"
    code, _, _ = run(capsys, "quantize", str(model), "-f", "Q8_0", "-o", str(out), "--force", "--json")
    assert code == 0 and out.read_bytes()[:4] == b"GGUF"
    # a directory output that planner wrote is replaced whole; one holding a file it did not write is refused
    d = tmp_path / "dir"
    code, _, _ = run(capsys, "quantize", str(model), "-f", "bf16", "-o", str(d), "--json")
    assert code == 0
    code, _, _ = run(capsys, "quantize", str(model), "-f", "mlx-4bit", "-o", str(d), "--force", "--json")
    assert code == 0 and json.loads((d / "config.json").read_text())["quantization"]["bits"] == 4
    (d / "stale.txt").write_text("old")
    code, _, err = run(capsys, "quantize", str(model), "-f", "mlx-4bit", "-o", str(d), "--force", "--json")
    assert code == 2 and "stale.txt" in err and (d / "stale.txt").read_text() == "old"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("exc,code", [(RuntimeError("injected"), 3), (KeyboardInterrupt(), 130)])
@pytest.mark.parametrize("fmt,name", [("Q4_K_M", "m.gguf"), ("nf4", "nf4-dir")])
def test_error_midway_leaves_nothing(capsys, model, tmp_path, monkeypatch, exc, code, fmt, name):
    import planner.quantize.group_quant as gq
    import planner.quantize.pipeline as pipeline

    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise exc
        return real(*args, **kwargs)

    target = "encode" if fmt == "Q4_K_M" else "nf4_quantize"
    real = getattr(pipeline, target)
    monkeypatch.setattr(pipeline, target, failing)
    del gq
    out = tmp_path / name
    rc, _, err = run(capsys, "quantize", str(model), "-f", fmt, "-o", str(out))
    # GGUF chunks run on worker threads: chunks already in flight (at most workers + 1) may still call the encoder
    # after the failing one, and nothing later is started
    from planner.quantize.primitives import default_threads

    assert rc == code and 3 <= calls["n"] <= 3 + default_threads() + 1
    assert not out.exists() and _leftovers(tmp_path) == []
    # with --force over an existing output, the old one survives a failed run
    out.write_bytes(b"previous") if name.endswith(".gguf") else out.mkdir()
    calls["n"] = 0
    rc, _, _ = run(capsys, "quantize", str(model), "-f", fmt, "-o", str(out), "--force")
    assert rc == code and out.exists() and _leftovers(tmp_path) == []
    if name.endswith(".gguf"):
        assert out.read_bytes() == b"previous"


def test_output_over_the_source_refused(capsys, model, tmp_path):
    gguf = tmp_path / "m.gguf"
    assert main(["quantize", str(model), "-f", "Q8_0", "-o", str(gguf), "--json"]) == 0
    before = gguf.read_bytes()
    capsys.readouterr()
    code, _, err = run(capsys, "quantize", str(gguf), "-f", "Q4_0", "-o", str(gguf), "--force")
    assert code == 1 and "source" in err and gguf.read_bytes() == before
    code, _, err = run(capsys, "quantize", str(model), "-f", "bf16", "-o", str(model.parent), "--force")
    assert code == 1 and (model / "model.safetensors").is_file()


def _assert_invalid(capsys, argv: list[str], *needles: str) -> str:
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1
    for n in needles:
        assert n in err, err
    return err


def test_truncated_and_corrupt_safetensors(capsys, model, tmp_path):
    bad = _copy(model, tmp_path / "trunc")
    st = bad / "model.safetensors"
    st.write_bytes(st.read_bytes()[:-1000])
    _assert_invalid(capsys, ["quantize", str(bad), "-f", "Q8_0", "-o", str(tmp_path / "o.gguf")], "truncated")
    bad2 = _copy(model, tmp_path / "corrupt")
    raw = (bad2 / "model.safetensors").read_bytes()
    (bad2 / "model.safetensors").write_bytes(raw[:8] + b"{not json" + raw[17:])
    _assert_invalid(capsys, ["quantize", str(bad2), "-f", "Q8_0", "-o", str(tmp_path / "o.gguf")], "JSON")
    assert not (tmp_path / "o.gguf").exists()


def test_nan_weights(capsys, tmp_path):
    make_hf_model(tmp_path / "nan", dtype="F32")
    st = tmp_path / "nan" / "model.safetensors"
    raw = bytearray(st.read_bytes())
    n = struct.unpack("<Q", raw[:8])[0]
    raw[8 + n + 40:8 + n + 44] = np.array([np.nan], dtype=np.float32).tobytes()  # inside the first tensor
    st.write_bytes(bytes(raw))
    _assert_invalid(capsys, ["quantize", str(tmp_path / "nan"), "-f", "Q4_0", "-o", str(tmp_path / "o.gguf")], "NaN")
    assert _leftovers(tmp_path) == []


def test_truncated_gguf(capsys, model, tmp_path):
    good = tmp_path / "g.gguf"
    assert main(["quantize", str(model), "-f", "F16", "-o", str(good), "--json"]) == 0
    capsys.readouterr()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(good.read_bytes()[:-5000])
    _assert_invalid(capsys, ["quantize", str(bad), "-f", "Q8_0", "-o", str(tmp_path / "o.gguf")], "truncated")
    (tmp_path / "junk.gguf").write_bytes(b"GGUF" + b"\xff" * 64)
    _assert_invalid(capsys, ["quantize", str(tmp_path / "junk.gguf"), "-f", "Q8_0", "-o", str(tmp_path / "o.gguf")])


def test_unsupported_and_missing_inputs(capsys, model, tmp_path):
    out = str(tmp_path / "o.gguf")
    neox = _copy(model, tmp_path / "neox")
    cfg = json.loads((neox / "config.json").read_text())
    cfg["architectures"] = ["GPTNeoXForCausalLM"]
    (neox / "config.json").write_text(json.dumps(cfg))
    _assert_invalid(capsys, ["quantize", str(neox), "-f", "Q8_0", "-o", out],
                    "GPTNeoXForCausalLM", "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Gemma2ForCausalLM")
    gemma = _copy(model, tmp_path / "gemma")  # Llama weights under a Gemma 2 config: its norms are missing
    cfg["architectures"] = ["Gemma2ForCausalLM"]
    cfg["model_type"] = "gemma2"
    (gemma / "config.json").write_text(json.dumps(cfg))
    _assert_invalid(capsys, ["quantize", str(gemma), "-f", "Q8_0", "-o", out], "Gemma2ForCausalLM", "ffn_norm")
    noconf = _copy(model, tmp_path / "noconf")
    (noconf / "config.json").unlink()
    _assert_invalid(capsys, ["quantize", str(noconf), "-f", "Q8_0", "-o", out], "config.json")
    _assert_invalid(capsys, ["quantize", str(tmp_path / "nowhere"), "-f", "Q8_0", "-o", out], "no such file")
    gptq = _copy(model, tmp_path / "gptq")
    cfg = json.loads((gptq / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 128}
    (gptq / "config.json").write_text(json.dumps(cfg))
    _assert_invalid(capsys, ["quantize", str(gptq), "-f", "Q8_0", "-o", out], "already quantized")


def test_formats_we_cannot_write(capsys, model, tmp_path):
    code, _, err = run(capsys, "quantize", str(model), "-f", "nvfp4", "-o", str(tmp_path / "o"))
    assert code == 1 and "cannot write nvfp4" in err and "Q4_K_M" in err and "gptq-int4" in err and "awq-int4" in err
    code, _, err = run(capsys, "quantize", str(model), "-f", "IQ2_XXS", "-o", str(tmp_path / "o.gguf"))
    assert code == 1 and "cannot write IQ2_XXS" in err
    code, _, err = run(capsys, "quantize", str(model), "-f", "Q4_K_Mx", "-o", str(tmp_path / "o.gguf"))
    assert code == 1 and "did you mean" in err


def test_not_enough_disk(capsys, model, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    code, _, err = run(capsys, "quantize", str(model), "-f", "Q8_0", "-o", str(tmp_path / "o.gguf"))
    assert code == 1 and "free" in err and not (tmp_path / "o.gguf").exists()


def test_help_lists_quantize(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "quantize" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["quantize", "--help"])
    out = capsys.readouterr().out
    assert "--format" in out and "--force" in out and "--json" in out


def test_recommend_quantize_writes_the_recommended_artifact(tmp_path, capsys):
    """`recommend --quantize SOURCE -o OUT` produces exactly the plan's format, with the predicted tensor bytes."""
    import gguf

    src = tmp_path / "tiny"
    make_hf_model(src)
    out = tmp_path / "tiny.gguf"
    code = main(["recommend", "--model", str(src), "--device", "rtx-4090", "--format", "Q8_0", "--format", "Q4_K_M",
                 "--runtime", "llama.cpp", "--quantize", str(src), "-o", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    best = json.loads(captured.out)["recommended"]
    assert out.is_file() and "as predicted: True" in captured.err
    types = {t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors}
    assert ("Q8_0" in types) if best["format"] == "Q8_0" else ("Q4_K" in types or "Q5_0" in types)
    code = main(["recommend", "--model", str(src), "--device", "rtx-4090", "--quantize", str(src)])
    assert code == 1 and "needs -o" in capsys.readouterr().err


def test_gptq_without_torch_is_one_clear_line_and_writes_nothing(capsys, model, tmp_path, monkeypatch):
    """GPTQ/AWQ calibrate in torch, an optional dependency: without it `planner quantize` says so in one line, with the
    install and the formats that need no torch, and leaves nothing behind (it was an internal error before)."""
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError, as on a machine without it
    out = tmp_path / "gptq"
    code, _, err = run(capsys, "quantize", str(model), "-f", "gptq-int4", "-o", str(out))
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "torch, which is not installed" in err and "[quant]" in err and "rtn-int4" in err
    assert not out.exists() and not list(tmp_path.glob("gptq*"))
