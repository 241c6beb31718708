"""Placement: where a plan's bytes go on the target's devices, and the links between them.

Batching servers (vLLM, SGLang, TensorRT-LLM, TGI) shard weights and KV heads over the GPUs of a node (tensor
parallel), across nodes as pipeline stages or, for MoE models, with experts sharded over every GPU; llama.cpp-style
runtimes place whole layers per device in proportion to free memory and offload the rest to system RAM. Data
parallel replicas multiply one copy's memory. Memory is never pooled across devices: each one is checked on its own.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from planner.cost.memory import (
    LAYER_ENGINE_ACTIVATION_BYTES, engine_activation_bytes, kv_cache_bytes, llamacpp_compute_buffer_bytes,
    runtime_overhead_bytes,
)
from planner.plan import GIB, MemoryBreakdown

if TYPE_CHECKING:
    from planner.cost.model import FormatLayout, ModelCost
    from planner.plan import Plan, Target
    from planner.runtimes import Runtime

NDR_FALLBACK = (5e-6, 50e9)  # InfiniBand NDR latency and per-port bandwidth when no fabric is named

# Runtimes whose replicas the launch plan can start: vLLM and SGLang have a data-parallel mode (vLLM
# docs/serving/data_parallel_deployment.md, SGLang docs/advanced_features/dp_dpa_router_guide.md); TensorRT-LLM and
# llama.cpp replicas run as independent servers behind a load balancer.
DATA_PARALLEL_RUNTIMES = ("vllm", "sglang", "tensorrt-llm", "llama.cpp")


def replicate(plan: Plan, runtime: Runtime, target: Target, concurrency: int) -> None:
    """Data parallel: turn `plan` (one copy of the layout at its share of the sequences) into `target.replicas`
    copies. Per-GPU memory stays one copy's; totals and throughput count every copy."""
    dp = target.replicas
    plan.target_label, plan.concurrency = target.label, concurrency
    if plan.runs and runtime.id not in DATA_PARALLEL_RUNTIMES:
        plan.runs, plan.reason = False, (f"{runtime.name} has no documented way to serve replicas; use "
                                         "vLLM, SGLang, TensorRT-LLM or llama.cpp for data parallel")
    if not plan.runs:
        return
    plan.parallel = {**(plan.parallel or {"nodes": target.nodes, "gpus_per_node": target.count}), "data_parallel": dp,
                     "replicas_per_node": target.replicas_per_node}
    plan.per_device = [dataclasses.replace(d, device=f"{d.device}/r{r}") for r in range(dp) for d in plan.per_device]
    plan.total_memory_bytes *= dp
    plan.usable_memory_bytes *= dp
    plan.weights_bytes *= dp
    plan.kv_cache_bytes *= dp
    plan.host_bytes *= dp


MULTI_NODE_ENGINES = ("vllm", "sglang", "trtllm")  # engines with documented multi-node launchers


