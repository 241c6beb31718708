"""Option builders shared by several subcommands, so flags mean the same everywhere."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Bounds shared by several commands; each says why it is where it is.
# 16M tokens: above the longest context any published model offers (Llama 4 Scout: 10M), so no real plan is refused.
MAX_CONTEXT_TOKENS = 2**24
# One node's GPUs: 72 is the largest NVLink domain sold as one system (GB200 NVL72).
MAX_DEVICES = 72
# Nodes in one deployment: the largest published inference deployments span ~40 nodes (DeepSeek-V3 decode, EP320).
MAX_NODES = 64
# GPUs in all for `recommend`, which costs every layout of every GPU count: measured on a 2-core CPU, 128 GPUs take
# 2 s, 512 GPUs 22 s and 0.7 GB, 4608 GPUs 94 s and 4 GB; 256 keeps it interactive.
MAX_RECOMMEND_GPUS = 256
# Concurrent sequences: a batch beyond this is no longer one deployment's decode batch.
MAX_CONCURRENCY = 100_000
# GiB of one device: the catalog schema's own bound (DeviceSpec.memory_gib le=4096).
MAX_DEVICE_GIB = 4096.0
# Host RAM in GiB: 1 PiB, ~30x the largest single-system RAM sold today (32 TiB).
MAX_HOST_GIB = 1024.0 * 1024
# GB/s of device memory: the catalog schema's own bound (DeviceSpec.mem_bandwidth_gb_s le=20000).
MAX_BANDWIDTH_GB_S = 20000.0
MAX_TFLOPS = 30000.0  # the catalog schema's bound on peak_fp16_tflops
# Chunks of text for planner eval: a billion chunks of >= 8 tokens is more text than any eval could read.
MAX_EVAL_CHUNKS = 10**9
# Decode tokens/s of one sequence: no device comes within 100x of this (assumed ceiling for a filter value).
MAX_TOKENS_PER_S = 1e6


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: 'planner CMD: error: argument --x: ...' and exit 2, no usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print one line naming the option and what it takes, then exit 2 (argparse's invalid-input code)."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def shown(text: str, limit: int = 40) -> str:
    """A user value for a message: quoted, and cut to `limit` characters with its length when longer."""
    text = str(text)
    return repr(text) if len(text) <= limit else f"'{text[:limit]}...' ({len(text):,} characters)"


_INT_RE = re.compile(r"[+-]?\d+")


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: a whole number from lo to hi; anything else (garbage, 5000 digits) is one clear error."""

    def parse(text: str) -> int:
        t = text.strip().replace("_", "")
        # Compare digit counts before int(): a 4301+ digit string would raise Python's int-size ValueError.
        if not _INT_RE.fullmatch(t) or len(t.lstrip("+-").lstrip("0")) > len(str(max(abs(lo), abs(hi)))) + 1:
            value = None
        else:
            value = int(t)
        if value is None or not lo <= value <= hi:
            what = "not a whole number" if not _INT_RE.fullmatch(t) else "out of range"
            raise argparse.ArgumentTypeError(f"{shown(text)} is {what}; expected a whole number from {lo:,} to {hi:,}")
        return value

    parse.__name__ = "int"
    return parse


def float_in(lo: float, hi: float, lo_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [lo, hi] (or (lo, hi] with lo_open); nan, inf and garbage are refused."""
    span = f"{'greater than' if lo_open else 'from'} {lo:g} {'and at most' if lo_open else 'to'} {hi:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{shown(text)} is not a number; expected a number {span}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{shown(text)} is not a finite number; expected a number {span}")
        if value > hi or value < lo or (lo_open and value == lo):
            raise argparse.ArgumentTypeError(f"{shown(text)} is out of range; expected a number {span}")
        return value

    parse.__name__ = "float"
    return parse


def size_in(hi_gib: float) -> Callable[[str], str]:
    """An argparse type: a memory size such as 24GiB or 512MiB, above 0 and at most hi_gib GiB (kept as text, the
    commands parse it with parse_memory)."""

    def parse(text: str) -> str:
        from planner.hardware.catalog import parse_memory

        try:
            value = parse_memory(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"cannot read memory size {shown(text)} (expected e.g. 24GiB or 80GB)") from None
        if not math.isfinite(value) or not 0 < value <= hi_gib:
            raise argparse.ArgumentTypeError(f"{shown(text)} is out of range; expected a size above 0 and at most "
                                             f"{hi_gib:g} GiB")
        return text

    parse.__name__ = "size"
    return parse


def nonempty(text: str) -> str:
    """An argparse type: a non-empty name (an empty --device would silently mean 'this machine')."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty value; give a name or path")
    return text


def path_arg(text: str) -> Path:
    """An argparse type: a non-empty path (an empty one would silently mean the current directory)."""
    return Path(nonempty(text))


def kv_dtype(text: str) -> str:
    """An argparse type: a KV cache dtype some runtime offers; a typo gets the closest names."""
    from planner.errors import close_matches
    from planner.cost.evaluate import known_kv_dtypes

    known = known_kv_dtypes()
    if text.lower() in {d.lower() for d in known}:
        return text
    near = close_matches(text, known)
    hint = f"; did you mean: {', '.join(near)}?" if near else ""
    raise argparse.ArgumentTypeError(f"unknown KV dtype {shown(text)}{hint} (choose one of: {', '.join(known)})")


def add_json(p: argparse.ArgumentParser) -> None:
    """--json: print machine-readable output instead of tables."""
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def add_catalog_dirs(p: argparse.ArgumentParser) -> None:
    """--hwdb / --profiles: user catalogs merged over the built-in ones."""
    p.add_argument("--hwdb", action="append", type=path_arg, default=[], metavar="DIR", help="extra hardware catalog directory (repeatable)")
    p.add_argument("--profiles", action="append", type=path_arg, default=[], metavar="DIR", help="extra model profile directory (repeatable)")


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

    # Pipes and CI logs get a wide fixed width for tables instead of rich's 80-column default, and text is not
    # wrapped at all (soft_wrap): a note cut mid-sentence at column 160 breaks grep and diff of the output.
    tty = sys.stdout.isatty()
    return _Console(highlight=False, width=None if tty else 160, soft_wrap=not tty)
