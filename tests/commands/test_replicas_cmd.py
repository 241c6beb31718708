"""Replicas through main([...]): recommend on one node, estimate --replicas, and `replicas` in a check spec."""

from __future__ import annotations

import json

import pytest

from planner.cli import main

NODE = ["--model", "llama-3.1-8b", "--device", "h100-sxm", "--count", "8", "--format", "fp8", "--runtime", "vllm"]


def _json(capsys, *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_recommend_single_node_lists_layouts_only_with_concurrency(capsys):
    code, busy = _json(capsys, "recommend", *NODE, "--concurrency", "64")
    rows = {r["parallel_layout"]: r for r in busy["layouts"]}
    assert code == 0 and {"tp1 × pp1 × dp8", "tp2 × pp1 × dp4", "tp4 × pp1 × dp2", "tp8 × pp1 × dp1"} <= set(rows)
    assert rows["tp1 × pp1 × dp8"]["gpus"] == 8 and rows["tp1 × pp1 × dp8"]["fits"]
    chosen = rows[busy["recommended"]["parallel_layout"]]  # the fewest GPUs that fit
    assert chosen["gpus"] == min(r["gpus"] for r in rows.values() if r["fits"]) < 8
    code, fast = _json(capsys, "recommend", *NODE, "--concurrency", "64", "--prefer", "speed")
    fastest = max((r for r in fast["layouts"] if r["fits"]), key=lambda r: r["throughput_tokens_per_s"])
    assert code == 0 and fast["recommended"]["parallel_layout"] == fastest["parallel_layout"]
    code, single = _json(capsys, "recommend", *NODE)
    assert code == 0 and single["layouts"] == [] and single["recommended"]["parallel_layout"] == "tp8 × pp1 × dp1"
    assert main(["recommend", *NODE, "--concurrency", "64"]) == 0
    out = capsys.readouterr().out
    assert "Layouts considered (fewest GPUs first)" in out and "tp1 × pp1 × dp8" in out


def test_estimate_replicas_matches_a_tp2_plan_per_gpu(capsys):
    code, dp = _json(capsys, "estimate", *NODE, "--replicas", "4", "--concurrency", "64")
    assert code == 0 and dp["fits"]
    assert dp["parallel"]["data_parallel"] == 4 and dp["parallel_layout"] == "tp2 × pp1 × dp4"
    assert "--data-parallel-size 4" in dp["launch"]
    tp2_args = [a if a != "8" else "2" for a in NODE]
    code, tp2 = _json(capsys, "estimate", *tp2_args, "--concurrency", "16")
    assert code == 0 and tp2["parallel_layout"] == "tp2 × pp1 × dp1"
    assert [d["total_bytes"] for d in dp["per_device"]] == [d["total_bytes"] for d in tp2["per_device"]] * 4
    assert dp["throughput_tokens_per_s"] == pytest.approx(4 * tp2["throughput_tokens_per_s"], abs=0.05)
    assert main(["estimate", *NODE, "--replicas", "4", "--concurrency", "64"]) == 0
    assert "4 replicas of 2x NVIDIA H100" in capsys.readouterr().out


def test_estimate_rejects_replicas_that_do_not_split_the_gpus(capsys):
    code = main(["estimate", *NODE, "--replicas", "3"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("planner: error: --replicas: ") and "3 replicas do not divide the 8 GPUs" in err
    assert "\n" not in err
    code = main(["estimate", *NODE, "--replicas", "0"])  # out of range: refused while parsing, as invalid input
    err = capsys.readouterr().err.strip()
    assert code == 2 and "argument --replicas: '0' is out of range" in err and "\n" not in err


SPEC = """\
version: 1
deployments:
  - name: chat
    model: llama-3.1-8b
    format: fp8
    runtime: vllm
    concurrency: 64
    target: {{device: h100-sxm, count: 8, replicas: {replicas}}}
"""


def test_check_spec_replicas(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(SPEC.format(replicas=4))
    assert main(["check", str(good), "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)["results"][0]["plan"]
    assert plan["parallel"]["data_parallel"] == 4 and plan["parallel_layout"] == "tp2 × pp1 × dp4"
    for bad in ("3", "0", "'4'"):
        f = tmp_path / "bad.yaml"
        f.write_text(SPEC.format(replicas=bad))
        code = main(["check", str(f)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith(f"planner: error: {f}:8: deployments[0].target.replicas: "), err
        assert len(err.splitlines()) == 1
