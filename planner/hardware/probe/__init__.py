"""The hardware probe: `read_raw()` reads this machine into a plain snapshot; `interpret()` turns a snapshot into a Host.

Only `read_raw()` (through the `_read_*` source readers it runs) touches NVML, subprocesses, sysfs, /proc, cgroups
or psutil. Everything else here is pure, so a snapshot saved with `planner probe --raw` on another machine plans
exactly like that machine, and the tests run on captured snapshots.

Units: memory is in bytes everywhere (GiB = 2**30 where a figure is shown); the catalog's bandwidths are decimal GB/s.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field

from planner.errors import InvalidInputError, preview
from planner.hardware.catalog import Catalog, DeviceSpec
from planner.hardware.schema import CPU_ISA_NAMES

SNAPSHOT_VERSION = 1

GIB = 2**30
MIB = 2**20

# Bandwidth given to a device the catalog does not know. DeviceSpec needs a figure; this one is deliberately low
# (about dual-channel DDR5) so an unknown device never gets optimistic speed estimates. Always listed as unverified.
PLACEHOLDER_MEM_BANDWIDTH_GB_S = 50.0
# GPU share of unified memory when neither the OS limit nor the catalog says: Metal's default working set is about
# 3/4 of RAM on 16-64 GB Macs (measured; see shared/reference/hardware_notes.md section 2).
DEFAULT_UNIFIED_GPU_FRACTION = 0.75
# launch_year is required by DeviceSpec; an uncatalogued device gets the schema's lower bound, marked unverified.
_PLACEHOLDER_LAUNCH_YEAR = 2010

# Per-source time limits (seconds): a hung driver or tool costs at most this, and never the whole probe.
SOURCE_TIMEOUT_S: dict[str, float] = {"nvml": 5.0, "amd": 5.0, "apple": 5.0, "cpu": 2.0, "memory": 2.0, "cgroup": 2.0}
_SUBPROCESS_TIMEOUT_S = 3.0
_ENV_KEYS = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")
# cgroup v1 reports "no limit" as a huge page-aligned number near 2**63.
_CGROUP_UNLIMITED = 2**60


# --------------------------------------------------------------------------------------------------------------
# Reading (the only impure part)
# --------------------------------------------------------------------------------------------------------------


class _Absent(Exception):
    """A source that does not exist on this machine (no library, other OS): recorded as absent, not as an error."""


# Probe source -> the snapshot section it fills.
_SECTION = {"nvml": "nvidia", "amd": "amd", "apple": "apple", "cpu": "cpu", "memory": "memory", "cgroup": "cgroup"}


def read_raw(timeout_s: float | None = None) -> dict:
    """Read this machine into a JSON-serialisable snapshot; each source is guarded and timed (timeout_s overrides all limits)."""
    readers: dict[str, Callable[[], dict]] = {
        "nvml": _read_nvml,
        "amd": _read_amd,
        "apple": _read_apple,
        "cpu": _read_cpu,
        "memory": _read_memory,
        "cgroup": _read_cgroup,
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
        "planner_version": _planner_version(),
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
    except _Absent as exc:
        box["absent"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - a probe source must never crash the probe; the reason is kept
        box["error"] = f"{type(exc).__name__}: {exc}".strip()[:500]
    box["elapsed_ms"] = round((time.perf_counter() - start) * 1000, 1)


def _planner_version() -> str:
    """The planner version, for bug reports."""
    from planner import __version__

    return __version__


def _run(cmd: list[str], timeout: float = _SUBPROCESS_TIMEOUT_S) -> tuple[int, str]:
    """Run a command; return (exit code, stdout). Tools like sysctl print what they can and exit non-zero."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL, errors="replace")
    except FileNotFoundError:
        raise _Absent(f"{cmd[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"'{' '.join(cmd)}' timed out after {timeout:g} s") from None
    return proc.returncode, proc.stdout


def _read_text(path: Path) -> str | None:
    """Read a small sysfs / procfs file; None if it is missing or unreadable."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    """Read an integer from a sysfs file; None if missing or not a number."""
    text = _read_text(path)
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None


def _read_nvml() -> dict:
    """NVIDIA GPUs through NVML: identity, memory, links, MIG instances, power limit, processes."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:  # the cheap check first: no driver library means no NVIDIA GPU, without importing pynvml (~20 ms)
            ctypes.CDLL("libnvidia-ml.so.1")
        except OSError:
            raise _Absent("no NVIDIA driver (libnvidia-ml.so.1 not found)") from None
    try:
        import pynvml  # lazily: importing and loading libnvidia-ml costs time on machines without NVIDIA GPUs
    except ImportError as exc:
        raise _Absent(f"nvidia-ml-py is not installed ({exc})") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        if getattr(exc, "value", None) == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND:
            raise _Absent(f"no NVIDIA driver (libnvidia-ml not found: {exc})") from None
        raise RuntimeError(f"NVML could not start: {exc}") from None
    try:
        return _read_nvml_devices(pynvml)
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass  # shutting down a half-initialised NVML is harmless; the data is already read


def _read_nvml_devices(nv: Any) -> dict:
    """Read every device of an initialised NVML (`nv` is the pynvml module or a test double)."""
    quiet = {nv.NVML_ERROR_NOT_SUPPORTED}

    def call(errors: dict[str, str], key: str, fn: Callable, *args: Any) -> Any:
        """One NVML query; a failure is recorded under `key` (not for 'Not Supported') and gives None."""
        try:
            return fn(*args)
        except nv.NVMLError as exc:
            if getattr(exc, "value", None) not in quiet:
                errors[key] = str(exc)
            return None

    top_errors: dict[str, str] = {}
    cuda = call(top_errors, "cuda_driver_version", nv.nvmlSystemGetCudaDriverVersion)
    out: dict[str, Any] = {
        "driver_version": _text(call(top_errors, "driver_version", nv.nvmlSystemGetDriverVersion)),
        "cuda_driver_version": f"{cuda // 1000}.{(cuda % 1000) // 10}" if isinstance(cuda, int) else None,
        "nvml_version": _text(call(top_errors, "nvml_version", nv.nvmlSystemGetNVMLVersion)),
        "gpus": [],
        "errors": top_errors,
    }
    count = nv.nvmlDeviceGetCount()
    for index in range(count):
        errors: dict[str, str] = {}
        handle = call(errors, "handle", nv.nvmlDeviceGetHandleByIndex, index)
        gpu: dict[str, Any] = {"index": index, "errors": errors}
        out["gpus"].append(gpu)
        if handle is None:
            continue
        gpu["name"] = _text(call(errors, "name", nv.nvmlDeviceGetName, handle))
        gpu["uuid"] = _text(call(errors, "uuid", nv.nvmlDeviceGetUUID, handle))
        pci = call(errors, "pci", nv.nvmlDeviceGetPciInfo, handle)
        gpu["pci_bus_id"] = _text(getattr(pci, "busId", None)) if pci is not None else None
        gpu.update(_nvml_memory(call(errors, "memory", nv.nvmlDeviceGetMemoryInfo, handle)))
        cc = call(errors, "compute_capability", nv.nvmlDeviceGetCudaComputeCapability, handle)
        gpu["compute_capability"] = f"{cc[0]}.{cc[1]}" if cc else None
        gpu["pcie_gen_current"] = call(errors, "pcie_gen_current", nv.nvmlDeviceGetCurrPcieLinkGeneration, handle)
        gpu["pcie_gen_max"] = call(errors, "pcie_gen_max", nv.nvmlDeviceGetMaxPcieLinkGeneration, handle)
        gpu["pcie_width_current"] = call(errors, "pcie_width_current", nv.nvmlDeviceGetCurrPcieLinkWidth, handle)
        gpu["pcie_width_max"] = call(errors, "pcie_width_max", nv.nvmlDeviceGetMaxPcieLinkWidth, handle)
        gpu["nvlink_active_links"] = _nvml_nvlinks(nv, handle)
        milliwatts = call(errors, "power_limit", nv.nvmlDeviceGetEnforcedPowerLimit, handle)
        gpu["power_limit_w"] = milliwatts / 1000 if isinstance(milliwatts, int) else None
        procs = call(errors, "processes", nv.nvmlDeviceGetComputeRunningProcesses, handle)
        gpu["processes"] = (
            [{"pid": int(p.pid), "used_memory_bytes": p.usedGpuMemory if isinstance(p.usedGpuMemory, int) else None} for p in procs]
            if procs is not None else None
        )
        mode = call(errors, "mig_mode", nv.nvmlDeviceGetMigMode, handle)
        gpu["mig_enabled"] = bool(mode[0]) if mode else None
        gpu["mig_pending"] = bool(mode[1]) if mode else None
        gpu["mig_devices"] = []
        if gpu["mig_enabled"]:
            gpu["mig_max_devices"] = call(errors, "mig_max_devices", nv.nvmlDeviceGetMaxMigDeviceCount, handle)
            for mig_index in range(gpu["mig_max_devices"] or 0):
                try:
                    mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, mig_index)
                except nv.NVMLError:
                    continue  # an unpopulated slot: NVML reports Not Found for it
                mig_errors: dict[str, str] = {}
                record = {
                    "index": mig_index,
                    "name": _text(call(mig_errors, "name", nv.nvmlDeviceGetName, mig)),
                    "uuid": _text(call(mig_errors, "uuid", nv.nvmlDeviceGetUUID, mig)),
                    "gpu_instance_id": call(mig_errors, "gpu_instance_id", nv.nvmlDeviceGetGpuInstanceId, mig),
                    "compute_instance_id": call(mig_errors, "compute_instance_id", nv.nvmlDeviceGetComputeInstanceId, mig),
                    **_nvml_memory(call(mig_errors, "memory", nv.nvmlDeviceGetMemoryInfo, mig)),
                    "errors": mig_errors,
                }
                gpu["mig_devices"].append(record)
    return out


