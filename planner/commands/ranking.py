"""`planner recommend` without --model: rank models for the target (planner.fit), and the honest one-line verdict a
single-model answer gets when its plan is slow or lossy."""

from __future__ import annotations

import argparse

from planner.capability import unit
from planner.commands.common import gib
from planner.commands.options import console, print_json
from planner.fit import DEFAULT_MIN_TOKENS_PER_S, ModelFit, Ranking, rank_here
from planner.models.profiles import load_registry
from planner.plan import Plan, Target

LOSSY_LABELS = ("noticeable", "large", "severe")  # worse than "small" (planner.cost.quality.LABELS)
SCHEMA_VERSION = 1


def speed_error(plan: Plan) -> tuple[float, float]:
    """(decode, prefill) relative half-widths of the plan's 10-90 % speed bands (planner.cost.speed.SPEED_P90, by the
    plan's speed basis): the one table of speed error."""
    return plan.speed_width("decode_tokens_per_s"), plan.speed_width("prefill_tokens_per_s")


def with_range(plan: Plan, name: str) -> str:
    """'12.3 (9.7-14.9)': the plan's speed `name` and its 10-90 % band (Plan.speed_range)."""
    v = getattr(plan, name)
    lo, hi = plan.speed_range(name)
    fmt = (lambda x: f"{x:.1f}") if v < 100 else (lambda x: f"{x:.0f}")
    return f"{fmt(v)} ({fmt(lo)}-{fmt(hi)})"


def rank_for(args: argparse.Namespace, target: Target, calibration: dict | None, context: int | None = None):  # type: ignore[no-untyped-def]
    """The ranking for the command line's target (bundled profiles and the local HF cache)."""
    registry = load_registry(getattr(args, "profiles", []) or [])
    floor = args.min_tokens_per_s if args.min_tokens_per_s is not None else DEFAULT_MIN_TOKENS_PER_S
    return rank_here(registry, target, use=args.use, context=context if context is not None else args.context,
                     concurrency=args.concurrency, min_tokens_per_s=floor, calibration=calibration,
                     prompt_tokens=args.prompt)


def fit_json(f: ModelFit, target: Target) -> dict:
    """One model's row (JSON)."""
    p = f.plan
    out: dict = {"model": f.spec.id, "name": f.spec.name, "origin": f.origin, "ranked": f.ranked,
                 "capability": f.capability.as_dict(), "expected_capability": f.expected.as_dict() if f.expected else None,
                 "reason": f.reason or None}
    if p is not None:
        de, pe = speed_error(p)
        out["plan"] = {"format": p.format_id, "runtime": p.runtime_id, "kv_dtype": p.kv_dtype, "layout": p.parallel_layout,
                       "memory_bytes": p.total_memory_bytes, "usable_memory_bytes": p.usable_memory_bytes,
                       "host_memory_bytes": p.host_bytes,
                       "decode_tokens_per_s": round(p.decode_tokens_per_s, 2), "decode_p90_error": round(de, 3),
                       "prefill_tokens_per_s": round(p.prefill_tokens_per_s, 2), "prefill_p90_error": round(pe, 3),
                       "ttft_s": round(p.ttft_s, 3), "quality": p.quality, "launch": p.launch}
    else:
        out["plan"] = None
    return out


def to_json(r: Ranking, target: Target, skipped: list[str], top: int) -> dict:
    """The documented JSON of `recommend` without --model."""
    ranked = r.ranked
    return {"schema_version": SCHEMA_VERSION, "mode": "rank-models", "use": r.use, "context": r.context,
            "min_tokens_per_s": r.min_tokens_per_s,
            "target": {"label": target.label, "device": target.device.id, "count": target.count, "origin": target.origin,
                       "notes": list(target.notes)},
            "ranked": [fit_json(f, target) for f in ranked[:top]],
            "not_ranked": [fit_json(f, target) for f in r.fits if not f.ranked],
            "hf_cache_skipped": skipped}


