"""`planner quantize`: write a model in a planned format (GGUF, GPTQ, NF4, FP8, MLX, float) from real weights."""

from __future__ import annotations

import argparse
import math
import sys

from planner.commands.options import add_json, console, float_in, int_in, nonempty, path_arg, print_json
from planner.errors import InvalidInputError
from planner.quantize.pipeline import quantize_model
from planner.quantize.primitives import tune_allocator


def add_parser(sub) -> None:  # type: ignore[no-untyped-def]
    """Register the subcommand."""
    p = sub.add_parser(
        "quantize", help="quantize a Hugging Face model or GGUF file to a format (GGUF, GPTQ, NF4, FP8, MLX)",
        description="Quantize SOURCE (a Hugging Face model directory with config.json and *.safetensors, or a .gguf "
                    "file) to FORMAT and write OUT: a .gguf file for GGUF formats, a model directory otherwise. "
                    "Streams one tensor at a time; the output appears only when complete. Per-tensor types follow "
                    "the same rules `planner estimate --format` sizes.")
    p.add_argument("source", type=path_arg, metavar="SOURCE", help="Hugging Face model directory or .gguf file")
    p.add_argument("--format", "-f", required=True, type=nonempty, metavar="FMT",
                   help="Q4_K_M, Q5_K_M, Q8_0, Q6_K, Q3_K_M, Q2_K, Q4_0, IQ4_XS, IQ4_NL, MXFP4_MOE, Q4_K_M-imat, F16, gptq-int4, "
                        "gptq-int8 (GPTQ, calibrated), awq-int4 (AWQ, calibrated), rtn-int4, rtn-int8 (round to nearest, "
                        "GPTQ layout), nf4, fp8, mlx-4bit, mlx-8bit, bf16, fp16 ...")
    p.add_argument("--output", "-o", required=True, type=path_arg, metavar="OUT", help="output .gguf file or directory")
    p.add_argument("--force", action="store_true",
                   help="replace OUT if it exists and is an output file, or a directory planner wrote (its "
                        ".planner-output.json lists every file in it); a directory with other files or a symbolic "
                        "link is refused")
    p.add_argument("--imatrix", type=path_arg, metavar="FILE",
                   help="importance matrix from llama.cpp's llama-imatrix (imatrix.gguf or legacy imatrix.dat): GGUF "
                        "types are quantized with each value's error weighted by it (the format becomes its '-imat' "
                        "variant, e.g. Q4_K_M-imat); required by the -imat formats")
    # 4096: more encoder threads than any single machine has CPUs (assumed ceiling; more would only cost memory)
    p.add_argument("--threads", type=int_in(1, 4096), metavar="N", help="encoder threads (default: the CPUs available)")
    p.add_argument("--worst", type=int_in(0, 100_000), default=10, metavar="N", help="tensors listed in the quality report (default 10)")
    p.add_argument("--calib", type=path_arg, metavar="FILE",
                   help="calibration text for gptq-* and awq-int4 (UTF-8; default: planner/data/calib_alice.txt, "
                        "not eval's default text); "
                        "use text like what the model will see")
    p.add_argument("--damp", type=float_in(0.0, 1.0, lo_open=True), metavar="F",
                   help="GPTQ damping: fraction of the mean Hessian diagonal added to it (default 0.1: robust with "
                        "8,192 calibration tokens; 0.01 is GPTQ's own default)")
    p.add_argument("--act-order", action=argparse.BooleanOptionalAction, default=None,
                   help="GPTQ act-order (desc_act): quantize columns by decreasing activation energy (default on)")
    p.add_argument("--asym", action="store_true", help="GPTQ/RTN asymmetric grid (zero points per group; default symmetric)")
    add_json(p)
    p.set_defaults(func=run)


