"""`planner recommend`: the best precision, format and runtime for a model on this (or a named) machine."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from planner.capability import USES
from planner.commands.common import add_model_options, check_context, gib, load_catalog_for, load_model
from planner.commands.ranking import alternative, run_ranking
from planner.commands.options import (
    MAX_CONTEXT_TOKENS, MAX_EVAL_CHUNKS, MAX_RECOMMEND_GPUS, MAX_TOKENS_PER_S, add_catalog_dirs, add_json, console, float_in, int_in, kv_dtype, nonempty,
    path_arg, print_json,
)
from planner.commands.target_options import add_target_options, resolve_target
from planner.cost.quality import quality_text
from planner.errors import InvalidInputError, NothingFitsError, PlannerError
from planner.fit import DEFAULT_MIN_TOKENS_PER_S
from planner.formats import WeightFormat, get_format
from planner.launch import k8s_manifest
from planner.measure.calibration import for_target
from planner.measure.reports import kld_list, stored_quality, summary
from planner.outputs import check_output
from planner.paths import user_path
from planner.plan import Target
from planner.recommend import explores_layouts, layout_runners_up, ranking_title, recommend
from planner.runtimes import get_runtime

SCHEMA_VERSION = 1


def add_parser(sub) -> None:  # type: ignore[no-untyped-def]
    """Register the subcommand."""
    p = sub.add_parser("recommend", help="recommend a precision, format and runtime for a model on hardware",
                       description="Cost every format x runtime for a model on the target and recommend one; without "
                                   "--model, rank models for the target (which model runs best here).")
    # without --model: rank models for the target (planner.fit)
    add_model_options(p, required=False)
    add_target_options(p)
    p.add_argument("--use", choices=USES, default="chat",
                   help="without --model: rank by the published score for this use (default chat); with --model: the "
                        "use the suggested alternative is ranked by")
    p.add_argument("--runtime", action="append", default=[], type=nonempty, metavar="ID", help="only consider this runtime (repeatable)")
    p.add_argument("--format", dest="formats", action="append", default=[], type=nonempty, metavar="FMT", help="only consider this format (repeatable)")
    p.add_argument("--kv-dtype", action="append", default=[], type=kv_dtype, metavar="DTYPE", help="KV cache dtype(s) to consider")
    p.add_argument("--min-tokens-per-s", type=float_in(0, MAX_TOKENS_PER_S), metavar="TPS",
                   help=f"minimum decode speed (without --model, and for the warning on a slow answer: default "
                        f"{DEFAULT_MIN_TOKENS_PER_S:g}, about twice silent reading speed)")
    p.add_argument("--prefer", choices=["balanced", "quality", "speed", "memory"], default="balanced",
                   help="what to optimise (default balanced)")
    # more rows than there are formats only prints the same table
    p.add_argument("--top", type=int_in(1, 1000), default=12, metavar="N", help="alternatives to show (default 12)")
    p.add_argument("--no-calibration", action="store_true",
                   help="ignore measured calibration records (planner bench --save) and stored planner eval results, "
                        "and use the built-in tables (--eval still uses its own measurements)")
    p.add_argument("--confirm", action="store_true",
                   help="bench the top three candidates on this machine and re-rank by measured speed where the "
                        "measurement is of their runtime's kernels (slow: seconds to minutes)")
    e = p.add_argument_group("confirm quality on your own text (planner eval)")
    e.add_argument("--eval", metavar="FILE", type=path_arg,
                   help="rank by the KL divergence planner eval measured on FILE instead of the table estimate: stored "
                        "results for this model and text are used, and with its weights (--quantize SOURCE, or "
                        "--model PATH) the top candidates are measured now (slow: quantizes and runs llama.cpp)")
    # 8 tokens: the least llama.cpp perplexity can score (planner.measure.quality.core); at most the longest context
    e.add_argument("--eval-ctx", type=int_in(8, MAX_CONTEXT_TOKENS), default=512, metavar="N", help="with --eval: context per chunk (default 512)")
    e.add_argument("--eval-chunks", type=int_in(1, MAX_EVAL_CHUNKS), default=None, metavar="N",
                   help="with --eval: measure at most N chunks of FILE (default: all)")
    q = p.add_argument_group("produce the recommended artifact")
    q.add_argument("--quantize", metavar="SOURCE", type=path_arg,
                   help="quantize SOURCE (HF model dir or GGUF) to the recommended format (needs -o)")
    q.add_argument("-o", "--output", metavar="OUT", type=path_arg, help="where --quantize writes the artifact")
    q.add_argument("--force", action="store_true",
                   help="with --quantize: replace an existing OUT if it is an output file or a directory planner wrote "
                        "(never a directory with other files, never a symbolic link)")
    add_catalog_dirs(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    if args.quantize is not None and args.output is None:
        raise PlannerError("--quantize needs -o OUT (where to write the artifact)")
    if args.count * args.nodes > MAX_RECOMMEND_GPUS:
        raise InvalidInputError(f"--count {args.count} x --nodes {args.nodes} is {args.count * args.nodes} GPUs; "
                                f"recommend plans at most {MAX_RECOMMEND_GPUS} (estimate takes more)")
    if args.model is None:
        return _rank_models(args)
    if args.quantize is not None:  # refuse an OUT that --force may not replace before minutes of ranking and eval
        check_output(user_path(args.output), None, force=args.force)
    catalog = load_catalog_for(args)
    mc, note = load_model(args)
    context = check_context(args, mc.spec.max_context)
    target = resolve_target(args, catalog)
    calibration, cal_note = _calibration(args, target)
    if cal_note:  # shown with the target's notes (text and JSON) so the user knows measured figures were used
        target = dataclasses.replace(target, notes=target.notes + (cal_note,))
    # a model read from files puts its as-stored format objects in the list (they are not in the registry)
    fmts = [f if isinstance(f, WeightFormat) else get_format(f) for f in args.formats]
    rts = [get_runtime(r) for r in args.runtime]

    def rank(measured: dict | None):  # type: ignore[no-untyped-def]
        return recommend(mc, target, context=context, concurrency=args.concurrency, formats=fmts, runtimes=rts,
                         kv_dtypes=args.kv_dtype, prefer=args.prefer, min_tokens_per_s=args.min_tokens_per_s,
                         prompt_tokens=args.prompt, catalog=catalog, calibration=calibration, measured_quality=measured)

    rec, quality_conf, quality_note = _rank_with_quality(args, mc, rank)
    if quality_note:  # shown with the target's notes, like the calibration note
        target = dataclasses.replace(target, notes=target.notes + (quality_note,))
    confirmation = _confirm(args, rec, mc, target, calibration) if getattr(args, "confirm", False) else None
    # a slow or lossy answer says so first and names the best model for this machine (planner.fit)
    headline, alt = alternative(args, mc.spec.id, rec.best, target, context, calibration)
    if headline:
        rec.suggestions.append(headline)
    if args.json:
        data = to_json(rec, mc, target, note)
        data["best_alternative"] = alt
        data["quality_source"] = rec.best.quality.get("source", "estimated") if rec.best else None
        data["eval"] = quality_conf.to_json() if quality_conf is not None else None
        if confirmation is not None:
            data["confirm"] = confirmation.to_json()
        print_json(data)
    else:
        if headline:
            console().print(f"[bold yellow]! {headline}[/bold yellow]", soft_wrap=True)  # one line, however long
        render(rec, mc, target, note, args.top)
        if quality_conf is not None:
            render_quality(rec, quality_conf)
        if confirmation is not None:
            render_confirmation(confirmation)
    if rec.best is None:
        raise NothingFitsError(f"nothing fits {mc.spec.id} at {context} tokens on {target.label}: "
                               + "; ".join(rec.suggestions))
    if args.quantize is not None:
        _quantize_best(args, rec)
    return 0


def _rank_models(args: argparse.Namespace) -> int:
    """Without --model: rank models for the target; options that only make sense for one model are refused."""
    only_one = [flag for flag, v in (("--format", args.formats), ("--runtime", args.runtime), ("--quantize", args.quantize),
                                     ("--eval", args.eval), ("--confirm", args.confirm), ("--kv-dtype", args.kv_dtype))
                if v]
    if only_one:
        raise InvalidInputError(f"{', '.join(only_one)} needs --model (without --model, recommend ranks models)")
    if args.nodes > 1:
        raise InvalidInputError("ranking models plans one node; give --model to plan across nodes")
    catalog = load_catalog_for(args)
    target = resolve_target(args, catalog)
    calibration, cal_note = _calibration(args, target)
    if cal_note:
        target = dataclasses.replace(target, notes=target.notes + (cal_note,))
    return run_ranking(args, target, calibration)


def _quantize_best(args: argparse.Namespace, rec) -> None:  # type: ignore[no-untyped-def]
    """Produce the recommended format from SOURCE with the same pipeline as `planner quantize`."""
    from planner.quantize.pipeline import quantize_model  # lazy: --quantize only; the encoders import numpy

    fmt = rec.best.format_id
    if fmt.endswith("-as-stored"):
        raise PlannerError(f"the recommendation is the model as stored ({fmt}); there is nothing to quantize")
    result = quantize_model(args.quantize, fmt, args.output, force=args.force)
    print(f"wrote {args.output} ({fmt}, {result.tensor_bytes:,} bytes of tensors, as predicted: "
          f"{result.tensor_bytes == result.predicted_tensor_bytes})", file=sys.stderr)


def _rank_with_quality(args: argparse.Namespace, mc, rank):  # type: ignore[no-untyped-def]
    """(recommendation, QualityConfirmation or None, note): with --eval, ranked by KL divergence measured on FILE
    (measured now when the weights are at hand); else by stored planner eval results for the model unless
    --no-calibration."""
    if getattr(args, "eval", None) is None:
        if getattr(args, "no_calibration", False):
            return rank(None), None, None
        measured = stored_quality(mc.spec)
        note = f"{summary(measured)} (stored results; --no-calibration ignores them)" if measured else None
        return rank(measured or None), None, note
    # lazy: --eval only; it quantizes and runs llama.cpp (numpy)
    from planner.measure.confirm_quality import confirm_quality, weights_source

    source = weights_source(args.model, args.quantize)

    def progress(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    rec, conf = confirm_quality(rank, mc.spec, args.eval, source=source, ctx=args.eval_ctx,
                                max_chunks=args.eval_chunks, progress=progress)
    return rec, conf, None


def render_quality(rec, conf) -> None:  # type: ignore[no-untyped-def]
    """--eval: which formats were ranked by measured quality, and on what."""
    con = console()
    best = rec.best
    if best is not None:
        q = best.quality
        how = (f"measured KLD {q['kld']:.4f} on {q.get('text')}" if q.get("source") == "measured"
               else f"estimated KLD {q.get('kld', 0):.4f} (no measurement of {best.format_id})")
        con.print(f"\n[bold]Quality of {best.format_id}:[/bold] {how}")
    con.print(f"  • measured by planner eval on {conf.text}: {kld_list(conf.measured) or 'none'}; other formats estimated")
    for path in conf.saved:
        con.print(f"  • saved {path}")


def _calibration(args: argparse.Namespace, target):  # type: ignore[no-untyped-def]
    """Measured efficiencies for the target's device (planner bench --save) and a note, unless --no-calibration."""
    return for_target(target, not getattr(args, "no_calibration", False))


