"""Apple silicon: `read_raw()` reads the chip, memory, GPU cores and GPU wired-memory limit (sysctl, ioreg,
system_profiler); the parsers of their output are pure."""

from __future__ import annotations

import json
import platform
import re
import sys

from planner.hardware.probe._shared import MIB, Absent, int_or_none, parse_sysctl, run


def read_raw() -> dict:
    """Apple silicon: chip, memory, GPU cores and the GPU wired-memory limit."""
    if sys.platform != "darwin":
        raise Absent("not macOS")
    if platform.machine() != "arm64":
        raise Absent("Intel Mac: no Apple-silicon GPU")
    _rc, out = run(["sysctl", "machdep.cpu.brand_string", "hw.memsize", "hw.model", "iogpu.wired_limit_mb", "debug.iogpu.wired_limit"])
    values = parse_sysctl(out)
    wired = int_or_none(values.get("iogpu.wired_limit_mb"))
    if wired is None:  # macOS 13 and older: the same limit in bytes under debug.
        old = int_or_none(values.get("debug.iogpu.wired_limit"))
        wired = old // MIB if old else old
    cores = None
    errors: dict[str, str] = {}
    try:
        _rc, ioreg = run(["ioreg", "-rc", "AGXAccelerator", "-d", "1"])  # fast; system_profiler takes ~0.5 s
        cores = parse_ioreg_gpu_cores(ioreg)
        if cores is None:
            _rc, prof = run(["system_profiler", "SPDisplaysDataType", "-json"], timeout=4.0)
            cores = parse_system_profiler_gpu_cores(prof)
    except (RuntimeError, Absent) as exc:
        errors["gpu_cores"] = str(exc)  # the core count is informative; chip and memory still plan
    return {
        "chip": values.get("machdep.cpu.brand_string"),
        "model": values.get("hw.model"),
        "memory_bytes": int_or_none(values.get("hw.memsize")),
        "gpu_cores": cores,
        "wired_limit_mb": wired,
        "errors": errors,
    }


def parse_ioreg_gpu_cores(text: str) -> int | None:
    """GPU core count from `ioreg -rc AGXAccelerator -d 1` ("gpu-core-count" = 38)."""
    m = re.search(r'"gpu-core-count"\s*=\s*(\d+)', text)
    return int(m.group(1)) if m else None


def parse_system_profiler_gpu_cores(text: str) -> int | None:
    """GPU core count from `system_profiler SPDisplaysDataType -json` (sppci_cores)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    for item in data.get("SPDisplaysDataType", []) if isinstance(data, dict) else []:
        cores = int_or_none(item.get("sppci_cores")) if isinstance(item, dict) else None
        if cores:
            return cores
    return None
