"""`planner eval`: quantize a model to several GGUF formats, run each in llama.cpp over a text, and report the
quality each costs against the 16-bit model (perplexity, KL divergence, top-1 agreement) beside its size."""

from __future__ import annotations

import argparse
import sys

from planner.commands.options import MAX_CONTEXT_TOKENS, MAX_EVAL_CHUNKS, add_json, console, int_in, path_arg, print_json

DEFAULT_FORMATS = "Q8_0,Q5_K_M,Q4_K_M,Q3_K_M"


def add_parser(sub) -> None:  # type: ignore[no-untyped-def]
    """Register the subcommand."""
    p = sub.add_parser(
        "eval", help="measure the quality each format costs, in llama.cpp, on your own text",
        description="Quantize SOURCE (a Hugging Face model directory or a .gguf file) to each format (reusing files "
                    "made before), run each through llama.cpp (llama-cpp-python) over the text in --ctx sized "
                    "chunks, and report perplexity, KL divergence from the 16-bit model (mean, p99), top-1 "
                    "agreement with it, and size, sorted by size with the knee of the size/quality curve marked. "
                    "Your own text is the point: quality depends on what the model is used for.")
    p.add_argument("source", type=path_arg, metavar="SOURCE", help="Hugging Face model directory or .gguf file")
    p.add_argument("--formats", default=DEFAULT_FORMATS, metavar="F,F,...",
                   help=f"comma-separated formats (default {DEFAULT_FORMATS}): GGUF types, or weight-only GPU formats "
                        "planner quantize writes (gptq-int4, gptq-int8, nf4, fp8, mlx-4bit, mlx-8bit, ...), run as "
                        "their dequantized weights")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text", type=path_arg, metavar="FILE", help="UTF-8 text file to evaluate on (your own data)")
    src.add_argument("--dataset", default=None, metavar="NAME",
                     help="bundled text to evaluate on when no --text is given: 'sample' (the default and only one: "
                          "original prose shipped with planner, a few thousand tokens); other texts, WikiText "
                          "included, go in with --text FILE")
    p.add_argument("--calib", type=path_arg, metavar="FILE",
                   help="calibration text (UTF-8) for the calibrated GPU formats (gptq-int4, gptq-int8, awq-int4): "
                        "they are quantized on it instead of the bundled calibration text, and the table and the stored "
                        "record name it; keep it apart from --text, or the score flatters them")
    # 8 tokens: the least llama.cpp perplexity can score (planner.measure.quality.core); at most the longest context
    p.add_argument("--ctx", type=int_in(8, MAX_CONTEXT_TOKENS), default=512, metavar="N", help="context per chunk in tokens (default 512)")
    p.add_argument("--chunks", type=int_in(1, MAX_EVAL_CHUNKS), default=None, metavar="N", help="evaluate at most N chunks (default: all)")
    p.add_argument("--no-save", action="store_true", help="do not store the results under the planner data directory")
    add_json(p)
    p.set_defaults(func=run)


class _Bars:
    """A rich progress bar per format, over chunks, on stderr."""

    def __init__(self, enabled: bool):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=Console(stderr=True),
                                 disable=not enabled)
        self.tasks: dict[str, int] = {}
        self.started = False

    def stage(self, name: str, total: float) -> None:
        if not self.started:
            self.progress.start()
            self.started = True
        self.tasks[name] = self.progress.add_task(name if "(MB)" in name else f"{name} (chunks)", total=total)

    def advance(self, name: str, n: float = 1) -> None:
        self.progress.update(self.tasks[name], advance=n)

    def stop(self) -> None:
        if self.started:
            self.progress.stop()


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from planner.measure.quality.core import evaluate, save_report
    from planner.measure.quality.text import dataset_path, load_dataset, load_text

    if args.text is not None:
        text, text_name = load_text(args.text), str(args.text)
    else:
        name = args.dataset or "sample"
        text, text_name = load_dataset(name), f"{name} ({dataset_path(name).name})"
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    calib = (str(args.calib), load_text(args.calib)) if args.calib is not None else None
    bars = _Bars(enabled=not args.json and sys.stderr.isatty())
    try:
        report = evaluate(args.source, formats, text, text_name=text_name, ctx=args.ctx, max_chunks=args.chunks,
                          progress=bars, calib=calib)
    finally:
        bars.stop()
    saved = None
    if not args.no_save and report.results:
        saved = save_report(report)
    if args.json:
        data = report.as_dict()
        data["saved"] = str(saved) if saved else None
        print_json(data)
    else:
        _table(report, saved)
    if report.crash:  # llama.cpp crashed part-way: the formats before the crash are shown (and saved) above
        print(f"planner: error: {report.crash}" + (f" (the formats measured before it are saved to {saved})"
                                                      if saved else ""), file=sys.stderr)
        return 1
    if report.interrupted:
        print("planner: interrupted; the formats finished so far are shown" + (" and saved" if saved else ""),
              file=sys.stderr)
        return 130
    return 0


def _table(report, saved) -> None:  # type: ignore[no-untyped-def]
    """One table sorted by size, the knee marked."""
    from rich.table import Table

    con = console()
    for w in dict.fromkeys(report.warnings):
        con.print(f"[yellow]! {w}[/yellow]")
    table = Table(title=f"{report.source}: {report.scored_tokens} tokens scored of {report.text}, "
                        f"{report.chunks} chunks of {report.ctx}", title_justify="left")
    for col in ("format", "size MB", "bits/w", "PPL", "ΔPPL %", "KLD mean", "KLD p99", "top-1 %", ""):
        table.add_column(col, justify="left" if col in ("format", "") else "right")
    ref = next((r for r in report.results if r.reference), None)
    for r in report.results:
        d = f"{(r.ppl / ref.ppl - 1) * 100:+.2f}" if ref and not r.reference else ""
        note = "reference (16-bit)" if r.reference else ("◀ knee" if r.knee else "")
        name = f"{r.format} ({r.method})" if r.method else r.format
        table.add_row(name, f"{r.file_bytes / 1e6:,.1f}", f"{r.bits_per_weight:.2f}", f"{r.ppl:.3f} ± {r.ppl_err:.3f}",
                      d, "" if r.reference else f"{r.kld_mean:.5f}", "" if r.reference else f"{r.kld_p99:.4f}",
                      f"{r.top1 * 100:.1f}", note)
    con.print(table)
    if any(r.method for r in report.results):
        con.print("weight-only GPU formats: quantized by planner quantize, dequantized to an F32 GGUF and run in "
                  "llama.cpp (their error is all in the weights); size and bits/w are the format's own checkpoint")
    for label in dict.fromkeys(r.calibration for r in report.results if r.calibration):
        con.print(f"calibrated on: {label}")
    if any(r.knee for r in report.results):
        con.print("knee: the smallest format past which extra bits buy little KL divergence")
    if saved:
        con.print(f"saved to {saved}")
