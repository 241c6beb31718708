"""What the probe's source readers share: byte units, the `Absent` signal, guarded file and subprocess reads, and the
small text parsers that more than one source uses (sysctl output, 'key value' lines)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

# Memory is in bytes everywhere; these are the binary units it is shown and converted in.
GIB = 2**30
MIB = 2**20
# A tool (sysctl, ioreg, amd-smi) that takes longer than this is treated as hung.
SUBPROCESS_TIMEOUT_S = 3.0


class Absent(Exception):
    """A source that does not exist on this machine (no library, other OS): recorded as absent, not as an error."""


def run(cmd: list[str], timeout: float = SUBPROCESS_TIMEOUT_S) -> tuple[int, str]:
    """Run a command; return (exit code, stdout). Tools like sysctl print what they can and exit non-zero."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL, errors="replace")
    except FileNotFoundError:
        raise Absent(f"{cmd[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"'{' '.join(cmd)}' timed out after {timeout:g} s") from None
    return proc.returncode, proc.stdout


def read_text(path: Path) -> str | None:
    """Read a small sysfs / procfs file; None if it is missing or unreadable."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def read_int(path: Path) -> int | None:
    """Read an integer from a sysfs file; None if missing or not a number."""
    text = read_text(path)
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None


def parse_sysctl(text: str) -> dict[str, str]:
    """Parse `sysctl name ...` output ('key: value' lines) into a dict."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and " " not in key.strip():
            out[key.strip()] = value.strip()
    return out


def parse_kv_lines(text: str) -> dict[str, str]:
    """Parse 'key value' lines (cgroup memory.stat, KFD properties)."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    return out


def int_or_none(value: Any) -> int | None:
    """An int from an int or a decimal / hex string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip(), 0)
        except ValueError:
            return None
    return None
