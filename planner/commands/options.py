"""Option builders shared by several subcommands, so flags mean the same everywhere."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_json(p: argparse.ArgumentParser) -> None:
    """--json: print machine-readable output instead of tables."""
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def add_catalog_dirs(p: argparse.ArgumentParser) -> None:
    """--hwdb / --profiles: user catalogs merged over the built-in ones."""
    p.add_argument("--hwdb", action="append", type=Path, default=[], metavar="DIR", help="extra hardware catalog directory (repeatable)")
    p.add_argument("--profiles", action="append", type=Path, default=[], metavar="DIR", help="extra model profile directory (repeatable)")


def print_json(data: Any) -> None:
    """Print data as indented JSON on stdout."""
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def console():  # type: ignore[no-untyped-def]
    """A rich Console on stdout (imported lazily: rich costs start-up time)."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # `planner ... | head` is normal use: stop writing quietly instead of rich's SystemExit(1)
            import os

            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())

    # Pipes and CI logs get a wide fixed width instead of rich's 80-column default.
    return _Console(highlight=False, width=None if sys.stdout.isatty() else 160)
