"""The machine itself: CPU (model, cores, ISA flags), RAM and swap, and the container's cgroup memory limit; one
reader per source (`read_cpu`, `read_memory`, `read_cgroup`) and the pure /proc/cpuinfo parser."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

from planner.hardware.probe._shared import Absent, int_or_none, parse_kv_lines, parse_sysctl, read_int, read_text, run

# cgroup v1 reports "no limit" as a huge page-aligned number near 2**63.
_CGROUP_UNLIMITED = 2**60


def read_cpu() -> dict:
    """CPU model, core counts and ISA flags (/proc/cpuinfo on Linux, sysctl on macOS)."""
    import psutil  # lazy: only a live read needs psutil (~30 ms); interpreting a saved snapshot does not

    out: dict[str, Any] = {
        "model": None,
        "arch": platform.machine() or None,
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "flags": [],
        "flags_source": None,
    }
    if sys.platform.startswith("linux"):
        text = read_text(Path("/proc/cpuinfo"))
        if text is not None:  # without it the core counts still help
            model, flags = parse_cpuinfo(text)
            out.update(model=model, flags=flags, flags_source="/proc/cpuinfo")
    elif sys.platform == "darwin":
        _rc, text = run(["sysctl", "machdep.cpu.brand_string", "hw.optional"])
        values = parse_sysctl(text)
        out["model"] = values.get("machdep.cpu.brand_string")
        out["flags"] = sorted(k.removeprefix("hw.optional.") for k, v in values.items() if k.startswith("hw.optional.") and v == "1")
        out["flags_source"] = "sysctl hw.optional"
    else:
        out["model"] = platform.processor() or None
    return out


def parse_cpuinfo(text: str) -> tuple[str | None, list[str]]:
    """Model name and ISA flags from /proc/cpuinfo (x86 'flags', ARM 'Features')."""
    model = None
    flags: list[str] = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if model is None and key in ("model name", "cpu model", "hardware"):
            model = value.strip() or None
        elif not flags and key in ("flags", "features"):
            flags = sorted(set(value.split()))
    return model, flags


def read_memory() -> dict:
    """RAM and swap through psutil."""
    import psutil  # lazy: only a live read needs psutil (~30 ms); interpreting a saved snapshot does not

    vm = psutil.virtual_memory()
    sw = psutil.swap_memory()
    return {"total_bytes": int(vm.total), "available_bytes": int(vm.available),
            "swap_total_bytes": int(sw.total), "swap_free_bytes": int(sw.free)}


def read_cgroup() -> dict:
    """The memory limit of this process's cgroup (containers), v2 or v1, the tightest along the path."""
    if not sys.platform.startswith("linux"):
        raise Absent("not Linux")
    text = read_text(Path("/proc/self/cgroup"))
    if text is None:
        raise Absent("no /proc/self/cgroup")
    base = Path("/sys/fs/cgroup")
    entries = [line.split(":", 2) for line in text.splitlines() if line.count(":") >= 2]
    if "memory" in (read_text(base / "cgroup.controllers") or "").split():  # unified (v2) hierarchy with memory
        rel = next((e[2] for e in entries if e[0] == "0" and e[1] == ""), "/")
        return _cgroup_limits(base, rel, 2, "memory.max", "memory.current", "inactive_file")
    for _hid, controllers, rel in entries:
        if "memory" in controllers.split(","):
            return _cgroup_limits(base / "memory", rel, 1, "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
    raise Absent("no cgroup memory controller")


def _cgroup_limits(root: Path, rel: str, version: int, limit_file: str, usage_file: str, inactive_key: str) -> dict:
    """Walk from this cgroup up to the root: the smallest limit applies; usage and cache come from the leaf."""
    leaf = root / rel.lstrip("/")
    if not leaf.is_dir():  # inside a cgroup namespace the path in /proc/self/cgroup is relative to our own root
        leaf = root
    limit = None
    node = leaf
    while True:
        value = read_text(node / limit_file)
        if value and value != "max":
            try:
                number = int(value)
            except ValueError:
                number = None
            if number is not None and number < _CGROUP_UNLIMITED:
                limit = number if limit is None else min(limit, number)
        if node == root or root not in node.parents:
            break
        node = node.parent
    stat = parse_kv_lines(read_text(leaf / "memory.stat") or "")
    return {"version": version, "path": str(leaf), "memory_limit_bytes": limit,
            "memory_usage_bytes": read_int(leaf / usage_file), "inactive_file_bytes": int_or_none(stat.get(inactive_key))}