def place_tensor_parallel(plan: Plan, mc: ModelCost, lay: FormatLayout, runtime: Runtime, target: Target, kv: str,
                           mla_aware: bool) -> None:
    """Batching servers: tensor parallel over the GPUs of a node; across nodes, pipeline stages (tp x pp), or
    for MoE models with expert parallelism, experts sharded over every GPU and attention replicated per node."""
    m = mc.spec
    tp, nodes = target.count, target.nodes
    if nodes > 1 and runtime.engine not in MULTI_NODE_ENGINES:
        plan.runs, plan.reason = False, f"{runtime.name} has no multi-node launcher; use vLLM, SGLang or TensorRT-LLM"
        return
    if tp > 1 and (m.num_heads % tp or (m.moe is None and m.intermediate_size % tp)):
        plan.runs, plan.reason = False, f"tensor parallel {tp} must divide the {m.num_heads} attention heads"
        return
    ep = tp * nodes if (target.expert_parallel and m.moe is not None and nodes > 1) else 1
    pp = 1 if ep > 1 or nodes == 1 else nodes
    if pp > m.num_layers:
        plan.runs, plan.reason = False, f"{pp} pipeline stages exceed the model's {m.num_layers} layers"
        return
    plan.parallel = {"tensor_parallel": tp, "pipeline_parallel": pp, "expert_parallel": ep, "data_parallel": 1,
                     "nodes": nodes, "gpus_per_node": tp}
    if nodes > 1:
        plan.layout = f"tp{tp}-ep{ep}" if ep > 1 else f"tp{tp}-pp{pp}"
    else:
        plan.layout = "tensor-parallel" if tp > 1 else ("cpu" if target.is_cpu else "single")
    total = lay.sum_layers + lay.embed_bytes + lay.head_bytes
    if ep > 1:
        experts = mc.memo(("expert_bytes", plan.format_id), lambda: expert_bytes(mc, lay))
        weights = math.ceil((total - experts) / tp + experts / ep)
    else:
        weights = math.ceil(total / (tp * pp))
    kvb = mc.memo(("tpkv", plan.context, kv, plan.concurrency, mla_aware, tp), lambda: kv_cache_bytes(
        m, plan.context, kv, plan.concurrency, mla_aware=mla_aware, kv_heads_divisor=tp))
    if m.mla is not None and tp > 1:
        kvb = plan.kv_cache_bytes  # the MLA latent is not split by heads: every GPU holds it
    kvb = math.ceil(kvb / pp)  # each pipeline stage caches its own layers
    act = mc.memo(("act", plan.concurrency), lambda: engine_activation_bytes(m, max_seqs=max(plan.concurrency, 1))) // tp
    over = runtime_overhead_bytes(runtime, target)
    for node in range(nodes):
        for i in range(tp):
            usable = target.usable_bytes[i] if i < len(target.usable_bytes) else target.usable_bytes[-1]
            if runtime.gpu_memory_fraction and not target.is_cpu:
                usable = min(usable, int(runtime.gpu_memory_fraction * target.device.memory_bytes))
            name = f"{target.device.id}[{node}.{i}]" if nodes > 1 else f"{target.device.id}[{i}]"
            plan.per_device.append(MemoryBreakdown(name, weights, kvb, act, over, usable))
    if m.num_kv_heads < tp and m.mla is None:
        plan.warnings.append(f"{m.num_kv_heads} KV heads over {tp} GPUs: KV heads are replicated")
    if nodes > 1 and target.fabric is None:
        plan.warnings.append("no inter-node fabric given (--fabric): assuming InfiniBand NDR figures")


def expert_bytes(mc: ModelCost, lay: FormatLayout) -> int:
    """Bytes of routed-expert tensors in this layout's format (what expert parallelism shards)."""
    fmt_share = lay.stored_bytes / max(1, sum(t.n_elements for t in mc.tensors))
    return int(sum(t.n_elements for t in mc.tensors if t.role.endswith("_exps")) * fmt_share)


