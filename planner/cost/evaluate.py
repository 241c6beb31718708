"""Evaluate one candidate deployment (model x format x runtime x target x context) into a Plan.

This is the one place sizes and speeds are computed; recommend, estimate, check and the TUI all call it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import math
import os
from dataclasses import dataclass, field
from functools import cached_property

from planner.cost.memory import (
    engine_activation_bytes, gguf_header_bytes, kv_bytes_per_value, kv_cache_bytes, kv_layer_profile, kv_values_held,
    llamacpp_compute_buffer_bytes,
)
from planner.cost.speed import (
    ALLREDUCE_BUS_FRACTION, ALLREDUCE_LATENCY_US, CPU_DEFAULT_CORES, CPU_FLOPS_PER_CORE, FOREIGN_GGUF_FACTOR, KERNEL_BANDWIDTH_FACTOR, KV_READ_FRACTION, KV_READ_FRACTION_DEFAULT,
    cpu_capped_bandwidth, efficiency, kernel_class, prefill_peak_flops,
    unit_capped_bandwidth,
)
from planner.formats import GGMLType, ShapeError, WeightFormat, gguf_main_type
from planner.models.inventory import TensorInfo, active_fraction, count_params, tensor_inventory
from planner.plan import GIB, MemoryBreakdown, Plan, Target
from planner.cost.quality import expected_quality
from planner.runtimes import Runtime

if TYPE_CHECKING:
    from planner.hardware.schema import DeviceSpec
    from planner.models.spec import ModelSpec

_DEQUANT_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4}
PCIE_GB_S = {3: 15.75, 4: 31.5, 5: 63.0, 6: 126.0}  # x16, one direction (PCI-SIG)


def pcie_gb_s(dev: DeviceSpec) -> float:
    """One-direction x16 bandwidth of the device's host link, GB/s (PCIe 4 when the catalog does not say)."""
    return PCIE_GB_S.get(dev.pcie_gen or 4, PCIE_GB_S[4])
RPC_HOP_US = 1000.0  # assumed: llama.cpp RPC round trip (serialisation + TCP) per remote host per token
NDR_FALLBACK = (5e-6, 50e9)  # InfiniBand NDR latency and per-port bandwidth when no fabric is named
LAYER_SPLIT_HOP_US = 200.0  # calibrated (llama.cpp 2024 builds, 2-6 GPUs): sync + activation copy per GPU boundary per token
UBATCH = 512  # llama.cpp default micro-batch (-ub)
N_BATCH = 2048  # llama.cpp's default logical batch (-b): the micro-batches one decode call pipelines


@dataclass
class FormatLayout:
    """A model's tensors in one format: stored bytes in total and per layer (call fmt.assignments for per tensor)."""

    stored_bytes: int
    header_bytes: int
    layer_bytes: list[int]  # resident bytes per block
    layer_active_bytes: list[float]  # bytes one token reads per block
    embed_bytes: int
    head_bytes: int  # output projection + final norm (or tied embedding read as the head)
    head_active_bytes: float
    ggml_types: set[str]
    sum_layers: int = field(init=False)
    sum_active: float = field(init=False)

    cum_layers: list[int] = field(init=False)
    cum_active: list[float] = field(init=False)

    def __post_init__(self) -> None:
        # Prefix sums: bytes of layers [a, b) are cum[b] - cum[a], so placements and offload splits are O(1).
        self.cum_layers = [0]
        for b in self.layer_bytes:
            self.cum_layers.append(self.cum_layers[-1] + b)
        self.cum_active = [0.0]
        for b in self.layer_active_bytes:
            self.cum_active.append(self.cum_active[-1] + b)
        self.sum_layers = self.cum_layers[-1]
        self.sum_active = self.cum_active[-1]

    @property
    def file_size_bytes(self) -> int:
        """On-disk size (GGUF: tensor data plus metadata)."""
        return self.stored_bytes + self.header_bytes


