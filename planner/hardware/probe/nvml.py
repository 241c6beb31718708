"""NVIDIA GPUs through NVML: `read_raw()` reads identity (name, PCI ids), memory and its bus width and clock, core
count and clocks, links, MIG instances, power limit and processes; the CUDA driver adds SM counts and rated SM clocks
where libcuda is present (NVML has no SM count, and its maximum SM clock is above the rated boost on GeForce)."""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from typing import Any

from planner.hardware.probe._shared import Absent


def read_raw(known: Callable[[dict], bool] | None = None) -> dict:
    """NVIDIA GPUs through NVML: identity, memory and its clocks, cores, links, MIG instances, power limit, processes;
    the CUDA driver's SM count and rated clock unless `known` says every GPU is catalogued (they are not needed then)."""
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
        out = _read_nvml_devices(pynvml)
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass  # shutting down a half-initialised NVML is harmless; the data is already read
    need_cuda = known is None or not all(known(gpu) for gpu in out["gpus"])
    _add_cuda_attributes(out, _cuda_attributes() if need_cuda else {})
    return out


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
        gpu.update(_pci_ids(pci))
        gpu.update(_clocks(nv, handle, call, errors))
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


def _pci_ids(pci: Any) -> dict:
    """PCI device and subsystem ids as 'dddd' / 'vvvv:dddd' hex (NVML packs them as device<<16 | vendor)."""
    dev = getattr(pci, "pciDeviceId", None)
    sub = getattr(pci, "pciSubSystemId", None)
    return {
        "pci_device_id": f"{dev >> 16:04x}" if isinstance(dev, int) and dev > 0 else None,
        "pci_subsystem_id": f"{sub & 0xFFFF:04x}:{sub >> 16:04x}" if isinstance(sub, int) and sub > 0 else None,
    }


def _clocks(nv: Any, handle: Any, call: Callable, errors: dict[str, str]) -> dict:
    """Memory bus width (bits), maximum memory and SM clocks (MHz) and CUDA core count; None where NVML (or an older
    nvidia-ml-py without the call) does not say."""

    def optional(key: str, fn_name: str, *args: Any) -> Any:
        fn = getattr(nv, fn_name, None)
        return call(errors, key, fn, handle, *args) if fn is not None else None

    mem_clock = sm_clock = None
    if hasattr(nv, "NVML_CLOCK_MEM"):
        mem_clock = optional("max_memory_clock", "nvmlDeviceGetMaxClockInfo", nv.NVML_CLOCK_MEM)
        sm_clock = optional("max_sm_clock", "nvmlDeviceGetMaxClockInfo", nv.NVML_CLOCK_SM)
    return {
        "memory_bus_width_bits": optional("memory_bus_width", "nvmlDeviceGetMemoryBusWidth"),
        "max_memory_clock_mhz": mem_clock,
        "max_sm_clock_mhz": sm_clock,
        "cuda_cores": optional("cuda_cores", "nvmlDeviceGetNumGpuCores"),
    }


# CUDA driver API device attributes (cuda.h, CUdevice_attribute): SM count and the rated SM clock in kHz.
_CU_ATTR_CLOCK_RATE = 13
_CU_ATTR_MULTIPROCESSOR_COUNT = 16


def _cuda_attributes() -> dict[tuple[int, int, int], dict[str, int]]:
    """SM count and rated SM clock per GPU from libcuda, keyed by PCI (domain, bus, device); {} without libcuda.

    cuInit creates no context and allocates no GPU memory; CUDA_VISIBLE_DEVICES hides GPUs here, which is why the
    results are matched to NVML's by PCI address rather than by index."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1" if sys.platform.startswith("linux") else "nvcuda.dll")
    except OSError:
        return {}
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return {}
    out: dict[tuple[int, int, int], dict[str, int]] = {}
    for i in range(count.value):
        dev = ctypes.c_int(0)
        bus = ctypes.create_string_buffer(32)
        if cuda.cuDeviceGet(ctypes.byref(dev), i) != 0 or cuda.cuDeviceGetPCIBusId(bus, 32, dev) != 0:
            continue
        key = _pci_key(bus.value.decode("ascii", "replace"))
        if key is None:
            continue
        attrs: dict[str, int] = {}
        for name, attr in (("sm_count", _CU_ATTR_MULTIPROCESSOR_COUNT), ("sm_clock_khz", _CU_ATTR_CLOCK_RATE)):
            value = ctypes.c_int(0)
            if cuda.cuDeviceGetAttribute(ctypes.byref(value), attr, dev) == 0 and value.value > 0:
                attrs[name] = value.value
        out[key] = attrs
    return out


def _pci_key(bus_id: str | None) -> tuple[int, int, int] | None:
    """(domain, bus, device) of '00000000:01:00.0' (NVML) or '0000:01:00.0' (CUDA)."""
    parts = (bus_id or "").strip().lower().replace(".", ":").split(":")
    try:
        return (int(parts[0], 16), int(parts[1], 16), int(parts[2], 16)) if len(parts) >= 3 else None
    except ValueError:
        return None


def _add_cuda_attributes(out: dict, cuda: dict[tuple[int, int, int], dict[str, int]]) -> None:
    """Put each GPU's CUDA SM count and rated SM clock (MHz) beside its NVML record."""
    for gpu in out["gpus"]:
        attrs = cuda.get(_pci_key(gpu.get("pci_bus_id")) or (-1, -1, -1), {})
        gpu["sm_count"] = attrs.get("sm_count")
        gpu["sm_clock_mhz"] = attrs["sm_clock_khz"] // 1000 if "sm_clock_khz" in attrs else None


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
