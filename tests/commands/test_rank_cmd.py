"""`planner recommend` without --model (rank models), and the one-line verdict of a slow or lossy single-model answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.cli import main
from planner.fit import DEFAULT_MIN_TOKENS_PER_S

ROOT = Path(__file__).resolve().parents[2]
CPU_LAPTOP = str(ROOT / "tests" / "fixtures" / "snapshots" / "cpu-only-laptop.json")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_rank_json_lists_plans_with_capability_sources_and_launch(capsys):
    code, out, _ = run(capsys, "recommend", "--device", "rtx-4090", "--ram", "64GiB", "--top", "5", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["mode"] == "rank-models" and data["use"] == "chat"
    assert data["min_tokens_per_s"] == DEFAULT_MIN_TOKENS_PER_S and data["context"] == 8192
    assert len(data["ranked"]) == 5
    values = [r["expected_capability"]["rank_value"] for r in data["ranked"]]
    assert values == sorted(values, reverse=True)
    for r in data["ranked"]:
        p = r["plan"]
        assert p["decode_tokens_per_s"] >= DEFAULT_MIN_TOKENS_PER_S and p["memory_bytes"] <= p["usable_memory_bytes"]
        assert 0 < p["decode_p90_error"] < 1 and p["launch"]
        cap = r["capability"]
        assert cap["source"] and cap["date"] and cap["benchmark"] and cap["scale"] == "elo"
        e = r["expected_capability"]
        assert e["low"] <= e["value"] <= e["high"] <= cap["score_high"]
    reasons = {r["model"]: r["reason"] for r in data["not_ranked"]}
    assert "no data" in reasons["gpt-oss-20b"]


def test_rank_text_shows_table_first_launch_and_what_was_left_out(capsys):
    code, out, _ = run(capsys, "recommend", "--device", "m3-max-128gb")
    assert code == 0
    assert "Best models for chat" in out and "Launch #1" in out
    assert "No published chat score on file" in out and "gpt-oss-120b" in out
    assert "beyond their maximum" in out  # 2K/4K-context models at the default 8,192


@pytest.mark.parametrize("use,benchmark", [("coding", "HumanEval+"), ("reasoning", "Open LLM Leaderboard v2")])
def test_use_picks_the_capability_source(capsys, use, benchmark):
    code, out, _ = run(capsys, "recommend", "--device", "h100-sxm", "--use", use, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["use"] == use and data["ranked"]
    assert all(benchmark in r["capability"]["benchmark"] for r in data["ranked"])


def test_the_floor_is_honoured(capsys):
    code, out, _ = run(capsys, "recommend", "--device", "rtx-3060-12gb", "--min-tokens-per-s", "50", "--json")
    assert code == 0
    ranked = json.loads(out)["ranked"]
    assert ranked and all(r["plan"]["decode_tokens_per_s"] >= 50 for r in ranked)


@pytest.mark.parametrize("flags", [["--format", "Q4_K_M"], ["--runtime", "vllm"], ["--confirm"]])
def test_single_model_options_need_a_model(capsys, flags):
    code = main(["recommend", "--device", "rtx-4090", *flags])
    _, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "needs --model" in lines[0]


def test_slow_single_model_answer_names_the_best_model_for_the_machine(capsys):
    """`recommend --model 70B` on a CPU-only machine: 70B only fits at a ruinous bit width and crawls; the first
    line says so and names the best model this machine runs, with its numbers."""
    code, out, _ = run(capsys, "recommend", "--model", "70B", "--snapshot", CPU_LAPTOP)
    assert code == 0
    first = out.splitlines()[0]
    assert first.startswith("! llama-3.1-70b here decodes at") and "below 10" in first
    assert "Best model for this machine (chat):" in first and "tok/s" in first and "GiB" in first
    code, out, _ = run(capsys, "recommend", "--model", "70B", "--snapshot", CPU_LAPTOP, "--json")
    data = json.loads(out)
    alt = data["best_alternative"]
    assert alt["model"] != "llama-3.1-70b" and alt["plan"]["decode_tokens_per_s"] >= DEFAULT_MIN_TOKENS_PER_S
    assert any(alt["model"] in s and "Best model" in s for s in data["suggestions"])
    assert data["recommended"]["decode_tokens_per_s"] < DEFAULT_MIN_TOKENS_PER_S


def test_a_good_single_model_answer_has_no_verdict(capsys):
    code, out, _ = run(capsys, "recommend", "--model", "8B", "--device", "h100-sxm", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["best_alternative"] is None and not data["suggestions"]
    code, out, _ = run(capsys, "recommend", "--model", "8B", "--device", "h100-sxm")
    assert not out.startswith("!")


def test_ranking_plans_one_node(capsys):
    code = main(["recommend", "--device", "h100-sxm", "--count", "8", "--nodes", "2"])
    _, err = capsys.readouterr()
    assert code == 2 and "one node" in err and len(err.strip().splitlines()) == 1


def test_rank_speed_errors_are_the_plans_bands(capsys):
    """One table of speed error: the ranking's p90 errors and printed ranges are the plans' bands (vLLM and TensorRT-LLM
    are calibrated on an H100, not the old assumed +-50 %)."""
    from planner.cost.speed import speed_basis
    from planner.hardware.catalog import load_catalog

    code, out, _ = run(capsys, "recommend", "--device", "h100-sxm", "--top", "8", "--json")
    assert code == 0
    plans = [r["plan"] for r in json.loads(out)["ranked"]]
    h100 = load_catalog().get("h100-sxm")
    engines = {"vllm": "vllm", "tensorrt-llm": "trtllm", "llama.cpp": "llamacpp", "sglang": "sglang", "tgi": "tgi"}
    seen = 0
    for p in plans:
        if p["runtime"] not in engines:
            continue
        seen += 1
        _, widths = speed_basis(engines[p["runtime"]], h100)
        assert p["decode_p90_error"] == round(widths.decode, 3) and p["prefill_p90_error"] == round(widths.prefill, 3)
    assert seen
    code, out, _ = run(capsys, "recommend", "--device", "h100-sxm", "--top", "3")
    assert code == 0 and "(" in out and "ranges: 10-90 % for capability and speed" in out