def _nvml_memory(info: Any) -> dict:
    """Memory fields of an nvmlMemory_t (bytes), or Nones."""
    if info is None:
        return {"memory_total_bytes": None, "memory_free_bytes": None, "memory_used_bytes": None}
    return {"memory_total_bytes": int(info.total), "memory_free_bytes": int(info.free), "memory_used_bytes": int(info.used)}


def _nvml_nvlinks(nv: Any, handle: Any) -> int | None:
    """Count active NVLink links; 0 on GPUs without NVLink, None if NVML refuses."""
    active = 0
    for link in range(getattr(nv, "NVML_NVLINK_MAX_LINKS", 18)):
        try:
            active += 1 if nv.nvmlDeviceGetNvLinkState(handle, link) else 0
        except nv.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code in (nv.NVML_ERROR_NOT_SUPPORTED, nv.NVML_ERROR_INVALID_ARGUMENT):
                # Links past the device's last one (or all links on a PCIe-only board) are "not supported".
                return active
            return active or None
    return active


def _text(value: Any) -> str | None:
    """NVML strings arrive as str or bytes depending on the binding version."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").strip("\x00").strip()
    return str(value).strip()


def _read_amd() -> dict:
    """AMD GPUs: sysfs memory counters, KFD topology (gfx target, APU) and amd-smi / rocm-smi names."""
    drm = Path("/sys/class/drm")
    tool_name = "amd-smi" if shutil.which("amd-smi") else "rocm-smi" if shutil.which("rocm-smi") else None
    if not drm.is_dir() and tool_name is None:
        raise _Absent("no /sys/class/drm and no amd-smi / rocm-smi")
    cards = []
    for card in sorted(drm.glob("card*"), key=_card_number) if drm.is_dir() else []:
        if not re.fullmatch(r"card\d+", card.name):
            continue  # connectors such as card0-DP-1
        dev = card / "device"
        if _read_text(dev / "vendor") != "0x1002":
            continue
        cards.append({
            "card": card.name,
            "pci_bus_id": os.path.basename(os.path.realpath(dev)).lower(),
            "pci_device_id": _read_text(dev / "device"),
            "name": _read_text(dev / "product_name") or None,
            "vram_total_bytes": _read_int(dev / "mem_info_vram_total"),
            "vram_used_bytes": _read_int(dev / "mem_info_vram_used"),
            "gtt_total_bytes": _read_int(dev / "mem_info_gtt_total"),
            "gtt_used_bytes": _read_int(dev / "mem_info_gtt_used"),
            "unique_id": _read_text(dev / "unique_id") or None,
        })
    kfd = _kfd_nodes(Path("/sys/class/kfd/kfd/topology/nodes"))
    tool_rows: list[dict] = []
    tool_error = None
    # The tools take a second or more: run them only where sysfs found AMD GPUs or cannot be read (a restricted
    # container), not on every machine that merely has ROCm installed.
    if tool_name is not None and (cards or not drm.is_dir()):
        try:
            if tool_name == "amd-smi":
                rc, out = _run(["amd-smi", "static", "--asic", "--bus", "--vram", "--json"], timeout=4.0)
                if rc != 0:  # older amd-smi lack some of these flags
                    rc, out = _run(["amd-smi", "static", "--json"], timeout=4.0)
                tool_rows = parse_amd_smi(out)
            else:
                _rc, out = _run(["rocm-smi", "--showproductname", "--showmeminfo", "vram", "--showbus", "--json"], timeout=4.0)
                tool_rows = parse_rocm_smi(out)
        except (RuntimeError, _Absent) as exc:
            tool_error = f"{tool_name}: {exc}"
    gpus = merge_amd_sources(cards, kfd, tool_rows)
    used = [name for name, found in (("sysfs", cards), (tool_name, tool_rows)) if name and found]
    result: dict[str, Any] = {"tool": "+".join(used) or None, "gpus": gpus}
    if tool_error:
        result["errors"] = {"tool": tool_error}
    return result


def _card_number(path: Path) -> int:
    """Sort key so card10 comes after card9."""
    m = re.search(r"(\d+)$", path.name)
    return int(m.group(1)) if m else 1_000_000


def _kfd_nodes(root: Path) -> dict[str, dict]:
    """KFD topology nodes that are GPUs, keyed by PCI bus id: gfx target and whether the node also has CPU cores (an APU)."""
    out: dict[str, dict] = {}
    if not root.is_dir():
        return out
    for node in root.iterdir():
        props = parse_kfd_properties(_read_text(node / "properties") or "")
        if not props.get("simd_count"):
            continue  # a CPU-only node
        domain = props.get("domain", 0)
        loc = props.get("location_id", 0)
        bdf = f"{domain:04x}:{loc >> 8:02x}:{(loc >> 3) & 0x1F:02x}.{loc & 0x7:x}"
        out[bdf] = {"gfx_target": gfx_target_from_version(props.get("gfx_target_version")),
                    "apu": bool(props.get("cpu_cores_count"))}
    return out


def _read_apple() -> dict:
    """Apple silicon: chip, memory, GPU cores and the GPU wired-memory limit."""
    if sys.platform != "darwin":
        raise _Absent("not macOS")
    if platform.machine() != "arm64":
        raise _Absent("Intel Mac: no Apple-silicon GPU")
    _rc, out = _run(["sysctl", "machdep.cpu.brand_string", "hw.memsize", "hw.model", "iogpu.wired_limit_mb", "debug.iogpu.wired_limit"])
    values = parse_sysctl(out)
    wired = _int_or_none(values.get("iogpu.wired_limit_mb"))
    if wired is None:  # macOS 13 and older: the same limit in bytes under debug.
        old = _int_or_none(values.get("debug.iogpu.wired_limit"))
        wired = old // MIB if old else old
    cores = None
    errors: dict[str, str] = {}
    try:
        _rc, ioreg = _run(["ioreg", "-rc", "AGXAccelerator", "-d", "1"])  # fast; system_profiler takes ~0.5 s
        cores = parse_ioreg_gpu_cores(ioreg)
        if cores is None:
            _rc, prof = _run(["system_profiler", "SPDisplaysDataType", "-json"], timeout=4.0)
            cores = parse_system_profiler_gpu_cores(prof)
    except (RuntimeError, _Absent) as exc:
        errors["gpu_cores"] = str(exc)  # the core count is informative; chip and memory still plan
    return {
        "chip": values.get("machdep.cpu.brand_string"),
        "model": values.get("hw.model"),
        "memory_bytes": _int_or_none(values.get("hw.memsize")),
        "gpu_cores": cores,
        "wired_limit_mb": wired,
        "errors": errors,
    }


def _read_cpu() -> dict:
    """CPU model, core counts and ISA flags (/proc/cpuinfo on Linux, sysctl on macOS)."""
    import psutil

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
        text = _read_text(Path("/proc/cpuinfo"))
        if text is not None:  # without it the core counts still help
            model, flags = parse_cpuinfo(text)
            out.update(model=model, flags=flags, flags_source="/proc/cpuinfo")
    elif sys.platform == "darwin":
        _rc, text = _run(["sysctl", "machdep.cpu.brand_string", "hw.optional"])
        values = parse_sysctl(text)
        out["model"] = values.get("machdep.cpu.brand_string")
        out["flags"] = sorted(k.removeprefix("hw.optional.") for k, v in values.items() if k.startswith("hw.optional.") and v == "1")
        out["flags_source"] = "sysctl hw.optional"
    else:
        out["model"] = platform.processor() or None
    return out


def _read_memory() -> dict:
    """RAM and swap through psutil."""
    import psutil

    vm = psutil.virtual_memory()
    sw = psutil.swap_memory()
    return {"total_bytes": int(vm.total), "available_bytes": int(vm.available),
            "swap_total_bytes": int(sw.total), "swap_free_bytes": int(sw.free)}


def _read_cgroup() -> dict:
    """The memory limit of this process's cgroup (containers), v2 or v1, the tightest along the path."""
    if not sys.platform.startswith("linux"):
        raise _Absent("not Linux")
    text = _read_text(Path("/proc/self/cgroup"))
    if text is None:
        raise _Absent("no /proc/self/cgroup")
    base = Path("/sys/fs/cgroup")
    entries = [line.split(":", 2) for line in text.splitlines() if line.count(":") >= 2]
    if "memory" in (_read_text(base / "cgroup.controllers") or "").split():  # unified (v2) hierarchy with memory
        rel = next((e[2] for e in entries if e[0] == "0" and e[1] == ""), "/")
        return _cgroup_limits(base, rel, 2, "memory.max", "memory.current", "inactive_file")
    for _hid, controllers, rel in entries:
        if "memory" in controllers.split(","):
            return _cgroup_limits(base / "memory", rel, 1, "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
    raise _Absent("no cgroup memory controller")


def _cgroup_limits(root: Path, rel: str, version: int, limit_file: str, usage_file: str, inactive_key: str) -> dict:
    """Walk from this cgroup up to the root: the smallest limit applies; usage and cache come from the leaf."""
    leaf = root / rel.lstrip("/")
    if not leaf.is_dir():  # inside a cgroup namespace the path in /proc/self/cgroup is relative to our own root
        leaf = root
    limit = None
    node = leaf
    while True:
        value = _read_text(node / limit_file)
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
    stat = parse_kv_lines(_read_text(leaf / "memory.stat") or "")
    return {"version": version, "path": str(leaf), "memory_limit_bytes": limit,
            "memory_usage_bytes": _read_int(leaf / usage_file), "inactive_file_bytes": _int_or_none(stat.get(inactive_key))}


# --------------------------------------------------------------------------------------------------------------
# Pure parsers for tool output (tested on captured text)
# --------------------------------------------------------------------------------------------------------------


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


def parse_kfd_properties(text: str) -> dict[str, int]:
    """Parse a KFD topology node's `properties` file into integers."""
    return {k: v for k, v in ((k, _int_or_none(v)) for k, v in parse_kv_lines(text).items()) if v is not None}


def gfx_target_from_version(version: int | None) -> str | None:
    """KFD gfx_target_version (e.g. 90402, 110501, 90010) to an LLVM target ('gfx942', 'gfx1151', 'gfx90a')."""
    if not version:
        return None
    major, minor, step = version // 10000, (version // 100) % 100, version % 100
    return f"gfx{major}{minor:x}{step:x}"


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
        cores = _int_or_none(item.get("sppci_cores")) if isinstance(item, dict) else None
        if cores:
            return cores
    return None


def parse_amd_smi(text: str) -> list[dict]:
    """Rows from `amd-smi static --json` (a list, {"gpu_data": [...]}, or {"GPU 0": ...} depending on version)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return []
    if isinstance(data, dict):
        data = data.get("gpu_data") or data.get("gpus") or list(data.values())
    rows = []
    for i, item in enumerate(data if isinstance(data, list) else []):
        if not isinstance(item, dict):
            continue
        asic = item.get("asic") if isinstance(item.get("asic"), dict) else {}
        bus = item.get("bus") if isinstance(item.get("bus"), dict) else {}
        vram = item.get("vram") if isinstance(item.get("vram"), dict) else {}
        size = vram.get("size")
        total = None
        if isinstance(size, dict):  # {"value": 196592, "unit": "MB"}: amd-smi's MB are MiB
            total = _int_or_none(size.get("value"))
            total = total * {"MB": MIB, "GB": GIB, "B": 1}.get(str(size.get("unit", "MB")).upper(), MIB) if total else None
        elif _int_or_none(size) is not None:
            total = _int_or_none(size) * MIB  # type: ignore[operator]
        rows.append({
            "index": _int_or_none(item.get("gpu")) if _int_or_none(item.get("gpu")) is not None else i,
            "name": _clean(asic.get("market_name")),
            "gfx_target": _clean(asic.get("target_graphics_version")),
            "pci_bus_id": (_clean(bus.get("bdf")) or "").lower() or None,
            "vram_total_bytes": total,
        })
    return rows


def parse_rocm_smi(text: str) -> list[dict]:
    """Rows from `rocm-smi --showproductname --showmeminfo vram --showbus --json` ({"card0": {...}, "system": ...})."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return []
    rows = []
    for key, fields in (data.items() if isinstance(data, dict) else []):
        m = re.fullmatch(r"card(\d+)", str(key))
        if not m or not isinstance(fields, dict):
            continue
        f = {str(k).lower(): v for k, v in fields.items()}
        rows.append({
            "index": int(m.group(1)),
            "name": _clean(f.get("card series")) or _clean(f.get("card model")),
            "gfx_target": _clean(f.get("gfx version")),
            "pci_bus_id": (_clean(f.get("pci bus")) or "").lower() or None,
            "vram_total_bytes": _int_or_none(f.get("vram total memory (b)")),
            "vram_used_bytes": _int_or_none(f.get("vram total used memory (b)")),
        })
    return sorted(rows, key=lambda r: r["index"])


def merge_amd_sources(cards: list[dict], kfd: Mapping[str, dict], tool_rows: list[dict]) -> list[dict]:
    """One record per AMD GPU: sysfs counters, KFD gfx target / APU flag, tool names; matched by PCI bus id, else order."""
    by_bus = {r["pci_bus_id"]: r for r in tool_rows if r.get("pci_bus_id")}
    base = cards if cards else [{} for _ in tool_rows]
    gpus = []
    for i, card in enumerate(base):
        bus = card.get("pci_bus_id")
        tool = by_bus.get(bus) if bus else None
        if tool is None and not by_bus and i < len(tool_rows):
            tool = tool_rows[i]
        tool = tool or {}
        topo = kfd.get(bus or tool.get("pci_bus_id") or "", {})
        gpus.append({
            "index": i,
            "name": tool.get("name") or card.get("name") or (f"AMD GPU {card['pci_device_id']}" if card.get("pci_device_id") else None),
            "gfx_target": tool.get("gfx_target") or topo.get("gfx_target"),
            "pci_bus_id": bus or tool.get("pci_bus_id"),
            "unique_id": card.get("unique_id"),
            "vram_total_bytes": card.get("vram_total_bytes") or tool.get("vram_total_bytes"),
            "vram_used_bytes": card.get("vram_used_bytes") if card.get("vram_used_bytes") is not None else tool.get("vram_used_bytes"),
            "gtt_total_bytes": card.get("gtt_total_bytes"),
            "gtt_used_bytes": card.get("gtt_used_bytes"),
            "apu": topo.get("apu"),
        })
    return gpus


def _int_or_none(value: Any) -> int | None:
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


def _clean(value: Any) -> str | None:
    """A stripped string, or None for missing and 'N/A' values."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if value and value.upper() != "N/A" else None


# --------------------------------------------------------------------------------------------------------------
# Snapshot schema (validation of saved or received snapshots)
# --------------------------------------------------------------------------------------------------------------

_MAX_BYTES = 2**52  # 4 PiB: far above any machine, low enough that a unit slip cannot pass
_MAX_DEVICE_BYTES = 4096 * GIB  # DeviceSpec's own bound


class _Snap(BaseModel):
    """Base of the snapshot models: strict types, unknown keys ignored so newer planners' additions still load."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True, allow_inf_nan=False)


_Bytes = Annotated[int, Field(ge=0, le=_MAX_BYTES)]
_DeviceBytes = Annotated[int, Field(ge=0, le=_MAX_DEVICE_BYTES)]
_Name = Annotated[str, Field(max_length=256)]


class SourceStatus(_Snap):
    """How one probe source went: ok, absent (not on this machine), or failed with a reason."""

    ok: bool = Field(description="The source was read.")
    absent: bool = Field(default=False, description="The source does not exist here (no library, other OS); not an error.")
    reason: str | None = Field(default=None, max_length=2000, description="Why the source was not read.")
    elapsed_ms: float | None = Field(default=None, ge=0, description="Time the source took.")


class _MigRecord(_Snap):
    index: int = Field(ge=0, le=64)
    name: _Name | None = None
    uuid: _Name | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    memory_total_bytes: _DeviceBytes | None = None
    memory_free_bytes: _Bytes | None = None
    memory_used_bytes: _Bytes | None = None
    errors: dict[str, str] = Field(default_factory=dict)


class _ProcessRecord(_Snap):
    pid: int = Field(ge=0)
    used_memory_bytes: _Bytes | None = None


class _NvidiaGpuRecord(_Snap):
    index: int = Field(ge=0, le=1024)
    name: _Name | None = None
    uuid: _Name | None = None
    pci_bus_id: _Name | None = None
    memory_total_bytes: _DeviceBytes | None = None
    memory_free_bytes: _Bytes | None = None
    memory_used_bytes: _Bytes | None = None
    compute_capability: str | None = Field(default=None, pattern=r"^\d{1,2}\.\d$")
    pcie_gen_current: int | None = Field(default=None, ge=0, le=16)
    pcie_gen_max: int | None = Field(default=None, ge=0, le=16)
    pcie_width_current: int | None = Field(default=None, ge=0, le=64)
    pcie_width_max: int | None = Field(default=None, ge=0, le=64)
    nvlink_active_links: int | None = Field(default=None, ge=0, le=64)
    power_limit_w: float | None = Field(default=None, ge=0, le=10000)
    processes: list[_ProcessRecord] | None = None
    mig_enabled: bool | None = None
    mig_pending: bool | None = None
    mig_max_devices: int | None = Field(default=None, ge=0, le=64)
    mig_devices: list[_MigRecord] = Field(default_factory=list)
    errors: dict[str, str] = Field(default_factory=dict)


class _NvidiaSection(_Snap):
    driver_version: _Name | None = None
    cuda_driver_version: _Name | None = None
    nvml_version: _Name | None = None
    gpus: list[_NvidiaGpuRecord] = Field(default_factory=list, max_length=1024)
    errors: dict[str, str] = Field(default_factory=dict)


class _AmdGpuRecord(_Snap):
    index: int = Field(ge=0, le=1024)
    name: _Name | None = None
    gfx_target: _Name | None = None
    pci_bus_id: _Name | None = None
    unique_id: _Name | None = None
    vram_total_bytes: _DeviceBytes | None = None
    vram_used_bytes: _Bytes | None = None
    gtt_total_bytes: _Bytes | None = None
    gtt_used_bytes: _Bytes | None = None
    apu: bool | None = None


class _AmdSection(_Snap):
    tool: _Name | None = None
    gpus: list[_AmdGpuRecord] = Field(default_factory=list, max_length=1024)
    errors: dict[str, str] = Field(default_factory=dict)


class _AppleSection(_Snap):
    chip: _Name | None = None
    model: _Name | None = None
    memory_bytes: _DeviceBytes | None = None
    gpu_cores: int | None = Field(default=None, ge=0, le=100000)
    wired_limit_mb: int | None = Field(default=None, ge=0, le=_MAX_BYTES // MIB)
    errors: dict[str, str] = Field(default_factory=dict)


class _CpuSection(_Snap):
    model: _Name | None = None
    arch: _Name | None = None
    physical_cores: int | None = Field(default=None, ge=0, le=65536)
    logical_cores: int | None = Field(default=None, ge=0, le=65536)
    usable_cores: int | None = Field(default=None, ge=0, le=65536)
    flags: list[str] = Field(default_factory=list, max_length=4096)
    flags_source: _Name | None = None


class _MemorySection(_Snap):
    total_bytes: _Bytes | None = None
    available_bytes: _Bytes | None = None
    swap_total_bytes: _Bytes | None = None
    swap_free_bytes: _Bytes | None = None


class _CgroupSection(_Snap):
    version: int | None = Field(default=None, ge=1, le=2)
    path: str | None = Field(default=None, max_length=4096)
    memory_limit_bytes: _Bytes | None = None
    memory_usage_bytes: _Bytes | None = None
    inactive_file_bytes: _Bytes | None = None


class _PlatformSection(_Snap):
    system: _Name | None = None
    machine: _Name | None = None
    release: _Name | None = None
    python: _Name | None = None


class Snapshot(_Snap):
    """A probe snapshot as `read_raw()` writes it (version 1); every hardware section is null when its source failed."""

    snapshot_version: int = Field(ge=1, description="Format version of the snapshot.")
    planner_version: _Name | None = None
    captured_at: _Name | None = None
    platform: _PlatformSection | None = None
    env: dict[str, str | None] = Field(default_factory=dict)
    sources: dict[str, SourceStatus] = Field(description="Status of each source: nvml, amd, apple, cpu, memory, cgroup.")
    nvidia: _NvidiaSection | None = None
    amd: _AmdSection | None = None
    apple: _AppleSection | None = None
    cpu: _CpuSection | None = None
    memory: _MemorySection | None = None
    cgroup: _CgroupSection | None = None


def validate_snapshot(data: Any, source: str = "snapshot") -> Snapshot:
    """Validate a snapshot dict; raise InvalidInputError with one line naming the first bad field."""
    from planner.yamlio import format_validation_error

    if not isinstance(data, Mapping):
        raise InvalidInputError(f"{source}: not a probe snapshot (expected a JSON object, got {type(data).__name__})")
    if "snapshot_version" not in data:
        hint = " (this looks like 'planner probe --json' output; save 'planner probe --raw' instead)" if "gpus" in data else ""
        raise InvalidInputError(f"{source}: not a probe snapshot: no snapshot_version field{hint}")
    version = data.get("snapshot_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SNAPSHOT_VERSION:
        raise InvalidInputError(f"{source}: snapshot_version {preview(version, 20)} is newer than this planner reads "
                                f"({SNAPSHOT_VERSION}); upgrade planner")
    try:
        return Snapshot.model_validate(data)
    except ValidationError as exc:
        lines = format_validation_error(source, exc)
        more = f" (and {len(lines) - 1} more problem(s))" if len(lines) > 1 else ""
        raise InvalidInputError(lines[0].replace("\n", " ") + more) from None
    except RecursionError:
        raise InvalidInputError(f"{source}: nested too deeply") from None


def parse_snapshot(text: str, source: str = "snapshot") -> dict:
    """Parse and validate snapshot JSON text; raise InvalidInputError naming `source` on any problem."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{source}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg} (truncated snapshot?)") from None
    except RecursionError:
        raise InvalidInputError(f"{source}: invalid JSON: nested too deeply") from None
    except ValueError as exc:  # an integer of more than 4300 digits (Python's int-string limit)
        from planner.yamlio import json_value_error

        raise InvalidInputError(f"{source}: invalid JSON: {json_value_error(exc)}") from None
    validate_snapshot(data, source)
    return data


def load_snapshot(path: str | Path) -> dict:
    """Read a snapshot saved with `planner probe --raw`; raise InvalidInputError on unreadable, bad or truncated files."""
    from planner.yamlio import read_text

    return parse_snapshot(read_text(Path(path), "snapshot file"), str(path))


# --------------------------------------------------------------------------------------------------------------
# The interpreted host
# --------------------------------------------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProbedDevice(_Out):
    """One device a model can be placed on: a GPU, a MIG instance, or a unified-memory GPU."""

    index: int = Field(description="The vendor's index of the physical GPU (NVML / amd-smi order; 0 for Apple).")
    name: str = Field(description="Name as the driver reports it, e.g. 'NVIDIA A100-SXM4-80GB MIG 3g.40gb'.")
    vendor: Literal["nvidia", "amd", "apple"] = Field(description="Silicon vendor.")
    uuid: str | None = Field(default=None, description="Driver UUID ('GPU-…', 'MIG-…'), as CUDA_VISIBLE_DEVICES accepts.")
    memory_total_bytes: int = Field(description="Memory of the device (unified: the machine's RAM).")
    memory_free_bytes: int | None = Field(default=None, description="Memory free now (unified: RAM available now).")
    memory_usable_bytes: int = Field(description="What a plan may use on this device now: free VRAM, or the GPU share of unified memory.")
    catalog_id: str | None = Field(default=None, description="Catalog entry matched by exact name (MIG: the parent GPU's); None if uncatalogued.")
    spec: DeviceSpec = Field(description="Figures to plan with: the catalog entry, a MIG slice of it, or a synthesized placeholder.")
    unified: bool = Field(default=False, description="Memory shared with the CPU (Apple silicon, AMD APUs).")
    mig_profile: str | None = Field(default=None, description="MIG profile, e.g. '3g.40gb', for a MIG instance.")
    parent_uuid: str | None = Field(default=None, description="UUID of the physical GPU of a MIG instance.")
    compute_capability: str | None = Field(default=None, description="CUDA compute capability as probed.")
    gfx_target: str | None = Field(default=None, description="AMD LLVM gfx target as probed.")
    pcie_gen: int | None = Field(default=None, description="PCIe generation of the link (the maximum; idle links train down).")
    pcie_width: int | None = Field(default=None, description="PCIe lanes of the link.")
    nvlink_active_links: int | None = Field(default=None, description="Active NVLink links (0 without NVLink).")
    power_limit_w: float | None = Field(default=None, description="Enforced power limit in watts.")
    gpu_cores: int | None = Field(default=None, description="GPU cores (Apple) as probed.")

    @property
    def catalogued(self) -> bool:
        """True when the device matched a catalog entry."""
        return self.catalog_id is not None


class CpuInfo(_Out):
    """The host CPU."""

    model: str | None = Field(default=None, description="CPU model string, e.g. 'AMD EPYC 9654 96-Core Processor'.")
    arch: str | None = Field(default=None, description="Machine architecture, e.g. 'x86_64', 'arm64'.")
    physical_cores: int | None = Field(default=None, description="Physical cores.")
    logical_cores: int | None = Field(default=None, description="Hardware threads.")
    usable_cores: int | None = Field(default=None, description="Cores this process may run on (CPU affinity / cpuset).")
    isa: list[str] = Field(default_factory=list, description="ISA extensions that matter to CPU kernels: avx2, avx512f, avx512_vnni, avx512_bf16, amx, neon, sve, ...")
    catalog_id: str | None = Field(default=None, description="CPU target in the catalog, matched by exact model name.")


class Host(_Out):
    """A machine as the planner sees it: devices with their usable memory, CPU, RAM, and what went wrong probing it."""

    gpus: list[ProbedDevice] = Field(default_factory=list, description="Devices a model can be placed on, after *_VISIBLE_DEVICES filtering.")
    unified: bool = Field(default=False, description="The GPU shares memory with the CPU.")
    cpu: CpuInfo = Field(default_factory=CpuInfo, description="The CPU.")
    ram_total_bytes: int | None = Field(default=None, description="RAM this process may use in total (container limit applied).")
    ram_available_bytes: int | None = Field(default=None, description="RAM available now (container limit applied).")
    ram_physical_bytes: int | None = Field(default=None, description="Physical RAM the OS reports.")
    swap_total_bytes: int | None = Field(default=None, description="Swap space.")
    cgroup_memory_limit_bytes: int | None = Field(default=None, description="Container (cgroup) memory limit, if below RAM.")
    gpu_usable_bytes: int | None = Field(default=None, description="Unified memory: the most the GPU may use (wired limit or catalog fraction).")
    gpu_usable_source: str | None = Field(default=None, description="Where gpu_usable_bytes comes from.")
    driver_version: str | None = Field(default=None, description="NVIDIA driver version.")
    cuda_driver_version: str | None = Field(default=None, description="Highest CUDA version the NVIDIA driver supports, e.g. '12.4'.")
    platform: str | None = Field(default=None, description="OS and machine, e.g. 'Linux x86_64'.")
    env: dict[str, str | None] = Field(default_factory=dict, description="Environment variables that changed what is visible.")
    sources: dict[str, SourceStatus] = Field(default_factory=dict, description="How each probe source went.")
    warnings: list[str] = Field(default_factory=list, description="Things the user should know, one sentence each.")
    captured_at: str | None = Field(default=None, description="When the snapshot was taken (UTC).")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def interconnect(self) -> Literal["nvlink", "pcie"] | None:
        """How several NVIDIA GPUs talk: 'nvlink' when every one has active links, else 'pcie'; None for fewer than two.

        AMD Infinity Fabric (xGMI) is not probed, so AMD GPUs give None rather than a guess.
        """
        if any(g.vendor == "amd" and not g.unified for g in self.gpus):
            return None
        dedicated = [g for g in self.gpus if g.vendor == "nvidia" and g.mig_profile is None]
        if len(dedicated) < 2:
            return None
        return "nvlink" if all((g.nvlink_active_links or 0) > 0 for g in dedicated) else "pcie"


def local_host(catalog: Catalog) -> Host:
    """Probe this machine and interpret it against `catalog`."""
    return interpret(read_raw(), catalog)


def interpret(snapshot: Mapping[str, Any], catalog: Catalog) -> Host:
    """Turn a snapshot into a Host matched to `catalog` (pure); raise InvalidInputError for a malformed snapshot."""
    snap = validate_snapshot(snapshot)
    warnings: list[str] = []
    cpu = _interpret_cpu(snap.cpu, catalog)
    ram = _interpret_ram(snap, warnings)
    gpus: list[ProbedDevice] = []
    gpus += _nvidia_devices(snap, catalog, warnings)
    amd, amd_cap = _amd_devices(snap, catalog, ram, cpu, warnings)
    gpus += amd
    gpu_usable: int | None = amd_cap
    usable_source = "amdgpu VRAM carve-out + GTT" if amd_cap is not None else None
    apple = _apple_device(snap, catalog, ram, warnings)
    if apple is not None:
        gpus.append(apple[0])
        gpu_usable, usable_source = apple[1], apple[2]
    _source_warnings(snap, gpus, warnings)
    plat = snap.platform
    return Host(
        gpus=gpus,
        unified=any(g.unified for g in gpus),
        cpu=cpu,
        ram_total_bytes=ram["total"],
        ram_available_bytes=ram["available"],
        ram_physical_bytes=ram["physical"],
        swap_total_bytes=snap.memory.swap_total_bytes if snap.memory else None,
        cgroup_memory_limit_bytes=ram["limit"],
        gpu_usable_bytes=gpu_usable,
        gpu_usable_source=usable_source,
        driver_version=snap.nvidia.driver_version if snap.nvidia else None,
        cuda_driver_version=snap.nvidia.cuda_driver_version if snap.nvidia else None,
        platform=(" ".join(p for p in (plat.system, plat.machine) if p) or None) if plat else None,
        env={k: v for k, v in snap.env.items() if v is not None},
        sources=dict(snap.sources),
        warnings=warnings,
        captured_at=snap.captured_at,
    )


# Flags as /proc/cpuinfo or sysctl spell them -> the ISA names the planner uses (ordered as shown).
_ISA_NAMES: dict[str, str] = {
    # x86 /proc/cpuinfo
    "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c", "avx512f": "avx512f", "avx512bw": "avx512bw",
    "avx512_vnni": "avx512_vnni", "avx512_bf16": "avx512_bf16", "avx512_fp16": "avx512_fp16", "avx_vnni": "avx_vnni",
    "amx_tile": "amx", "amx_bf16": "amx_bf16", "amx_int8": "amx_int8",
    # ARM Linux /proc/cpuinfo Features
    "asimd": "neon", "neon": "neon", "asimddp": "dotprod", "i8mm": "i8mm", "bf16": "bf16", "sve": "sve", "sve2": "sve2", "sme": "sme",
    # macOS sysctl hw.optional.*
    "AdvSIMD": "neon", "arm.FEAT_DotProd": "dotprod", "arm.FEAT_I8MM": "i8mm", "arm.FEAT_BF16": "bf16",
    "arm.FEAT_SME": "sme", "arm.FEAT_SME2": "sme2", "avx1_0": "avx", "avx2_0": "avx2", "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16",
}
_ISA_ORDER = list(CPU_ISA_NAMES)  # the catalog's names (DeviceSpec.cpu_isa), so a probed CPU target carries them


def _interpret_cpu(cpu: _CpuSection | None, catalog: Catalog) -> CpuInfo:
    """CPU model, cores and normalised ISA flags; catalog id when the model names a CPU target."""
    if cpu is None:
        return CpuInfo()
    found = {_ISA_NAMES[f] for f in cpu.flags if f in _ISA_NAMES}
    spec = catalog.by_nvml_name(cpu.model) if cpu.model else None
    return CpuInfo(
        model=cpu.model, arch=cpu.arch, physical_cores=cpu.physical_cores, logical_cores=cpu.logical_cores,
        usable_cores=cpu.usable_cores, isa=[i for i in _ISA_ORDER if i in found],
        catalog_id=spec.id if spec is not None and spec.backend == "cpu" else None,
    )


def _interpret_ram(snap: Snapshot, warnings: list[str]) -> dict[str, int | None]:
    """RAM totals with the container limit applied (usage net of reclaimable page cache, as kubelet counts it)."""
    mem, cg = snap.memory, snap.cgroup
    physical = mem.total_bytes if mem else None
    total, available = physical, mem.available_bytes if mem else None
    limit = None
    if cg is not None and cg.memory_limit_bytes is not None and (physical is None or cg.memory_limit_bytes < physical):
        limit = cg.memory_limit_bytes
        working_set = max(0, (cg.memory_usage_bytes or 0) - (cg.inactive_file_bytes or 0))
        room = max(0, limit - working_set)
        total = limit
        available = room if available is None else min(available, room)
        warnings.append(
            f"This process runs in a container limited to {_gib(limit)} of RAM"
            + (f" (the machine has {_gib(physical)})" if physical else "")
            + "; CPU offload and loading are planned within the limit."
        )
    return {"physical": physical, "total": total, "available": available, "limit": limit}


def _nvidia_devices(snap: Snapshot, catalog: Catalog, warnings: list[str]) -> list[ProbedDevice]:
    """NVIDIA GPUs and MIG instances visible to CUDA, each with its catalog match."""
    if snap.nvidia is None:
        return []
    records = snap.nvidia.gpus
    selected = _cuda_visible(records, snap.env.get("CUDA_VISIBLE_DEVICES"), warnings)
    devices: list[ProbedDevice] = []
    for gpu, mig_subset in selected:
        name = gpu.name or f"NVIDIA GPU {gpu.index}"
        if gpu.memory_total_bytes is None or gpu.memory_total_bytes == 0:
            reason = gpu.errors.get("memory") or gpu.errors.get("handle") or "not reported"
            warnings.append(f"GPU {gpu.index} '{name}': memory could not be read ({reason}); it is left out of planning.")
            continue
        spec, catalog_id = _match(catalog, name, gpu.memory_total_bytes, warnings, f"GPU {gpu.index}", vendor="nvidia",
                                  cc=gpu.compute_capability)
        if spec is None:
            continue
        common = dict(
            vendor="nvidia", compute_capability=gpu.compute_capability, pcie_gen=gpu.pcie_gen_max or gpu.pcie_gen_current,
            pcie_width=gpu.pcie_width_max or gpu.pcie_width_current, power_limit_w=gpu.power_limit_w,
        )
        if gpu.mig_pending is not None and gpu.mig_enabled is not None and gpu.mig_pending != gpu.mig_enabled:
            warnings.append(f"GPU {gpu.index} '{name}': a MIG mode change is pending; it applies after a GPU reset.")
        if gpu.mig_enabled:
            migs = [m for m in gpu.mig_devices if mig_subset is None or m.uuid in mig_subset]
            if not gpu.mig_devices:
                warnings.append(f"GPU {gpu.index} '{name}' is in MIG mode but has no MIG instances; create some with nvidia-smi mig.")
            elif mig_subset is None:
                warnings.append(
                    f"GPU {gpu.index} '{name}' is in MIG mode: its {len(gpu.mig_devices)} MIG instance(s) are planned as separate "
                    "devices (a CUDA process uses one MIG device; no tensor parallelism across them)."
                )
            for mig in migs:
                dev = _mig_device(gpu, mig, spec, catalog_id, common, warnings)
                if dev is not None:
                    devices.append(dev)
            continue
        free = gpu.memory_free_bytes
        if free is not None and free > gpu.memory_total_bytes:
            free = gpu.memory_total_bytes
        _busy_warning(gpu, name, free, warnings)
        devices.append(ProbedDevice(
            index=gpu.index, name=name, uuid=gpu.uuid, memory_total_bytes=gpu.memory_total_bytes, memory_free_bytes=free,
            memory_usable_bytes=free if free is not None else gpu.memory_total_bytes, catalog_id=catalog_id, spec=spec,
            nvlink_active_links=gpu.nvlink_active_links, **common,
        ))
    order = snap.env.get("CUDA_DEVICE_ORDER")
    if len({d.name for d in devices if d.mig_profile is None}) > 1 and order != "PCI_BUS_ID":
        warnings.append(
            "Different GPU models are present: CUDA numbers them fastest-first unless CUDA_DEVICE_ORDER=PCI_BUS_ID, so CUDA "
            "device numbers may not match the indices shown here (NVML's PCI order)."
        )
    return devices


def _busy_warning(gpu: _NvidiaGpuRecord, name: str, free: int | None, warnings: list[str]) -> None:
    """Say when memory is already taken on a GPU, so a smaller plan is no surprise."""
    if free is None or gpu.memory_total_bytes is None:
        return
    used = gpu.memory_total_bytes - free
    if used > max(GIB, gpu.memory_total_bytes // 20):
        procs = gpu.processes or []
        who = f" by {len(procs)} process(es)" if procs else ""
        warnings.append(f"GPU {gpu.index} '{name}': {_gib(used)} of {_gib(gpu.memory_total_bytes)} is already in use{who}; plans use the free {_gib(free)}.")


_MIG_PROFILE_RE = re.compile(r"\b(\d+)g\.(\d+)gb\b", re.I)


def _mig_device(gpu: _NvidiaGpuRecord, mig: _MigRecord, parent: DeviceSpec, catalog_id: str | None,
                common: dict, warnings: list[str]) -> ProbedDevice | None:
    """A MIG instance as its own device: the parent's figures scaled to its memory and compute share."""
    parent_name = gpu.name or f"NVIDIA GPU {gpu.index}"
    name = mig.name or f"{parent_name} MIG {mig.index}"
    if not mig.memory_total_bytes or not gpu.memory_total_bytes:
        warnings.append(f"GPU {gpu.index} MIG {mig.index} '{name}': memory could not be read; it is left out of planning.")
        return None
    m = _MIG_PROFILE_RE.search(name)
    profile = f"{m.group(1)}g.{m.group(2)}gb" if m else None
    mem_share = min(1.0, mig.memory_total_bytes / gpu.memory_total_bytes)
    # Compute slices: A100/H100 have 7, A30 has 4; NVML's max MIG device count is that number.
    slices = gpu.mig_max_devices or 7
    compute_share = min(1.0, int(m.group(1)) / slices) if m else mem_share
    scaled = {f: getattr(parent, f) * compute_share for f in _PEAK_FIELDS if getattr(parent, f) is not None}
    update = {
        "id": f"{parent.id}-mig-{profile or mig.index}".lower(),
        "name": name,
        "memory_gib": round(mig.memory_total_bytes / GIB, 3),
        "memory_options_gib": [],
        "mem_bandwidth_gb_s": parent.mem_bandwidth_gb_s * mem_share,
        "nvlink_gb_s": None,  # MIG instances do not do peer-to-peer over NVLink
        "aliases": [],
        "nvml_names": [],
        "tdp_w": None,
        "notes": f"MIG instance of {parent.id}: bandwidth scaled by its memory share ({mem_share:.2f}), compute by {profile or '?'} of {slices} slices.",
        **scaled,
    }
    spec = _make_spec({**parent.model_dump(), **update}, warnings, name)
    if spec is None:
        return None
    free = mig.memory_free_bytes if mig.memory_free_bytes is not None else None
    if free is not None:
        free = min(free, mig.memory_total_bytes)
    return ProbedDevice(
        index=gpu.index, name=name, uuid=mig.uuid, memory_total_bytes=mig.memory_total_bytes, memory_free_bytes=free,
        memory_usable_bytes=free if free is not None else mig.memory_total_bytes, catalog_id=catalog_id, spec=spec,
        mig_profile=profile, parent_uuid=gpu.uuid, nvlink_active_links=0, **common,
    )


_PEAK_FIELDS = ("peak_fp32_tflops", "peak_fp16_tflops", "peak_bf16_tflops", "peak_fp8_tflops", "peak_fp4_tflops", "peak_int8_tops")


def _cuda_visible(records: list[_NvidiaGpuRecord], value: str | None, warnings: list[str]) -> list[tuple[_NvidiaGpuRecord, set[str] | None]]:
    """Apply CUDA_VISIBLE_DEVICES as CUDA does: indices or UUID prefixes in order; the first invalid entry ends the list."""
    if value is None:
        return [(g, None) for g in records]
    chosen: list[tuple[_NvidiaGpuRecord, set[str] | None]] = []
    seen: set[int] = set()
    for token in (t.strip() for t in value.split(",")):
        gpu, mig_uuid = _cuda_token(records, token)
        if gpu is None:
            if token:
                warnings.append(f"CUDA_VISIBLE_DEVICES entry '{token}' matches no GPU; CUDA ignores it and every entry after it.")
            break
        if mig_uuid is not None:
            existing = next((c for c in chosen if c[0] is gpu), None)
            if existing is not None and existing[1] is not None:
                existing[1].add(mig_uuid)
                continue
            if existing is None:
                chosen.append((gpu, {mig_uuid}))
            continue
        if gpu.index not in seen:
            chosen.append((gpu, None))
            seen.add(gpu.index)
    hidden = len(records) - len({id(g) for g, _ in chosen})
    if not chosen:
        warnings.append(f"CUDA_VISIBLE_DEVICES='{value}' hides every NVIDIA GPU ({len(records)} present); CUDA sees none.")
    elif hidden > 0:
        warnings.append(f"CUDA_VISIBLE_DEVICES='{value}' hides {hidden} of {len(records)} NVIDIA GPU(s); only the visible ones are planned.")
    return chosen


def _cuda_token(records: list[_NvidiaGpuRecord], token: str) -> tuple[_NvidiaGpuRecord | None, str | None]:
    """Resolve one CUDA_VISIBLE_DEVICES entry to a GPU (and a MIG UUID when it names one)."""
    if re.fullmatch(r"\d+", token):
        n = int(token)
        return (records[n] if n < len(records) else None), None
    if token.startswith("MIG-"):
        hits = [(g, m.uuid) for g in records for m in g.mig_devices if m.uuid and m.uuid.startswith(token)]
        return hits[0] if len(hits) == 1 else (None, None)
    if token.startswith("GPU-"):
        gpu_hits = [g for g in records if g.uuid and g.uuid.startswith(token)]
        return (gpu_hits[0] if len(gpu_hits) == 1 else None), None
    return None, None


def _amd_devices(snap: Snapshot, catalog: Catalog, ram: dict, cpu: CpuInfo,
                 warnings: list[str]) -> tuple[list[ProbedDevice], int | None]:
    """AMD GPUs visible to ROCm/HIP, and the GPU cap of an APU's shared memory (Strix Halo) if there is one."""
    if snap.amd is None:
        return [], None
    records = list(snap.amd.gpus)
    for var in ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"):  # ROCr filters first; HIP indexes what is left
        value = snap.env.get(var)
        if value is not None:
            kept = _index_filter(records, value)
            if len(kept) < len(records):
                warnings.append(f"{var}='{value}' hides {len(records) - len(kept)} of {len(records)} AMD GPU(s); only the visible ones are planned.")
            records = kept
    devices = []
    unified_cap = None
    for gpu in records:
        name = gpu.name or f"AMD GPU {gpu.index}"
        vram = gpu.vram_total_bytes
        if not vram:
            warnings.append(f"AMD GPU {gpu.index} '{name}': VRAM size could not be read; it is left out of planning.")
            continue
        spec = catalog.by_nvml_name(name)
        if spec is None and gpu.apu is not False and cpu.model:
            # An APU's GPU reports a generic name ('AMD Radeon Graphics'); the catalog names the chip by its CPU string.
            by_cpu = catalog.by_nvml_name(cpu.model)
            spec = by_cpu if by_cpu is not None and by_cpu.vendor == "amd" and by_cpu.memory_kind == "unified" else None
        unified = bool(gpu.apu) or (spec is not None and spec.memory_kind == "unified")
        used = min(gpu.vram_used_bytes or 0, vram)
        if unified:
            # The OS does not count the BIOS carve-out as RAM; the GPU may use the carve-out plus GTT (RAM the driver maps).
            total = vram + (ram["physical"] or 0)
            if gpu.gtt_total_bytes:
                cap = min(total, vram + gpu.gtt_total_bytes)
            else:
                fraction = spec.gpu_usable_fraction if spec is not None and spec.gpu_usable_fraction else DEFAULT_UNIFIED_GPU_FRACTION
                cap = int(total * fraction)
            free = (vram - used) + (ram["available"] if ram["available"] is not None else cap)
            usable = max(0, min(cap, free))
            unified_cap = cap
        else:
            total, free = vram, vram - used
            usable = free
        catalog_id = None
        if spec is not None:
            spec = _memory_variant(catalog, spec, total, warnings=warnings if unified else None, what=name)
            catalog_id = spec.id
        else:
            # For an APU the catalog entry should carry the CPU string: the GPU's own name is generic.
            warnings.append(_uncatalogued(f"AMD GPU {gpu.index}", name, total, cpu.model if unified and cpu.model else name))
            spec = _synthesize(name, "amd", "rocm", total, unified, warnings, gfx_target=gpu.gfx_target,
                               usable_fraction=min(1.0, unified_cap / total) if unified and unified_cap else None)
            if spec is None:
                continue
        if not unified and vram < 4 * GIB and (gpu.gtt_total_bytes or 0) >= 4 * vram:
            warnings.append(
                f"AMD GPU {gpu.index} '{name}' has a small VRAM carve-out ({_gib(vram)}) and a large GTT: it may be an APU; "
                "if so, add it to a catalog with memory_kind 'unified' so its shared memory is planned."
            )
        devices.append(ProbedDevice(
            index=gpu.index, name=name, vendor="amd", uuid=gpu.unique_id, memory_total_bytes=total, memory_free_bytes=free,
            memory_usable_bytes=usable, catalog_id=catalog_id, spec=spec, unified=unified, gfx_target=gpu.gfx_target,
        ))
    return devices, unified_cap


def _index_filter(records: list[_AmdGpuRecord], value: str) -> list[_AmdGpuRecord]:
    """Apply a HIP/ROCR visibility list (indices into `records` or unique ids); the first invalid entry ends it."""
    kept: list[_AmdGpuRecord] = []
    for token in (t.strip() for t in value.split(",")):
        hit = None
        if re.fullmatch(r"\d+", token):
            hit = records[int(token)] if int(token) < len(records) else None
        elif token:
            hit = next((r for r in records if r.unique_id and token.lower() in (r.unique_id.lower(), f"gpu-{r.unique_id.lower()}")), None)
        if hit is None:
            break
        if hit not in kept:
            kept.append(hit)
    return kept


def _apple_device(snap: Snapshot, catalog: Catalog, ram: dict, warnings: list[str]) -> tuple[ProbedDevice, int, str] | None:
    """The Apple-silicon GPU: chip + memory pick the catalog variant; the wired limit or catalog fraction caps its memory."""
    apple = snap.apple
    if apple is None:
        return None
    memory = apple.memory_bytes or ram["physical"]
    if not memory:
        warnings.append("Apple silicon found but its memory size could not be read; the GPU is left out of planning.")
        return None
    chip = apple.chip or "Apple silicon"
    spec = catalog.by_nvml_name(chip) if apple.chip else None
    catalog_id = None
    if spec is not None:
        spec = _memory_variant(catalog, spec, memory, warnings=warnings, what=chip)
        catalog_id = spec.id
        if spec.gpu_cores and apple.gpu_cores and spec.gpu_cores != apple.gpu_cores:
            warnings.append(
                f"{chip}: this machine has {apple.gpu_cores} GPU cores, the catalog entry {spec.id} has {spec.gpu_cores}; "
                "binned chips can have less bandwidth and compute than the entry says."
            )
    if apple.wired_limit_mb:
        cap, source = min(apple.wired_limit_mb * MIB, memory), "iogpu.wired_limit_mb"
    elif spec is not None and spec.gpu_usable_fraction:
        cap, source = int(memory * spec.gpu_usable_fraction), f"catalog default fraction {spec.gpu_usable_fraction:g} of RAM"
    else:
        cap, source = int(memory * DEFAULT_UNIFIED_GPU_FRACTION), f"assumed default fraction {DEFAULT_UNIFIED_GPU_FRACTION:g} of RAM"
    if spec is None:
        warnings.append(_uncatalogued("Apple GPU", chip, memory))
        spec = _synthesize(chip, "apple", "metal", memory, True, warnings, gpu_cores=apple.gpu_cores or None,
                           usable_fraction=min(1.0, cap / memory))
        if spec is None:
            return None
    available = ram["available"]
    usable = min(cap, available) if available is not None else cap
    if available is not None and available < cap:
        warnings.append(
            f"Only {_gib(available)} of RAM is available now, below the GPU's {_gib(cap)} limit; plans use {_gib(usable)} "
            "(quit other programs to free more)."
        )
    device = ProbedDevice(
        index=0, name=chip, vendor="apple", memory_total_bytes=memory, memory_free_bytes=available, memory_usable_bytes=usable,
        catalog_id=catalog_id, spec=spec, unified=True, gpu_cores=apple.gpu_cores,
    )
    return device, cap, source


def _memory_variant(catalog: Catalog, spec: DeviceSpec, size_bytes: int, warnings: list[str] | None = None,
                    what: str = "") -> DeviceSpec:
    """The '<id>-<N>gb' variant of a catalog entry closest to the probed memory (within 8%), else the entry itself."""
    # Variants first, so a machine whose size equals the base entry's still gets its explicit '<id>-<N>gb' id.
    options = [*(d for d in catalog if d.id.startswith(f"{spec.id}-") and d.id.endswith("gb") and d.name.startswith(spec.name)), spec]
    size_gib = size_bytes / GIB
    best = min(options, key=lambda d: abs(d.memory_gib - size_gib))
    if abs(best.memory_gib - size_gib) <= 0.08 * size_gib:
        return best
    if warnings is not None:
        sizes = ", ".join(f"{d.memory_gib:g}" for d in options)
        warnings.append(f"{what}: {size_gib:.0f} GiB is not a catalogued size of {spec.id} ({sizes} GiB); its other figures are used.")
    return spec


def _match(catalog: Catalog, name: str, memory_bytes: int, warnings: list[str], label: str, vendor: Literal["nvidia"],
           cc: str | None) -> tuple[DeviceSpec | None, str | None]:
    """Exact-name catalog match for a dedicated GPU, or a synthesized spec with a warning."""
    spec = catalog.by_nvml_name(name)
    if spec is not None:
        spec = _memory_variant(catalog, spec, memory_bytes)
        if abs(spec.memory_bytes - memory_bytes) > 0.1 * memory_bytes:
            warnings.append(f"{label} '{name}' reports {_gib(memory_bytes)} but catalog entry {spec.id} has {spec.memory_gib:g} GiB; "
                            "plans use the reported memory.")
        return spec, spec.id
    warnings.append(_uncatalogued(label, name, memory_bytes))
    return _synthesize(name, vendor, "cuda", memory_bytes, False, warnings, compute_capability=cc), None


def _uncatalogued(label: str, name: str, memory_bytes: int, match_name: str | None = None) -> str:
    """The warning for a device the catalog does not know."""
    return (
        f"{label} '{name}' is not in the catalog: planning from its probed memory ({_gib(memory_bytes)}) with a placeholder "
        f"bandwidth of {PLACEHOLDER_MEM_BANDWIDTH_GB_S:g} GB/s and unknown compute, so speed estimates are rough. Add it to a "
        f"user catalog (a YAML entry with nvml_names: ['{match_name or name}']) and pass --hwdb DIR."
    )


def _synthesize(name: str, vendor: Literal["nvidia", "amd", "apple"], backend: Literal["cuda", "rocm", "metal"], memory_bytes: int,
                unified: bool, warnings: list[str], compute_capability: str | None = None, gfx_target: str | None = None,
                gpu_cores: int | None = None, usable_fraction: float | None = None) -> DeviceSpec | None:
    """A DeviceSpec for an uncatalogued device: probed memory, placeholder bandwidth, unknown compute, all marked unverified."""
    unverified = ["mem_bandwidth_gb_s", "architecture", "memory_type", "launch_year"]
    if backend == "cuda" and compute_capability is None:
        compute_capability = "5.0"  # the oldest architecture current CUDA builds for; the real one was not reported
        unverified.append("compute_capability")
    if unified and usable_fraction is None:
        usable_fraction = DEFAULT_UNIFIED_GPU_FRACTION
        unverified.append("gpu_usable_fraction")
    slug = re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-.") or "device"
    data = {
        "id": f"probed-{slug}",
        "name": name,
        "vendor": vendor,
        "backend": backend,
        "architecture": "unknown",
        "compute_capability": compute_capability if vendor == "nvidia" else None,
        "gfx_target": gfx_target,
        "memory_gib": round(memory_bytes / GIB, 3),
        "memory_type": "unknown",
        "memory_kind": "unified" if unified else "dedicated",
        "mem_bandwidth_gb_s": PLACEHOLDER_MEM_BANDWIDTH_GB_S,
        "gpu_usable_fraction": usable_fraction if unified else None,
        "gpu_cores": gpu_cores,
        "launch_year": _PLACEHOLDER_LAUNCH_YEAR,
        "nvml_names": [name],
        "source": "planner probe: synthesized from probed memory; this device is not in the catalog",
        "unverified": unverified,
    }
    return _make_spec(data, warnings, name)


def _make_spec(data: dict, warnings: list[str], name: str) -> DeviceSpec | None:
    """Validate a derived DeviceSpec; a device whose probed figures cannot form one is skipped with a warning."""
    try:
        return DeviceSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "(device)"
        warnings.append(f"'{name}': its probed figures do not form a valid device ({field}: {first.get('msg')}); it is left out of planning.")
        return None


def _source_warnings(snap: Snapshot, gpus: list[ProbedDevice], warnings: list[str]) -> None:
    """Warn about sources that failed (not merely absent) and never report 'no GPU' without saying why."""
    for name, status in snap.sources.items():
        if not status.ok and not status.absent:
            warnings.append(f"Probe source '{name}' failed: {status.reason or 'no reason given'}.")
    if snap.nvidia is not None and not snap.nvidia.gpus:
        driver = f" (driver {snap.nvidia.driver_version})" if snap.nvidia.driver_version else ""
        warnings.append(
            f"NVML works{driver} but reports no GPU: in a container, pass the GPUs in (docker --gpus all); "
            "otherwise check that the GPU is seated and bound to the nvidia driver."
        )
    if not gpus:
        why = "; ".join(f"{n}: {s.reason}" for n, s in snap.sources.items() if n in ("nvml", "amd", "apple") and not s.ok and s.reason)
        warnings.append(f"No GPU found: planning for the CPU only{f' ({why})' if why else ''}.")


def _gib(n: int | None) -> str:
    """Bytes as 'N.N GiB'."""
    return "unknown" if n is None else f"{n / GIB:.1f} GiB"
