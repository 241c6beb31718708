"""Command-line entry point: argparse subcommands and the one error boundary."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from planner import __version__
from planner.errors import PlannerError

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
    parser = argparse.ArgumentParser(
        prog="planner",
        description="Which precision, format and runtime should this LLM use on this hardware, and how fast will it be?",
    )
    parser.add_argument("--version", action="version", version=f"planner {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
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
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_in(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PlannerError as exc:
        print(f"planner: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("planner: interrupted", file=sys.stderr)
        return 130
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