def _confirm(args: argparse.Namespace, rec, mc, target, calibration):  # type: ignore[no-untyped-def]
    """Run the --confirm benches (progress on stderr)."""
    # lazy: --confirm only; its kernels import numpy
    from planner.measure.confirm_speed import confirm

    def progress(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    return confirm(rec, mc, target, calibration=calibration, progress=progress)


def render_confirmation(conf) -> None:  # type: ignore[no-untyped-def]
    """--confirm: predicted against measured for the top candidates, the final choice and why."""
    from rich.table import Table

    con = console()
    if conf.skipped:
        con.print(f"\n[yellow]--confirm skipped:[/yellow] {conf.skipped}")
        return
    t = Table(title=f"Confirmed on this machine (copy bandwidth {conf.copy_bandwidth_gb_s:.1f} GB/s; measured: the "
                    "whole model for llama.cpp-* kernels, weight matmuls only for the others)", title_justify="left",
              header_style="bold")
    for col in ("#", "format", "runtime", "predicted tok/s", "measured tok/s", "ratio", "kernel timed"):
        t.add_column(col, justify="right" if col in ("#", "predicted tok/s", "measured tok/s", "ratio") else "left")
    for i, c in enumerate(conf.order, 1):
        m = c.measured_decode
        t.add_row(str(i), c.plan.format_id, c.plan.runtime_id, f"{c.predicted_decode:.1f}", f"{m:.1f}" if m else "-",
                  f"{m / c.predicted_decode:.2f}" if m else "-", c.kernel or c.note)
    con.print()
    con.print(t)
    if conf.choice is not None:
        ch = conf.choice.plan
        con.print(f"[bold green]Final choice:[/bold green] [bold]{ch.format_id}[/bold] with [bold]{ch.runtime_id}[/bold] "
                  f"({'re-ranked by measurement' if conf.reranked else 'as predicted'})")
    con.print(f"  • {conf.reason}")


def _best_per_format(plans):  # type: ignore[no-untyped-def]
    seen, out = set(), []
    for p in plans:
        if p.format_id in seen:
            continue
        seen.add(p.format_id)
        out.append(p)
    return out


def to_json(rec, mc, target, note: str) -> dict:  # type: ignore[no-untyped-def]
    """The documented JSON schema of `recommend --json`."""
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {"id": mc.spec.id, "name": mc.spec.name, "params": mc.params, "resolved_from": note or None},
        "target": {"label": target.label, "device": target.device.id, "count": target.count, "origin": target.origin,
                   "usable_bytes": list(target.usable_bytes), "notes": list(target.notes)},
        "context": rec.context, "concurrency": rec.concurrency, "prefer": rec.prefer,
        "recommended": rec.best.as_dict() if rec.best else None,
        "reasons": rec.reasons, "suggestions": rec.suggestions,
        "alternatives": [p.as_dict() for p in _best_per_format(rec.plans)],
        "layouts": [_layout_row(p) for p in layout_runners_up(rec)] if explores_layouts(target, rec.concurrency) else [],
        "kubernetes": _k8s(rec, mc, target),
    }


