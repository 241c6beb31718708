"""NVML-derived figures against the catalog's datasheet figures (not a test): what an uncatalogued NVIDIA GPU would be
planned with, checked on GPUs the catalog knows.

Usage: python benchmarks/nvml_derived.py
Inputs are what NVML / the CUDA driver report on each card (sources beside each row and in
planner/hardware/probe/derived.py); the derivation is planner.hardware.probe.derived.derive.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from planner.hardware.catalog import load_catalog  # noqa: E402
from planner.hardware.probe.derived import derive  # noqa: E402
from planner.hardware.probe.snapshot import NvidiaGpuRecord  # noqa: E402

# (catalog id, NVML/CUDA readings, where the readings come from)
READINGS = [
    ("rtx-4090", dict(memory_bus_width_bits=384, max_memory_clock_mhz=10501, cuda_cores=16384, sm_clock_mhz=2520,
                      compute_capability="8.9"), "NVIDIA/nvbench PR #207 device listing"),
    ("rtx-3090", dict(memory_bus_width_bits=384, max_memory_clock_mhz=9751, cuda_cores=10496, sm_clock_mhz=1695,
                      compute_capability="8.6"), "nicehash/NiceHashQuickMiner#15 (9750 MHz); 10496 cores, 1695 MHz datasheet"),
    ("rtx-5090", dict(memory_bus_width_bits=512, max_memory_clock_mhz=14001, cuda_cores=21760, sm_clock_mhz=2407,
                      compute_capability="12.0"), "NVIDIA/open-gpu-kernel-modules#1266 (14001 MHz); cores, boost datasheet"),
    ("v100-sxm2-32gb", dict(memory_bus_width_bits=4096, max_memory_clock_mhz=877, sm_count=80, sm_clock_mhz=1530,
                            compute_capability="7.0"), "NVIDIA/nvidia-docker#914 nvidia-smi -q Max Clocks (877 / 1530 MHz)"),
]


def main() -> None:
    """Print derived vs catalog bandwidth and FP32, with the relative error."""
    cat = load_catalog()
    print(f"{'device':<16}{'derived GB/s':>13}{'catalog GB/s':>13}{'err %':>7}{'derived FP32':>14}{'catalog FP32':>14}{'err %':>7}")
    for device_id, reading, _source in READINGS:
        d = derive(NvidiaGpuRecord(index=0, **reading))
        spec = cat.get(device_id)
        bw_err = (d.mem_bandwidth_gb_s / spec.mem_bandwidth_gb_s - 1) * 100
        fp_err = (d.peak_fp32_tflops / spec.peak_fp32_tflops - 1) * 100
        print(f"{device_id:<16}{d.mem_bandwidth_gb_s:>13.1f}{spec.mem_bandwidth_gb_s:>13g}{bw_err:>7.2f}"
              f"{d.peak_fp32_tflops:>14.2f}{spec.peak_fp32_tflops:>14g}{fp_err:>7.2f}")


if __name__ == "__main__":
    main()
