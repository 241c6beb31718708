"""MoE expert offload in llama.cpp: every layer on the GPU except the routed experts of the first N layers, which
stay in system RAM (`llama-server -ngl 999 --n-cpu-moe N`).

Mechanism (llama.cpp tools/server/README.md @ 25d5b0c53f9a146f3d7a99a18610d9d623b5041e: "`--n-cpu-moe, -ncmoe N`:
keep the Mixture of Experts (MoE) weights of the first N layers in the CPU"; common/arg.cpp turns it into one
`-ot blk\\.i\\.ffn_(up|down|gate)_exps=CPU` buffer override per layer i < N):

- memory: the GPU holds attention, norms, routers, shared experts, the output head, the whole KV cache and the
  routed experts of layers N..n-1; system RAM holds the routed experts of layers 0..N-1 (and the token embedding,
  which llama.cpp always keeps on the host).
- decode: a token reads the resident part at GPU bandwidth and only its *active* experts (top-k of E) of the first N
  layers at host RAM bandwidth, computed by the CPU; each such layer costs a GPU->CPU->GPU hand-off of the hidden state.
- prefill: ggml's CUDA backend runs an op on the GPU even when its weights live in host memory once the op's batch
  reaches 32 tokens (ggml/src/ggml-cuda/ggml-cuda.cu, ggml_backend_cuda_device_offload_op: `min_batch_size = 32`;
  MUL_MAT_ID's batch is its token count; `--no-op-offload` turns it off). The scheduler then copies each offloaded
  expert tensor, all E experts of it, over PCIe once per micro-batch (-ub, default 512), so a big prompt costs
  N layers' expert bytes / PCIe bandwidth per micro-batch on top of the GPU's compute. Below 32 tokens the CPU
  multiplies the experts itself. The same rule applies to decode steps of 32 or more concurrent sequences.

Which of this and the plain layer split (-ngl K) is faster is decided per plan by predicting both (evaluate.py).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from planner.cost.memory import DEQUANT_BYTES, llamacpp_compute_buffer_bytes, runtime_overhead_bytes
from planner.cost.speed import (
    CPU_DEFAULT_CORES, CPU_FLOPS_PER_CORE, UBATCH, efficiency, pcie_gb_s, rates,
)
from planner.formats import GGMLType
from planner.models.inventory import active_fraction
from planner.plan import GIB, MemoryBreakdown

if TYPE_CHECKING:
    from planner.cost.model import FormatLayout, ModelCost
    from planner.formats import WeightFormat
    from planner.plan import Plan, Target
    from planner.runtimes import Runtime

# Runtimes whose launch command can place routed experts in RAM: llama-server's --n-cpu-moe (README above).
# Ollama, LM Studio and KoboldCpp expose other knobs (or none) for it, so they keep the plain layer split.
EXPERT_OFFLOAD_RUNTIMES = ("llama.cpp",)
# ggml's op-offload threshold (ggml-cuda.cu, ggml_backend_cuda_device_offload_op): a matmul of host-resident weights
# with at least this many tokens runs on the GPU after the weights are copied over PCIe.
OP_OFFLOAD_MIN_BATCH = 32
# Per offloaded layer per decode step: the hidden state copied GPU->CPU and the experts' output back, each a small
# cudaMemcpy with a stream synchronisation. Assumed (about 10 us each way). The CPU's own per-layer cost (thread-pool
# barriers between the expert ops) is the calibrated llama.cpp CPU layer overhead of planner.cost.speed; both are
# checked against the published rows in benchmarks/moe_offload.py.
EXPERT_HOP_US = 20.0


@dataclasses.dataclass(frozen=True)
class ExpertBytes:
    """Routed-expert bytes per layer in one format: resident, and what one token reads (k of E experts)."""

    resident: tuple[int, ...]
    active: tuple[float, ...]


def expert_bytes_per_layer(mc: ModelCost, fmt: WeightFormat, dequant_to: str | None = None) -> ExpertBytes:
    """Bytes of each layer's routed-expert tensors (`*_exps`, the tensors --n-cpu-moe moves) in `fmt` (memoized)."""

    def compute() -> ExpertBytes:
        m = mc.spec
        res, act = [0] * m.num_layers, [0.0] * m.num_layers
        for a in fmt.assignments(m, mc.tensors):
            t = a.tensor
            if t.layer is None or not t.role.endswith("_exps"):
                continue
            nbytes = a.nbytes
            if dequant_to and isinstance(a.encoding, GGMLType) and a.encoding.quantized:
                nbytes = t.n_elements * DEQUANT_BYTES[dequant_to]
            res[t.layer] += nbytes
            act[t.layer] += nbytes * active_fraction(m, t)
        return ExpertBytes(tuple(res), tuple(act))

    return mc.memo(("expert_bytes_per_layer", fmt.id, dequant_to), compute)


