"""`planner bench`, `planner calibration` and --no-calibration on recommend/estimate, through main()."""

from __future__ import annotations

import json

import pytest

from planner.cli import main

BENCH = ["bench", "--model", "smollm2-135m", "--catalog-device", "cpu-ddr5-dual", "--quick", "--prompt", "16"]


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PLANNER_DATA_DIR", str(tmp_path / "data"))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def saved_bench(tmp_path_factory):
    """One quick bench with --save, shared by the tests that read its records (the bench is the slow part)."""
    import contextlib
    import io
    import os

    data = tmp_path_factory.mktemp("bench-data")
    old = os.environ.get("PLANNER_DATA_DIR")
    os.environ["PLANNER_DATA_DIR"] = str(data)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = main(BENCH + ["--format", "Q8_0", "--batch", "1,2", "--json", "--save"])
    finally:
        if old is None:
            os.environ.pop("PLANNER_DATA_DIR", None)
        else:
            os.environ["PLANNER_DATA_DIR"] = old
    return code, json.loads(out.getvalue()), data


def test_bench_json(saved_bench):
    code, d, _ = saved_bench
    assert code == 0
    assert d["device"] == "cpu" and d["device_id"] == "cpu-ddr5-dual" and d["copy_bandwidth_gb_s"] > 0
    names = {layer["name"] for layer in d["layers"]}
    assert names == {"attn_qkv", "attn_output", "ffn_gate_up", "ffn_down", "lm_head"}
    for layer in d["layers"]:
        assert set(layer) >= {"name", "shape", "kernel", "decode_s", "achieved_gb_s", "fraction_of_copy_bandwidth"}
    for key in ("decode_tokens_per_s", "prefill_tokens_per_s"):
        assert set(d[key]) >= {"measured", "predicted"} and d[key]["measured"] > 0
    assert d["saved"].endswith("cpu-ddr5-dual.yaml")
    assert [b["batch"] for b in d["kernels"][0]["by_batch"]] == [1, 2]


def test_calibration_list_show_clear(saved_bench, capsys, monkeypatch):
    _, _, data = saved_bench
    monkeypatch.setenv("PLANNER_DATA_DIR", str(data))
    code, out, _ = run(capsys, "calibration", "list", "--json")
    assert code == 0 and [r["device"] for r in json.loads(out)["devices"]] == ["cpu-ddr5-dual"]
    code, out, _ = run(capsys, "calibration", "show", "cpu-ddr5-dual", "--json")
    d = json.loads(out)["devices"][0]
    kernels = {r["kernel"] for r in d["records"]}
    assert code == 0 and d["records"][0]["source"] == "planner bench" and "numpy-int8" in kernels
    code, out, _ = run(capsys, "calibration", "show")
    assert code == 0 and all(k in out for k in kernels)


def test_recommend_and_estimate_use_records_unless_told_not_to(saved_bench, capsys, monkeypatch):
    _, _, data = saved_bench
    monkeypatch.setenv("PLANNER_DATA_DIR", str(data))
    base = ["--model", "llama-3.1-8b", "--device", "cpu-ddr5-dual"]
    code, out, _ = run(capsys, "recommend", *base)
    assert code == 0 and "calibration for cpu-ddr5-dual" in out and "--no-calibration" in out
    code, out, _ = run(capsys, "recommend", *base, "--no-calibration")
    assert code == 0 and "calibration for" not in out
    est = ["estimate", *base, "--format", "Q4_K_M", "--json"]
    code, out, _ = run(capsys, *est)
    measured = json.loads(out)
    code, out, _ = run(capsys, *est, "--no-calibration")
    table = json.loads(out)
    assert measured["calibration"] and table["calibration"] is None
    # the measured memory system caps llama.cpp's bandwidth: decode can only get slower, and is slower whenever
    # this machine streams less than the table's 0.65 of the catalog's dual-channel DDR5 peak
    from planner.measure import calibration

    cap = calibration.bandwidth_caps(list(calibration.read_calibration("cpu-ddr5-dual").records))["cpu"]
    assert measured["decode_tokens_per_s"] <= table["decode_tokens_per_s"]
    if cap < 0.6:
        assert measured["decode_tokens_per_s"] < table["decode_tokens_per_s"]