def render(r: Ranking, target: Target, skipped: list[str], top: int) -> None:
    """Human output: the ranked table, the launch command of the first, and what was left out and why."""
    from rich.table import Table

    con = console()
    con.print(f"[bold]Best models for {r.use}[/bold] on [bold]{target.label}[/bold] [dim]({target.origin})[/dim], "
              f"context {r.context:,} tokens, at least {r.min_tokens_per_s:g} tok/s decode")
    for n in target.notes:
        con.print(f"[dim]note: {n}[/dim]")
    ranked = r.ranked
    if ranked:
        cap = ranked[0].capability
        con.print(f"[dim]capability: {cap.benchmark} ({cap.source}); expected = published x what the format keeps "
                  "(README: 'Which model'); ranges: 10-90 % for capability and speed[/dim]")
    t = Table(title_justify="left", header_style="bold")
    for col in ("#", "model", "format", "runtime", "memory GiB", "decode tok/s", "prefill tok/s", "quality loss",
                f"{r.use} published", "expected"):
        t.add_column(col, justify="right" if col in ("#", "memory GiB", "decode tok/s", "prefill tok/s") else "left")
    for i, f in enumerate(ranked[:top], 1):
        p, e = f.plan, f.expected
        assert p is not None and e is not None and f.capability.score is not None
        u = unit(f.capability)
        mem = gib(p.total_memory_bytes) + (f" +{gib(p.host_bytes)} RAM" if p.host_bytes else "")
        t.add_row(str(i), f.spec.id + ("" if f.origin == "profile" else f" [dim]{f.origin}[/dim]"), p.format_id,
                  p.runtime_id, mem, with_range(p, "decode_tokens_per_s"), with_range(p, "prefill_tokens_per_s"),
                  f"{p.quality.get('kld', 0):.3f} {p.quality.get('label', '')}", f"{f.capability.score:g}{u}",
                  f"{e.value:.0f} ({e.low:.0f}-{e.high:.0f}){' extrapolated' if e.extrapolated else ''}")
    con.print(t)
    if ranked:
        first = ranked[0]
        assert first.plan is not None
        con.print(f"\n[bold]Launch #1 ({first.spec.id}, {first.plan.format_id}):[/bold]")
        for line in first.plan.launch.splitlines():
            con.print(f"  {line}", soft_wrap=True)
    else:
        con.print("[bold red]No model with a published score runs here at that speed.[/bold red]")
    _render_left_out(r)
    for s in skipped:
        con.print(f"[dim]HF cache: skipped {s}[/dim]")


def _render_left_out(r: Ranking) -> None:
    """One line per reason class: no score, fits but unranked, too slow or too big, context."""
    con = console()
    no_score = [f for f in r.fits if not f.capability.has_data]
    unscored_fit = [f for f in no_score if f.plan is not None]
    slow = [f for f in r.fits if f.capability.has_data and f.plan is None and f.best_speed > 0]
    big = [f for f in r.fits if f.capability.has_data and f.plan is None and not f.best_speed
           and not f.reason.startswith("context")]
    ctx = [f for f in r.fits if f.reason.startswith("context")]
    if unscored_fit:
        con.print("[yellow]Run here but have no published score (not ranked):[/yellow] "
                  + ", ".join(f"{f.spec.id} ({f.plan.format_id}, {f.plan.decode_tokens_per_s:.0f} tok/s)"
                              for f in unscored_fit if f.plan is not None))
    rest = [f for f in no_score if f.plan is None and not f.reason.startswith("context")]
    if rest:
        con.print(f"[dim]No published {r.use} score on file: {', '.join(f.spec.id for f in rest)}[/dim]")
    if slow:
        con.print(f"[dim]Fit but slower than {r.min_tokens_per_s:g} tok/s: "
                  + ", ".join(f"{f.spec.id} ({f.best_speed:.1f})" for f in slow) + "[/dim]")
    if big:
        con.print(f"[dim]Do not fit: {', '.join(f.spec.id for f in big)}[/dim]")
    if ctx:
        con.print(f"[dim]Context {r.context:,} beyond their maximum: {', '.join(f.spec.id for f in ctx)}[/dim]")


def run_ranking(args: argparse.Namespace, target: Target, calibration: dict | None) -> int:
    """`recommend` without --model."""
    ranking, skipped = rank_for(args, target, calibration)
    if args.json:
        print_json(to_json(ranking, target, skipped, args.top))
    else:
        render(ranking, target, skipped, args.top)
    return 0


def verdict(best: Plan | None, floor: float) -> str:
    """Why the single-model answer is poor ('' when it is not): below the speed floor, or losing more than 'small'."""
    if best is None:
        return "nothing fits"
    why = []
    if best.decode_tokens_per_s < floor:
        why.append(f"decodes at {best.decode_tokens_per_s:.1f} tok/s (below {floor:g})")
    label = best.quality.get("label", "")
    if label in LOSSY_LABELS:
        why.append(f"loses '{label}' quality ({best.format_id}, KLD {best.quality.get('kld', 0):.3f})")
    return " and ".join(why)


def alternative(args: argparse.Namespace, model_id: str, best: Plan | None, target: Target, context: int,
                calibration: dict | None) -> tuple[str, dict | None]:
    """(one-line headline, JSON of the best other model) when the single-model answer is poor; ('', None) otherwise."""
    floor = args.min_tokens_per_s if args.min_tokens_per_s is not None else DEFAULT_MIN_TOKENS_PER_S
    why = verdict(best, floor)
    if not why:
        return "", None
    ranking, _ = rank_for(args, target, calibration, context=context)
    other = next((f for f in ranking.ranked if f.spec.id != model_id), None)
    if other is None or other.plan is None or other.expected is None:
        return f"{model_id} here {why}; no other model with a published {args.use} score meets the floor either.", None
    p, e = other.plan, other.expected
    u = unit(other.capability)
    line = (f"{model_id} here {why}. Best model for this machine ({args.use}): {other.spec.id} at {p.format_id} with "
            f"{p.runtime_id}, {p.decode_tokens_per_s:.1f} tok/s, {gib(p.total_memory_bytes)} GiB, expected {args.use} "
            f"score {e.value:.0f}{u} ({e.low:.0f}-{e.high:.0f}); `planner recommend` without --model ranks them all.")
    return line, fit_json(other, target)
