"""`planner bench`: time a model's matmul shapes on this machine's CPU or GPU and compare with the cost model."""

from __future__ import annotations

import argparse
import sys

from planner.commands.options import (
    MAX_HOST_GIB, add_catalog_dirs, add_json, console, int_in, nonempty, print_json, size_in,
)
from planner.commands.common import load_catalog_for, load_model
from planner.errors import PlannerError
from planner.formats import get_format
from planner.hardware.catalog import parse_memory
from planner.hardware.targets import target_from_host
from planner.measure.calibration import for_target, save_records
from planner.measure.speed.kernels import device_kind, kernel_by_id
from planner.measure.speed.runner import run_bench
from planner.plan import target_from_catalog
from planner.runtimes import get_runtime


def add_parser(sub) -> None:  # type: ignore[no-untyped-def]
    """Register the subcommand."""
    p = sub.add_parser(
        "bench", help="time a model's matmuls on this device and compare with the cost model",
        description="Build the model's real matmul shapes (QKV, attention output, gate/up, down, lm_head, active "
                    "MoE experts), quantize random weights for the format, time decode GEMV and prefill GEMM per "
                    "shape, extrapolate by layer count, and compare with the cost model. --save stores the result "
                    "as a calibration record that recommend/estimate then use.")
    p.add_argument("--model", "-m", required=True, type=nonempty, metavar="MODEL", help="profile id, alias, HF repo id, bare size or config path")
    p.add_argument("--format", "-f", required=True, type=nonempty, metavar="FMT", help="weight format: fp32, bf16, fp16, Q8_0, Q4_K_M, int8, gptq-int4, w8a8-int8, fp8 ...")
    p.add_argument("--device", default="cpu", type=nonempty, metavar="DEV", help="where to run: cpu, cuda, cuda:N or mps (default cpu)")
    p.add_argument("--catalog-device", metavar="ID", help="catalog entry whose peaks to compare with (default: this machine as probed)")
    p.add_argument("--runtime", metavar="ID", help="runtime whose predicted speed to show (default: the kernel's engine, else the fastest)")
    p.add_argument("--kernel", action="append", default=[], metavar="ID", help="time only this kernel (repeatable), e.g. numpy-int8, torch-int4-g128, or llama.cpp (GGUF: the whole model in real llama.cpp)")
    p.add_argument("--batch", default="1", type=_batches, metavar="B[,B...]", help="decode batch sizes, comma-separated (default 1)")
    # 131072 tokens: the runner's own prefill limit (planner.measure.speed.runner)
    p.add_argument("--prompt", type=int_in(0, 131072), default=512, metavar="TOKENS", help="prefill length (default 512; 0 skips prefill)")
    p.add_argument("--max-memory", type=size_in(MAX_HOST_GIB), metavar="SIZE", help="memory the bench may allocate (default: half of what is free), e.g. 8GiB")
    # 1000 timed calls already take minutes per shape; more buys no precision
    p.add_argument("--repeat", type=int_in(1, 1000), default=25, metavar="N", help="timed calls per measurement, at most (default 25)")
    p.add_argument("--quick", action="store_true",
                   help="a fast, rough run: 128 MiB copy test, at most 16 MiB of weights per shape, short timings")
    p.add_argument("--save", action="store_true", help="save the measurement as calibration records for this device")
    p.add_argument("--no-calibration", action="store_true", help="predict with the built-in efficiency table, ignoring saved records")
    add_catalog_dirs(p)
    add_json(p)
    p.set_defaults(func=run)


def parse_batches(text: str) -> list[int]:
    """'1,8' -> [1, 8]; a clear error for anything else."""
    try:
        out = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise PlannerError(f"--batch takes comma-separated integers such as 1,8; got '{text}'") from None
    if not out or any(b < 1 or b > 4096 for b in out):
        raise PlannerError(f"--batch values must be between 1 and 4096, got '{text}'")
    return out


def _batches(text: str) -> list[int]:
    """argparse type for --batch: parse_batches' error becomes argparse's one-line exit-2 error."""
    try:
        return parse_batches(text)
    except PlannerError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--batch ")) from None


