"""`planner check --explain`: one deployment's full memory breakdown and the spec changes that would make it pass,
each costed through Checker.check like the check itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from planner.fitcheck.checks import (
    CheckResult, Checker, Inputs, tightest_device, plan_checks, quality_kld, quality_label,
)
from planner.fitcheck.reporters import check_lines
from planner.fitcheck.spec import DeviceTarget
from planner.plan import GIB, Plan, replica_layout_error
from planner.recommend import recommend
from planner.runtimes import RUNTIMES


@dataclass
class Suggestion:
    """A change to the spec that makes a failing deployment pass, with the numbers it would then have."""

    change: dict[str, Any]
    text: str

    def as_dict(self) -> dict:
        """JSON form."""
        return {"change": self.change, "text": self.text}


def _brief(plan: Plan) -> str:
    d = tightest_device(plan)
    return (f"{d.total_bytes / GIB:.1f}/{d.usable_bytes / GIB:.1f} GiB, decode {plan.decode_tokens_per_s:.1f} tok/s, "
            f"TTFT {plan.ttft_s:.2f} s, quality {quality_label(quality_kld(plan))}")


def what_would_pass(result: CheckResult, checker: Checker, max_items: int = 8) -> list[Suggestion]:
    """Spec changes that make a failing deployment pass: another format, a shorter context, fewer sequences, an 8-bit
    KV cache, more devices, a larger or faster device. Each changed deployment goes through Checker.check, the same
    path as the check itself, so every suggestion is costed and passes every limit."""
    if result.passed or result.inputs is None:
        return []
    dep, inp = result.deployment, result.inputs
    mc, plan = inp.mc, result.plan
    out: list[Suggestion] = []

    def attempt(**change: Any) -> CheckResult | None:
        """The check of the deployment with `change` applied; None when it still fails."""
        target = checker.target(change["target"]) if "target" in change else inp.target
        new = Inputs(mc, target, inp.fmt, inp.runtime, change.get("kv_dtype", inp.kv_dtype), change.get("context", inp.context))
        r = checker.check(dataclasses.replace(dep, **change), new)
        return r if r.passed else None

    # 1. Another format (with the pinned runtime, if any): recommend's ranking, the first that meets every limit.
    if inp.fmt is not None:
        rec = recommend(mc, inp.target, context=inp.context, concurrency=dep.concurrency,
                        runtimes=[inp.runtime] if inp.runtime else (), kv_dtypes=[inp.kv_dtype] if inp.kv_dtype else (),
                        prompt_tokens=dep.prompt_tokens, min_tokens_per_s=dep.limits.min_decode_tokens_per_s)
        for p in rec.plans:
            if p.format_id == inp.fmt.id:
                continue
            if all(c.passed for c in plan_checks(p, dep.limits, max_context=mc.spec.max_context,
                                                 allow_context_extension=dep.allow_context_extension, context=inp.context)):
                change: dict[str, Any] = {"format": p.format_id}
                if not inp.runtime:
                    change["runtime"] = p.runtime_id
                if not inp.kv_dtype and p.kv_dtype != RUNTIMES[p.runtime_id].kv_dtypes[0]:
                    change["kv_dtype"] = p.kv_dtype  # recommend also tries an 8-bit KV cache
                out.append(Suggestion(change, f"format {p.format_id} with {p.runtime_id}: {_brief(p)}"))
                break
    # 2. A shorter context: the longest that passes, in steps of 256 tokens (binary search; failures grow with context).
    step = 256
    if inp.context > step and attempt(context=step) is not None:
        lo, hi = 1, (inp.context - 1) // step  # lo * step passes
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if attempt(context=mid * step) is not None:
                lo = mid
            else:
                hi = mid - 1
        r = attempt(context=lo * step)
        if r is not None and r.plan is not None:
            out.append(Suggestion({"context": lo * step}, f"context {lo * step} tokens (from {inp.context}): {_brief(r.plan)}"))
    # 3. Fewer concurrent sequences.
    if dep.concurrency > 1 and attempt(concurrency=1) is not None:
        lo, hi = 1, dep.concurrency - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if attempt(concurrency=mid) is not None:
                lo = mid
            else:
                hi = mid - 1
        r = attempt(concurrency=lo)
        if r is not None and r.plan is not None:
            out.append(Suggestion({"concurrency": lo}, f"concurrency {lo} (from {dep.concurrency}): {_brief(r.plan)}"))
    # 4. An 8-bit KV cache, where the deployment uses a 16-bit one.
    rt = inp.runtime or (RUNTIMES.get(plan.runtime_id) if plan is not None else None)
    if rt is not None and (inp.kv_dtype or "f16").lower() in ("f16", "fp16", "auto", "bf16"):
        eight = next((k for k in ("q8_0", "fp8_e4m3", "q8", "fp8", "int8") if k in rt.kv_dtypes), None)
        r = attempt(kv_dtype=eight) if eight else None
        if r is not None and r.plan is not None:
            out.append(Suggestion({"kv_dtype": eight}, f"KV cache {eight}: {_brief(r.plan)}"))
    # 5. More devices of the same kind, and 6. a larger or faster device (catalog targets only: `local` cannot grow).
    if isinstance(dep.target, DeviceTarget):
        t = dep.target
        most = 1 if inp.runtime is not None and inp.runtime.multi_gpu == "none" else max(8, t.count + 1)
        for n in range(t.count + 1, most + 1):
            if replica_layout_error(n, t.nodes, t.replicas):  # the replicas must still split the GPUs evenly
                continue
            r = attempt(target=t.model_copy(update={"count": n}))
            if r is not None and r.plan is not None:
                out.append(Suggestion({"target": {"device": t.device, "count": n}}, f"{n}x {inp.target.device.id}: {_brief(r.plan)}"))
                break
        here = inp.target.device
        better = sorted((d for d in checker.catalog if d.memory_kind == here.memory_kind and d.id != here.id
                         and (d.memory_bytes > here.memory_bytes or (d.memory_bytes == here.memory_bytes
                                                                     and d.mem_bandwidth_gb_s > here.mem_bandwidth_gb_s))),
                        key=lambda d: (d.backend != here.backend, d.memory_bytes, -d.mem_bandwidth_gb_s))
        # A pinned format costs one evaluate per device; `auto` runs recommend for each, so look at fewer.
        budget = len(better) if inp.fmt is not None else 12
        found: list[tuple[str, CheckResult]] = []
        for d in better[:budget]:
            r = attempt(target=t.model_copy(update={"device": d.id}))
            if r is not None and r.plan is not None:
                found.append((d.id, r))
                if len(found) == 3:
                    break
        if found:
            first_id, first = found[0]
            out.append(Suggestion({"target": {"device": first_id, "count": t.count}},
                                  f"a larger or faster device: {', '.join(i for i, _ in found)} "
                                  f"({first_id}: {_brief(first.plan)})"))  # type: ignore[arg-type]
    return out[:max_items]


def explain_data(result: CheckResult, checker: Checker) -> dict:
    """Everything --explain shows: the result, the full memory breakdown and what would make it pass."""
    data = result.as_dict()
    p = result.plan
    data["memory"] = None
    if p is not None and p.runs:
        data["memory"] = {
            "layout": p.layout, "gpu_layers": p.gpu_layers, "n_layers": p.n_layers, "host_bytes": p.host_bytes,
            "per_device": [dict(d.as_dict(), headroom_pct=round((d.usable_bytes - d.total_bytes) / max(d.usable_bytes, 1) * 100, 2))
                           for d in p.per_device],
        }
    data["what_would_pass"] = [s.as_dict() for s in what_would_pass(result, checker)]
    return data


def render_explain(data: dict) -> str:
    """--explain as text."""
    lines = [f"{'PASS' if data['passed'] else 'FAIL'} {data['name']} ({data['file']}{':' + str(data['line']) if data['line'] else ''})",
             f"  {data['model']} {data['format']} {data['runtime'] or '-'} on {data['target']}, context {data['context']} "
             f"tokens x {data['concurrency']}, KV {data['kv_dtype'] or '-'}, prompt {data['prompt_tokens']} tokens",
             f"  chosen: {data['chosen']}", ""]
    mem = data.get("memory")
    if mem:
        lines.append(f"Memory ({mem['layout']}" + (f", {mem['gpu_layers']}/{mem['n_layers']} layers on GPU" if mem['gpu_layers'] is not None else "") + "):")
        hdr = f"  {'device':<22}{'weights':>10}{'KV cache':>10}{'compute':>10}{'overhead':>10}{'total':>10}{'usable':>10}{'free':>9}"
        lines.append(hdr + "   (GiB)")
        for d in mem["per_device"]:
            g = lambda n: f"{n / GIB:.2f}"  # noqa: E731
            lines.append(f"  {d['device']:<22}{g(d['weights_bytes']):>10}{g(d['kv_cache_bytes']):>10}{g(d['activations_bytes']):>10}"
                         f"{g(d['overhead_bytes']):>10}{g(d['total_bytes']):>10}{g(d['usable_bytes']):>10}{d['headroom_pct']:>8.1f}%"
                         + ("" if d["fits"] else "  OVER"))
        if mem["host_bytes"]:
            lines.append(f"  host RAM (tensors kept on the host, offloaded layers): {mem['host_bytes'] / GIB:.2f} GiB")
        lines.append("")
    lines.append("Checks:")
    lines += check_lines(data["checks"])
    plan = data.get("plan") or {}
    if plan.get("quality"):
        lines.append(f"  quality basis: {plan['quality'].get('basis')} ({plan['quality'].get('note', '')})")
    for w in plan.get("warnings") or []:
        lines.append(f"  ! {w}")
    if plan.get("launch"):
        lines.append(f"  launch: {plan['launch']}")
    if not data["passed"]:
        lines += ["", "What would make it pass:"]
        ways = data["what_would_pass"]
        for s in ways:
            lines.append(f"  - {_change_text(s['change'])}: {s['text']}")
        if not ways:
            lines.append("  - nothing simple found: no other format, context, concurrency, KV dtype, device count or "
                         "larger device of this kind meets every limit")
        for s in data.get("suggestions") or []:
            lines.append(f"  - {s}")
    return "\n".join(lines) + "\n"


def _change_text(change: dict) -> str:
    parts = []
    for k, v in change.items():
        if isinstance(v, dict):
            v = "{" + ", ".join(f"{a}: {b}" for a, b in v.items()) + "}"
        parts.append(f"{k}: {v}")
    return ", ".join(parts)
