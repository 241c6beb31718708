"""Command-line entry point: argparse subcommands and the one error boundary."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from planner import __version__
from planner.errors import PlannerError

# Subcommand name -> module under planner.commands; each module has add_parser(sub) and run(args) -> int.
COMMANDS = {
    "recommend": "recommend",
    "estimate": "estimate",
    "catalog": "catalog",
    "models": "models",
    "probe": "probe",
    "check": "check",
    "tui": "tui",
}


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand that is installed."""
    parser = argparse.ArgumentParser(
        prog="planner",
        description="Which precision, format and runtime should this LLM use on this hardware, and how fast will it be?",
    )
    parser.add_argument("--version", action="version", version=f"planner {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(f"planner.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"planner.commands.{module}":
                continue  # command not built yet
            raise
        mod.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 ok, 1 domain error, 2 invalid input, 3 bug, 130 interrupted)."""
    parser = build_parser()
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