def _options(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """(calibration text or None, the format's config with the GPTQ options applied, or None)."""
    import dataclasses

    from planner.formats import get_format
    from planner.quantize.config import GPTQConfig, config_for

    gptq_opts = {"damp": args.damp, "desc_act": args.act_order, "sym": False if args.asym else None}
    given = {k: v for k, v in gptq_opts.items() if v is not None}
    if not given and args.calib is None:
        return None, None
    cfg = config_for(get_format(args.format))
    calibrated = getattr(cfg, "calibrated", False)
    if args.calib is not None and not calibrated:
        raise InvalidInputError(f"--calib: {args.format} is not calibrated; it is used by gptq-* and awq-int4")
    if given:
        flags = {"damp": "--damp", "desc_act": "--act-order", "sym": "--asym"}
        if not isinstance(cfg, GPTQConfig):
            raise InvalidInputError(f"{', '.join(flags[k] for k in given)}: apply to gptq-* formats, not {args.format}")
        if cfg.method == "rtn" and set(given) - {"sym"}:
            raise InvalidInputError(f"{', '.join(flags[k] for k in given if k != 'sym')}: {args.format} is round to "
                                    "nearest (no Hessian); use a gptq-* format")
        cfg = dataclasses.replace(cfg, **given)
    text = None
    if args.calib is not None:
        from planner.measure.quality.text import load_text

        text = load_text(args.calib)
    return text, cfg


class _RichProgress:
    """A rich progress bar over input bytes with speed and ETA, on stderr."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[tensor]}"),
            console=Console(stderr=True), transient=True,
        )
        self.task = None

    def start(self, total_bytes: int) -> None:
        self.task = self.progress.add_task("quantizing", total=total_bytes, tensor="")
        self.progress.start()

    def advance(self, nbytes: int, tensor: str) -> None:
        if self.task is not None:
            self.progress.update(self.task, advance=nbytes, tensor=tensor)

    def stop(self) -> None:
        self.progress.stop()


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    tune_allocator()  # this process is ours: keep encoder scratch buffers mapped
    # no bar (and no rich import, a tenth of a second) when nobody sees it
    bar = _RichProgress() if not args.json and sys.stderr.isatty() else None
    try:
        calib, cfg = _options(args)
        result = quantize_model(args.source, args.format, args.output, force=args.force, threads=args.threads,
                                progress=bar, imatrix=args.imatrix, calib=calib, config=cfg)
    finally:
        if bar is not None:
            bar.stop()
    if args.json:
        print_json(result.as_dict())
        return 0
    _report(result, args.worst)
    return 0


def _report(result, worst: int) -> None:  # type: ignore[no-untyped-def]
    """Human summary: sizes against the prediction, speed, worst tensors by SQNR, warnings."""
    from rich.table import Table

    con = console()
    for w in result.warnings:
        con.print(f"[yellow]! {w}[/yellow]")
    diff = result.tensor_bytes - result.predicted_tensor_bytes
    match = "[green]as predicted[/green]" if diff == 0 else f"[red]{diff:+,} bytes vs the prediction[/red]"
    con.print(f"[bold]{result.output}[/bold] ({result.format}): {result.file_bytes / 1e9:.3f} GB, tensor data "
              f"{result.tensor_bytes:,} bytes {match}; {result.bits_per_weight:.3f} bits per weight")
    mbs = result.input_bytes / 1e6 / max(result.seconds, 1e-9)
    con.print(f"read {result.input_bytes / 1e9:.3f} GB in {result.seconds:.1f} s ({mbs:.0f} MB/s)")
    rows = result.worst(worst)
    if rows:
        table = Table(title=f"Quality: the {len(rows)} tensors with the lowest SQNR", title_justify="left")
        for col in ("tensor", "encoding", "shape", "SQNR dB"):
            table.add_column(col, justify="right" if col == "SQNR dB" else "left")
        for t in rows:
            table.add_row(t.name, t.encoding, "x".join(map(str, t.shape)), f"{t.sqnr_db:.2f}")
        con.print(table)
        lossy = [t for t in result.tensors if not math.isinf(t.sqnr_db)]
        con.print(f"{len(lossy)} of {len(result.tensors)} tensors stored with rounding error; the rest exactly")
