"""Enumerate candidates (format x runtime x KV dtype) for a model on a target, cost them, rank them, explain."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from planner.cost.evaluate import evaluate
from planner.cost.model import ModelCost
from planner.cost.quality import KV_QUALITY_KLD, ranking_kld
from planner.cost.speed import BASES, WEAK_BASES
from planner.formats import FORMATS, WeightFormat, exl2_format
from planner.plan import GIB, Plan, Target
from planner.runtimes import RUNTIMES, Runtime, arch_id

# Formats a user would rarely pick on purpose; still accepted by `estimate` and `--format`. rtn-*: round to nearest
# without calibration is what `planner quantize` can write, not what anyone publishes or should download for serving
# (GPTQ/AWQ checkpoints of the same layout are calibrated).
_SKIP_BY_DEFAULT = {"rtn-int4", "rtn-int4-g32", "rtn-int4-perchannel", "rtn-int8", "rtn-int8-perchannel", "F32",
                    "TQ1_0", "TQ2_0", "MXFP4_MOE", "nf4-nodq", "fp8-pertensor", "gptq-int4-perchannel",
                    "gptq-int8-perchannel", "gptq-int4-g32", "fp32", "Q4_1", "Q5_0", "Q5_1", "Q2_K_S", "IQ3_S",
                    "IQ2_S", "IQ4_NL", "Q6_K_L", "Q5_K_L", "Q4_K_L", "Q3_K_XL", "Q2_K_L"}
PREFERENCES = ("balanced", "quality", "speed", "memory")


def tie_break(p: Plan) -> tuple:
    """Order of plans equal in score and speed: firmer speed basis first, then _TIE_ORDER, then the runtime id."""
    return (_BASIS_ORDER.get(p.speed_basis, len(BASES)), _TIE_ORDER.get(p.runtime_id, len(_TIE_ORDER)), p.runtime_id)
# At equal score and speed, the plan whose speed rests on firmer ground first (planner.cost.speed.BASES order), then
# this explicit order, never the registry's dict order (vLLM and SGLang predict the same speeds from the same
# kernels; Ollama, LM Studio and KoboldCpp the same as llama.cpp): an engine's reference implementation before the
# applications that wrap it, since what was calibrated is the reference build.
_BASIS_ORDER = {b: i for i, b in enumerate(BASES)}
_TIE_ORDER = {rid: i for i, rid in enumerate(("llama.cpp", "vllm", "vllm-cpu", "tensorrt-llm", "sglang", "tgi", "exllamav2", "mlx",
                                                "transformers", "ollama", "lmstudio", "koboldcpp"))}


@dataclass
class Recommendation:
    """The ranked plans for one model on one target, the chosen one and why."""

    model_id: str
    target_label: str
    context: int
    concurrency: int
    prefer: str
    plans: list[Plan]  # every candidate, best first (fitting ones first)
    best: Plan | None
    reasons: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    # every format considered, by id: the plans name theirs by id, and an as-stored format is in no registry
    formats: dict[str, WeightFormat] = field(default_factory=dict)

    @property
    def fitting(self) -> list[Plan]:
        """Plans that run and fit."""
        return [p for p in self.plans if p.fits]


def default_formats(model_native: str) -> list[WeightFormat]:
    """The formats recommend considers when the user names none."""
    fmts = [f for f in FORMATS.values() if f.id not in _SKIP_BY_DEFAULT]
    fmts += [exl2_format(b) for b in (3.0, 4.0, 5.0, 6.0, 8.0)]
    if model_native == "mxfp4":
        fmts.append(FORMATS["MXFP4_MOE"])
    return fmts


def _kv_choices(runtime: Runtime, requested: Sequence[str]) -> list[str | None]:
    if requested:
        return list(requested)
    eight = next((k for k in ("q8_0", "fp8_e4m3", "q8", "fp8", "int8") if k in runtime.kv_dtypes), None)
    return [None] + ([eight] if eight else [])


SPEED_CAP_TOKENS_PER_S = 400.0


def score(plan: Plan, prefer: str) -> float:
    """Higher is better: trades decode speed against expected quality loss and memory, by preference."""
    speed = plan.served_tokens_per_s
    if plan.speed_basis in WEAK_BASES:
        # a speed resting on assumed constants, or calibrated on another device class, counts at its band's low end:
        # an assumed engine ties with a calibrated one only where it is faster even then
        speed /= 1 + plan.speed_width("decode_tokens_per_s")
    # an estimate counts at its interval's upper end: an extrapolated 'negligible' is no better than a measured one
    kld = ranking_kld(plan.quality) + KV_QUALITY_KLD.get(plan.kv_dtype, 0.0)
    # Past SPEED_CAP_TOKENS_PER_S per sequence nobody reads faster; the cap is per sequence, so with many sequences
    # aggregate throughput keeps counting (a serving engine's batching is worth its memory).
    s = math.log2(max(min(speed, SPEED_CAP_TOKENS_PER_S * max(1, plan.concurrency)), 0.01))
    if prefer == "quality":
        return -1000 * kld + 0.1 * s
    if prefer == "speed":
        return s - 5 * kld
    if prefer == "memory":
        return -plan.total_memory_bytes / GIB - 200 * max(0.0, kld - 0.1)
    return s - 30 * kld


# What each preference ranks by, in the words tables show (score() is the rule; fitting plans come first).
RANKING_TEXT = {
    "balanced": "speed vs quality loss (balanced)",
    "quality": "least quality loss (quality)",
    "speed": "fastest decode (speed)",
    "memory": "least memory (memory)",
}


def ranking_title(prefer: str) -> str:
    """'ranked by fastest decode (speed)': how a table of ranked plans is ordered."""
    return f"ranked by {RANKING_TEXT.get(prefer, prefer)}"


def rank(plans: list[Plan], prefer: str, min_tokens_per_s: float | None) -> list[Plan]:
    """Order plans: fitting and fast enough first (by score), then fitting but too slow, then the rest."""
    for p in plans:
        p.score = score(p, prefer) if p.runs else -1e9
        if p.fits and min_tokens_per_s and p.decode_tokens_per_s < min_tokens_per_s:
            p.warnings.append(f"decodes at {p.decode_tokens_per_s:.1f} tok/s per sequence, below the {min_tokens_per_s:g} "
                              "tok/s asked for")

    def key(p: Plan):
        slow = bool(min_tokens_per_s) and p.decode_tokens_per_s < (min_tokens_per_s or 0)
        tier = 0 if (p.fits and not slow) else (1 if p.fits else (2 if p.runs else 3))
        # equal scores happen when speeds pass the cap: then the faster plan (the score cannot see past the cap)
        # a partially supported path (experimental, version-dependent) ranks behind every fully supported one
        return (tier, p.support_status != "full", -p.score, -round(p.served_tokens_per_s, 6) if p.runs else 0.0,
                *(tie_break(p) if p.runs else ()), p.total_memory_bytes)

    return sorted(plans, key=key)


def recommend(mc: ModelCost, target: Target, *, context: int, concurrency: int = 1, formats: Sequence[WeightFormat] = (),
              runtimes: Sequence[Runtime] = (), kv_dtypes: Sequence[str] = (), prefer: str = "balanced",
              min_tokens_per_s: float | None = None, prompt_tokens: int | None = None, catalog=None,
              calibration: dict | None = None, measured_quality: dict[str, dict] | None = None) -> Recommendation:
    """Cost every candidate for `mc` on `target` and pick one, with reasons and what would fit otherwise.
    `measured_quality` (format id -> quality dict from planner.measure.reports) replaces the table estimate."""
    fmts = list(formats) or default_formats(mc.spec.native_dtype)
    rts = list(runtimes) or list(RUNTIMES.values())
    plans: list[Plan] = []
    subs = sub_layouts(target, concurrency)
    arch = arch_id(mc.spec)
    for sub in subs:
        for fmt in fmts:
            for rt in rts:
                if not rt.support(fmt, sub.device, arch, mc.spec.native_dtype).runs:
                    if (formats or runtimes) and sub is target:  # keep the reason when the user asked for it
                        plans.append(evaluate(mc, fmt, rt, sub, context=context, concurrency=concurrency,
                                              prompt_tokens=prompt_tokens, calibration=calibration))
                    continue
                for kv in _kv_choices(rt, kv_dtypes):
                    plans.append(evaluate(mc, fmt, rt, sub, context=context, concurrency=concurrency, kv_dtype=kv,
                                          prompt_tokens=prompt_tokens, calibration=calibration))
    mc.flush()
    for p in plans:  # planner eval measured these formats on this model: rank by that, not by the table
        if measured_quality and p.format_id in measured_quality:
            p.quality = measured_quality[p.format_id]
    ranked = rank(plans, prefer, min_tokens_per_s)
    compare = ranked
    reps = deployments(ranked, min_tokens_per_s, prefer) if len(subs) > 1 else []
    if reps:
        # the best deployment first; compare it with the other formats as they would be deployed
        chosen = {id(p) for p in reps}
        ranked, compare = reps + [p for p in ranked if id(p) not in chosen], reps
    best = ranked[0] if ranked and ranked[0].fits else None
    by_id = {f.id: f for f in fmts}
    rec = Recommendation(mc.spec.id, target.label, context, concurrency, prefer, ranked, best, formats=by_id)
    if best is not None:
        rec.reasons = explain(best, compare, prefer)
    else:
        rec.suggestions = suggest(mc, target, ranked, by_id, context=context, concurrency=concurrency, catalog=catalog,
                                  calibration=calibration)
    return rec


def explores_layouts(target: Target, concurrency: int = 1) -> bool:
    """Whether recommend weighs several layouts for `target`: always across nodes; within one node of several GPUs
    only for concurrent sequences (replicas then serve them), so a one-sequence plan stays as it always was."""
    if target.replicas > 1 or target.is_cpu:  # the user fixed the replicas (estimate/check), or one CPU
        return False
    return target.nodes > 1 or (target.count > 1 and concurrency > 1)


def sub_layouts(target: Target, concurrency: int = 1) -> list[Target]:
    """For a multi-node target, or a node of several GPUs serving several sequences: every smaller layout too
    (1..nodes nodes; within one node 1, 2, 4... GPUs), so the planner can pick the smallest that meets the limits,
    and with several sequences each smaller layout again as data-parallel replicas filling the GPUs (at most one
    replica per sequence). Otherwise the target is planned as given."""
    if not explores_layouts(target, concurrency):
        return [target]
    out = []
    counts = sorted({c for c in (1, 2, 4, 8, 16) if c < target.count} | {target.count})
    for c in counts:
        if c == target.count and target.nodes == 1:
            out.append(target)  # the whole node as given (recommend keeps the reasons of candidates asked for on it)
            continue
        out.append(Target(target.device, c, target.usable_bytes[:c], target.host_ram_bytes, target.host_bandwidth_gb_s,
                          target.origin, target.notes, 1, None, False))
    for n in range(2, target.nodes + 1):
        out.append(Target(target.device, target.count, target.usable_bytes, target.host_ram_bytes,
                          target.host_bandwidth_gb_s, target.origin, target.notes, n, target.fabric, target.expert_parallel))
    replicated = []
    for sub in out:
        per_node = target.count // sub.count if sub.nodes == 1 else 1
        dp = min(per_node * (target.nodes // sub.nodes), concurrency)
        if dp > 1:
            replicated.append(dataclasses.replace(sub, replicas=dp, replicas_per_node=min(per_node, dp),
                                                  fabric=target.fabric))
    return out + replicated


def _gpus(p: Plan) -> int:
    """GPUs of one copy of the plan's layout."""
    par = p.parallel or {}
    return par.get("nodes", 1) * par.get("gpus_per_node", p.device_count) if par else p.device_count


