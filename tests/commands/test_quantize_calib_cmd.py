"""`planner quantize` with calibrated formats: --calib, GPTQ options, and the errors for options that do not apply."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.cli import main
from quantize_models import make_hf_model

pytest.importorskip("torch")
pytest.importorskip("tokenizers")

SAMPLE = (Path(__file__).resolve().parents[2] / "planner" / "data" / "eval_sample.txt").read_text()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / "tiny"
    make_hf_model(path, layers=1)
    return path


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("calib") / "calib.txt"
    p.write_text(SAMPLE[:2000])
    return p


def test_gptq_options_reach_the_checkpoint(capsys, model, calib, tmp_path):
    out = tmp_path / "g"
    code, stdout, err = run(capsys, "quantize", str(model), "-f", "gptq-int4", "-o", str(out), "--calib", str(calib),
                            "--damp", "0.05", "--no-act-order", "--asym", "--json")
    assert code == 0, err
    res = json.loads(stdout)
    assert res["tensor_bytes"] == res["predicted_tensor_bytes"]
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["damp_percent"] == 0.05 and qc["desc_act"] is False and qc["sym"] is False and qc["meta"]["method"] == "gptq"
    assert json.loads((out / "quantize_config.json").read_text()) == qc
    from planner.measure.quality.dequant import _Checkpoint

    g_idx = _Checkpoint(out).get("model.layers.0.mlp.down_proj.g_idx")
    np.testing.assert_array_equal(g_idx, np.arange(g_idx.size) // 128)  # no act-order: groups in column order


def test_calib_changes_the_result(capsys, model, calib, tmp_path):
    """Another calibration text gives other codes (the text is used), the same text the same bytes."""
    other = tmp_path / "other.txt"
    other.write_text("The quick brown fox jumps over the lazy dog. " * 60)
    outs = []
    for i, c in enumerate((calib, calib, other)):
        out = tmp_path / f"a{i}"
        code, _, err = run(capsys, "quantize", str(model), "-f", "awq-int4", "-o", str(out), "--calib", str(c))
        assert code == 0, err
        outs.append((out / "model.safetensors").read_bytes())
    assert outs[0] == outs[1] and outs[0] != outs[2]


@pytest.mark.parametrize("argv,needle", [
    (["-f", "rtn-int4", "--calib", "CALIB"], "--calib: rtn-int4 is not calibrated"),
    (["-f", "Q4_K_M", "--calib", "CALIB"], "--calib: Q4_K_M is not calibrated"),
    (["-f", "nf4", "--damp", "0.1"], "--damp: apply to gptq-* formats"),
    (["-f", "awq-int4", "--no-act-order"], "--act-order: apply to gptq-* formats"),
    (["-f", "rtn-int4", "--damp", "0.1"], "--damp: rtn-int4 is round to nearest"),
])
def test_options_that_do_not_apply_are_refused(capsys, model, calib, tmp_path, argv, needle):
    argv = [str(calib) if a == "CALIB" else a for a in argv]
    code, _, err = run(capsys, "quantize", str(model), "-o", str(tmp_path / "o"), *argv)
    assert code == 2 and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_bad_calib_file_and_damp(capsys, model, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    code, _, err = run(capsys, "quantize", str(model), "-f", "gptq-int4", "-o", str(tmp_path / "o"), "--calib", str(empty))
    assert code == 2 and "empty" in err and err.count("\n") == 1
    code, _, err = run(capsys, "quantize", str(model), "-f", "gptq-int4", "-o", str(tmp_path / "o"), "--calib",
                       str(tmp_path / "missing.txt"))
    assert code == 2 and "missing.txt" in err
    code, _, err = run(capsys, "quantize", str(model), "-f", "gptq-int4", "-o", str(tmp_path / "o"), "--damp", "0")
    assert code == 2 and "--damp" in err and "out of range" in err


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600))
def test_calibration_text_fuzz(model, tmp_path_factory, data):
    """Any bytes as a calibration file: token ids within the vocabulary, or one InvalidInputError (exit 2)."""
    from planner.errors import InvalidInputError
    from planner.measure.quality.text import load_text
    from planner.quantize.calib import calibration_tokens

    p = tmp_path_factory.mktemp("fuzz") / "c.txt"
    p.write_bytes(data)
    try:
        tokens = calibration_tokens(model, load_text(p), seq_len=64)
    except InvalidInputError as exc:
        assert exc.exit_code == 2 and "\n" not in str(exc)
        return
    assert tokens.ndim == 2 and tokens.size >= 16 and 0 <= tokens.min() and tokens.max() < 512