def _k8s(rec, mc, target):  # type: ignore[no-untyped-def]
    """A LeaderWorkerSet manifest when the choice is vLLM across nodes (for users who deploy on Kubernetes)."""
    best = rec.best
    if best is None or best.runtime_id != "vllm" or (best.parallel or {}).get("nodes", 1) < 2:
        return None

    t = Target(target.device, best.parallel["gpus_per_node"], target.usable_bytes, nodes=best.parallel["nodes"],
               fabric=target.fabric)
    return k8s_manifest(best, mc.spec, rec.formats[best.format_id], t)


def _layout_row(p) -> dict:  # type: ignore[no-untyped-def]
    """One layout considered for the chosen format and runtime (JSON)."""
    par = p.parallel or {}
    return {"parallel_layout": p.parallel_layout, "parallel": par, "gpus": len(p.per_device), "fits": p.fits,
            "per_gpu_bytes": max((d.total_bytes for d in p.per_device), default=0), "reason": p.reason or None,
            "decode_tokens_per_s": round(p.decode_tokens_per_s, 2),
            "throughput_tokens_per_s": round(p.throughput_tokens_per_s, 2)}


def render_layouts(rec) -> None:  # type: ignore[no-untyped-def]
    """Multi-node, or replicas in a node: the chosen format and runtime on every layout considered (the runners-up)."""
    from rich.table import Table


    table = Table(title="Layouts considered (fewest GPUs first)", title_justify="left", header_style="bold")
    for col in ("layout", "GPUs", "fullest GPU GiB", "decode tok/s", "throughput tok/s", "verdict"):
        table.add_column(col, justify="left" if col in ("layout", "verdict") else "right")
    for p in layout_runners_up(rec):
        row = _layout_row(p)
        mark = "[bold]chosen[/bold]" if p is rec.best else ("[green]fits[/green]" if p.fits else f"[red]{p.reason}[/red]")
        table.add_row(row["parallel_layout"], str(row["gpus"]), gib(row["per_gpu_bytes"]), f"{p.decode_tokens_per_s:.1f}",
                      f"{p.throughput_tokens_per_s:.0f}", mark)
    console().print()
    console().print(table)


