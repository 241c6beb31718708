"""`planner estimate`: one plan (model x format x device x runtime), no ranking."""

from __future__ import annotations

import argparse

from planner.commands.common import add_model_options, check_context, gib, load_catalog_for, load_model
from planner.commands.options import (
    MAX_DEVICES, MAX_NODES, add_catalog_dirs, add_json, console, int_in, kv_dtype, nonempty, print_json,
)
from planner.errors import PlannerError
from planner.commands.target_options import add_target_options, resolve_target


def add_parser(sub) -> None:  # type: ignore[no-untyped-def]
    """Register the subcommand."""
    p = sub.add_parser("estimate", help="memory, speed and quality of one model/format/device/runtime",
                       description="Compute a single plan. Without --device and --memory only sizes are computed.")
    add_model_options(p)
    p.add_argument("--format", "-f", required=True, type=nonempty, metavar="FMT", help="Q4_K_M, Q8_0, IQ4_XS, F16, fp16, bf16, fp8, gptq-int4, awq-int4, nf4, mlx-4bit, exl2-4.0bpw ...")
    p.add_argument("--runtime", type=nonempty, metavar="ID", help="runtime id (default: the fastest that runs the format)")
    p.add_argument("--kv-dtype", type=kv_dtype, metavar="DTYPE", help="KV cache dtype (default: the runtime's)")
    add_target_options(p)
    # at most one replica per GPU of the largest target the options allow
    p.add_argument("--replicas", type=int_in(1, MAX_DEVICES * MAX_NODES), default=1, metavar="N",
                   help="data-parallel copies sharing the GPUs (--count x --nodes must divide by N; default 1)")
    p.add_argument("--local", action="store_true", help="plan for this machine (probe) when no --device is given")
    p.add_argument("--no-calibration", action="store_true",
                   help="ignore measured calibration records (planner bench --save) and use the built-in table")
    add_catalog_dirs(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from planner.cost.evaluate import evaluate
    from planner.recommend import tie_break
    from planner.formats import get_format
    from planner.runtimes import RUNTIMES, arch_id, get_runtime

    mc, note = load_model(args)
    fmt = get_format(args.format)
    context = check_context(args, mc.spec.max_context)
    has_target = bool(args.device or args.memory or args.snapshot or args.local)
    if not has_target:
        lay = mc.layout(fmt)
        data = {"model": mc.spec.id, "format": fmt.id, "file_size_bytes": lay.file_size_bytes,
                "weights_bytes": sum(lay.layer_bytes) + lay.embed_bytes + lay.head_bytes,
                "bits_per_weight": round(lay.stored_bytes * 8 / max(1, mc.params - mc.spec.extra_params), 4),
                "kv_cache_bytes": None, "total_memory_bytes": None, "usable_memory_bytes": None, "fits": None,
                "decode_tokens_per_s": None, "prefill_tokens_per_s": None, "ttft_s": None, "runtime": None,
                "quality": None, "warnings": ["no target given: sizes only (add --device, --memory or --local)"]}
        _out(args, data, note)
        return 0
    catalog = load_catalog_for(args)
    target = resolve_target(args, catalog)
    if args.replicas != 1:
        from planner.plan import replicated

        try:
            target = replicated(target, args.replicas)
        except ValueError as exc:
            raise PlannerError(f"--replicas: {exc}") from None
    from planner.measure.calibration import for_target

    calibration, cal_note = for_target(target, not args.no_calibration)
    if args.runtime:
        runtimes = [get_runtime(args.runtime)]
    else:
        runtimes = [rt for rt in RUNTIMES.values() if rt.support(fmt, target.device, arch_id(mc.spec), mc.spec.native_dtype).runs]
        if not runtimes:
            raise PlannerError(f"no runtime runs {fmt.id} for a {arch_id(mc.spec)} model on {target.device.name} "
                               f"({target.device.backend})")
    plans = [evaluate(mc, fmt, rt, target, context=context, concurrency=args.concurrency, kv_dtype=args.kv_dtype,
                      prompt_tokens=args.prompt, calibration=calibration) for rt in runtimes]
    # fully supported before experimental paths (planner.runtimes), as recommend ranks them; equal speeds (engines
    # sharing kernels): the firmer speed basis, then the runtime id, never the registry's order
    plan = min(plans, key=lambda p: (not p.runs, not p.fits, p.support_status != "full", -p.decode_tokens_per_s,
                                     *tie_break(p)))
    data = plan.as_dict()
    data["quality"] = plan.quality or None
    data["calibration"] = cal_note
    measured = target.measured_bandwidth  # this machine's CPU, measured (planner.hardware.membw)
    data["memory_bandwidth_measured"] = measured.describe() if measured is not None else None
    _out(args, data, note, plan)
    return 0 if plan.runs else 1


def _out(args: argparse.Namespace, data: dict, note: str, plan=None) -> None:  # type: ignore[no-untyped-def]
    if args.json:
        data["resolved_from"] = note or None
        print_json(data)
        return
    con = console()
    if note:
        con.print(f"[dim]{note}[/dim]")
    con.print(f"[bold]{data['model']}[/bold] as [bold]{data['format']}[/bold]: file {data['file_size_bytes'] / 1e9:.2f} GB "
              f"({gib(data['file_size_bytes'])} GiB), weights in memory {gib(data['weights_bytes'])} GiB")
    if plan is None:
        for w in data["warnings"]:
            con.print(f"[dim]{w}[/dim]")
        return
    from planner.commands.recommend import memory_bar

    if data.get("calibration"):
        con.print(f"[dim]{data['calibration']}[/dim]")
    if data.get("memory_bandwidth_measured"):
        con.print(f"[dim]memory bandwidth measured here: {data['memory_bandwidth_measured']}; it caps decode speed "
                  "(--no-measure skips it)[/dim]")
    verdict = "[green]fits[/green]" if plan.fits else f"[red]does not fit/run: {plan.reason}[/red]"
    dp = (plan.parallel or {}).get("data_parallel", 1)
    shape = f" ({plan.parallel_layout}; memory and weights count every replica)" if dp > 1 else ""
    con.print(f"{plan.runtime_id} on {plan.target_label}{shape}: {verdict}")
    if plan.runs:
        con.print(memory_bar(plan))
        from planner.recommend import speed_text

        agg = (f", {speed_text(plan, 'throughput_tokens_per_s')} tok/s aggregate over {plan.concurrency} sequences"
               if plan.concurrency > 1 else "")
        con.print(f"decode {speed_text(plan, 'decode_tokens_per_s')} tok/s per sequence (at {plan.context:,} tokens: "
                  f"{speed_text(plan, 'decode_tokens_per_s_full_context')}){agg}, prefill "
                  f"{speed_text(plan, 'prefill_tokens_per_s')} tok/s, TTFT {plan.ttft_s:.2f} s for {plan.prompt_tokens} "
                  f"tokens; speeds {plan.speed_basis}")
        q = plan.quality
        con.print(f"quality: {q.get('label')} (KLD {q.get('kld', 0):.4f}, PPL +{q.get('ppl_delta_pct', 0):.2f}%)")
        con.print(f"launch: {plan.launch}", soft_wrap=True)
    for w in plan.warnings:
        con.print(f"[yellow]! {w}[/yellow]")
