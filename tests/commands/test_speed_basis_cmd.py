"""recommend/estimate: speed bases and bands in JSON and text, per-sequence/aggregate wording, --tflops."""

from __future__ import annotations

import json
import re

from planner.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_estimate_json_speed_bands(capsys):
    code, out, _ = run(capsys, "estimate", "--model", "8B", "--format", "awq-int4", "--device", "h100-sxm", "--runtime",
                       "sglang", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["speed_basis"] == "assumed"
    assert d["decode_tokens_per_s_low"] < d["decode_tokens_per_s"] < d["decode_tokens_per_s_high"]
    assert d["ttft_s_low"] < d["ttft_s"] < d["ttft_s_high"]


def test_text_shows_range_where_basis_is_weak(capsys):
    code, out, _ = run(capsys, "recommend", "--model", "8B", "--device", "h100-sxm", "--runtime", "sglang")
    assert code == 0
    assert re.search(r"decodes ~\d+ \(\d+-\d+\) tokens/s per sequence", out)
    assert "speeds assumed" in out
    code, out, _ = run(capsys, "recommend", "--model", "8B", "--device", "h100-sxm", "--runtime", "vllm")
    assert re.search(r"decodes about \d+ tokens/s per sequence", out) and "calibrated on this device class" in out


def test_reasons_say_aggregate_with_several_sequences(capsys):
    code, out, _ = run(capsys, "recommend", "--model", "8B", "--device", "h100-sxm", "--concurrency", "8", "--json")
    assert code == 0
    speed = [r for r in json.loads(out)["reasons"] if "tokens/s" in r]
    assert speed and all("per sequence" in r or "aggregate" in r for r in speed)
    assert any("aggregate over 8 sequences" in r for r in speed)


def test_manual_device_compute(capsys):
    """Without --tflops the compute comes from the catalog's FLOPs per byte (and a note says so), not a 10 TFLOPS
    floor: prefill lands near a catalog GPU of the same bandwidth."""
    args = ("recommend", "--model", "8B", "--format", "Q4_K_M", "--runtime", "llama.cpp", "--json")
    code, out, _ = run(capsys, *args, "--memory", "24GiB", "--bandwidth", "936")
    assert code == 0
    manual = json.loads(out)
    assert any("--tflops" in n and "TFLOPS" in n for n in manual["target"]["notes"])
    code, out, _ = run(capsys, *args, "--device", "rtx-3090")
    catalog = json.loads(out)
    ratio = manual["recommended"]["prefill_tokens_per_s"] / catalog["recommended"]["prefill_tokens_per_s"]
    assert 0.5 < ratio < 2.0
    code, out, _ = run(capsys, *args, "--memory", "24GiB", "--bandwidth", "936", "--tflops", "35")
    slow = json.loads(out)
    assert not any("--tflops" in n for n in slow["target"]["notes"])
    assert slow["recommended"]["prefill_tokens_per_s"] < manual["recommended"]["prefill_tokens_per_s"]


def test_tflops_needs_memory(capsys):
    code = main(["recommend", "--model", "8B", "--device", "rtx-4090", "--tflops", "80"])
    err = capsys.readouterr().err
    assert code != 0 and "--tflops" in err and "Traceback" not in err


def test_an_assumed_speed_counts_at_its_band_low_end_in_the_ranking():
    """recommend's score charges a weak speed basis (assumed, or calibrated on another device class) at the low end of
    its band, as it charges an estimated quality loss at its high end: an assumed engine no faster than a calibrated
    one never outranks it, and wins only by more than its band."""
    import dataclasses

    from planner.cost.evaluate import evaluate
    from planner.cost.model import ModelCost
    from planner.formats import get_format
    from planner.hardware.catalog import load_catalog
    from planner.models.profiles import load_registry
    from planner.plan import target_from_catalog
    from planner.recommend import score
    from planner.runtimes import get_runtime

    mc = ModelCost(load_registry().get("llama-3.1-8b"))
    plan = evaluate(mc, get_format("fp8"), get_runtime("vllm"), target_from_catalog(load_catalog().get("h100-sxm")),
                    context=4096)
    assert plan.speed_basis == "calibrated on this device class"

    def as_assumed(faster: float):  # the same plan, its speeds `faster` times higher but resting on assumed constants
        speeds = {k: v * faster if k.endswith("tokens_per_s") else v for k, v in plan._speeds.items()}
        return dataclasses.replace(plan, _speeds={**speeds, "speed_width": 0.6}, speed_basis_value="assumed")

    for prefer in ("balanced", "speed", "quality"):
        assert score(as_assumed(1.0), prefer) < score(plan, prefer)
        assert score(as_assumed(1.5), prefer) < score(plan, prefer)  # inside its band: still behind
        assert score(as_assumed(1.7), prefer) > score(plan, prefer)  # faster even at its low end (1.7 / 1.6)


def test_a_calibrated_engine_beats_an_assumed_one_of_the_same_speed_and_the_reasons_say_why(capsys):
    """The case the low-end rule fixed: Llama 3.1 70B on one H100, where TGI's exl2-8bpw (assumed ~21 tok/s) had
    outranked TensorRT-LLM's gptq-int8 (calibrated 21 tok/s) at the same KLD."""
    code, out, _ = run(capsys, "recommend", "--model", "70B", "--device", "h100-sxm", "--json")
    assert code == 0
    d = json.loads(out)
    rec = d["recommended"]
    assert rec["speed_basis"] not in ("assumed", "calibrated elsewhere")
    assumed = [a for a in d["alternatives"] if a["speed_basis"] == "assumed" and a["fits"]]
    assert assumed and assumed[0]["decode_tokens_per_s_low"] < rec["decode_tokens_per_s"]
    assert any("its speed is assumed, so it ranks at its band's low end" in r for r in d["reasons"])