def place_layers(plan: Plan, mc: ModelCost, lay: FormatLayout, runtime: Runtime, target: Target, kv: str,
                  mla_aware: bool) -> None:
    """llama.cpp-style placement: whole layers per device in proportion to free memory, the rest offloaded."""
    m = mc.spec
    n = m.num_layers
    embed_on_host = "token_embd.weight" in runtime.weights_on_host and not target.is_cpu
    if target.nodes > 1 and runtime.engine != "llamacpp":
        plan.runs, plan.reason = False, f"{runtime.name} does not run across nodes"
        return
    devices = 1 if runtime.multi_gpu == "none" else target.count * target.nodes
    if target.nodes > 1:
        plan.parallel = {"tensor_parallel": 1, "pipeline_parallel": devices, "expert_parallel": 1, "data_parallel": 1,
                         "nodes": target.nodes, "gpus_per_node": target.count, "rpc": True}
    if runtime.multi_gpu == "none" and target.count > 1:
        plan.warnings.append(f"{runtime.name} uses one device; the other {target.count - 1} stay idle")
    kv_cum = mc.kv_prefix(plan.context, kv, plan.concurrency, mla_aware)
    cum = lay.cum_layers
    if runtime.engine == "llamacpp":
        compute = mc.memo(("cbuf", plan.context), lambda: llamacpp_compute_buffer_bytes(m, plan.context))
    else:
        compute = LAYER_ENGINE_ACTIVATION_BYTES
    over = runtime_overhead_bytes(runtime, target)
    head = lay.head_bytes + (0 if embed_on_host else lay.embed_bytes)
    if devices == 1 and not target.is_cpu:
        usable0 = target.usable_bytes[0] if target.usable_bytes else 0
        if lay.sum_layers + kv_cum[-1] <= usable0 - compute - over - head:
            # the common case, without the split machinery: every layer and the head on the one device
            plan.gpu_layers, plan.layout = n, "single"
            plan.per_device.append(MemoryBreakdown(target.device.id, lay.sum_layers + head, kv_cum[-1], compute, over, usable0))
            plan.host_bytes = lay.embed_bytes if embed_on_host else 0
            return
    kv_layer = mc.kv_per_layer(plan.context, kv, plan.concurrency, mla_aware)
    per_node = target.usable_bytes or (0,)
    usable = [per_node[i % target.count] if i % target.count < len(per_node) else per_node[-1] for i in range(devices)]
    capacity = [u - compute - over - (head if i == devices - 1 else 0) for i, u in enumerate(usable)]
    # Split layers in proportion to capacity (llama.cpp's default tensor split follows free memory).
    total_cap = sum(max(c, 0) for c in capacity)
    assigned: list[range] = [range(0) for _ in range(devices)]
    kv_total = kv_cum[-1]
    need_total = lay.sum_layers + kv_total
    if target.is_cpu or (devices == 1 and need_total <= capacity[0]):
        assigned[0] = range(n)  # the common case: everything fits on one device
    elif devices == 1:
        # Offload: the most leading layers whose weights and KV fit (binary search on the prefix sums).
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if cum[mid] + kv_cum[mid] <= capacity[0]:
                lo = mid
            else:
                hi = mid - 1
        assigned[0] = range(lo)
    elif need_total <= total_cap and devices > 1:
        share = [max(c, 0) / total_cap for c in capacity]
        bounds, acc = [], 0.0
        for s in share:
            acc += s
            bounds.append(round(acc * n))
        start = 0
        for d, end in enumerate(bounds):
            assigned[d] = range(start, end)
            start = end
    else:
        d, used, start = 0, 0, 0
        for i in range(n):
            need_i = lay.layer_bytes[i] + kv_layer[i]
            while d < devices and used + need_i > capacity[d]:
                assigned[d] = range(start, i)
                d, used, start = d + 1, 0, i
            if d >= devices:
                break
            used += need_i
        else:
            assigned[d] = range(start, n)
    on_gpu = sum(len(a) for a in assigned)
    offloaded = range(on_gpu, n)
    plan.gpu_layers = on_gpu if not target.is_cpu else 0
    if target.is_cpu:
        plan.layout = "cpu"
        w = lay.sum_layers + lay.embed_bytes + lay.head_bytes
        plan.per_device.append(MemoryBreakdown(target.device.id, w, kv_total, compute, 0, target.usable_bytes[0]))
        return
    for d in range(devices):
        layers = assigned[d]
        w = cum[layers.stop] - cum[layers.start] if layers else 0
        kvb = kv_cum[layers.stop] - kv_cum[layers.start] if layers else 0
        w += head if d == devices - 1 and not offloaded else 0
        plan.per_device.append(MemoryBreakdown(f"{target.device.id}[{d}]" if devices > 1 else target.device.id,
                                               w, kvb, compute, over, usable[d]))
    plan.layout = ("rpc-layer-split" if target.nodes > 1 else "layer-split") if devices > 1 else "single"
    host = (lay.embed_bytes if embed_on_host else 0)
    if offloaded:
        if runtime.engine != "llamacpp":
            plan.reason = (f"needs {(need_total + head) / GIB:.1f} GiB for weights and KV; {runtime.name} cannot offload layers "
                           f"to system RAM here")
            return
        plan.layout = "partial-offload"
        host += (cum[n] - cum[on_gpu]) + (kv_cum[n] - kv_cum[on_gpu]) + lay.head_bytes
        # the output head follows the last layer to the host when that layer is offloaded
        plan.per_device[-1] = MemoryBreakdown(plan.per_device[-1].device, plan.per_device[-1].weights_bytes - 0,
                                              plan.per_device[-1].kv_cache_bytes, compute, over, usable[-1])
        plan.warnings.append(f"only {on_gpu} of {n} layers fit on the GPU; {len(offloaded)} run from system RAM (slow)")
        if target.host_ram_bytes is None:
            plan.reason = (f"only {on_gpu} of {n} layers fit in GPU memory; partial offload needs the host's RAM "
                           f"(give --ram or plan for the local machine)")
        elif host > target.host_ram_bytes:
            plan.reason = f"needs {host / GIB:.1f} GiB of system RAM for offloaded layers, {target.host_ram_bytes / GIB:.1f} GiB available"
    plan.host_bytes = host


def fabric_link(target: Target) -> tuple[float, float]:
    """(latency seconds, bandwidth bytes/s) of the inter-node fabric."""
    if target.fabric is None:
        return NDR_FALLBACK
    return target.fabric.latency_us * 1e-6, target.fabric.link_gb_s * 1e9