def bench_target(device: str, catalog, catalog_device: str | None = None):  # type: ignore[no-untyped-def]
    """The Target whose figures (peaks, memory) the bench compares with: a named catalog entry, else this machine's
    CPU or the probed GPU behind `device`."""
    kind = device_kind(device)
    if catalog_device:
        return target_from_catalog(catalog.get(catalog_device))
    from planner.hardware import probe  # lazy: only a bench without --catalog-device reads this machine

    host = probe.interpret(probe.read_raw(catalog=catalog), catalog)
    if kind == "cpu":
        from planner.hardware import membw

        cpu_host = host.model_copy(update={"gpus": []})
        # predicted like `planner recommend` predicts for this machine: with its measured read bandwidth
        return target_from_host(cpu_host, measured=membw.for_host(cpu_host))
    backend = "cuda" if kind == "cuda" else "metal"
    gpus = [g for g in host.gpus if g.spec.backend == backend]
    idx = int(device.split(":", 1)[1]) if ":" in device else 0
    if idx >= len(gpus):
        raise PlannerError(f"the probe found no {device} GPU here ({len(gpus)} {backend} device(s)); "
                           "name one with --catalog-device to compare with")
    g = gpus[idx]
    if not g.catalogued:
        raise PlannerError(f"{g.name} is not in the catalog, so there is no peak to compare with; "
                           "pass --catalog-device ID")
    return target_from_host(host.model_copy(update={"gpus": [g]}))


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    device_kind(args.device)
    batches = args.batch  # parsed and bounded by _batches
    budget = None
    if args.max_memory:  # a size checked while parsing
        budget = int(parse_memory(args.max_memory) * 2**30)
    catalog = load_catalog_for(args)
    mc, note = load_model(args)
    fmt = get_format(args.format)
    target = bench_target(args.device, catalog, args.catalog_device)
    calibration, cal_note = for_target(target, not args.no_calibration)
    # 'llama.cpp' names the whole-model run in real llama.cpp (GGUF), not a matmul kernel
    whole = [k for k in args.kernel if k.lower() == "llama.cpp" or k.lower().startswith("llama.cpp-")]
    kernels = [kernel_by_id(k) for k in args.kernel if k not in whole] if args.kernel else None
    runtime = get_runtime(args.runtime) if args.runtime else None
    con = console()
    quiet = args.json

    def progress(msg: str) -> None:
        if not quiet:
            print(f"  {msg}", file=sys.stderr, flush=True)

    quick = {"copy_bytes": 128 * 2**20, "max_sample_bytes": 16 * 2**20, "budget_s": 0.05,
             "repeat": min(args.repeat, 5)} if args.quick else {"repeat": args.repeat}
    result = run_bench(mc, fmt, target, device=args.device, batches=batches, prompt=args.prompt, kernels=kernels,
                       runtime=runtime, calibration=calibration, budget_bytes=budget, progress=progress,
                       llamacpp=True if whole else None, **quick)
    saved = None
    if args.save:
        saved = save_records(result.records())
    data = result.to_json()
    data["resolved_from"] = note or None
    data["calibration"] = cal_note
    data["saved"] = str(saved) if saved else None
    if args.json:
        print_json(data)
        return 0
    render(con, result, data, note, cal_note)
    return 0


def render(con, result, data: dict, note: str, cal_note: str | None) -> None:  # type: ignore[no-untyped-def]
    """Human output: the device, a table per kernel, and measured against predicted."""
    from rich.table import Table

    dev = result.target.device
    con.print(f"[bold]{result.model_id}[/bold] as [bold]{result.format_id}[/bold] on [bold]{result.device}[/bold] "
              f"({dev.name}, catalog id {dev.id})")
    if note:
        con.print(f"[dim]{note}[/dim]")
    con.print(f"peak bandwidth {dev.mem_bandwidth_gb_s:g} GB/s (catalog{', assumed' if 'mem_bandwidth_gb_s' in dev.unverified else ''}); "
              f"measured copy bandwidth [bold]{result.copy_bandwidth_gb_s:.1f} GB/s[/bold] (read + write); "
              f"last-level cache {result.llc_bytes / 2**20:.0f} MiB")
    con.print(f"[dim]{data['measured_scope']}[/dim]")
    for run in result.runs:
        if not run.layers:  # timed whole (llama.cpp): no per-shape rows
            con.print()
            con.print(f"[bold]{run.info.id}[/bold]: {run.info.label}")
            for n in run.notes:
                con.print(f"[dim]  {n}[/dim]")
            continue
        t = Table(title=f"{run.info.id}: {run.info.label}", title_justify="left", header_style="bold")
        for col in ("layer", "shape", "x", "decode ms", "spread", "GB/s", "% peak", "% copy", "prefill TFLOPS", "% peak FLOPS", "err"):
            t.add_column(col, justify="left" if col in ("layer", "shape") else "right")
        for lr in run.layers:
            gbs = lr.achieved_gb_s(1)
            tf = lr.prefill_tflops
            t.add_row(lr.shape.name, f"{lr.shape.n}x{lr.shape.k}" + ("*" if lr.rows_timed < lr.shape.n else ""),
                      str(lr.shape.count), f"{lr.decode[1].median_s * 1e3:.3f}", f"{lr.decode[1].spread:.0%}",
                      f"{gbs:.1f}", f"{gbs / dev.mem_bandwidth_gb_s:.0%}", f"{gbs / result.copy_bandwidth_gb_s:.0%}",
                      f"{tf:.3f}" if tf is not None else "-",
                      f"{tf * 1e12 / run.peak_flops:.0%}" if tf and run.peak_flops else "-", f"{lr.error_vs_float:.3f}")
        con.print()
        con.print(t)
        for n in run.notes:
            con.print(f"[dim]  {n}[/dim]")
    s = Table(title="Whole model vs the cost model (matmul kernels: extrapolated by layer count; llama.cpp: timed "
                    "whole)", title_justify="left",
              header_style="bold")
    for col in ("kernel", "batch", "decode tok/s", "predicted", "ratio", "prefill tok/s", "predicted", "ratio", "runtime"):
        s.add_column(col, justify="left" if col in ("kernel", "runtime") else "right")
    for k in data["kernels"]:
        for i, b in enumerate(k["by_batch"]):
            pre = k["prefill_tokens_per_s"] if i == 0 else {"measured": None, "predicted": None, "ratio": None}
            s.add_row(k["kernel"] if i == 0 else "", str(b["batch"]), _num(b["measured"]), _num(b["predicted"]),
                      _ratio(b["ratio"]), _num(pre["measured"]), _num(pre["predicted"]), _ratio(pre["ratio"]),
                      (k["predicted_runtime"] or "-") if i == 0 else "")
    con.print()
    con.print(s)
    for n in result.notes:
        con.print(f"[dim]note: {n}[/dim]")
    for k, why in result.skipped:
        con.print(f"[dim]skipped {k}: {why}[/dim]")
    if cal_note:
        con.print(f"[dim]predicted {cal_note}[/dim]")
    if data.get("saved"):
        con.print(f"[green]saved calibration records to {data['saved']}[/green] (planner recommend/estimate now use them)")


def _num(v: float | None) -> str:
    return "-" if v is None else (f"{v:.1f}" if v < 1000 else f"{v:,.0f}")


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"