def can_offload_experts(mc: ModelCost, runtime: Runtime, target: Target) -> bool:
    """Whether expert offload is a placement to weigh: a MoE model, llama-server, one GPU (not a CPU-only target)."""
    return (mc.spec.moe is not None and runtime.id in EXPERT_OFFLOAD_RUNTIMES and not target.is_cpu
            and target.count * target.nodes == 1 and target.replicas == 1)


def place_expert_offload(plan: Plan, mc: ModelCost, lay: FormatLayout, fmt: WeightFormat, runtime: Runtime,
                         target: Target, kv: str, mla_aware: bool, dequant_to: str | None = None,
                         cpu_layers: int | None = None) -> bool:
    """Fill `plan` as an expert-offload placement with the fewest --n-cpu-moe layers that fit the GPU (or exactly
    `cpu_layers` of them, fit or not: what a given command line does); False (plan untouched) when even every layer's
    experts in RAM leaves too little GPU memory, or no layer needs to move."""
    m = mc.spec
    n = m.num_layers
    exps = expert_bytes_per_layer(mc, fmt, dequant_to)
    kv_total = mc.kv_prefix(plan.context, kv, plan.concurrency, mla_aware)[-1]
    compute = mc.memo(("cbuf", plan.context), lambda: llamacpp_compute_buffer_bytes(m, plan.context))
    over = runtime_overhead_bytes(runtime, target)
    usable = target.usable_bytes[0] if target.usable_bytes else 0
    embed_on_host = "token_embd.weight" in runtime.weights_on_host
    head = lay.head_bytes + (0 if embed_on_host else lay.embed_bytes)
    room = usable - compute - over - head - kv_total
    if cpu_layers is not None:
        cpu_layers = min(cpu_layers, n)
        gpu_weights = lay.sum_layers - sum(exps.resident[:cpu_layers])
    else:
        gpu_weights, cpu_layers = lay.sum_layers, 0
        # --n-cpu-moe N moves the first N layers' experts: take layers from the front until the rest fits.
        while gpu_weights > room and cpu_layers < n:
            gpu_weights -= exps.resident[cpu_layers]
            cpu_layers += 1
        if cpu_layers == 0 or gpu_weights > room:
            return False
    if sum(exps.resident[:cpu_layers]) == 0:
        return False
    ram_experts = sum(exps.resident[:cpu_layers])
    plan.layout, plan.gpu_layers, plan.cpu_moe_layers = "expert-offload", n, cpu_layers
    plan.per_device = [MemoryBreakdown(target.device.id, gpu_weights + head, kv_total, compute, over, usable)]
    plan.host_bytes = ram_experts + (lay.embed_bytes if embed_on_host else 0)
    plan.reason = ""
    plan.warnings = [w for w in plan.warnings if "run from system RAM" not in w]
    plan.warnings.append(f"routed experts of {cpu_layers} of {n} layers run from system RAM "
                         f"({ram_experts / GIB:.1f} GiB, --n-cpu-moe {cpu_layers}); everything else is on the GPU")
    if target.host_ram_bytes is None:
        plan.reason = (f"the routed experts of {cpu_layers} layers need the host's RAM "
                       f"(give --ram or plan for the local machine)")
    elif plan.host_bytes > target.host_ram_bytes:
        plan.reason = (f"needs {plan.host_bytes / GIB:.1f} GiB of system RAM for offloaded experts, "
                       f"{target.host_ram_bytes / GIB:.1f} GiB available")
    return True