def _total_gpus(p: Plan) -> int:
    """GPUs of every data-parallel copy together."""
    return _gpus(p) * (p.parallel or {}).get("data_parallel", 1)


def deployments(ranked: list[Plan], min_tokens_per_s: float | None, prefer: str = "balanced") -> list[Plan]:
    """One plan per format/runtime/KV choice that fits, best first. Each choice is deployed on the smallest layout
    that fits it and meets the limits: the fewest GPUs in all (replicas count), then the most throughput among
    layouts of that size (e.g. 2 x tp1 against tp2 when 64 sequences' KV cache needs two GPUs); then the ranking
    picks among those deployments, so a format is judged on the layout it would really get. With prefer='speed',
    each choice takes its fastest layout instead (aggregate throughput when several sequences run)."""
    ok = [p for p in ranked if p.fits and not (min_tokens_per_s and p.decode_tokens_per_s < min_tokens_per_s)]
    groups: dict[tuple[str, str, str], list[Plan]] = {}
    for p in ok:
        groups.setdefault((p.format_id, p.runtime_id, p.kv_dtype), []).append(p)

    def deployed(same: list[Plan]) -> Plan:
        if prefer == "speed":
            return max(same, key=lambda p: p.served_tokens_per_s)
        return min(same, key=lambda p: (_total_gpus(p), -p.score, -p.throughput_tokens_per_s))

    order = {id(p): i for i, p in enumerate(ranked)}  # `ranked` is already in ranking order
    return sorted((deployed(g) for g in groups.values()), key=lambda p: order[id(p)])


