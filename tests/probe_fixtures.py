"""Shared by the probe tests: the captured snapshots, a small test catalog, and helpers to read them."""

from __future__ import annotations

import json
from pathlib import Path

from planner.hardware.catalog import Catalog, parse_catalog_files
from planner.hardware.probe import Host

SNAPSHOTS = Path(__file__).resolve().parent / "fixtures" / "snapshots"
SRC = "https://example.invalid/datasheet"

# A small catalog built here, so the assertions do not depend on the bundled hwdb/ content (which is still growing).
TEST_CATALOG_DOC = {
    "family": "probe test devices",
    "devices": [
        {"id": "h100-sxm", "name": "NVIDIA H100 SXM5 80GB", "vendor": "nvidia", "backend": "cuda", "architecture": "hopper",
         "compute_capability": "9.0", "memory_gib": 80, "memory_type": "HBM3", "memory_kind": "dedicated",
         "mem_bandwidth_gb_s": 3350, "peak_bf16_tflops": 989.4, "peak_fp8_tflops": 1978.9, "nvlink_gb_s": 900,
         "launch_year": 2022, "nvml_names": ["NVIDIA H100 80GB HBM3"], "source": SRC},
        {"id": "a100-80gb-sxm", "name": "NVIDIA A100 SXM4 80GB", "vendor": "nvidia", "backend": "cuda", "architecture": "ampere",
         "compute_capability": "8.0", "memory_gib": 80, "memory_type": "HBM2e", "memory_kind": "dedicated",
         "mem_bandwidth_gb_s": 2039, "peak_bf16_tflops": 312, "peak_fp32_tflops": 19.5, "nvlink_gb_s": 600,
         "launch_year": 2020, "nvml_names": ["NVIDIA A100-SXM4-80GB"], "source": SRC},
        {"id": "rtx-4090", "name": "NVIDIA GeForce RTX 4090", "vendor": "nvidia", "backend": "cuda", "architecture": "ada",
         "compute_capability": "8.9", "memory_gib": 24, "memory_type": "GDDR6X", "memory_kind": "dedicated",
         "mem_bandwidth_gb_s": 1008, "launch_year": 2022, "nvml_names": ["NVIDIA GeForce RTX 4090"], "source": SRC},
        {"id": "rtx-3090", "name": "NVIDIA GeForce RTX 3090", "vendor": "nvidia", "backend": "cuda", "architecture": "ampere",
         "compute_capability": "8.6", "memory_gib": 24, "memory_type": "GDDR6X", "memory_kind": "dedicated",
         "mem_bandwidth_gb_s": 936.2, "launch_year": 2020, "nvml_names": ["NVIDIA GeForce RTX 3090"], "source": SRC},
        {"id": "mi300x", "name": "AMD Instinct MI300X", "vendor": "amd", "backend": "rocm", "architecture": "cdna3",
         "gfx_target": "gfx942", "memory_gib": 192, "memory_type": "HBM3", "memory_kind": "dedicated",
         "mem_bandwidth_gb_s": 5300, "launch_year": 2023, "nvml_names": ["AMD Instinct MI300X"], "source": SRC},
        {"id": "m2-max", "name": "Apple M2 Max", "vendor": "apple", "backend": "metal", "architecture": "apple-m2",
         "memory_gib": 96, "memory_options_gib": [32, 64, 96], "memory_type": "LPDDR5", "memory_kind": "unified",
         "mem_bandwidth_gb_s": 400, "gpu_usable_fraction": 0.75, "gpu_cores": 38, "launch_year": 2023,
         "nvml_names": ["Apple M2 Max"], "source": SRC},
        {"id": "m3-ultra", "name": "Apple M3 Ultra", "vendor": "apple", "backend": "metal", "architecture": "apple-m3",
         "memory_gib": 512, "memory_options_gib": [96, 256, 512], "memory_type": "LPDDR5", "memory_kind": "unified",
         "mem_bandwidth_gb_s": 819, "gpu_usable_fraction": 0.75, "gpu_cores": 80, "launch_year": 2025,
         "nvml_names": ["Apple M3 Ultra"], "source": SRC},
        {"id": "strix-halo-395", "name": "AMD Ryzen AI Max+ 395", "vendor": "amd", "backend": "rocm", "architecture": "rdna3.5",
         "gfx_target": "gfx1151", "memory_gib": 128, "memory_options_gib": [64, 128], "memory_type": "LPDDR5X",
         "memory_kind": "unified", "mem_bandwidth_gb_s": 256, "gpu_usable_fraction": 0.75, "launch_year": 2025,
         "nvml_names": ["AMD RYZEN AI MAX+ 395 w/ Radeon 8060S"], "source": SRC},
        {"id": "xeon-8480", "name": "Intel Xeon Platinum 8480+", "vendor": "intel", "backend": "cpu", "architecture": "sapphire-rapids",
         "memory_gib": 512, "memory_type": "DDR5", "memory_kind": "system", "mem_bandwidth_gb_s": 307, "launch_year": 2023,
         "nvml_names": ["Intel(R) Xeon(R) Platinum 8480+"], "source": SRC},
    ],
}


def make_catalog() -> Catalog:
    """The test catalog, parsed."""
    return Catalog(parse_catalog_files([(Path("<probe test catalog>"), TEST_CATALOG_DOC)]))


def snap(name: str) -> dict:
    """A fresh copy of a fixture snapshot (tests edit them)."""
    return json.loads((SNAPSHOTS / name).read_text(encoding="utf-8"))


def warned(host: Host, *fragments: str) -> bool:
    """True if one warning contains every fragment."""
    return any(all(f in w for f in fragments) for w in host.warnings)