def predict_offload_speeds(plan: Plan, mc: ModelCost, lay: FormatLayout, fmt: WeightFormat, runtime: Runtime,
                           target: Target, kv: str, mode: str, calibration: dict | None,
                           dequant_to: str | None = None) -> None:
    """Decode (batch 1, full context, aggregate) and prefill speeds of an expert-offload plan."""
    m = mc.spec
    assert m.moe is not None
    dev = target.device
    n = m.num_layers
    ncpu = plan.cpu_moe_layers or 0
    exps = expert_bytes_per_layer(mc, fmt, dequant_to)
    if calibration is None:  # the table's constants: the same for every plan of this format and device
        key = ("offload_rates", fmt.id, mode, dev.id, target.host_bandwidth_gb_s)
        got = mc.memo(key, lambda: rates(mc, lay, fmt, runtime.engine, dev, target, mode, None))
    else:
        got = rates(mc, lay, fmt, runtime.engine, dev, target, mode, calibration)
    eff, bw, host_bw, peak_raw, kv_fraction, host_gemv = got
    peak = peak_raw * eff.compute
    pcie = pcie_gb_s(dev) * 1e9
    cpu_peak = CPU_DEFAULT_CORES * CPU_FLOPS_PER_CORE * efficiency("llamacpp", "cpu", calibration).compute
    ram_resident = sum(exps.resident[:ncpu])
    ram_active = sum(exps.active[:ncpu])
    k, e = m.moe.experts_per_token, m.moe.num_experts
    # parameters one token multiplies in the RAM-resident experts (k/E of them; 2 FLOPs each)
    ram_params_active = mc.memo(("ram_expert_params", ncpu), lambda: sum(
        t.n_elements * active_fraction(m, t) for t in mc.tensors
        if t.layer is not None and t.layer < ncpu and t.role.endswith("_exps") and t.is_matrix))
    cpu_layer_us = efficiency("llamacpp", "cpu", calibration).layer_overhead_us
    fixed = n * eff.layer_overhead_us * 1e-6 + ncpu * (EXPERT_HOP_US + cpu_layer_us) * 1e-6
    kv_weight = bw / (dev.mem_bandwidth_gb_s * 1e9 * kv_fraction)

    def step_time(position: int, batch: int) -> float:
        act_frac = (1 - (1 - k / e) ** batch) / (k / e) if batch > 1 else 1.0
        gpu_bytes = ((lay.sum_active - ram_active) * act_frac + lay.head_active_bytes
                     + batch * kv_weight * mc.kv_bytes(position, kv, 1, None, mla_aware=True))
        t_gpu = max(gpu_bytes / bw, 2 * (mc.matmul_params_active - ram_params_active) * batch / peak)
        if batch >= OP_OFFLOAD_MIN_BATCH:
            t_ram = ram_resident / pcie  # ggml copies the offloaded expert tensors to the GPU for the step
        else:
            t_ram = ram_active * act_frac / host_bw
            # at batch 1 the CPU's GEMV is bound by its memory or by its cores' unpacking (as speed.py's CPU decode)
            t_ram = max(t_ram, 2 * ram_params_active * batch / (cpu_peak if batch > 1 else host_gemv))
        return t_gpu + t_ram + fixed

    pos = plan.prompt_tokens
    t1 = step_time(pos, 1)
    decode = 1.0 / t1
    full = 1.0 / step_time(plan.context, 1)
    throughput = decode
    if plan.concurrency > 1:
        tb = step_time(pos, plan.concurrency)
        decode, throughput = 1.0 / tb, plan.concurrency / tb
    p = max(plan.prompt_tokens, 1)
    flops = p * (2 * mc.matmul_params_active + mc.attn_flops_per_token(p))
    ubatches = math.ceil(p / UBATCH)
    ub = min(p, UBATCH)
    if ub >= OP_OFFLOAD_MIN_BATCH:
        # every micro-batch brings the RAM-resident experts over PCIe, then the GPU computes everything
        t_ram = ubatches * ram_resident / pcie
        t_compute = flops / peak
    else:
        t_ram = 2 * ram_params_active * p / cpu_peak
        t_compute = (flops - 2 * ram_params_active * p) / peak
    weight_reads = ubatches * (lay.sum_active - ram_active) / bw
    t_prefill = max(t_compute, weight_reads) + t_ram + n * eff.layer_overhead_us * 1e-6 * ubatches
    plan.set_speeds(decode_tokens_per_s=decode, decode_tokens_per_s_full_context=full,
                    throughput_tokens_per_s=throughput, prefill_tokens_per_s=p / t_prefill, ttft_s=t_prefill + t1)
