"""Command-line entry point: argparse subcommands and the one error boundary."""

from __future__ import annotations

# Only `sys` (already loaded by the interpreter) is imported at module level: a Ctrl-C while this module loads
# would otherwise print a traceback, since main()'s error boundary is not running yet. Everything else is imported
# inside main(), under that boundary.
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers treat this name as True)
if TYPE_CHECKING:  # pragma: no cover
    import argparse
    from collections.abc import Sequence

# Subcommand -> one-line help; each lives in planner.commands.<name> with add_parser(sub) and run(args) -> int.
COMMANDS = {
    "recommend": "recommend a precision, format and runtime for a model on hardware",
    "estimate": "memory, speed and quality of one model/format/device/runtime",
    "catalog": "list, show or validate hardware catalog entries",
    "models": "list model profiles, or show one",
    "probe": "read this machine's GPUs, unified memory and CPU",
    "check": "check deployments in a spec file still fit (for CI)",
    "tui": "browse hardware, models and what fits where",
    "bench": "time a model's matmuls on this device and compare with the cost model",
    "calibration": "list, show or clear measured calibration records",
    "quantize": "quantize a Hugging Face model or GGUF file to a format (GGUF, GPTQ, NF4, FP8, MLX)",
    "eval": "measure the quality each GGUF format costs, in llama.cpp, on your own text",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; with `only`, import just that subcommand's module (the others get a help line),
    so `planner recommend` does not pay for the TUI's or the probe's imports."""
    import importlib

    from planner import __version__
    from planner.commands.options import ArgumentParser

    parser = ArgumentParser(
        prog="planner",
        description="Which precision, format and runtime should this LLM use on this hardware, and how fast will it be?",
    )
    parser.add_argument("--version", action="version", version=f"planner {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")  # subparsers inherit the one-line errors
    for name, help_text in COMMANDS.items():
        if name != only:
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        importlib.import_module(f"planner.commands.{name}").add_parser(sub)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand named in argv, if any (the first word that is not an option)."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 ok, 1 domain error, 2 invalid input, 3 bug, 130 interrupted)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # at any moment: while importing, parsing or running
        print("planner: interrupted", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    """Parse and run one command inside the error boundary (main() adds Ctrl-C around all of it)."""
    from planner.errors import PlannerError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_in(argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code in (0, None):
            raise  # --help and --version: argparse's own SystemExit(0), as callers expect
        return int(exc.code) if isinstance(exc.code, int) else 2  # an invalid option: its one line is printed
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PlannerError as exc:
        print(f"planner: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the one boundary for bugs: short message, not a traceback
        print(
            f"planner: internal error: {type(exc).__name__}: {exc}\n"
            "This is a bug in planner; rerun with PLANNER_DEBUG=1 for the traceback and report it.",
            file=sys.stderr,
        )
        import os

        if os.environ.get("PLANNER_DEBUG") == "1":
            raise
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
