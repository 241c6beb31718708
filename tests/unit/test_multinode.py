"""Multi-node plans: layouts, per-GPU memory, fabric costs, smallest layout, and launch flags the engines document."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from planner.errors import NotFoundError
from planner.evaluate import ModelCost, evaluate
from planner.formats import get_format
from planner.hardware.catalog import get_fabric, load_fabrics
from planner.plan import target_from_catalog
from planner.recommend import recommend
from planner.runtimes import get_runtime

FLAGS = json.loads((Path(__file__).resolve().parents[2] / "planner" / "data" / "engine_flags.json").read_text())


@pytest.fixture(scope="module")
def fabrics():
    return load_fabrics()


def test_fabric_catalog(fabrics):
    assert get_fabric("infiniband", fabrics).id == "ib-ndr"
    assert fabrics["ib-ndr"].link_gb_s == 50  # 400 Gb/s per port
    with pytest.raises(NotFoundError) as e:
        get_fabric("ib-nrd", fabrics)
    assert "ib-ndr" in e.value.candidates


def test_405b_bf16_needs_two_nodes_and_memory_is_per_gpu(catalog, registry, fabrics):
    mc = ModelCost(registry.get("llama-3.1-405b"))
    dev = catalog.get("h100-sxm")
    one = evaluate(mc, get_format("bf16"), get_runtime("vllm"), target_from_catalog(dev, 8), context=8192)
    two = evaluate(mc, get_format("bf16"), get_runtime("vllm"),
                   target_from_catalog(dev, 8, nodes=2, fabric=fabrics["ib-ndr"]), context=8192)
    assert not one.fits and two.fits
    assert two.parallel["tensor_parallel"] == 8 and two.parallel["pipeline_parallel"] == 2
    assert len(two.per_device) == 16
    for d in two.per_device:
        assert d.total_bytes <= d.usable_bytes <= dev.memory_bytes
    assert two.per_device[0].weights_bytes == pytest.approx(two.weights_bytes / 16, rel=0.01)


def test_expert_parallel_shards_experts_over_all_gpus(catalog, registry, fabrics):
    mc = ModelCost(registry.get("deepseek-v3"))
    dev = catalog.get("h200")
    pp = evaluate(mc, get_format("fp8"), get_runtime("vllm"), target_from_catalog(dev, 8, nodes=2, fabric=fabrics["ib-ndr"]),
                  context=8192)
    ep = evaluate(mc, get_format("fp8"), get_runtime("vllm"),
                  target_from_catalog(dev, 8, nodes=2, fabric=fabrics["ib-ndr"], expert_parallel=True), context=8192)
    assert ep.parallel["expert_parallel"] == 16 and ep.layout == "tp8-ep16"
    # dense weights replicate per node under EP, so each GPU holds a bit more than a pure 16-way split
    assert ep.per_device[0].weights_bytes > pp.per_device[0].weights_bytes
    assert ep.per_device[0].weights_bytes < 1.3 * pp.per_device[0].weights_bytes


def test_slower_fabric_is_slower(catalog, registry, fabrics):
    mc = ModelCost(registry.get("llama-3.1-405b"))
    dev = catalog.get("rtx-4090")
    fast = evaluate(mc, get_format("Q4_K_M"), get_runtime("llama.cpp"),
                    target_from_catalog(dev, 4, nodes=4, fabric=fabrics["eth-100g"]), context=4096)
    slow = evaluate(mc, get_format("Q4_K_M"), get_runtime("llama.cpp"),
                    target_from_catalog(dev, 4, nodes=4, fabric=fabrics["eth-1g"]), context=4096)
    assert fast.layout == "rpc-layer-split" and fast.fits
    assert slow.decode_tokens_per_s < fast.decode_tokens_per_s
    assert slow.prefill_tokens_per_s < fast.prefill_tokens_per_s


def test_engines_without_multinode_support_refuse(catalog, registry, fabrics):
    mc = ModelCost(registry.get("llama-3.1-70b"))
    t = target_from_catalog(catalog.get("rtx-4090"), 2, nodes=2, fabric=fabrics["eth-10g"])
    for rt in ("exllamav2", "mlx", "tgi"):
        p = evaluate(mc, get_format("gptq-int4" if rt != "mlx" else "mlx-4bit"), get_runtime(rt), t, context=4096)
        assert not p.runs


def test_recommend_picks_the_smallest_layout(catalog, registry, fabrics):
    mc = ModelCost(registry.get("llama-3.1-70b"))
    t = target_from_catalog(catalog.get("h100-sxm"), 8, nodes=4, fabric=fabrics["ib-ndr"])
    rec = recommend(mc, t, context=8192, formats=[get_format("fp8")], runtimes=[get_runtime("vllm")])
    assert rec.best is not None and rec.best.fits
    assert rec.best.parallel["nodes"] == 1 and rec.best.device_count == 2  # 70B FP8 fits 2 of the 32 GPUs


def _flags(line: str) -> tuple[str, list[str]]:
    """The program (by the documented-flags table's names) and the flags in one shell command."""
    words = shlex.split(line.split(":", 1)[1].strip())
    if words[0] == "export":
        return "export", []
    if words[0] == "mpirun":
        mp = [w for w in words[: words.index("trtllm-llmapi-launch")] if w.startswith("-")]
        serve = [w for w in words[words.index("trtllm-serve"):] if w.startswith("-")]
        assert set(mp) <= set(FLAGS["mpirun"]["flags"]), mp
        return "trtllm-serve", serve
    n = 3 if words[0] == "python" else (2 if words[0] in ("vllm", "ray") else 1)
    return " ".join(words[:n]), [w for w in words[n:] if w.startswith("-")]


@pytest.mark.parametrize("runtime,fmt,ep", [("vllm", "fp8", False), ("vllm", "fp8", True), ("sglang", "fp8", False),
                                            ("tensorrt-llm", "fp8", False), ("llama.cpp", "Q4_K_M", False)])
def test_generated_commands_use_documented_flags(catalog, registry, fabrics, runtime, fmt, ep):
    mc = ModelCost(registry.get("deepseek-v3"))
    t = target_from_catalog(catalog.get("h200"), 8, nodes=2, fabric=fabrics["ib-ndr"], expert_parallel=ep)
    p = evaluate(mc, get_format(fmt), get_runtime(runtime), t, context=8192)
    assert p.runs, p.reason
    lines = [l for l in p.launch.splitlines() if l.strip()]
    assert any("node 1" in l for l in lines) or runtime == "tensorrt-llm"
    for line in lines:
        prog, flags = _flags(line)
        if prog == "export":
            continue
        assert prog in FLAGS, prog
        unknown = [f for f in flags if f.split("=")[0] not in FLAGS[prog]["flags"]]
        assert not unknown, f"{prog}: {unknown}"


def test_k8s_manifest_is_valid_yaml(catalog, registry, fabrics):
    import yaml

    from planner.launch import k8s_manifest

    mc = ModelCost(registry.get("llama-3.1-405b"))
    t = target_from_catalog(catalog.get("h100-sxm"), 8, nodes=2, fabric=fabrics["ib-ndr"])
    p = evaluate(mc, get_format("fp8"), get_runtime("vllm"), t, context=8192)
    doc = yaml.safe_load(k8s_manifest(p, mc.spec, get_format("fp8"), t))
    assert doc["kind"] == "LeaderWorkerSet" and doc["spec"]["leaderWorkerTemplate"]["size"] == 2
    assert re.search(r"--pipeline-parallel-size 2", doc["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]["command"][2])