def test_clear_then_nothing_listed(capsys):
    from planner.measure import calibration

    code, out, _ = run(capsys, "calibration", "clear")
    assert code == 0 and "no calibration records" in out
    path = calibration.calibration_path("cpu-ddr5-dual")
    path.parent.mkdir(parents=True)
    path.write_text("schema_version: 1\ndevice_id: cpu-ddr5-dual\nrecords: []\n", encoding="utf-8")
    code, out, _ = run(capsys, "calibration", "clear", "cpu-ddr5-dual")
    assert code == 0 and str(path) in out and not path.exists()
    code, out, _ = run(capsys, "calibration", "list")
    assert code == 0 and "no calibration records" in out


def test_malformed_calibration_file_is_a_clear_error(capsys):
    from planner.measure import calibration

    path = calibration.calibration_path("cpu-ddr5-dual")
    path.parent.mkdir(parents=True)
    path.write_text("schema_version: 1\ndevice_id: cpu-ddr5-dual\nrecords: [{engine: warp-drive}]\n", encoding="utf-8")
    code, _, err = run(capsys, "estimate", "--model", "llama-3.2-1b", "--format", "Q8_0", "--device", "cpu-ddr5-dual")
    assert code == 2 and str(path) in err and "records[0].engine" in err and "calibration clear" in err
    code, out, _ = run(capsys, "calibration", "list")
    assert code == 2 and str(path) in out
    code, _, _ = run(capsys, "estimate", "--model", "llama-3.2-1b", "--format", "Q8_0", "--device", "cpu-ddr5-dual",
                     "--no-calibration")
    assert code == 0


def test_bench_text_output(capsys):
    code, out, err = run(capsys, *BENCH, "--format", "fp32", "--kernel", "numpy-fp32")
    assert code == 0
    assert "copy bandwidth" in out and "numpy reference kernel" in out and "predicted" in out
    assert "measuring copy bandwidth" in err  # progress goes to stderr


@pytest.mark.parametrize("argv, message", [
    (["--format", "Q8_0", "--batch", "0"], "--batch"),
    (["--format", "Q8_0", "--batch", "one"], "--batch"),
    (["--format", "Q8_0", "--device", "tpu"], "--device"),
    (["--format", "Q8_0", "--kernel", "numpy-int3"], "unknown kernel"),
    (["--format", "fp8"], "no kernel for fp8"),
    (["--format", "Q8_0", "--device", "cuda:0", "--kernel", "numpy-int8"], "CPU only"),
])
def test_bench_errors(capsys, argv, message):
    from planner.measure.speed.kernels import torch_module

    torch = torch_module()
    if message == "no kernel for fp8" and torch is not None and torch.cuda.is_available():
        pytest.skip("a CUDA GPU runs fp8")
    code, _, err = run(capsys, *BENCH, *argv)
    # a --batch the parser refuses is invalid input (2); the rest are found while planning (1)
    assert code == (2 if message == "--batch" else 1) and message in err


def test_recommend_confirm_skips_a_named_device(capsys):
    code, out, _ = run(capsys, "recommend", "--model", "smollm2-135m", "--device", "h100-sxm", "--confirm")
    assert code == 0 and "--confirm skipped" in out and "this machine" in out
    code, out, _ = run(capsys, "recommend", "--model", "smollm2-135m", "--device", "h100-sxm", "--confirm", "--json")
    assert json.loads(out)["confirm"]["skipped"]


def test_calibration_schema(capsys):
    code, out, _ = run(capsys, "calibration", "schema")
    schema = json.loads(out)
    assert code == 0 and "records" in schema["properties"]
    assert "bandwidth_fraction" in json.dumps(schema)