@dataclass
class ModelCost:
    """A model's tensor inventory with per-format layouts computed once and cached."""

    spec: ModelSpec
    tensors: list[TensorInfo] = field(default_factory=list)
    layouts: dict[str, FormatLayout | ShapeError] = field(default_factory=dict)
    _kv: dict[tuple, list] = field(default_factory=dict)
    _disk: dict | None = None
    _dirty: bool = False
    _kv_sum: dict = field(default_factory=dict)
    _attn: dict = field(default_factory=dict)
    _quality: dict = field(default_factory=dict)
    _memo: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.tensors:
            self.tensors = tensor_inventory(self.spec)

    @cached_property
    def params(self) -> int:
        """Total parameters (published extras included)."""
        return count_params(self.spec, self.tensors)

    def kv_profile(self, mla_aware: bool) -> list[tuple[int, int | None]]:
        """Per layer: cached values per token and the token cap (sliding window) or None."""
        key = ("kv", mla_aware)
        if key not in self._kv:
            self._kv[key] = kv_layer_profile(self.spec, mla_aware)
        return self._kv[key]

    def kv_bytes(self, tokens: int, kv_dtype: str, sequences: int = 1, layers: range | None = None,
                 mla_aware: bool = True) -> float:
        """KV cache bytes of `sequences` x `tokens` over `layers` (fast path of cost.memory.kv_cache_bytes)."""
        key = (tokens, kv_dtype, mla_aware, layers.start, layers.stop) if layers is not None else (tokens, kv_dtype, mla_aware)
        got = self._kv_sum.get(key)
        if got is None:
            got = self._kv_sum[key] = self._kv_sum_uncached(tokens, kv_dtype, layers, mla_aware)
        return got * sequences

    def attn_flops_per_token(self, prompt: int) -> float:
        """Attention FLOPs per prompt token (QK^T and AV over half the prompt on average, windows capped)."""
        got = self._attn.get(prompt)
        if got is None:
            m = self.spec
            heads_dim = m.num_heads * (m.mla.qk_nope_head_dim + m.mla.qk_rope_head_dim if m.mla else m.dim_head)
            got = 0.0
            for i in range(m.num_layers):
                span = prompt / 2
                if m.sliding_window and not m.is_global_layer(i):
                    span = min(span, m.sliding_window)
                got += 4 * heads_dim * span
            self._attn[prompt] = got
        return got

    def _kv_sum_uncached(self, tokens: int, kv_dtype: str, layers: range | None, mla_aware: bool) -> float:
        return kv_values_held(self.kv_profile(mla_aware), tokens, layers) * kv_bytes_per_value(kv_dtype)

    def kv_per_layer(self, tokens: int, kv_dtype: str, sequences: int, mla_aware: bool) -> list[int]:
        """KV cache bytes of each layer for `sequences` x `tokens` (memoized: every runtime asks the same)."""
        key = ("per", tokens, kv_dtype, sequences, mla_aware)
        if key not in self._kv:
            per_value = kv_bytes_per_value(kv_dtype) * sequences
            self._kv[key] = [int(v * (tokens if cap is None or tokens < cap else cap) * per_value)
                             for v, cap in self.kv_profile(mla_aware)]
        return self._kv[key]

    def kv_prefix(self, tokens: int, kv_dtype: str, sequences: int, mla_aware: bool) -> list[int]:
        """Prefix sums of kv_per_layer (index i: layers [0, i))."""
        key = ("cum", tokens, kv_dtype, sequences, mla_aware)
        if key not in self._kv:
            cum = [0]
            for b in self.kv_per_layer(tokens, kv_dtype, sequences, mla_aware):
                cum.append(cum[-1] + b)
            self._kv[key] = cum
        return self._kv[key]

    def memo(self, key: tuple, compute):  # type: ignore[no-untyped-def]
        """Per-model memo for small derived values (compute buffers, kernel classes, sharded KV)."""
        got = self._memo.get(key)
        if got is None:
            got = self._memo[key] = compute()
        return got

    @cached_property
    def matmul_params_active(self) -> float:
        """Parameters a token multiplies through (no embedding lookup; routed experts k/E)."""
        return sum(t.n_elements * active_fraction(self.spec, t) for t in self.tensors
                   if t.is_matrix and t.name != "token_embd.weight") + (
            self.spec.vocab_size * self.spec.hidden_size if self.spec.tie_word_embeddings else 0)

    def layout(self, fmt: WeightFormat, dequant_to: str | None = None) -> FormatLayout:
        """The model's bytes in `fmt` (or with quantized tensors dequantized to `dequant_to`); raises ShapeError."""
        key = f"{fmt.id}|{dequant_to}" + (f"|h{fmt.header_bytes}" if fmt.header_bytes is not None else "")
        if key not in self.layouts:
            cached = self._disk_cache().get(key)
            if cached is not None:
                self.layouts[key] = ShapeError(cached["error"]) if "error" in cached else FormatLayout(
                    **{**cached, "ggml_types": set(cached["ggml_types"])})
            else:
                try:
                    self.layouts[key] = self._build(fmt, dequant_to)
                except ShapeError as exc:
                    self.layouts[key] = exc
                got = self.layouts[key]
                self._disk[key] = {"error": str(got)} if isinstance(got, ShapeError) else {
                    **{k: v for k, v in got.__dict__.items() if k != "ggml_types" and not k.startswith(("sum_", "cum_"))},
                    "ggml_types": sorted(got.ggml_types)}
                self._dirty = True
        got = self.layouts[key]
        if isinstance(got, ShapeError):
            raise got
        return got

    def _cache_file(self):  # type: ignore[no-untyped-def]
        """Per-model file of computed layouts, keyed by the planner version and the exact tensor inventory."""
        from planner import __version__
        from planner.cache import checksum
        from planner.paths import user_cache_dir
        from planner.records import fingerprint

        material = "\n".join([__version__, fingerprint(self.spec), *(f"{t.name}{t.shape}" for t in self.tensors)])
        return user_cache_dir() / f"layouts-{self.spec.id}-{checksum(material.encode())}.json"

    def _disk_cache(self) -> dict:
        """Layouts computed by earlier runs (sizes only; recomputing 700 tensors x 40 formats costs ~0.2 s)."""
        if self._disk is None:
            import json
            import os

            self._disk = {}
            if os.environ.get("PLANNER_NO_CACHE") != "1":
                try:
                    self._disk = json.loads(self._cache_file().read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    self._disk = {}
        return self._disk

    def flush(self) -> None:
        """Write newly computed layouts to the user cache (atomic; a read-only home is not an error)."""
        if not self._dirty or os.environ.get("PLANNER_NO_CACHE") == "1":
            return
        import json

        from planner.yamlio import atomic_write_text

        try:
            atomic_write_text(self._cache_file(), json.dumps(self._disk))
        except OSError:
            pass
        self._dirty = False

    def _build(self, fmt: WeightFormat, dequant_to: str | None) -> FormatLayout:
        m = self.spec
        assignments = fmt.assignments(m, self.tensors)
        layer_bytes = [0] * m.num_layers
        layer_active = [0.0] * m.num_layers
        embed = head = 0
        head_active = 0.0
        stored = 0
        types: set[str] = set()
        for a in assignments:
            t = a.tensor
            nbytes = a.nbytes
            stored += nbytes
            if isinstance(a.encoding, GGMLType) and t.is_matrix:
                types.add(a.encoding.name)
            resident = nbytes
            if dequant_to and isinstance(a.encoding, GGMLType) and a.encoding.quantized:
                resident = t.n_elements * _DEQUANT_BYTES[dequant_to]
            if t.layer is not None:
                layer_bytes[t.layer] += resident
                layer_active[t.layer] += resident * active_fraction(m, t)
            elif t.name == "token_embd.weight":
                embed += resident
                if m.tie_word_embeddings:  # the tied matrix is also the output head, read every token
                    head_active += resident
            else:
                head += resident
                head_active += resident
        header = 0
        if fmt.family == "gguf":
            header = fmt.header_bytes if fmt.header_bytes is not None else gguf_header_bytes(m, len(self.tensors))
        return FormatLayout(stored, header, layer_bytes, layer_active, embed, head, head_active, types)


# The same KV dtype goes by different names in different runtimes.
_KV_ALIASES = {"fp16": ("f16", "fp16", "auto"), "f16": ("f16", "fp16", "auto"), "auto": ("auto", "f16", "fp16"),
               "fp8": ("fp8_e4m3", "fp8", "fp8_e4m3fn"), "fp8_e4m3": ("fp8_e4m3", "fp8", "fp8_e4m3fn"),
               "q8_0": ("q8_0", "q8"), "q4_0": ("q4_0", "q4"), "int8": ("int8", "q8_0", "q8")}


def known_kv_dtypes() -> list[str]:
    """Every KV cache dtype name some runtime takes, aliases included (for --kv-dtype's check)."""
    from planner.runtimes import RUNTIMES

    return sorted({d for rt in RUNTIMES.values() for d in rt.kv_dtypes} | set(_KV_ALIASES))


def _kv_dtype(runtime: Runtime, requested: str | None) -> tuple[str | None, str]:
    """Map a requested KV dtype to the runtime's own name; '' reason when fine."""
    if not requested:
        return runtime.kv_dtypes[0], ""
    req = requested.lower()
    for name in _KV_ALIASES.get(req, (req,)):
        if name in runtime.kv_dtypes:
            return name, ""
    return None, f"{runtime.name} offers KV cache dtypes {', '.join(runtime.kv_dtypes)}, not {requested}"


_SUPPORT: dict = {}  # (runtime, format, backend, cc) -> Support; the rules are pure functions of these


def evaluate(mc: ModelCost, fmt: WeightFormat, runtime: Runtime, target: Target, *, context: int, concurrency: int = 1,
             kv_dtype: str | None = None, prompt_tokens: int | None = None, calibration: dict | None = None) -> Plan:
    """Cost one candidate: memory per device, fit, decode/prefill speed, TTFT, quality and launch command."""
    if target.replicas > 1:
        return _replicate(mc, fmt, runtime, target, context=context, concurrency=concurrency, kv_dtype=kv_dtype,
                          prompt_tokens=prompt_tokens, calibration=calibration)
    m = mc.spec
    dev = target.device
    prompt = min(prompt_tokens if prompt_tokens is not None else 512, context)
    plan = Plan(m.id, fmt.id, runtime.id, target.label, dev.id, target.count, context, concurrency,
                kv_dtype or "", "single", n_layers=m.num_layers, prompt_tokens=prompt)
    skey = (runtime.id, fmt.id, dev.backend, dev.compute_capability)
    support = _SUPPORT.get(skey)
    if support is None:
        support = _SUPPORT[skey] = runtime.support(fmt, dev)
    plan.support_mode = support.mode
    if not support.runs:
        plan.runs, plan.reason = False, support.reason
        return plan
    if support.mode in ("weight_only", "dequantized"):
        plan.warnings.append(support.reason)
    kv, why = _kv_dtype(runtime, kv_dtype)
    if kv is None:
        plan.runs, plan.reason = False, why
        return plan
    plan.kv_dtype = kv
    if support.single_device and target.total_devices > 1:
        plan.runs, plan.reason = False, f"{runtime.name} runs {fmt.id} on one GPU only ({support.reason})"
        return plan
    try:
        lay = mc.layout(fmt, support.dequant_to)
    except ShapeError as exc:
        plan.runs, plan.reason = False, f"{fmt.id} cannot hold this model's shapes: {exc}"
        return plan
    plan.file_size_bytes = lay.file_size_bytes
    plan.weights_bytes = lay.sum_layers + lay.embed_bytes + lay.head_bytes
    plan.bits_per_weight = lay.stored_bytes * 8 / max(1, mc.params - m.extra_params)
    qkey = (fmt.id, support.dequant_to)
    if qkey not in mc._quality:
        mc._quality[qkey] = expected_quality(fmt, mc.params, plan.bits_per_weight, m.native_dtype).as_dict()
    plan.quality = mc._quality[qkey]  # shared, read-only: one dict per (model, format)
    engine = runtime.engine
    mla_aware = engine != "transformers"
    seqs = concurrency
    plan.kv_cache_bytes = int(mc.kv_bytes(context, kv, seqs, mla_aware=mla_aware))
    if engine in ("vllm", "sglang", "trtllm", "tgi"):
        _place_tensor_parallel(plan, mc, lay, runtime, target, kv, mla_aware)
    else:
        _place_layers(plan, mc, lay, runtime, target, kv, mla_aware)
    if not plan.runs:
        return plan
    total = usable = 0
    first_over = None
    for d in plan.per_device:
        t = d.weights_bytes + d.kv_cache_bytes + d.activations_bytes + d.overhead_bytes
        total += t
        usable += d.usable_bytes
        if first_over is None and t > d.usable_bytes:
            first_over = (d, t)
    plan.total_memory_bytes, plan.usable_memory_bytes = total, usable
    if first_over is not None and not plan.reason:
        d, t = first_over
        plan.reason = f"needs {t / GIB:.1f} GiB on {d.device}, {d.usable_bytes / GIB:.1f} GiB usable"
    mode = support.mode
    plan.speed_fn = lambda pl: _speed(pl, mc, lay, fmt, runtime, target, kv, mode, calibration)
    if context > m.max_context:
        plan.warnings.append(f"context {context} is beyond the model's maximum {m.max_context}")
    plan.launch_args = (mc.spec, fmt, runtime, target)  # the command is rendered only when read
    return plan


# Runtimes whose replicas the launch plan can start: vLLM and SGLang have a data-parallel mode (vLLM
# docs/serving/data_parallel_deployment.md, SGLang docs/advanced_features/dp_dpa_router_guide.md); TensorRT-LLM and
# llama.cpp replicas run as independent servers behind a load balancer.
DATA_PARALLEL_RUNTIMES = ("vllm", "sglang", "tensorrt-llm", "llama.cpp")


def _replicate(mc: ModelCost, fmt: WeightFormat, runtime: Runtime, target: Target, *, context: int, concurrency: int,
               kv_dtype: str | None, prompt_tokens: int | None, calibration: dict | None) -> Plan:
    """Data parallel: `target.replicas` copies of one layout, each serving ceil(concurrency / replicas) sequences.
    Per-GPU memory is one copy's at its share of the sequences; totals and throughput count every copy."""
    import dataclasses

    dp = target.replicas
    one = dataclasses.replace(target, replicas=1, replicas_per_node=1)
    seqs = math.ceil(concurrency / dp)
    plan = evaluate(mc, fmt, runtime, one, context=context, concurrency=seqs, kv_dtype=kv_dtype,
                    prompt_tokens=prompt_tokens, calibration=calibration)
    plan.target_label, plan.concurrency = target.label, concurrency
    if plan.runs and runtime.id not in DATA_PARALLEL_RUNTIMES:
        plan.runs, plan.reason = False, (f"{runtime.name} has no documented way to serve replicas; use "
                                         "vLLM, SGLang, TensorRT-LLM or llama.cpp for data parallel")
    if not plan.runs:
        return plan
    plan.parallel = {**(plan.parallel or {"nodes": one.nodes, "gpus_per_node": one.count}), "data_parallel": dp,
                     "replicas_per_node": target.replicas_per_node}
    plan.per_device = [dataclasses.replace(d, device=f"{d.device}/r{r}") for r in range(dp) for d in plan.per_device]
    plan.total_memory_bytes *= dp
    plan.usable_memory_bytes *= dp
    plan.weights_bytes *= dp
    plan.kv_cache_bytes *= dp
    plan.host_bytes *= dp
    plan.launch_args = (mc.spec, fmt, runtime, target)
    return plan


def _overhead(runtime: Runtime, target: Target) -> int:
    """Per-device runtime overhead: CUDA/HIP context and CUDA-graph pools."""
    backend = target.device.backend
    if backend == "cpu":
        return 0
    if backend in ("cuda", "rocm"):
        return int((runtime.cuda_context_gib + runtime.cuda_graph_gib) * GIB)
    if target.device.backend == "metal":
        return int(0.1 * GIB)  # assumed: Metal command buffers and library
    return 0


MULTI_NODE_ENGINES = ("vllm", "sglang", "trtllm")  # engines with documented multi-node launchers


def _place_tensor_parallel(plan: Plan, mc: ModelCost, lay: FormatLayout, runtime: Runtime, target: Target, kv: str,
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
        experts = mc.memo(("expert_bytes", plan.format_id), lambda: _expert_bytes(mc, lay))
        weights = math.ceil((total - experts) / tp + experts / ep)
    else:
        weights = math.ceil(total / (tp * pp))
    kvb = mc.memo(("tpkv", plan.context, kv, plan.concurrency, mla_aware, tp), lambda: kv_cache_bytes(
        m, plan.context, kv, plan.concurrency, mla_aware=mla_aware, kv_heads_divisor=tp))
    if m.mla is not None and tp > 1:
        kvb = plan.kv_cache_bytes  # the MLA latent is not split by heads: every GPU holds it
    kvb = math.ceil(kvb / pp)  # each pipeline stage caches its own layers
    act = mc.memo(("act", plan.concurrency), lambda: engine_activation_bytes(m, max_seqs=max(plan.concurrency, 1))) // tp
    over = _overhead(runtime, target)
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


def _expert_bytes(mc: ModelCost, lay: FormatLayout) -> int:
    """Bytes of routed-expert tensors in this layout's format (what expert parallelism shards)."""
    fmt_share = lay.stored_bytes / max(1, sum(t.n_elements for t in mc.tensors))
    return int(sum(t.n_elements for t in mc.tensors if t.role.endswith("_exps")) * fmt_share)


def _place_layers(plan: Plan, mc: ModelCost, lay: FormatLayout, runtime: Runtime, target: Target, kv: str,
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
        compute = mc._memo.get(("cbuf", plan.context))
        if compute is None:
            compute = mc._memo[("cbuf", plan.context)] = llamacpp_compute_buffer_bytes(m, plan.context)
    else:
        compute = int(0.3 * GIB)
    over = _overhead(runtime, target)
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


def _fabric(target: Target) -> tuple[float, float]:
    """(latency seconds, bandwidth bytes/s) of the inter-node fabric."""
    if target.fabric is None:
        return NDR_FALLBACK
    return target.fabric.latency_us * 1e-6, target.fabric.link_gb_s * 1e9


def _rates(mc: ModelCost, lay: FormatLayout, fmt: WeightFormat, engine: str, dev, target: Target, mode: str,  # type: ignore[no-untyped-def]
           calibration: dict | None) -> tuple:
    """Per (format, engine, device) constants of the speed model: efficiency, achievable bandwidths, peak FLOP/s."""
    eff = efficiency(engine, dev.backend, calibration)
    kclass = kernel_class(fmt.family, "fp16" if mode == "dequantized" else fmt.compute, lay.ggml_types)
    bw = dev.mem_bandwidth_gb_s * 1e9 * eff.bandwidth * KERNEL_BANDWIDTH_FACTOR.get(kclass, 0.9)
    bw = unit_capped_bandwidth(bw, dev, engine, kclass)
    if fmt.family == "gguf" and engine != "llamacpp":
        bw *= FOREIGN_GGUF_FACTOR
    host_eff = efficiency("llamacpp", "cpu", calibration).bandwidth
    host_bw = (dev.mem_bandwidth_gb_s if target.is_cpu else target.host_bandwidth_gb_s) * 1e9 * host_eff
    if target.is_cpu:  # a few threads cannot saturate a many-channel memory system
        host_bw = cpu_capped_bandwidth(host_bw, dev, kclass)
    peak = prefill_peak_flops(dev, engine, fmt.family, fmt.compute, mode, gguf_main_type(fmt))
    return eff, bw, host_bw, peak, KV_READ_FRACTION.get((engine, dev.backend), KV_READ_FRACTION_DEFAULT)


def _speed(plan: Plan, mc: ModelCost, lay: FormatLayout, fmt: WeightFormat, runtime: Runtime, target: Target, kv: str,
           mode: str, calibration: dict | None) -> None:
    """Decode tokens/s (batch 1 and at full context), aggregate throughput, prefill tokens/s and TTFT."""
    m = mc.spec
    dev = target.device
    engine = runtime.engine
    key = ("rates", fmt.id, mode, engine, dev.id, dev.backend, dev.cpu_cores, target.is_cpu, target.host_bandwidth_gb_s,
           calibration is None)
    rates = mc._memo.get(key) if calibration is None else None
    if rates is None:
        rates = _rates(mc, lay, fmt, engine, dev, target, mode, calibration)
        if calibration is None:
            mc._memo[key] = rates
    eff, bw, host_bw, peak_flops_raw, kv_fraction = rates
    n = m.num_layers
    tp = (plan.parallel or {}).get("tensor_parallel", target.count if plan.layout == "tensor-parallel" else 1)
    if plan.layout in ("layer-split", "rpc-layer-split", "partial-offload", "cpu", "single"):
        tp = 1
    gpu_layers = plan.gpu_layers if plan.gpu_layers is not None else n
    if plan.layout == "cpu":
        gpu_layers = 0
    offloaded = range(gpu_layers, n) if plan.layout in ("partial-offload", "cpu") else range(0)
    mla_aware = engine != "transformers"

    gpu_range = range(0, n) if not offloaded else range(0, gpu_layers)
    if offloaded:
        w_gpu = lay.cum_active[gpu_layers]
        w_host = lay.sum_active - w_gpu
    else:
        w_gpu, w_host = lay.sum_active, 0.0

    peak_flops = peak_flops_raw * eff.compute
    fixed_step = n * eff.layer_overhead_us * 1e-6
    allreduce_s_per_token = 0.0
    if tp > 1:
        link = "nvlink" if dev.nvlink_gb_s else ("infinity_fabric" if dev.infinity_fabric_gb_s else "pcie")
        fixed_step += 2 * n * ALLREDUCE_LATENCY_US[link] * 1e-6
        # two all-reduces of each token's 16-bit hidden state per layer (after attention and after the MLP)
        one_way_gb_s = {"nvlink": (dev.nvlink_gb_s or 0) / 2, "infinity_fabric": (dev.infinity_fabric_gb_s or 0) / 2,
                        "pcie": pcie_gb_s(dev)}[link]
        allreduce_s_per_token = (2 * n * 2 * (tp - 1) / tp * m.hidden_size * 2
                                 / (one_way_gb_s * 1e9 * ALLREDUCE_BUS_FRACTION))
    fab_lat, fab_bw = _fabric(target)
    hidden_bytes = m.hidden_size * 2  # one token's activations in 16-bit
    par = plan.parallel or {}
    pp, ep = par.get("pipeline_parallel", 1), par.get("expert_parallel", 1)
    if plan.layout == "layer-split":
        fixed_step += (target.count - 1) * LAYER_SPLIT_HOP_US * 1e-6
    elif plan.layout == "rpc-layer-split":
        # in-node hops as a layer split, plus one RPC round trip over the network per extra node
        fixed_step += (target.count - 1) * target.nodes * LAYER_SPLIT_HOP_US * 1e-6
        fixed_step += (target.nodes - 1) * (RPC_HOP_US * 1e-6 + fab_lat + hidden_bytes / fab_bw)
    elif pp > 1:
        fixed_step += (pp - 1) * (fab_lat + hidden_bytes / fab_bw)
    if ep > 1 and m.moe is not None:
        # dispatch and combine all-to-all per MoE layer; tokens cross the fabric (k experts per token)
        moe_layers = m.num_layers - m.moe.first_dense_layers
        fixed_step += 2 * moe_layers * (fab_lat + m.moe.experts_per_token * hidden_bytes / fab_bw)

    kv_weight = bw / (dev.mem_bandwidth_gb_s * 1e9 * kv_fraction) if plan.layout != "cpu" else 1.0

    def step_time(position: int, batch: int) -> float:
        """Seconds for one decode step of `batch` sequences at `position` tokens of context."""
        act_frac = 1.0
        if m.moe is not None and batch > 1:  # more distinct experts are touched by a batch
            k, e = m.moe.experts_per_token, m.moe.num_experts
            act_frac = (1 - (1 - k / e) ** batch) / (k / e)
        # KV reads are charged at the attention kernels' lower effective bandwidth, expressed as extra bytes.
        gpu_bytes = w_gpu * act_frac + batch * kv_weight * mc.kv_bytes(position, kv, 1, gpu_range if offloaded else None, mla_aware)
        host_bytes = w_host * act_frac + (batch * mc.kv_bytes(position, kv, 1, offloaded, mla_aware) if offloaded else 0.0)
        head = lay.head_active_bytes
        if offloaded and plan.layout == "partial-offload":
            host_bytes += head
        else:
            gpu_bytes += head
        if plan.layout == "cpu":
            t = (gpu_bytes + host_bytes) / host_bw
        else:
            t = gpu_bytes / tp / bw + host_bytes / host_bw
        flops = 2 * mc.matmul_params_active * batch
        if plan.layout != "cpu" or batch > 1:  # CPU at batch 1: host_bw's per-core GEMV rate is the compute limit
            t = max(t, flops / (peak_flops * tp))
        return t + fixed_step + batch * allreduce_s_per_token

    pos = plan.prompt_tokens
    t1 = step_time(pos, 1)
    decode = 1.0 / t1
    full = 1.0 / step_time(plan.context, 1)
    throughput = decode
    # data-parallel replicas each decode their own share of the sequences; the fullest one sets the pace
    seqs = math.ceil(plan.concurrency / par.get("data_parallel", 1))
    if seqs > 1:
        tb = step_time(pos, seqs)
        throughput = seqs / tb
        decode = 1.0 / tb
        if pp > 1 and seqs >= pp:
            # pipeline stages work on different micro-batches of concurrency/pp sequences at once
            micro = math.ceil(seqs / pp)
            throughput = seqs / step_time(pos, micro)
    throughput *= plan.concurrency / seqs
    # Prefill: FLOPs of the prompt over achievable compute, with a floor of re-reading the weights per micro-batch.
    p = max(plan.prompt_tokens, 1)
    flops = p * (2 * mc.matmul_params_active + mc.attn_flops_per_token(p))
    peak = peak_flops
    gpu_frac = gpu_layers / n if plan.layout == "partial-offload" else (0.0 if plan.layout == "cpu" else 1.0)
    t_compute = flops * gpu_frac / (peak * tp) + p * allreduce_s_per_token
    if plan.layout == "layer-split" and engine == "llamacpp":
        # llama.cpp pipelines the micro-batches of one batch through the GPUs' layer ranges (PR #6017: -b 2048 split
        # into -ub 512 micro-batches, in flight at once): k of them over g stages take (k + g - 1) stage times, not k x g.
        k, g = min(math.ceil(p / UBATCH), N_BATCH // UBATCH), target.count
        t_compute *= (k + g - 1) / (k * g)
    if pp > 1 or plan.layout == "rpc-layer-split":  # the prompt's activations cross each stage boundary once
        hops = pp - 1 if pp > 1 else target.nodes - 1
        t_compute += hops * (fab_lat + p * hidden_bytes / fab_bw)
    if gpu_frac < 1:
        cpu_peak = (prefill_peak_flops(dev, "llamacpp", "gguf", "int8", "native", gguf_main_type(fmt)) if target.is_cpu
                    else CPU_DEFAULT_CORES * CPU_FLOPS_PER_CORE)
        cpu_peak *= efficiency("llamacpp", "cpu", calibration).compute
        host_w = lay.sum_layers - lay.cum_layers[gpu_layers] + lay.head_bytes
        pcie = pcie_gb_s(dev) * 1e9
        # llama.cpp streams offloaded weights to the GPU for large batches, else computes them on the CPU.
        t_host = min(flops * (1 - gpu_frac) / cpu_peak, math.ceil(p / UBATCH) * host_w / pcie) if not target.is_cpu \
            else flops / cpu_peak
        t_compute += t_host
    weight_reads = math.ceil(p / UBATCH) * lay.sum_active / tp / bw if plan.layout != "cpu" else 0.0
    t_prefill = max(t_compute, weight_reads) + n * eff.layer_overhead_us * 1e-6 * math.ceil(p / UBATCH)
    plan.set_speeds(decode_tokens_per_s=decode, decode_tokens_per_s_full_context=full, throughput_tokens_per_s=throughput,
                    prefill_tokens_per_s=p / t_prefill, ttft_s=t_prefill + t1)
