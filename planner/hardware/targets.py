"""Turning a device (catalog, or described by its memory and bandwidth) or a probed host into a Target."""

from __future__ import annotations

from planner.errors import PlannerError
from planner.plan import GIB, Target, system_usable_bytes


# Assumed when --memory comes without --bandwidth.
DEFAULT_MANUAL_BANDWIDTH_GB_S = 500.0


def manual_device(memory_gib: float, bandwidth_gb_s: float | None, tflops: float | None = None):  # type: ignore[no-untyped-def]
    """A device described by its memory, bandwidth and dense FP16/BF16 tensor TFLOPS (a CUDA GPU of compute
    capability 8.0 otherwise)."""
    from planner.hardware.schema import DeviceSpec  # lazy: keeps pydantic off recommend's start-up path

    compute = {"peak_fp16_tflops": tflops, "peak_bf16_tflops": tflops} if tflops is not None else {}
    return DeviceSpec.model_validate({
        "id": "custom", "name": f"custom device ({memory_gib:g} GiB)", "vendor": "nvidia", "backend": "cuda",
        "architecture": "unknown", "compute_capability": "8.0", "memory_gib": memory_gib, "memory_type": "unknown",
        "memory_kind": "dedicated", "launch_year": 2024, **compute,
        "mem_bandwidth_gb_s": DEFAULT_MANUAL_BANDWIDTH_GB_S if bandwidth_gb_s is None else bandwidth_gb_s,
        "source": "user input (--memory/--bandwidth/--tflops)",
        "unverified": [k for k, v in (("mem_bandwidth_gb_s", bandwidth_gb_s), ("peak_fp16_tflops", tflops)) if v is None],
    })


def tflops_per_bandwidth(catalog) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """Median dense FP16 tensor TFLOPS per GB/s of memory bandwidth over the catalog's dedicated CUDA GPUs of compute
    capability 8.0+ (what a device given only by its bandwidth is assumed to have), and how many GPUs that is."""
    ratios = sorted(d.peak_fp16_tflops / d.mem_bandwidth_gb_s for d in catalog
                    if d.backend == "cuda" and d.memory_kind == "dedicated" and d.peak_fp16_tflops
                    and (d.cc or 0) >= 8.0)
    if not ratios:
        return ASSUMED_TFLOPS_PER_GB_S, 0
    mid = len(ratios) // 2
    return (ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2), len(ratios)


# Assumed when the catalog has no GPU to take the ratio from: an A100's 312 TFLOPS over 2039 GB/s (NVIDIA datasheet).
ASSUMED_TFLOPS_PER_GB_S = 312 / 2039


# Assumed when a probed CPU's memory bandwidth is unknown: DDR5-5600 dual channel (2 x 64 bit x 5600 MT/s).
DEFAULT_CPU_BANDWIDTH_GB_S = 89.6


def cpu_device(model_name: str, cores: int | None, ram_total_bytes: int,  # type: ignore[no-untyped-def]
               isa: list[str] | None = None, measured_read_gb_s: float | None = None):
    """A CPU target for a probed machine: its RAM and ISA flags, with an assumed dual-channel DDR5 peak bandwidth
    (raised to the measured read bandwidth where that is higher: a peak is never below a measurement)."""
    from planner.hardware.device import CPU_ISA_NAMES
    from planner.hardware.synthesized import validated_device  # validated once per machine, then cached

    peak = max(DEFAULT_CPU_BANDWIDTH_GB_S, measured_read_gb_s or 0.0)
    source = "probe (memory); bandwidth assumed DDR5-5600 dual channel"
    if measured_read_gb_s is not None:
        source += f", achievable read bandwidth measured ({measured_read_gb_s:.1f} GB/s)"
    return validated_device({
        "cpu_isa": [i for i in (isa or []) if i in CPU_ISA_NAMES],
        "id": "local-cpu", "name": model_name or "local CPU", "vendor": "generic", "backend": "cpu", "architecture": "cpu",
        "memory_gib": max(ram_total_bytes / GIB, 0.001), "memory_type": "system RAM", "memory_kind": "system",
        "mem_bandwidth_gb_s": peak, "cpu_cores": cores or None, "launch_year": 2024,
        "source": source, "unverified": ["mem_bandwidth_gb_s"],
    })


def target_from_host(host, origin: str = "probe", ram_override: int | None = None,  # type: ignore[no-untyped-def]
                     measured=None) -> Target:
    """Plan for a probed host: its largest group of identical GPUs with their free memory, else its CPU and RAM
    (`measured`: this machine's ReadBandwidth from planner.hardware.membw, which caps CPU decode bandwidth)."""
    notes = list(getattr(host, "warnings", []) or [])
    ram_avail = ram_override or getattr(host, "ram_available_bytes", None)
    gpus = list(getattr(host, "gpus", []) or [])
    if gpus:
        groups: dict[str, list] = {}
        for g in gpus:
            groups.setdefault(g.spec.id, []).append(g)
        best = max(groups.values(), key=lambda gs: sum(x.memory_total_bytes for x in gs))
        dev = best[0].spec
        if len(groups) > 1:
            notes.append(f"mixed GPUs: planning for the {len(best)}x {dev.name}; others are left out")
        # memory_usable_bytes: free VRAM, or for unified memory the GPU limit capped by the RAM available now.
        usable = [int(g.memory_usable_bytes) for g in best]
        notes.append(f"planning for this machine: {len(best)}x {dev.name}, free memory as probed")
        return Target(dev, len(best), tuple(usable), ram_avail, origin=origin, notes=tuple(notes))
    cpu = getattr(host, "cpu", None)
    total = int(getattr(host, "ram_total_bytes", 0) or 0)
    if total <= 0:
        raise PlannerError("the probe found no GPU and could not read the RAM size; use --device")
    cores = getattr(cpu, "physical_cores", None) or getattr(cpu, "logical_cores", None)
    read = measured.read_gb_s if measured is not None else None
    cpu_dev = cpu_device(getattr(cpu, "model", "") or "", cores, total, list(getattr(cpu, "isa", None) or []), read)
    avail = int(ram_avail or total)
    usable = min(avail, system_usable_bytes(total))
    if measured is not None:
        notes.append(f"planning for this CPU ({cpu_dev.name}, {cores or '?'} cores) and its RAM; memory bandwidth "
                     f"measured: {measured.describe()}, which caps decode speed (peak assumed "
                     f"{cpu_dev.mem_bandwidth_gb_s:g} GB/s); --no-measure skips it, `planner probe --measure` measures again")
    else:
        notes.append(f"planning for this CPU ({cpu_dev.name}, {cores or '?'} cores) and its RAM; memory bandwidth assumed "
                     f"{DEFAULT_CPU_BANDWIDTH_GB_S:g} GB/s (dual-channel DDR5); `planner bench --model MODEL --format Q4_K_M "
                     "--save` measures this machine and later plans use it")
    return Target(cpu_dev, 1, (max(usable, 0),), avail, cpu_dev.mem_bandwidth_gb_s, origin=origin, notes=tuple(notes),
                  measured_bandwidth=measured)
