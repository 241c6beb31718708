"""Peak figures of an NVIDIA GPU the catalog does not know, derived from what NVML (and the CUDA driver) report.

Memory bandwidth = bus width (bits) / 8 x NVML's maximum memory clock x 2. NVML's memory clock is half the per-pin
data rate on every memory type NVIDIA ships (GDDR5/5X/6, the PAM4 GDDR6X, the PAM3 GDDR7 and HBM2/2e/3/3e): NVIDIA's
own tools multiply it by 2 ("DDR"), and that reproduces the datasheets:
- RTX 4090, GDDR6X: 384 bit, 10501 MHz -> 1008 GB/s, datasheet 1008 (21 Gbps); NVIDIA nvbench prints
  "1008 GB/sec (384-bit DDR @10501MHz)" (https://github.com/NVIDIA/nvbench/pull/207);
- RTX 3090, GDDR6X: 384 bit, 9751 MHz -> 936 GB/s, datasheet 936.2 (19.5 Gbps); its default memory clock 9750 MHz
  (https://github.com/nicehash/NiceHashQuickMiner/issues/15);
- RTX 5090, GDDR7: 512 bit, 14001 MHz (nvidia-smi, https://github.com/NVIDIA/open-gpu-kernel-modules/issues/1266)
  -> 1792 GB/s, datasheet 1792 (28 Gbps);
- V100 SXM2, HBM2: 4096 bit, 877 MHz (nvidia-smi -q Max Clocks, https://github.com/NVIDIA/nvidia-docker/issues/914)
  -> 898 GB/s, datasheet 900;
- the formula itself: NVIDIA's "How to Implement Performance Metrics in CUDA C/C++"
  (https://developer.nvidia.com/blog/how-implement-performance-metrics-cuda-cc/), clock x bus bytes x 2 (DDR).

FP32 compute = CUDA cores x 2 (an FMA is two FLOPs) x the rated SM clock. NVML gives the core count
(nvmlDeviceGetNumGpuCores, recent drivers); else the CUDA driver's SM count x FP32 lanes per SM for the compute
capability. The rated (boost) clock is the CUDA driver's CU_DEVICE_ATTRIBUTE_CLOCK_RATE (RTX 4090: 2520 MHz, its
datasheet boost, as nvbench prints "SM Default Clock Rate: 2520 MHz"); NVML's maximum SM clock is the fallback and is
can be above the rated boost (GeForce boards boost opportunistically), so the figure is then flagged as an upper
bound.
Tensor-core rates are not derived: they differ between GeForce and data-centre parts of one architecture.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.hardware.probe.snapshot import Section as NvidiaGpuRecord  # a validated NvidiaGpuRecord section

DATA_RATE_PER_CLOCK = 2  # transfers per NVML memory clock, every memory type (sources above)

# FP32 results per clock per SM (32-bit floating-point add, multiply, multiply-add), by compute capability:
# CUDA C++ Programming Guide, "Arithmetic Instructions", throughput table (64 on 6.0/7.x/8.0, 128 elsewhere).
FP32_LANES_PER_SM = {
    "5.0": 128, "5.2": 128, "5.3": 128, "6.0": 64, "6.1": 128, "6.2": 128, "7.0": 64, "7.2": 64, "7.5": 64,
    "8.0": 64, "8.6": 128, "8.7": 128, "8.9": 128, "9.0": 128, "10.0": 128, "12.0": 128,
}

SOURCE = "derived from NVML (planner/hardware/probe/derived.py)"


@dataclass(frozen=True)
class Derived:
    """What NVML's figures give for one GPU: each value with the formula that made it."""

    mem_bandwidth_gb_s: float | None
    bandwidth_formula: str | None
    peak_fp32_tflops: float | None
    fp32_formula: str | None


def derive(gpu: NvidiaGpuRecord) -> Derived:
    """Bandwidth and FP32 compute from the GPU's NVML / CUDA driver record (None where it lacks the inputs)."""
    bw = formula = None
    if gpu.memory_bus_width_bits and gpu.max_memory_clock_mhz:
        bw = gpu.memory_bus_width_bits / 8 * gpu.max_memory_clock_mhz * DATA_RATE_PER_CLOCK / 1000
        formula = (f"derived from NVML: {gpu.memory_bus_width_bits}-bit bus / 8 x {gpu.max_memory_clock_mhz} MHz memory "
                   f"clock x {DATA_RATE_PER_CLOCK} (data rate per clock) = {bw:.0f} GB/s")
    cores, cores_how = gpu.cuda_cores, f"{gpu.cuda_cores} CUDA cores"
    lanes = FP32_LANES_PER_SM.get(gpu.compute_capability or "")
    if cores is None and gpu.sm_count and lanes:
        cores, cores_how = gpu.sm_count * lanes, f"{gpu.sm_count} SMs x {lanes} FP32 lanes (CC {gpu.compute_capability})"
    clock, clock_how = gpu.sm_clock_mhz, "rated SM clock"
    if clock is None and gpu.max_sm_clock_mhz:
        clock, clock_how = gpu.max_sm_clock_mhz, "NVML maximum SM clock, can exceed the rated boost: an upper bound"
    fp32 = fp32_formula = None
    if cores and clock:
        fp32 = cores * 2 * clock / 1e6
        fp32_formula = f"derived from NVML: {cores_how} x 2 FLOP (FMA) x {clock} MHz ({clock_how}) = {fp32:.1f} TFLOPS"
    return Derived(bw, formula, fp32, fp32_formula)
