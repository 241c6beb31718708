"""Cost one candidate deployment (model x format x runtime x target x context) into a Plan.

`evaluate` is the one place a plan's sizes, speeds and quality are put together; recommend, estimate, check and the
TUI all call it. It picks the KV cache dtype, asks the runtime whether it runs the format on the device, then
memory (planner.cost.model layouts, planner.cost.placement), quality (planner.cost.quality) and speed
(planner.cost.speed, computed on first read).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from planner.cost.model import ModelCost
from planner.cost.offload import can_offload_experts, place_expert_offload, predict_offload_speeds
from planner.cost.placement import place_layers, place_tensor_parallel, replicate
from planner.cost.quality import expected_quality
from planner.cost.release import relative_to_release
from planner.cost.speed import predict_speeds
from planner.formats import ShapeError, WeightFormat
from planner.launch import launch_command
from planner.plan import GIB, Plan, Target
from planner.runtimes import RUNTIMES, Runtime, arch_id

if TYPE_CHECKING:
    from planner.models.spec import ModelSpec


# The same KV dtype goes by different names in different runtimes.
_KV_ALIASES = {"fp16": ("f16", "fp16", "auto"), "f16": ("f16", "fp16", "auto"), "auto": ("auto", "f16", "fp16"),
               "fp8": ("fp8_e4m3", "fp8", "fp8_e4m3fn"), "fp8_e4m3": ("fp8_e4m3", "fp8", "fp8_e4m3fn"),
               "q8_0": ("q8_0", "q8"), "q4_0": ("q4_0", "q4"), "int8": ("int8", "q8_0", "q8")}


def known_kv_dtypes() -> list[str]:
    """Every KV cache dtype name some runtime takes, aliases included (for --kv-dtype's check)."""
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


_SUPPORT: dict = {}  # (runtime, format, backend, cc, architecture) -> Support; the rules are pure functions of these


def evaluate(mc: ModelCost, fmt: WeightFormat, runtime: Runtime, target: Target, *, context: int, concurrency: int = 1,
             kv_dtype: str | None = None, prompt_tokens: int | None = None, calibration: dict | None = None) -> Plan:
    """Cost one candidate: memory per device, fit, decode/prefill speed, TTFT, quality and launch command."""
    if target.replicas > 1:
        # data parallel: one copy of the layout at its share of the sequences, then every copy counted
        one = dataclasses.replace(target, replicas=1, replicas_per_node=1)
        plan = evaluate(mc, fmt, runtime, one, context=context, concurrency=math.ceil(concurrency / target.replicas),
                        kv_dtype=kv_dtype, prompt_tokens=prompt_tokens, calibration=calibration)
        replicate(plan, runtime, target, concurrency)
        if plan.runs:
            plan.launch_fn = _launch_fn(mc.spec, fmt, runtime, target)
        return plan
    m = mc.spec
    dev = target.device
    prompt = min(prompt_tokens if prompt_tokens is not None else 512, context)
    plan = Plan(m.id, fmt.id, runtime.id, target.label, dev.id, target.count, context, concurrency,
                kv_dtype or "", "single", n_layers=m.num_layers, prompt_tokens=prompt)
    arch = arch_id(m)
    skey = (runtime.id, fmt.id, dev.backend, dev.compute_capability, arch, m.native_dtype)
    support = _SUPPORT.get(skey)
    if support is None:
        support = _SUPPORT[skey] = runtime.support(fmt, dev, arch, m.native_dtype)
    plan.support_mode = support.mode
    if not support.runs:
        plan.runs, plan.reason = False, support.reason
        return plan
    if support.partial:
        # experimental or version-dependent support: said in the plan, and recommend ranks it behind full support
        plan.support_status = "partial"
        plan.warnings.append(f"partial support: {support.reason}")
    elif support.mode in ("weight_only", "dequantized"):
        plan.warnings.append(support.reason)
    kv, why = _kv_dtype(runtime, kv_dtype)
    if kv is None:
        plan.runs, plan.reason = False, why
        return plan
    kv_ok = runtime.kv_support(kv, dev)  # per-backend KV-cache rules (planner/data/runtime_support.csv)
    if not kv_ok.runs:
        plan.runs, plan.reason = False, kv_ok.reason
        return plan
    if kv_ok.partial:
        plan.support_status = "partial"
        plan.warnings.append(f"partial support: {kv_ok.reason}")
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
    # shared, read-only: one dict per (model, format)
    plan.quality = mc.memo(("quality", fmt.id, support.dequant_to),
                           lambda: relative_to_release(expected_quality(fmt, mc, m.native_dtype), m, fmt,
                                                       mc.tensors).as_dict())
    engine = runtime.engine
    mla_aware = engine != "transformers"
    seqs = concurrency
    plan.kv_cache_bytes = int(mc.kv_bytes(context, kv, seqs, mla_aware=mla_aware))
    if engine in ("vllm", "sglang", "trtllm", "tgi"):
        place_tensor_parallel(plan, mc, lay, runtime, target, kv, mla_aware)
    else:
        place_layers(plan, mc, lay, runtime, target, kv, mla_aware)
    if not plan.runs:
        return plan
    _totals(plan)
    mode = support.mode
    plan.speed_fn = lambda pl: predict_speeds(pl, mc, lay, fmt, runtime, target, kv, mode, calibration)
    if plan.layout == "partial-offload" and can_offload_experts(mc, runtime, target):
        plan = _faster_offload(plan, mc, lay, fmt, runtime, target, kv, mla_aware, mode, calibration, support.dequant_to)
    if context > m.max_context:
        plan.warnings.append(f"context {context} is beyond the model's maximum {m.max_context}")
    plan.launch_fn = _launch_fn(mc.spec, fmt, runtime, target)  # the command is rendered only when read
    return plan


def _totals(plan: Plan) -> None:
    """Sum the per-device memory into the plan, and say which device overflows first."""
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


def _faster_offload(split: Plan, mc: ModelCost, lay, fmt: WeightFormat, runtime: Runtime, target: Target,  # type: ignore[no-untyped-def]
                    kv: str, mla_aware: bool, mode: str, calibration: dict | None, dequant_to: str | None) -> Plan:
    """A MoE model that overflows one GPU: predict the plain layer split (-ngl K) and the expert offload
    (-ngl 999 --n-cpu-moe N, planner.cost.offload) and keep the faster one that fits; each records the other."""
    moe = dataclasses.replace(split, per_device=[], warnings=list(split.warnings), offload_alternative={})
    if not place_expert_offload(moe, mc, lay, fmt, runtime, target, kv, mla_aware, dequant_to):
        return split
    _totals(moe)
    moe.speed_fn = lambda pl: predict_offload_speeds(pl, mc, lay, fmt, runtime, target, kv, mode, calibration, dequant_to)
    chosen, other = (moe, split) if moe.fits and (not split.fits or moe.served_tokens_per_s >= split.served_tokens_per_s) \
        else (split, moe)
    chosen.offload_alternative = {
        "layout": other.layout, "gpu_layers": other.gpu_layers, "cpu_moe_layers": other.cpu_moe_layers,
        "fits": other.fits, "decode_tokens_per_s": round(other.decode_tokens_per_s, 2),
        "prefill_tokens_per_s": round(other.prefill_tokens_per_s, 2)}
    what = {"expert-offload": f"expert offload (--n-cpu-moe {moe.cpu_moe_layers})",
            "partial-offload": f"layer split (-ngl {split.gpu_layers})"}
    chosen.warnings.append(f"{what[chosen.layout]} decodes ~{chosen.decode_tokens_per_s:.1f} tok/s per sequence; "
                           f"{what[other.layout]} would decode ~{other.decode_tokens_per_s:.1f}"
                           + ("" if other.fits else f" but {other.reason or 'does not fit'}"))
    return chosen


def _launch_fn(model: ModelSpec, fmt: WeightFormat, runtime: Runtime, target: Target) -> Callable[[Plan], str]:
    """The plan's launch-command renderer for this model, format, runtime and target."""
    return lambda plan: launch_command(plan, model, fmt, runtime, target)