def memory_bar(plan, width: int = 40, max_width: int | None = None) -> str:  # type: ignore[no-untyped-def]
    """A text bar of weights / KV / activations / overhead against usable memory (the fullest device: the same
    device and usable figure as the reasons), never wider than `width` nor the terminal (`max_width`, default the
    console's width): a plan far over its memory is drawn to scale with a red '│' where usable memory ends."""
    if not plan.per_device:
        return ""
    d = max(plan.per_device, key=lambda d: d.total_bytes)
    usable = max(d.usable_bytes, 1)
    parts = [(d.weights_bytes, "blue"), (d.kv_cache_bytes, "magenta"), (d.activations_bytes, "yellow"),
             (d.overhead_bytes, "red")]
    limit = console().width if max_width is None else max_width
    width = max(4, min(width, limit))
    scale = max(usable, sum(n for n, _ in parts))  # over the limit: the whole plan fills the bar
    cells: list[tuple[str, str]] = []
    for n, color in parts:
        cells += [("█", color)] * round(n / scale * width)
    cells = cells[:width] + [("░", "dim")] * max(width - len(cells), 0)
    if scale > usable:  # mark where usable memory ends
        edge = min(width - 1, round(usable / scale * width))
        cells[edge] = ("│", "bold red")
    out = "".join(f"[{color}]{ch}[/{color}]" for ch, color in cells)
    return (f"{out}  {gib(d.total_bytes)}/{gib(d.usable_bytes)} GiB  [blue]weights {gib(d.weights_bytes)}[/blue] "
            f"[magenta]KV {gib(d.kv_cache_bytes)}[/magenta] [yellow]compute {gib(d.activations_bytes)}[/yellow] "
            f"[red]overhead {gib(d.overhead_bytes)}[/red]" + (f" (x{len(plan.per_device)} devices)" if len(plan.per_device) > 1 else ""))


