"""The hardware probe: `read_raw()` reads this machine into a plain snapshot; `interpret()` turns a snapshot into a Host.

Only `read_raw()` (through the source readers it runs) touches NVML, subprocesses, sysfs, /proc, cgroups or psutil.
Everything else is pure, so a snapshot saved with `planner probe --raw` on another machine plans exactly like that
machine, and the tests run on captured snapshots.

Modules, one per source plus the schema and the interpretation:
- `nvml`: NVIDIA GPUs through NVML (pynvml imported only when read).
- `amd`: AMD GPUs through sysfs, the KFD topology and amd-smi / rocm-smi, with their output parsers.
- `apple`: Apple silicon through sysctl, ioreg and system_profiler, with their output parsers.
- `system`: CPU (and the /proc/cpuinfo parser), RAM and swap, the cgroup memory limit.
- `_shared`: units, the `Absent` signal, guarded file and subprocess reads, parsers two sources share.
- `snapshot`: the snapshot schema; validate, parse and load saved snapshots.
- `interpret`: the pure interpretation: Host, ProbedDevice, CpuInfo, catalog matching, MIG, *_VISIBLE_DEVICES.
This module runs the sources side by side, each with its time limit (`read_raw`), and is the API the rest of the
planner imports.

Units: memory is in bytes everywhere (GiB = 2**30 where a figure is shown); the catalog's bandwidths are decimal GB/s.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable
from typing import Any

from planner import __version__
from planner.hardware.catalog import Catalog
from planner.hardware.probe import amd, apple, nvml, system
from planner.hardware.probe._shared import GIB, MIB, Absent
from planner.hardware.probe.interpret import (
    DEFAULT_UNIFIED_GPU_FRACTION,
    PLACEHOLDER_MEM_BANDWIDTH_GB_S,
    CpuInfo,
    Host,
    ProbedDevice,
    interpret,
)
from planner.hardware.probe.snapshot import (
    SNAPSHOT_VERSION,
    load_snapshot,
    parse_snapshot,
    validate_snapshot,
)

__all__ = [
    "DEFAULT_UNIFIED_GPU_FRACTION", "GIB", "MIB", "PLACEHOLDER_MEM_BANDWIDTH_GB_S", "SNAPSHOT_VERSION", "SOURCE_TIMEOUT_S",
    "CpuInfo", "Host", "ProbedDevice",
    "interpret", "load_snapshot", "local_host", "parse_snapshot", "read_raw", "validate_snapshot",
]

# Per-source time limits (seconds): a hung driver or tool costs at most this, and never the whole probe.
SOURCE_TIMEOUT_S: dict[str, float] = {"nvml": 5.0, "amd": 5.0, "apple": 5.0, "cpu": 2.0, "memory": 2.0, "cgroup": 2.0}

_ENV_KEYS = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")

# Probe source -> the snapshot section it fills.
_SECTION = {"nvml": "nvidia", "amd": "amd", "apple": "apple", "cpu": "cpu", "memory": "memory", "cgroup": "cgroup"}


def read_raw(timeout_s: float | None = None, catalog: Catalog | None = None) -> dict:
    """Read this machine into a JSON-serialisable snapshot; each source is guarded and timed (timeout_s overrides all
    limits). With `catalog`, the CUDA driver (cuInit: a fraction of a second) is asked only about GPUs it lacks."""
    known = None if catalog is None else (lambda gpu: catalog.match_probed(
        gpu.get("name") or "", gpu.get("pci_device_id"), gpu.get("pci_subsystem_id"))[0] is not None)
    readers: dict[str, Callable[[], dict]] = {
        "nvml": nvml.read_raw if known is None else (lambda: nvml.read_raw(known)),
        "amd": amd.read_raw,
        "apple": apple.read_raw,
        "cpu": system.read_cpu,
        "memory": system.read_memory,
        "cgroup": system.read_cgroup,
    }
    # Sources run side by side in daemon threads: a driver call that hangs is abandoned at its deadline
    # instead of hanging the CLI, and the slow ones (NVML init, subprocesses) overlap.
    running: dict[str, tuple[threading.Thread, dict, float]] = {}
    for name, reader in readers.items():
        box: dict = {}
        thread = threading.Thread(target=_run_source, args=(reader, box), name=f"planner-probe-{name}", daemon=True)
        running[name] = (thread, box, time.monotonic())
        thread.start()

    snapshot: dict[str, Any] = {
        "snapshot_version": SNAPSHOT_VERSION,
        "planner_version": __version__,  # for bug reports
        "captured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": {"system": platform.system(), "machine": platform.machine(), "release": platform.release(),
                     "python": platform.python_version()},
        "env": {key: os.environ.get(key) for key in _ENV_KEYS},
        "sources": {},
    }
    for name, (thread, box, started) in running.items():
        limit = timeout_s if timeout_s is not None else SOURCE_TIMEOUT_S[name]
        thread.join(max(0.0, started + limit - time.monotonic()))
        if thread.is_alive():
            snapshot["sources"][name] = {"ok": False, "absent": False, "reason": f"timed out after {limit:g} s (driver or tool hung?)",
                                         "elapsed_ms": round(limit * 1000, 1)}
            snapshot[_SECTION[name]] = None
            continue
        result = dict(box)  # the thread is done; copy so nothing changes under us
        status = {"ok": "data" in result, "absent": "absent" in result,
                  "reason": result.get("absent") or result.get("error"), "elapsed_ms": result.get("elapsed_ms")}
        snapshot["sources"][name] = status
        snapshot[_SECTION[name]] = result.get("data")
    return snapshot


def _run_source(reader: Callable[[], dict], box: dict) -> None:
    """Run one source reader, storing its data or the reason it failed (never raising)."""
    start = time.perf_counter()
    try:
        box["data"] = reader()
    except Absent as exc:
        box["absent"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - a probe source must never crash the probe; the reason is kept
        box["error"] = f"{type(exc).__name__}: {exc}".strip()[:500]
    box["elapsed_ms"] = round((time.perf_counter() - start) * 1000, 1)


def local_host(catalog: Catalog) -> Host:
    """Probe this machine and interpret it against `catalog`."""
    return interpret(read_raw(catalog=catalog), catalog)