def layout_runners_up(rec: Recommendation) -> list[Plan]:
    """The chosen format/runtime/KV on every layout considered (fewest GPUs first): the runners-up to the layout."""
    if rec.best is None:
        return []
    b = rec.best
    same = [p for p in rec.plans if p.runs and (p.format_id, p.runtime_id, p.kv_dtype) == (b.format_id, b.runtime_id, b.kv_dtype)]
    return sorted(same, key=lambda p: (_total_gpus(p), _gpus(p)))


_BASIS_WORDS = {
    "published": "published measurements of this format's family on this model",
    "published-family": "published measurements of this format's family on other models",
    "extrapolated": ("extrapolated: the published measurements of this format's family do not cover it (other bits, no rows of "
                     "its own, or a single source), so the range is wide"),
}


def basis_words(q: dict) -> str:
    """How a quality estimate is known, in words: its basis, and for an extrapolated one the reason."""
    if q.get("basis") == "extrapolated" and q.get("basis_why"):
        return f"extrapolated ({q['basis_why']}), so the range is wide"
    return _BASIS_WORDS.get(q.get("basis", ""), "estimated")


def speed_text(plan: Plan, name: str) -> str:
    """A speed for text output: '~N' with its 10-90 % range '(N1-N2)' where its basis is weak, else 'about N'."""
    v = getattr(plan, name)
    fmt = (lambda x: f"{x:.1f}") if v < 10 else (lambda x: f"{x:.0f}")
    if plan.speed_basis in WEAK_BASES:
        lo, hi = plan.speed_range(name)
        return f"~{fmt(v)} ({fmt(lo)}-{fmt(hi)})"
    return f"about {fmt(v)}"