def _memory_cell(p) -> str:  # type: ignore[no-untyped-def]
    """Memory of the fullest device against that device's usable memory: the one usable figure per device."""
    if not p.per_device:
        return "-"
    d = max(p.per_device, key=lambda d: d.total_bytes)
    return f"{gib(d.total_bytes)}/{gib(d.usable_bytes)}" + (f" x{len(p.per_device)}" if len(p.per_device) > 1 else "")


def _speed_cell(p, name: str) -> str:  # type: ignore[no-untyped-def]
    """A speed for the table: 'N', or '~N (N1-N2)' where its basis is weak (calibrated elsewhere, assumed)."""
    from planner.recommend import speed_cell

    return speed_cell(p, name)


def render(rec, mc, target, note: str, top: int) -> None:  # type: ignore[no-untyped-def]
    """Human output: choice, reasons, memory bar, launch command, alternatives."""
    from rich.table import Table


    con = console()
    con.print(f"[bold]{mc.spec.name}[/bold] ({mc.params / 1e9:.1f}B params) on [bold]{target.label}[/bold] "
              f"[dim]({target.origin})[/dim], context {rec.context:,} tokens x {rec.concurrency} sequence(s)")
    if note:
        con.print(f"[dim]{note}[/dim]")
    for n in target.notes:
        con.print(f"[dim]note: {n}[/dim]")
    best = rec.best
    if best is not None:
        con.print(f"\n[bold green]Recommended:[/bold green] [bold]{best.format_id}[/bold] with [bold]{best.runtime_id}[/bold], "
                  f"KV cache {best.kv_dtype}, {best.parallel_layout if len(best.per_device) > 1 else best.layout}")
        for r in rec.reasons:
            con.print(f"  • {r}")
        for w in best.warnings:
            con.print(f"  [yellow]! {w}[/yellow]")
        con.print("\n" + memory_bar(best))
        con.print("\n[bold]Launch:[/bold]")
        for line in best.launch.splitlines():
            con.print(f"  {line}", soft_wrap=True)

        if explores_layouts(target, rec.concurrency):
            render_layouts(rec)
    else:
        con.print("\n[bold red]Nothing fits.[/bold red]")
        for s in rec.suggestions:
            con.print(f"  • {s}")
    table = Table(title=f"Alternatives (best runtime per format), {ranking_title(rec.prefer)}", title_justify="left",
                  header_style="bold")
    for col in ("format", "runtime", "KV", "memory GiB", "decode tok/s per seq.", "prefill tok/s", "TTFT s", "quality (KLD)",
                "verdict"):
        table.add_column(col, justify="right" if col not in ("format", "runtime", "KV", "verdict") else "left")
    for p in _best_per_format(rec.plans)[:top]:
        verdict = "[green]fits[/green]" if p.fits else f"[red]{p.reason}[/red]"
        table.add_row(p.format_id, p.runtime_id, p.kv_dtype, _memory_cell(p) if p.runs else "-",
                      _speed_cell(p, "decode_tokens_per_s") if p.runs else "-",
                      _speed_cell(p, "prefill_tokens_per_s") if p.runs else "-",
                      f"{p.ttft_s:.2f}" if p.runs else "-",
                      quality_text(p.quality),
                      verdict)
    con.print()
    con.print(table)
