"""`planner recommend --confirm`: bench the top candidates on this machine and re-rank by measured speed.

Measurements re-rank only when they are evidence about the candidates' runtimes: every candidate was timed with
kernels of its own engine: GGUF candidates run whole in real llama.cpp when llama-cpp-python is installed
(planner.measure.speed.llamacpp), transformers candidates on torch's kernels. numpy reference kernels, or torch kernels standing
in for llama.cpp or vLLM, measure this machine but not those runtimes (numpy's int4 reference kernel is 10-40x
slower than llama.cpp's), so with them the ranking is kept and the table is shown for comparison.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from collections.abc import Callable
from dataclasses import dataclass, field

from planner.errors import PlannerError
from planner.formats import get_format
from planner.measure.speed.kernels import copy_bandwidth_gb_s
from planner.measure.speed.runner import run_bench
from planner.runtimes import RUNTIMES

if TYPE_CHECKING:
    from planner.cost.model import ModelCost
    from planner.plan import Plan, Target
    from planner.recommend import Recommendation

# A short bench per candidate: decode only, 64 MiB sampled per shape, brief timings.
CONFIRM_SETTINGS = {"prompt": 0, "max_sample_bytes": 64 * 2**20, "budget_s": 0.1, "repeat": 9}


@dataclass
class Confirmed:
    """One candidate: its plan, what the cost model predicts and what the bench measured."""

    plan: Plan
    kernel: str | None = None
    kernel_engine: str | None = None
    measured_decode: float | None = None
    note: str = ""

    @property
    def predicted_decode(self) -> float:
        """The plan's decode tokens/s (aggregate at its concurrency)."""
        return self.plan.served_tokens_per_s

    @property
    def same_engine(self) -> bool:
        """The kernel timed is the candidate runtime's own engine's."""
        rt = RUNTIMES.get(self.plan.runtime_id)
        return rt is not None and self.kernel_engine == rt.engine


@dataclass
class Confirmation:
    """The candidates benched, the order after confirming, and why."""

    candidates: list[Confirmed]
    order: list[Confirmed]
    reranked: bool
    reason: str
    copy_bandwidth_gb_s: float | None = None
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def choice(self) -> Confirmed | None:
        """The final choice."""
        return self.order[0] if self.order else None

    def to_json(self) -> dict:
        """JSON form (recommend --json --confirm)."""
        def one(c: Confirmed) -> dict:
            return {"format": c.plan.format_id, "runtime": c.plan.runtime_id, "kv_dtype": c.plan.kv_dtype,
                    "predicted_decode_tokens_per_s": round(c.predicted_decode, 3),
                    "measured_decode_tokens_per_s": round(c.measured_decode, 3) if c.measured_decode else None,
                    "ratio": round(c.measured_decode / c.predicted_decode, 4) if c.measured_decode else None,
                    "kernel": c.kernel, "kernel_engine": c.kernel_engine, "same_engine": c.same_engine, "note": c.note}

        return {"skipped": self.skipped, "reranked": self.reranked, "reason": self.reason,
                "copy_bandwidth_gb_s": round(self.copy_bandwidth_gb_s, 3) if self.copy_bandwidth_gb_s else None,
                "candidates": [one(c) for c in self.candidates], "order": [one(c) for c in self.order],
                "choice": one(self.choice) if self.choice else None, "notes": list(self.notes)}


def local_device(target: Target) -> str | None:
    """The bench device string for a probed target, or None when the target is not this machine."""
    if target.origin != "probe":
        return None
    return {"cpu": "cpu", "cuda": "cuda:0", "metal": "mps"}.get(target.device.backend)


def candidates(rec: Recommendation, top: int = 3) -> list[Plan]:
    """The top `top` fitting plans, one per format (a format is benched once)."""
    out, seen = [], set()
    for p in rec.fitting:
        if p.format_id in seen:
            continue
        seen.add(p.format_id)
        out.append(p)
        if len(out) == top:
            break
    return out