def speed_cell(plan: Plan, name: str) -> str:
    """A speed for a table cell or a short line: 'N', or '~N (N1-N2)' where its basis is weak (the one formatter the
    CLI's tables and the TUI's plan and alternatives views share)."""
    return speed_text(plan, name).removeprefix("about ")


def explain(best: Plan, ranked: list[Plan], prefer: str) -> list[str]:
    """Plain-words reasons for the chosen plan."""
    out = []
    # one usable figure per device: the fullest device against its own usable memory (never a sum over devices)
    fullest = max(best.per_device, key=lambda d: d.total_bytes)
    used, usable = fullest.total_bytes / GIB, fullest.usable_bytes / GIB
    where = f" on the fullest of {len(best.per_device)} devices" if len(best.per_device) > 1 else ""
    seqs = f" x {best.concurrency} sequences" if best.concurrency > 1 else ""
    if best.layout in ("partial-offload", "expert-offload"):
        # offloaded: the device total is only the GPU part, so name both parts instead of a misleading "fits"
        out.append(f"{best.format_id} runs split between GPU and system RAM: GPU part {used:.1f} GiB of {usable:.1f} GiB "
                   f"usable{where}, RAM part {best.host_bytes / GIB:.1f} GiB (weights {best.weights_bytes / GIB:.1f} GiB "
                   f"in all, KV cache {best.kv_cache_bytes / GIB:.1f} GiB at {best.context} tokens{seqs}).")
    else:
        out.append(f"{best.format_id} fits: {used:.1f} GiB of {usable:.1f} GiB usable{where} "
                   f"(weights {best.weights_bytes / GIB:.1f} GiB, KV cache {best.kv_cache_bytes / GIB:.1f} GiB at "
                   f"{best.context} tokens{seqs}{' in all' if where else ''}).")
    q = best.quality
    if q.get("source") == "measured":
        out.append(f"Measured quality loss is {q.get('label', '?')}: KL divergence {q.get('kld', 0):.4f}, perplexity "
                   f"{q.get('ppl_delta_pct', 0):+.2f}% versus 16-bit, measured by planner eval on {q.get('text', '?')}.")
    else:
        out.append(f"Expected quality loss is {q.get('label', '?')}: KL divergence {q.get('kld', 0):.4f} "
                   f"({q.get('kld_low', q.get('kld', 0)):.4f}-{q.get('kld_high', q.get('kld', 0)):.4f}), perplexity "
                   f"+{q.get('ppl_delta_pct', 0):.2f}% versus "
                   f"{'the released weights' if q.get('release') else '16-bit'}; "
                   f"{basis_words(q)}.")
    out.extend(_release_reasons(best, ranked))
    speed = f"{best.runtime_id} decodes {speed_text(best, 'decode_tokens_per_s')} tokens/s per sequence"
    if best.concurrency > 1:
        speed += f", {speed_text(best, 'throughput_tokens_per_s')} tokens/s aggregate over {best.concurrency} sequences"
    out.append(f"{speed}, and reads a {best.prompt_tokens}-token prompt in {best.ttft_s:.2f} s (speeds "
               f"{best.speed_basis or 'assumed'}).")
    better_quality = [p for p in ranked if p.fits and ranking_kld(p.quality) < ranking_kld(q) - 1e-9]
    if better_quality:
        b = max(better_quality, key=lambda p: p.score)
        mine, theirs = best.served_tokens_per_s, b.served_tokens_per_s
        # many sequences: what counts is the total served
        what = "serves" if best.concurrency > 1 else "decodes at"
        unit = "tokens/s aggregate" if best.concurrency > 1 else "tokens/s per sequence"
        where = f" on {b.parallel_layout}" if b.parallel_layout != best.parallel_layout else ""
        name = "throughput_tokens_per_s" if best.concurrency > 1 else "decode_tokens_per_s"
        weak = b.speed_basis in WEAK_BASES and best.speed_basis not in WEAK_BASES
        # an assumed speed is ranked at its band's low end (score): say so where that is what decided
        why = f"; its speed is {b.speed_basis}, so it ranks at its band's low end" if weak else ""
        out.append(f"Higher quality {b.format_id} also fits{where} but {what} {speed_cell(b, name)} {unit} "
                   f"({'slower' if theirs < 0.95 * mine else 'similar'}{why}); chosen by preference '{prefer}'.")
    bigger = [p for p in ranked if p.runs and not p.fits and p.quality.get("kld", 1) < q.get("kld", 0)]
    if bigger and not better_quality:
        b = min(bigger, key=lambda p: p.quality.get("kld", 1))
        out.append(f"Higher quality {b.format_id} does not fit: {b.reason}.")
    if best.kv_dtype not in ("f16", "auto", "fp16"):
        out.append(f"KV cache in {best.kv_dtype} halves its memory at a negligible quality cost.")
    return out


