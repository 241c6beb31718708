"""NVIDIA GPUs through NVML: `read_raw()` reads identity, memory, links, MIG instances, power limit and processes."""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from typing import Any

from planner.hardware.probe._shared import Absent


def read_raw() -> dict:
    """NVIDIA GPUs through NVML: identity, memory, links, MIG instances, power limit, processes."""
    if sys.platform.startswith("linux"):
        try:  # the cheap check first: no driver library means no NVIDIA GPU, without importing pynvml (~20 ms)
            ctypes.CDLL("libnvidia-ml.so.1")
        except OSError:
            raise Absent("no NVIDIA driver (libnvidia-ml.so.1 not found)") from None
    try:
        # lazy: importing pynvml and loading libnvidia-ml costs time, and only a live NVIDIA read needs them.
        import pynvml
    except ImportError as exc:
        raise Absent(f"nvidia-ml-py is not installed ({exc})") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        if getattr(exc, "value", None) == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND:
            raise Absent(f"no NVIDIA driver (libnvidia-ml not found: {exc})") from None
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