def confirm(rec: Recommendation, mc: ModelCost, target: Target, *, top: int = 3, calibration: dict | None = None,
            progress: Callable[[str], None] | None = None, settings: dict[str, Any] | None = None) -> Confirmation:
    """Bench the top candidates on this machine and re-rank by measured decode speed where that is evidence."""
    say = progress or (lambda _m: None)
    device = local_device(target)
    if device is None:
        why = (f"--confirm benches on this machine, but the plan is for {target.label} ({target.origin}); "
               "drop --device/--memory/--snapshot to plan for this machine")
        return Confirmation([], [], False, why, skipped=why)
    plans = candidates(rec, top)
    if not plans:
        return Confirmation([], [], False, "nothing fits: nothing to confirm", skipped="nothing fits")
    opts = {**CONFIRM_SETTINGS, **(settings or {})}
    say(f"measuring copy bandwidth on {device}")
    copy = copy_bandwidth_gb_s(device, nbytes=opts.pop("copy_bytes", 2**30))
    out: list[Confirmed] = []
    for i, plan in enumerate(plans, 1):
        fmt = rec.formats[plan.format_id]
        c = Confirmed(plan)
        say(f"[{i}/{len(plans)}] {plan.format_id} ({plan.runtime_id})")
        try:
            # the format's own kernels: real llama.cpp for GGUF when installed, else the nearest matmul kernels
            res = run_bench(mc, fmt, target, device=device, batches=(max(1, min(plan.concurrency, 256)),),
                            runtime=RUNTIMES.get(plan.runtime_id), calibration=calibration, copy_gb_s=copy,
                            progress=lambda m: say(f"    {m}"), **opts)
        except PlannerError as exc:
            c.note = str(exc)
            out.append(c)
            continue
        b = max(1, min(plan.concurrency, 256))
        # the runtime itself (llama.cpp timed whole) when it ran at this batch, else the fastest stand-in kernel
        timed = [r for r in res.runs if b in r.batches]
        whole = [r for r in timed if r.info.backend == "llamacpp"]
        if not timed:
            c.note = f"no kernel was timed at {b} sequences"
            out.append(c)
            continue
        best = max(whole or timed, key=lambda r: r.decode_tokens_per_s(b))
        c.kernel, c.kernel_engine = best.info.id, best.info.engine
        c.measured_decode = best.decode_tokens_per_s(b)
        c.note = "; ".join(res.notes)
        out.append(c)
    order, reranked, reason = decide(out)
    return Confirmation(out, order, reranked, reason, copy)


def decide(out: list[Confirmed]) -> tuple[list[Confirmed], bool, str]:
    """(final order, re-ranked?, why): by measured speed when every candidate was timed with its own engine's
    kernels, else the predicted order kept."""
    measured = [c for c in out if c.measured_decode]
    if measured and len(measured) == len(out) and all(c.same_engine for c in out):
        order = sorted(out, key=lambda c: -(c.measured_decode or 0.0))
        first = order[0]
        reason = (f"{first.plan.format_id} with {first.plan.runtime_id} measured fastest here: "
                  f"{first.measured_decode:.1f} tokens/s ({_scope(first)}) against {first.predicted_decode:.1f} "
                  "predicted")
        if first is out[0]:
            reason += "; the measurement confirms the recommendation"
        return order, True, reason
    engines = sorted({c.kernel_engine or "none" for c in out})
    reason = (f"kept the predicted ranking: the kernels timed here ({', '.join(engines)}) are not the candidates' "
              f"runtimes' own, so they measure this machine, not how fast "
              f"{', '.join(sorted({c.plan.runtime_id for c in out}))} would run")
    return list(out), False, reason


def _scope(c: Confirmed) -> str:
    """What the measured figure covers."""
    return "whole model in llama.cpp" if (c.kernel or "").startswith("llama.cpp-") else "matmuls"