def _release_reasons(best: Plan, ranked: list[Plan]) -> list[str]:
    """For a quantized release (planner.cost.release): what the chosen format does with it, and which running
    alternatives store it at more bytes for no gain."""
    if not best.quality.get("release"):
        return []
    out = [f"The model was {best.quality['release'].replace(': this format', f': {best.format_id}')}."]
    wasteful = [p for p in ranked if p.runs and p is not best and "gains nothing" in p.quality.get("release", "")]
    for p in sorted({p.format_id: p for p in wasteful}.values(), key=lambda p: p.weights_bytes)[:3]:
        out.append(f"{p.format_id}: {p.quality['release'].split(': this format ', 1)[-1]} than the release.")
    return out


def suggest(mc: ModelCost, target: Target, ranked: list[Plan], formats: dict[str, WeightFormat], *, context: int,
            concurrency: int, catalog=None, calibration: dict | None = None) -> list[str]:
    """When nothing fits: the smallest plan, a shorter context, more devices, or a device with enough memory
    (`formats`: the plans' formats by id)."""
    runs = [p for p in ranked if p.runs]
    out: list[str] = []
    if not runs:
        # the rules' own reasons (architecture, format, hardware), not just 'nothing runs'
        why = sorted({p.reason for p in ranked if p.reason})[:4]
        return [f"no runtime runs the candidates on {target.device.name} ({target.device.backend})"] + why
    smallest = min(runs, key=lambda p: p.needed_bytes)
    need = smallest.needed_bytes
    usable = max(sum(target.usable_bytes), 1)
    out.append(f"smallest option {smallest.format_id} with {smallest.runtime_id} needs {need / GIB:.1f} GiB "
               f"({smallest.reason or 'does not fit'})")
    if context > 4096:
        p = evaluate(mc, formats[smallest.format_id], RUNTIMES[smallest.runtime_id], target, context=4096,
                     concurrency=concurrency, kv_dtype=smallest.kv_dtype, calibration=calibration)
        if p.fits:
            out.append(f"a shorter context fits: {smallest.format_id} at --context 4096 needs {p.total_memory_bytes / GIB:.1f} GiB")
    per_device = max(target.usable_bytes) if target.usable_bytes else usable
    q4 = [p for p in runs if p.format_id in ("Q4_K_M", "awq-int4")]
    ref = min(q4, key=lambda p: p.needed_bytes) if q4 else smallest
    n = math.ceil(ref.needed_bytes / max(per_device * 0.95, 1))
    if n > target.count:
        out.append(f"more devices: about {n}x {target.device.id} hold {ref.format_id} ({ref.needed_bytes / GIB:.1f} GiB)")
    if catalog is not None:
        ref_fmt = formats[ref.format_id]
        fits = sorted((d for d in catalog if d.memory_kind != "system" and d.memory_bytes * 0.9 >= ref.needed_bytes
                       and any(rt.support(ref_fmt, d, arch_id(mc.spec), mc.spec.native_dtype).runs
                               for rt in RUNTIMES.values())),
                      key=lambda d: d.memory_gib)[:3]
        if fits:
            out.append(f"a device with enough memory for {ref.format_id}: " + ", ".join(f"{d.id} ({d.memory_gib:g} GiB)" for d in fits))
    return out
