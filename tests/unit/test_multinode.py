"""Multi-node plans: layouts, per-GPU memory, fabric costs, smallest layout, and launch flags the engines document."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from planner.errors import NotFoundError
from planner.cost.evaluate import evaluate
from planner.cost.model import ModelCost
from planner.formats import get_format
from planner.hardware.catalog import get_fabric, load_fabrics
from planner.plan import Plan, target_from_catalog
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
    _assert_documented(lines, _flags)


def test_k8s_manifest_is_valid_yaml(catalog, registry, fabrics):
    import yaml

    from planner.launch import k8s_manifest

    mc = ModelCost(registry.get("llama-3.1-405b"))
    t = target_from_catalog(catalog.get("h100-sxm"), 8, nodes=2, fabric=fabrics["ib-ndr"])
    p = evaluate(mc, get_format("fp8"), get_runtime("vllm"), t, context=8192)
    doc = yaml.safe_load(k8s_manifest(p, mc.spec, get_format("fp8"), t))
    assert doc["kind"] == "LeaderWorkerSet" and doc["spec"]["leaderWorkerTemplate"]["size"] == 2
    assert re.search(r"--pipeline-parallel-size 2", doc["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]["command"][2])


# --- data-parallel replicas ------------------------------------------------------------------------------------------

def _dp_target(catalog, fabrics, replicas: int, count: int = 4, per_node: int = 2, device: str = "h100-sxm"):
    """`replicas` copies of a `count`-GPU layout, `per_node` copies to a node (as sub_layouts builds them)."""
    import dataclasses

    t = target_from_catalog(catalog.get(device), count)
    return dataclasses.replace(t, replicas=replicas, replicas_per_node=per_node, fabric=fabrics["ib-ndr"])


def test_replicas_keep_one_replicas_memory_per_gpu_and_scale_throughput(catalog, registry, fabrics):
    mc = ModelCost(registry.get("llama-3.1-70b"))
    fmt, rt = get_format("fp8"), get_runtime("vllm")
    dp = evaluate(mc, fmt, rt, _dp_target(catalog, fabrics, 4), context=8192, concurrency=64)
    one = evaluate(mc, fmt, rt, target_from_catalog(catalog.get("h100-sxm"), 4), context=8192, concurrency=16)
    assert dp.fits and dp.parallel["data_parallel"] == 4 and dp.parallel["tensor_parallel"] == 4
    assert dp.parallel_layout == "tp4 × pp1 × dp4" and len(dp.per_device) == 16
    # every GPU holds what a GPU of one replica serving its 64 / 4 sequences holds
    assert {d.total_bytes for d in dp.per_device} == {d.total_bytes for d in one.per_device}
    assert dp.total_memory_bytes == 4 * one.total_memory_bytes
    assert dp.throughput_tokens_per_s == pytest.approx(4 * one.throughput_tokens_per_s)
    assert dp.decode_tokens_per_s == pytest.approx(one.decode_tokens_per_s)
    d = dp.as_dict()
    assert d["parallel"]["data_parallel"] == 4 and d["parallel_layout"] == "tp4 × pp1 × dp4"


def test_fewer_sequences_than_replicas_use_one_replica_each(catalog, registry, fabrics):
    mc = ModelCost(registry.get("llama-3.1-8b"))
    t = _dp_target(catalog, fabrics, 4, count=1, per_node=4)
    p = evaluate(mc, get_format("fp8"), get_runtime("vllm"), t, context=4096, concurrency=2)
    assert p.fits and p.throughput_tokens_per_s == pytest.approx(2 * p.decode_tokens_per_s)


def test_recommend_takes_the_smallest_layout_and_prefer_speed_the_fastest(catalog, registry, fabrics):
    mc = ModelCost(registry.get("llama-3.1-70b"))
    t = target_from_catalog(catalog.get("h100-sxm"), 8, nodes=2, fabric=fabrics["ib-ndr"])
    kw = dict(context=8192, formats=[get_format("fp8")], runtimes=[get_runtime("vllm")])
    single = recommend(mc, t, concurrency=1, **kw).best
    assert single.parallel["data_parallel"] == 1  # one sequence: replicas would idle
    busy = recommend(mc, t, concurrency=64, **kw)

    def gpus(p: Plan) -> int:
        return p.parallel["gpus_per_node"] * p.parallel["nodes"] * p.parallel.get("data_parallel", 1)

    fitting = [p for p in busy.plans if p.fits and p.format_id == "fp8"]
    assert {p.parallel.get("data_parallel", 1) for p in fitting} > {1}  # replicas were costed
    assert gpus(busy.best) == min(gpus(p) for p in fitting) < 16
    fast = recommend(mc, t, concurrency=64, prefer="speed", **kw).best
    assert fast.throughput_tokens_per_s == max(p.throughput_tokens_per_s for p in fitting)
    assert fast.throughput_tokens_per_s > busy.best.throughput_tokens_per_s


def _assert_documented(lines: list[str], parse) -> None:  # type: ignore[no-untyped-def]
    """Every program and flag in the launch lines is in the documented engine-flag data."""
    for line in lines:
        prog, flags = parse(line)
        if prog == "export":
            continue
        assert prog in FLAGS, prog
        unknown = [f for f in flags if f.split("=")[0] not in FLAGS[prog]["flags"]]
        assert not unknown, f"{prog}: {unknown}"


def _replica_flags(line: str) -> tuple[str, list[str]]:
    """Like _flags, for replica scripts: drops a leading CUDA_VISIBLE_DEVICES=... assignment."""
    head, cmd = line.split(":", 1)
    cmd = re.sub(r"^\s*CUDA_VISIBLE_DEVICES=\S+\s+", "", cmd)
    return _flags(f"{head}: {cmd}")


@pytest.mark.parametrize("runtime,fmt,per_node,replicas", [
    ("vllm", "fp8", 2, 2), ("vllm", "fp8", 2, 4), ("sglang", "fp8", 2, 2), ("sglang", "fp8", 2, 4),
    ("tensorrt-llm", "fp8", 2, 4), ("llama.cpp", "Q4_K_M", 2, 4)])
def test_replica_launch_uses_documented_flags(catalog, registry, fabrics, runtime, fmt, per_node, replicas):
    mc = ModelCost(registry.get("llama-3.1-70b"))
    p = evaluate(mc, get_format(fmt), get_runtime(runtime), _dp_target(catalog, fabrics, replicas, per_node=per_node),
                 context=8192, concurrency=32)
    assert p.runs, p.reason
    lines = [l for l in p.launch.splitlines() if l.strip()]
    if runtime == "vllm":
        # --max-num-seqs applies per DP rank (vLLM docs/serving/data_parallel_deployment.md)
        assert f"--data-parallel-size {replicas}" in p.launch and f"--max-num-seqs {32 // replicas}" in p.launch
    if len(lines) == 1:  # one node: a single command
        lines = [f"# node 0: {lines[0]}"]
    balancers = [l for l in lines if l.startswith("# load balancer")]
    if runtime in ("tensorrt-llm", "llama.cpp"):  # independent servers behind a load balancer, one per replica
        assert len(balancers) == 1 and balancers[0].count("http://") == replicas
    _assert_documented([line for line in lines if line not in balancers], _replica_flags)


def test_replicas_of_a_multinode_layout_get_their_own_nodes(catalog, registry, fabrics):
    import dataclasses

    mc = ModelCost(registry.get("llama-3.1-405b"))
    t = dataclasses.replace(target_from_catalog(catalog.get("h100-sxm"), 8, nodes=2, fabric=fabrics["ib-ndr"]), replicas=2)
    p = evaluate(mc, get_format("bf16"), get_runtime("vllm"), t, context=8192, concurrency=16)
    assert p.fits and p.parallel_layout == "tp8 × pp2 × dp2" and len(p.per_device) == 32
    assert "# node 3: ray start --address <node2-ip>:6379" in p.launch
    assert "http://<node0-ip>:8000 http://<node2-ip>:8000" in p.launch
    from planner.launch import k8s_manifest
    import yaml

    assert yaml.safe_load(k8s_manifest(p, mc.spec, get_format("bf16"), t))["spec"]["replicas"] == 2


def test_runtimes_without_replica_launch_refuse(catalog, registry, fabrics):
    mc = ModelCost(registry.get("llama-3.1-8b"))
    p = evaluate(mc, get_format("gptq-int4"), get_runtime("exllamav2"), _dp_target(catalog, fabrics, 2, count=1),
                 context=4096, concurrency=4)
    assert not p.runs and "data parallel" in p.reason


def test_recommend_json_shows_replicas_and_layouts(capsys):
    from planner.cli import main

    code = main(["recommend", "--model", "llama-3.1-70b", "--device", "h100-sxm", "--count", "8", "--nodes", "2",
                 "--format", "fp8", "--runtime", "vllm", "--concurrency", "64", "--prefer", "speed", "--json"])
    d = json.loads(capsys.readouterr().out)
    best = d["recommended"]
    assert code == 0 and best["parallel"]["data_parallel"] > 1
    assert best["parallel_layout"].endswith(f"dp{best['parallel']['data_parallel']}")
    assert "--data-parallel-size" in best["launch"]
    layouts = [row["parallel_layout"] for row in d["layouts"]]
    assert best["parallel_layout"] in layouts and len(layouts) > 1  # the runners-up are listed too
