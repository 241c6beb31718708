"""The hardware probe: captured snapshots interpreted against a test catalog, the live read on this machine, parsers, fuzzing."""

from __future__ import annotations

import copy
import json
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.errors import InvalidInputError
from planner.hardware import probe
from planner.hardware.probe import _shared, amd, apple, nvml, system
from planner.hardware.catalog import Catalog, parse_catalog_files
from planner.hardware.probe import (
    GIB,
    MIB,
    PLACEHOLDER_MEM_BANDWIDTH_GB_S,
    Host,
    interpret,
    load_snapshot,
    parse_snapshot,
    read_raw,
)

SNAPSHOTS = Path(__file__).resolve().parents[1] / "fixtures" / "snapshots"
SRC = "https://example.invalid/datasheet"

# A small catalog built here, so the assertions do not depend on the bundled hwdb/ content (which is still growing).
_TEST_CATALOG_DOC = {
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


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return Catalog(parse_catalog_files([(Path("<probe test catalog>"), _TEST_CATALOG_DOC)]))


def snap(name: str) -> dict:
    """A fresh copy of a fixture snapshot (tests edit them)."""
    return json.loads((SNAPSHOTS / name).read_text(encoding="utf-8"))


def warned(host: Host, *fragments: str) -> bool:
    """True if one warning contains every fragment."""
    return any(all(f in w for f in fragments) for w in host.warnings)


# --------------------------------------------------------------------------------------------------------------
# Captured snapshots
# --------------------------------------------------------------------------------------------------------------


def test_h100_sxm_single(cat):
    host = interpret(snap("h100-sxm-1x.json"), cat)
    (gpu,) = host.gpus
    assert (gpu.catalog_id, gpu.spec.id, gpu.vendor, gpu.name) == ("h100-sxm", "h100-sxm", "nvidia", "NVIDIA H100 80GB HBM3")
    assert gpu.memory_total_bytes == 81559 * MIB
    assert gpu.memory_usable_bytes == gpu.memory_free_bytes == (81559 - 527) * MIB
    assert (gpu.compute_capability, gpu.pcie_gen, gpu.pcie_width, gpu.nvlink_active_links, gpu.power_limit_w) == ("9.0", 5, 16, 0, 700.0)
    assert gpu.uuid == "GPU-5b6ad8a2-8b35-2e4f-8a0e-4b6c1f0e7d21"
    assert (host.driver_version, host.cuda_driver_version) == ("550.54.15", "12.4")
    assert not host.unified and host.interconnect is None and host.gpu_usable_bytes is None
    assert host.cpu.catalog_id == "xeon-8480"
    assert {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx"} <= set(host.cpu.isa)
    assert host.ram_total_bytes == host.ram_physical_bytes == 236_023_226_368
    assert host.cgroup_memory_limit_bytes is None
    assert host.warnings == []
    assert host.sources["nvml"].ok and host.sources["apple"].absent


def test_a100_8x_nvlink_with_slurm_memory_limit(cat):
    host = interpret(snap("a100-sxm4-80gb-8x-nvlink.json"), cat)
    assert [g.catalog_id for g in host.gpus] == ["a100-80gb-sxm"] * 8
    assert [g.index for g in host.gpus] == list(range(8))
    assert all(g.nvlink_active_links == 12 and g.memory_total_bytes == 81920 * MIB for g in host.gpus)
    assert host.interconnect == "nvlink"
    # Slurm job cgroup: 1 TiB of a 2 TiB machine; available = limit - (usage - page cache).
    assert host.cgroup_memory_limit_bytes == host.ram_total_bytes == 2**40
    assert host.ram_available_bytes == 2**40 - (3 * GIB - 1 * GIB)
    assert warned(host, "container limited to 1024.0 GiB")
    # EPYC 7742 (Zen 2): AVX2 but no AVX-512.
    assert "avx2" in host.cpu.isa and "avx512f" not in host.cpu.isa
    assert not warned(host, "CUDA_DEVICE_ORDER")  # one model only, and the order is set anyway


def test_rtx4090_2x_pcie_desktop(cat):
    host = interpret(snap("rtx4090-2x-pcie.json"), cat)
    a, b = host.gpus
    assert (a.catalog_id, b.catalog_id) == ("rtx-4090", "rtx-4090")
    assert a.memory_usable_bytes == (24564 - 1846) * MIB and b.memory_usable_bytes == (24564 - 18) * MIB
    # The idle link trains down to gen 1; the plan reports the link's capability.
    assert (a.pcie_gen, a.pcie_width, b.pcie_gen, b.pcie_width) == (4, 16, 4, 8)
    assert host.interconnect == "pcie"
    assert warned(host, "GPU 0", "already in use by 1 process")
    assert not warned(host, "GPU 1")
    assert {"avx512f", "avx512_bf16"} <= set(host.cpu.isa)


def test_a100_mig_instances_are_devices(cat):
    host = interpret(snap("a100-mig.json"), cat)
    assert [g.mig_profile for g in host.gpus] == ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]
    assert [g.memory_total_bytes for g in host.gpus] == [40192 * MIB, 19968 * MIB, 9728 * MIB, 9728 * MIB]
    assert all(g.catalog_id == "a100-80gb-sxm" and g.parent_uuid == "GPU-a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d" for g in host.gpus)
    big = host.gpus[0]
    assert big.uuid == "MIG-3c1e9d6a-7b2f-5d48-9a1c-2e4f6b8d0a13"
    assert big.spec.id == "a100-80gb-sxm-mig-3g.40gb"
    assert big.spec.memory_gib == pytest.approx(40192 / 1024, abs=1e-3)
    assert big.spec.mem_bandwidth_gb_s == pytest.approx(2039 * 40192 / 81920)
    assert big.spec.peak_bf16_tflops == pytest.approx(312 * 3 / 7)
    assert big.spec.nvlink_gb_s is None and big.nvlink_active_links == 0
    assert big.memory_usable_bytes == (40192 - 13) * MIB
    assert host.interconnect is None  # MIG slices do not form a tensor-parallel group
    assert warned(host, "MIG mode", "4 MIG instance(s)")
    # Inside a 64 GiB container on a 1 TiB machine.
    assert host.ram_total_bytes == 64 * GIB and host.ram_physical_bytes == 1_081_801_392_128
    assert host.cpu.usable_cores == 16


def test_cuda_visible_devices_selects_one_mig_instance(cat):
    data = snap("a100-mig.json")
    data["env"]["CUDA_VISIBLE_DEVICES"] = "MIG-4d2fae7b"  # CUDA accepts a unique UUID prefix
    host = interpret(data, cat)
    assert [g.mig_profile for g in host.gpus] == ["2g.20gb"]
    assert not warned(host, "MIG mode: its")


def test_mixed_3090_and_uncatalogued_gtx1080(cat):
    host = interpret(snap("rtx3090-gtx1080-mixed.json"), cat)
    rtx, gtx = host.gpus
    assert rtx.catalog_id == "rtx-3090" and rtx.spec.mem_bandwidth_gb_s == 936.2
    # Not in the catalog: still planned from probed memory, with placeholder bandwidth and unknown compute.
    assert gtx.catalog_id is None and not gtx.catalogued
    assert gtx.memory_total_bytes == 8 * GIB and gtx.memory_usable_bytes == (8192 - 687) * MIB
    spec = gtx.spec
    assert spec.id == "probed-nvidia-geforce-gtx-1080" and spec.compute_capability == "6.1"
    assert spec.memory_gib == 8.0 and spec.mem_bandwidth_gb_s == PLACEHOLDER_MEM_BANDWIDTH_GB_S
    assert "mem_bandwidth_gb_s" in spec.unverified
    assert all(spec.peak_tflops(d) is None for d in ("fp32", "fp16", "bf16", "int8"))
    assert warned(host, "GPU 1 'NVIDIA GeForce GTX 1080' is not in the catalog", "--hwdb", "nvml_names: ['NVIDIA GeForce GTX 1080']")
    assert warned(host, "CUDA_DEVICE_ORDER=PCI_BUS_ID")
    assert host.interconnect == "pcie"


def test_user_catalog_entry_replaces_the_placeholder(cat):
    doc = {"family": "mine", "devices": [
        {"id": "gtx-1080", "name": "NVIDIA GeForce GTX 1080", "vendor": "nvidia", "backend": "cuda", "architecture": "pascal",
         "compute_capability": "6.1", "memory_gib": 8, "memory_type": "GDDR5X", "memory_kind": "dedicated",
         "mem_bandwidth_gb_s": 320, "launch_year": 2016, "nvml_names": ["NVIDIA GeForce GTX 1080"], "source": SRC}]}
    merged = Catalog([*cat, *parse_catalog_files([(Path("mine.yaml"), doc)])])
    host = interpret(snap("rtx3090-gtx1080-mixed.json"), merged)
    assert [g.catalog_id for g in host.gpus] == ["rtx-3090", "gtx-1080"]
    assert not warned(host, "not in the catalog")


def test_m2_max_96gb_picks_memory_variant_and_default_share(cat):
    host = interpret(snap("m2-max-96gb.json"), cat)
    (gpu,) = host.gpus
    assert (gpu.vendor, gpu.catalog_id, gpu.spec.memory_gib, gpu.gpu_cores) == ("apple", "m2-max-96gb", 96, 38)
    assert host.unified and gpu.unified
    assert gpu.memory_total_bytes == 96 * GIB
    assert host.gpu_usable_bytes == int(96 * GIB * 0.75)
    assert "catalog default fraction" in (host.gpu_usable_source or "")
    # Other programs hold RAM: the plan gets what is available now, and says so.
    assert gpu.memory_usable_bytes == 63_817_523_200 < host.gpu_usable_bytes
    assert warned(host, "Only 59.4 GiB of RAM is available")
    assert host.cpu.isa == ["neon", "dotprod", "i8mm", "bf16"]
    assert host.sources["nvml"].absent and host.sources["cgroup"].absent
    assert not warned(host, "No GPU")


def test_m3_ultra_512gb_uses_raised_wired_limit(cat):
    host = interpret(snap("m3-ultra-512gb.json"), cat)
    (gpu,) = host.gpus
    assert gpu.catalog_id == "m3-ultra-512gb" and gpu.spec.memory_gib == 512
    assert host.gpu_usable_bytes == 491520 * MIB == gpu.memory_usable_bytes
    assert host.gpu_usable_source == "iogpu.wired_limit_mb"
    assert host.warnings == []


def test_apple_memory_size_without_a_catalogued_variant(cat):
    data = snap("m2-max-96gb.json")
    data["apple"]["memory_bytes"] = data["memory"]["total_bytes"] = 48 * GIB
    host = interpret(data, cat)
    assert host.gpus[0].catalog_id == "m2-max"  # the family entry; no 48 GB variant exists
    assert warned(host, "48 GiB is not a catalogued size of m2-max")


def test_apple_binned_chip_core_count_mismatch(cat):
    data = snap("m2-max-96gb.json")
    data["apple"]["gpu_cores"] = 30
    assert warned(interpret(data, cat), "30 GPU cores", "has 38")


def test_strix_halo_apu_is_unified_memory(cat):
    host = interpret(snap("strix-halo-128gb.json"), cat)
    (gpu,) = host.gpus
    assert gpu.vendor == "amd" and gpu.unified and host.unified
    assert gpu.gfx_target == "gfx1151"
    # The generic iGPU name matches nothing; the CPU string names the chip, and the RAM size picks the variant.
    assert gpu.catalog_id == "strix-halo-395-128gb"
    vram, gtt = 536_870_912, 128_849_018_880
    assert host.gpu_usable_bytes == vram + gtt
    assert gpu.memory_total_bytes == vram + 136_296_488_960
    assert gpu.memory_usable_bytes == min(vram + gtt, (vram - 97_181_696) + 129_854_201_856)
    assert host.interconnect is None


def test_strix_halo_uncatalogued_still_plans_from_memory():
    host = interpret(snap("strix-halo-128gb.json"), Catalog([]))
    (gpu,) = host.gpus
    assert gpu.catalog_id is None and gpu.unified and gpu.spec.memory_kind == "unified"
    assert 0 < (gpu.spec.gpu_usable_fraction or 0) <= 1
    # The suggested catalog key is the CPU string, since 'AMD Radeon Graphics' names every AMD iGPU.
    assert warned(host, "not in the catalog", "nvml_names: ['AMD RYZEN AI MAX+ 395 w/ Radeon 8060S']")


def test_mi300x_8x_and_hip_visible_devices(cat):
    host = interpret(snap("mi300x-8x.json"), cat)
    assert [g.catalog_id for g in host.gpus] == ["mi300x"] * 8
    g = host.gpus[0]
    assert (g.gfx_target, g.memory_total_bytes, g.memory_usable_bytes) == ("gfx942", 206_141_652_992, 206_141_652_992 - 301_989_888)
    assert not g.unified and host.interconnect is None  # Infinity Fabric is not probed: no guess
    data = snap("mi300x-8x.json")
    data["env"]["HIP_VISIBLE_DEVICES"] = "2,5"
    host = interpret(data, cat)
    assert [g.index for g in host.gpus] == [2, 5]
    assert warned(host, "HIP_VISIBLE_DEVICES='2,5' hides 6 of 8")


def test_cpu_only_laptop(cat):
    host = interpret(snap("cpu-only-laptop.json"), cat)
    assert host.gpus == [] and not host.unified
    assert warned(host, "No GPU found", "libnvidia-ml.so.1 not found")
    assert {"avx2", "avx_vnni"} <= set(host.cpu.isa) and "avx512f" not in host.cpu.isa
    assert (host.cpu.physical_cores, host.cpu.logical_cores) == (12, 16)
    assert host.ram_total_bytes == 33_325_740_032 and host.ram_available_bytes == 21_474_836_480
    assert host.swap_total_bytes == 8_589_930_496


def test_nvml_present_but_no_devices(cat):
    host = interpret(snap("nvml-no-devices.json"), cat)
    assert host.gpus == []
    assert host.sources["nvml"].ok
    assert warned(host, "NVML works (driver 550.54.15) but reports no GPU", "--gpus all")
    assert warned(host, "No GPU found")
    assert host.ram_total_bytes == 32 * GIB
    assert host.ram_available_bytes == 32 * GIB - (412_000_000 - 10_000_000)


def test_malformed_snapshot_names_the_field(cat):
    with pytest.raises(InvalidInputError) as err:
        load_snapshot(SNAPSHOTS / "malformed.json")
    msg = str(err.value)
    assert "nvidia.gpus[0].memory_total_bytes" in msg and "\n" not in msg
    with pytest.raises(InvalidInputError, match=r"nvidia\.gpus\[0\]\.memory_total_bytes"):
        interpret(snap("malformed.json"), cat)


def test_truncated_snapshot_is_a_clear_error():
    with pytest.raises(InvalidInputError) as err:
        load_snapshot(SNAPSHOTS / "truncated.json")
    assert "invalid JSON" in str(err.value) and "truncated.json" in str(err.value)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ([], "expected a JSON object"),
        ({}, "no snapshot_version"),
        ({"gpus": [], "cpu": {}}, "planner probe --raw"),
        ({"snapshot_version": 99, "sources": {}}, "newer than this planner"),
        ({"snapshot_version": 1}, "sources"),
        ({"snapshot_version": 1, "sources": {}, "nvidia": {"gpus": [{"index": 0, "memory_total_bytes": -5}]}},
         "nvidia.gpus[0].memory_total_bytes"),
        ({"snapshot_version": 1, "sources": {}, "apple": {"memory_bytes": 10**20}}, "apple.memory_bytes"),
        ({"snapshot_version": 1, "sources": {}, "nvidia": {"gpus": [{"index": 0, "compute_capability": "nine"}]}},
         "compute_capability"),
    ],
)
def test_invalid_snapshots(cat, data, fragment):
    with pytest.raises(InvalidInputError) as err:
        interpret(data, cat)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_load_snapshot_missing_file(tmp_path):
    with pytest.raises(InvalidInputError, match="no such snapshot file"):
        load_snapshot(tmp_path / "nope.json")


def test_unknown_keys_from_newer_planners_are_ignored(cat):
    data = snap("h100-sxm-1x.json")
    data["future_section"] = {"x": 1}
    data["nvidia"]["gpus"][0]["future_field"] = [1, 2]
    assert interpret(data, cat).gpus[0].catalog_id == "h100-sxm"


# --------------------------------------------------------------------------------------------------------------
# Visibility, failures, memory edge cases
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "indices", "fragment"),
    [
        ("1", [1], "hides 7 of 8"),
        ("3,1", [3, 1], "hides 6 of 8"),
        ("GPU-2f5b", [2], "hides 7 of 8"),
        ("0,abc,2", [0], "'abc' matches no GPU"),
        ("", [], "hides every NVIDIA GPU"),
        ("-1", [], "hides every NVIDIA GPU"),
        ("0,0", [0], "hides 7 of 8"),
    ],
)
def test_cuda_visible_devices(cat, value, indices, fragment):
    data = snap("a100-sxm4-80gb-8x-nvlink.json")
    data["env"]["CUDA_VISIBLE_DEVICES"] = value
    host = interpret(data, cat)
    assert [g.index for g in host.gpus] == indices
    assert warned(host, fragment)


def test_failed_source_is_a_warning_not_silence(cat):
    data = snap("cpu-only-laptop.json")
    data["sources"]["nvml"] = {"ok": False, "absent": False, "reason": "timed out after 5 s (driver or tool hung?)"}
    host = interpret(data, cat)
    assert warned(host, "Probe source 'nvml' failed", "timed out")
    assert warned(host, "No GPU found", "nvml: timed out")


def test_gpu_without_memory_is_left_out_with_a_reason(cat):
    data = snap("rtx4090-2x-pcie.json")
    gpu = data["nvidia"]["gpus"][1]
    gpu.update(memory_total_bytes=None, memory_free_bytes=None, memory_used_bytes=None, errors={"memory": "GPU is lost"})
    host = interpret(data, cat)
    assert [g.index for g in host.gpus] == [0]
    assert warned(host, "GPU 1", "GPU is lost", "left out")


def test_missing_sections_still_give_a_host(cat):
    data = {"snapshot_version": 1, "sources": {"cpu": {"ok": False, "reason": "PermissionError: /proc/cpuinfo"}}}
    host = interpret(data, cat)
    assert host.gpus == [] and host.ram_total_bytes is None and host.cpu.model is None
    assert warned(host, "Probe source 'cpu' failed")


def test_host_json_round_trips(cat):
    for path in sorted(SNAPSHOTS.glob("*.json")):
        if path.name in ("malformed.json", "truncated.json"):
            continue
        host = interpret(snap(path.name), cat)
        dumped = json.loads(json.dumps(host.model_dump(mode="json")))
        assert dumped["gpus"] == [json.loads(g.model_dump_json()) for g in host.gpus]
        assert Host.model_validate({k: v for k, v in dumped.items() if k != "interconnect"}) == host


# --------------------------------------------------------------------------------------------------------------
# The live read on this machine, and the read path through a fake NVML
# --------------------------------------------------------------------------------------------------------------


def test_read_raw_on_this_machine(cat):
    raw = read_raw()
    text = json.dumps(raw)  # plain JSON, as --raw prints it
    assert parse_snapshot(text) == json.loads(text)
    assert raw["snapshot_version"] == probe.SNAPSHOT_VERSION
    assert set(raw["sources"]) == {"nvml", "amd", "apple", "cpu", "memory", "cgroup"}
    assert raw["sources"]["cpu"]["ok"] and raw["sources"]["memory"]["ok"]
    assert raw["memory"]["total_bytes"] > 0 and raw["cpu"]["logical_cores"] >= 1
    for status in raw["sources"].values():
        assert status["ok"] or status["reason"], status  # never a failure without a reason
    host = interpret(raw, cat)
    assert host.ram_total_bytes and host.ram_total_bytes > 0
    if not host.gpus:
        assert warned(host, "No GPU found")
    assert isinstance(probe.local_host(cat), Host)


class FakeNVMLError(Exception):
    """Stands in for pynvml.NVMLError: carries the NVML return code in .value."""

    _TEXT = {2: "Invalid Argument", 3: "Not Supported", 4: "Insufficient Permissions", 6: "Not Found", 9: "Driver Not Loaded",
             12: "NVML Shared Library Not Found", 15: "GPU is lost"}

    def __init__(self, value: int):
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return self._TEXT.get(self.value, f"NVML error {self.value}")


def fake_pynvml(gpus: list[dict], init_error: int | None = None) -> types.ModuleType:
    """A pynvml double serving `gpus` (dicts) through the NVML calls the probe makes."""
    m = types.ModuleType("pynvml")
    m.NVMLError = FakeNVMLError
    m.NVML_ERROR_INVALID_ARGUMENT, m.NVML_ERROR_NOT_SUPPORTED, m.NVML_ERROR_NO_PERMISSION = 2, 3, 4
    m.NVML_ERROR_NOT_FOUND, m.NVML_ERROR_DRIVER_NOT_LOADED, m.NVML_ERROR_LIBRARY_NOT_FOUND = 6, 9, 12
    m.NVML_NVLINK_MAX_LINKS = 18
    m.shutdowns = 0

    def fail_or(value: Any) -> Any:
        if isinstance(value, FakeNVMLError):
            raise value
        return value

    def init() -> None:
        if init_error is not None:
            raise FakeNVMLError(init_error)

    def shutdown() -> None:
        m.shutdowns += 1

    def nvlink(h: dict, link: int) -> int:
        if h.get("links") is None or link >= 18:
            raise FakeNVMLError(3)
        return 1 if link < h["links"] else 0

    def mig_handle(h: dict, i: int) -> dict:
        migs = h.get("migs", [])
        if i >= len(migs) or migs[i] is None:
            raise FakeNVMLError(6)
        return migs[i]

    m.nvmlInit, m.nvmlShutdown = init, shutdown
    m.nvmlSystemGetDriverVersion = lambda: "550.54.15"
    m.nvmlSystemGetCudaDriverVersion = lambda: 12040
    m.nvmlSystemGetNVMLVersion = lambda: b"12.550.54.15"
    m.nvmlDeviceGetCount = lambda: len(gpus)
    m.nvmlDeviceGetHandleByIndex = lambda i: fail_or(gpus[i])
    m.nvmlDeviceGetName = lambda h: h["name"]
    m.nvmlDeviceGetUUID = lambda h: h["uuid"]
    m.nvmlDeviceGetPciInfo = lambda h: SimpleNamespace(busId=h.get("bus", b"00000000:18:00.0"))
    m.nvmlDeviceGetMemoryInfo = lambda h: fail_or(h["mem"])
    m.nvmlDeviceGetCudaComputeCapability = lambda h: h.get("cc", (9, 0))
    m.nvmlDeviceGetCurrPcieLinkGeneration = lambda h: 1
    m.nvmlDeviceGetMaxPcieLinkGeneration = lambda h: 5
    m.nvmlDeviceGetCurrPcieLinkWidth = lambda h: 16
    m.nvmlDeviceGetMaxPcieLinkWidth = lambda h: 16
    m.nvmlDeviceGetNvLinkState = nvlink
    m.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700000
    m.nvmlDeviceGetComputeRunningProcesses = lambda h: fail_or(h.get("procs", []))
    m.nvmlDeviceGetMigMode = lambda h: fail_or(h.get("mig", FakeNVMLError(3)))
    m.nvmlDeviceGetMaxMigDeviceCount = lambda h: 7
    m.nvmlDeviceGetMigDeviceHandleByIndex = mig_handle
    m.nvmlDeviceGetGpuInstanceId = lambda h: h.get("gi", 1)
    m.nvmlDeviceGetComputeInstanceId = lambda h: 0
    return m


def mem(total_mib: int, used_mib: int) -> SimpleNamespace:
    return SimpleNamespace(total=total_mib * MIB, free=(total_mib - used_mib) * MIB, used=used_mib * MIB)


FAKE_GPUS = [
    {"name": b"NVIDIA H100 80GB HBM3", "uuid": "GPU-aaaa", "mem": mem(81559, 527), "links": 18,
     "procs": [SimpleNamespace(pid=77, usedGpuMemory=2048 * MIB), SimpleNamespace(pid=78, usedGpuMemory=None)]},
    {"name": "NVIDIA A100-SXM4-80GB", "uuid": "GPU-bbbb", "mem": mem(81920, 0), "cc": (8, 0), "links": 12,
     "mig": [1, 1], "procs": FakeNVMLError(4),
     "migs": [{"name": "NVIDIA A100-SXM4-80GB MIG 3g.40gb", "uuid": "MIG-cccc", "mem": mem(40192, 13), "gi": 2},
              None,
              {"name": "NVIDIA A100-SXM4-80GB MIG 1g.10gb", "uuid": "MIG-dddd", "mem": mem(9728, 13), "gi": 9}]},
    {"name": "NVIDIA GeForce RTX 4090", "uuid": "GPU-eeee", "mem": FakeNVMLError(15), "cc": (8, 9)},
]


def _install_fake_nvml(monkeypatch, module: types.ModuleType) -> None:
    import ctypes
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", module)
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: None)  # pretend libnvidia-ml.so.1 is installed


def test_read_raw_through_fake_nvml(monkeypatch, cat):
    fake = fake_pynvml(FAKE_GPUS)
    _install_fake_nvml(monkeypatch, fake)
    raw = read_raw()
    assert raw["sources"]["nvml"]["ok"] and fake.shutdowns == 1
    nv = raw["nvidia"]
    assert (nv["driver_version"], nv["cuda_driver_version"], nv["nvml_version"]) == ("550.54.15", "12.4", "12.550.54.15")
    h100, a100, rtx = nv["gpus"]
    assert h100["name"] == "NVIDIA H100 80GB HBM3" and h100["nvlink_active_links"] == 18  # bytes decoded
    assert h100["processes"] == [{"pid": 77, "used_memory_bytes": 2048 * MIB}, {"pid": 78, "used_memory_bytes": None}]
    assert (h100["pcie_gen_max"], h100["power_limit_w"], h100["mig_enabled"]) == (5, 700.0, None)
    assert a100["processes"] is None and a100["errors"]["processes"] == "Insufficient Permissions"
    assert [m["uuid"] for m in a100["mig_devices"]] == ["MIG-cccc", "MIG-dddd"]
    assert rtx["memory_total_bytes"] is None and rtx["errors"]["memory"] == "GPU is lost" and rtx["nvlink_active_links"] == 0
    json.dumps(raw)
    host = interpret(raw, cat)
    assert [(g.catalog_id, g.mig_profile) for g in host.gpus] == [("h100-sxm", None), ("a100-80gb-sxm", "3g.40gb"),
                                                                   ("a100-80gb-sxm", "1g.10gb")]
    assert warned(host, "GPU 2", "GPU is lost")


@pytest.mark.parametrize(("code", "absent"), [(12, True), (9, False), (4, False)])
def test_nvml_init_failures_are_recorded(monkeypatch, cat, code, absent):
    _install_fake_nvml(monkeypatch, fake_pynvml([], init_error=code))
    raw = read_raw()
    status = raw["sources"]["nvml"]
    assert (status["ok"], status["absent"]) == (False, absent) and status["reason"]
    assert raw["nvidia"] is None
    assert warned(interpret(raw, cat), "Probe source 'nvml' failed") is (not absent)


def test_a_hung_source_times_out_and_a_crashing_one_is_recorded(monkeypatch, cat):
    import threading

    release = threading.Event()

    def hang() -> dict:
        release.wait(5)
        return {}

    def crash() -> dict:
        raise OSError("device or resource busy")

    monkeypatch.setattr(nvml, "read_raw", hang)
    monkeypatch.setattr(amd, "read_raw", crash)
    monkeypatch.setitem(probe.SOURCE_TIMEOUT_S, "nvml", 0.2)
    try:
        raw = read_raw()
    finally:
        release.set()
    assert raw["sources"]["nvml"]["reason"].startswith("timed out after 0.2 s") and raw["nvidia"] is None
    assert raw["sources"]["amd"] == {"ok": False, "absent": False, "reason": "OSError: device or resource busy",
                                     "elapsed_ms": raw["sources"]["amd"]["elapsed_ms"]}
    host = interpret(raw, cat)
    assert warned(host, "'nvml' failed", "timed out") and warned(host, "'amd' failed", "busy")


# --------------------------------------------------------------------------------------------------------------
# Parsers of tool output and sysfs
# --------------------------------------------------------------------------------------------------------------


def test_parse_cpuinfo_x86_and_arm():
    x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx2 amx_tile avx512f\n\nprocessor\t: 1\nmodel name\t: ignored\n"
    assert system.parse_cpuinfo(x86) == ("Intel(R) Xeon(R) Platinum 8480+", ["amx_tile", "avx2", "avx512f", "fpu"])
    arm = "processor\t: 0\nBogoMIPS\t: 2000.00\nFeatures\t: fp asimd evtstrm aes asimddp sve i8mm bf16 sve2\nCPU implementer\t: 0x41\n"
    model, flags = system.parse_cpuinfo(arm)
    assert model is None and {"asimd", "asimddp", "sve", "sve2"} <= set(flags)
    data = snap("cpu-only-laptop.json")
    data["cpu"]["flags"] = flags
    assert interpret(data, Catalog([])).cpu.isa == ["neon", "dotprod", "i8mm", "bf16", "sve", "sve2"]


def test_parse_sysctl_and_apple_gpu_cores():
    out = "machdep.cpu.brand_string: Apple M2 Max\nhw.memsize: 103079215104\nhw.model: Mac14,6\niogpu.wired_limit_mb: 0\n"
    assert _shared.parse_sysctl(out) == {"machdep.cpu.brand_string": "Apple M2 Max", "hw.memsize": "103079215104",
                                       "hw.model": "Mac14,6", "iogpu.wired_limit_mb": "0"}
    ioreg = '+-o AGXAcceleratorG14X  <class AGXAcceleratorG14X>\n  {\n    "gpu-core-count" = 38\n    "model" = "Apple M2 Max"\n  }\n'
    assert apple.parse_ioreg_gpu_cores(ioreg) == 38 and apple.parse_ioreg_gpu_cores("") is None
    prof = json.dumps({"SPDisplaysDataType": [{"_name": "Apple M2 Max", "sppci_cores": "38", "sppci_model": "Apple M2 Max"}]})
    assert apple.parse_system_profiler_gpu_cores(prof) == 38
    assert apple.parse_system_profiler_gpu_cores("not json") is None


def test_parse_amd_smi_versions():
    row = {"gpu": 0, "asic": {"market_name": "AMD Instinct MI300X", "target_graphics_version": "gfx942"},
           "bus": {"bdf": "0000:05:00.0"}, "vram": {"type": "HBM3", "size": {"value": 196592, "unit": "MB"}}}
    expected = [{"index": 0, "name": "AMD Instinct MI300X", "gfx_target": "gfx942", "pci_bus_id": "0000:05:00.0",
                 "vram_total_bytes": 196592 * MIB}]
    assert amd.parse_amd_smi(json.dumps([row])) == expected
    assert amd.parse_amd_smi(json.dumps({"gpu_data": [row]})) == expected
    assert amd.parse_amd_smi(json.dumps({"GPU 0": row})) == expected
    assert amd.parse_amd_smi("") == [] and amd.parse_amd_smi("[1, null]") == []


def test_parse_rocm_smi():
    out = json.dumps({
        "card1": {"Card Series": "AMD Radeon RX 7900 XTX", "GFX Version": "gfx1100", "PCI Bus": "0000:03:00.0",
                  "VRAM Total Memory (B)": "25753026560", "VRAM Total Used Memory (B)": "1073741824"},
        "card0": {"Card series": "AMD Instinct MI300X OAM", "GFX Version": "gfx942", "VRAM Total Memory (B)": "206141652992",
                  "VRAM Total Used Memory (B)": "301989888"},
        "system": {"Driver version": "6.7.0"},
    })
    rows = amd.parse_rocm_smi(out)
    assert [r["index"] for r in rows] == [0, 1]
    assert rows[0]["name"] == "AMD Instinct MI300X OAM" and rows[0]["vram_total_bytes"] == 206141652992
    assert rows[1]["pci_bus_id"] == "0000:03:00.0" and rows[1]["vram_used_bytes"] == 1073741824


def test_kfd_gfx_targets_and_amd_merge():
    assert [amd.gfx_target_from_version(v) for v in (90402, 110501, 90010, 100302, None)] == ["gfx942", "gfx1151", "gfx90a", "gfx1032", None]
    props = amd.parse_kfd_properties("cpu_cores_count 16\nsimd_count 80\ngfx_target_version 110501\nlocation_id 50432\ndomain 0\n")
    assert props["simd_count"] == 80 and props["location_id"] == 50432  # 0xc500 -> 0000:c5:00.0
    cards = [{"pci_bus_id": "0000:c5:00.0", "pci_device_id": "0x1586", "name": None, "vram_total_bytes": 512 * MIB,
              "vram_used_bytes": 90 * MIB, "gtt_total_bytes": 120 * GIB, "gtt_used_bytes": 0, "unique_id": None}]
    kfd = {"0000:c5:00.0": {"gfx_target": "gfx1151", "apu": True}}
    (gpu,) = amd.merge_amd_sources(cards, kfd, [])
    assert (gpu["name"], gpu["gfx_target"], gpu["apu"], gpu["vram_total_bytes"]) == ("AMD GPU 0x1586", "gfx1151", True, 512 * MIB)
    tool = [{"index": 0, "name": "AMD Radeon Graphics", "gfx_target": "gfx1151", "pci_bus_id": "0000:c5:00.0", "vram_total_bytes": None}]
    assert amd.merge_amd_sources(cards, kfd, tool)[0]["name"] == "AMD Radeon Graphics"
    # Tool rows alone (no sysfs, e.g. a restricted container) still give devices.
    only_tool = amd.merge_amd_sources([], {}, [{"index": 0, "name": "AMD Instinct MI300X", "gfx_target": "gfx942",
                                                  "pci_bus_id": None, "vram_total_bytes": 192 * GIB}])
    assert only_tool[0]["vram_total_bytes"] == 192 * GIB and only_tool[0]["apu"] is None


def test_cgroup_limits_take_the_tightest_along_the_path(tmp_path):
    root = tmp_path / "cg"
    leaf = root / "kubepods" / "pod1" / "ctr"
    leaf.mkdir(parents=True)
    (root / "kubepods" / "memory.max").write_text("max\n")
    (root / "kubepods" / "pod1" / "memory.max").write_text(f"{8 * GIB}\n")
    (leaf / "memory.max").write_text(f"{16 * GIB}\n")
    (leaf / "memory.current").write_text(f"{3 * GIB}\n")
    (leaf / "memory.stat").write_text(f"anon 123\ninactive_file {GIB}\n")
    got = system._cgroup_limits(root, "/kubepods/pod1/ctr", 2, "memory.max", "memory.current", "inactive_file")
    assert (got["memory_limit_bytes"], got["memory_usage_bytes"], got["inactive_file_bytes"]) == (8 * GIB, 3 * GIB, GIB)
    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "unlimited"
    got = system._cgroup_limits(v1, "/not/in/this/namespace", 1, "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
    assert got["memory_limit_bytes"] is None and got["path"] == str(v1)


# --------------------------------------------------------------------------------------------------------------
# Fuzzing: anything in gives a Host or an InvalidInputError
# --------------------------------------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=16,
)
_KEYS = ["snapshot_version", "sources", "nvidia", "amd", "apple", "cpu", "memory", "cgroup", "env", "platform", "gpus"]
_FIXTURES = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(SNAPSHOTS.glob("*.json")) if p.name != "truncated.json"}
_FUZZ_CATALOG = Catalog(parse_catalog_files([(Path("<probe test catalog>"), _TEST_CATALOG_DOC)]))


def _outcome(data: Any) -> None:
    """interpret() must give a Host or an InvalidInputError, nothing else."""
    try:
        host = interpret(data, _FUZZ_CATALOG)
    except InvalidInputError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert isinstance(host, Host)
    json.dumps(host.model_dump(mode="json"))


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a JSON tree."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=8), _json, max_size=8), st.booleans())
def test_fuzz_arbitrary_dicts(data, shaped):
    if shaped:  # get past the first checks so the deeper models are exercised too
        data = {**data, "snapshot_version": 1, "sources": data.get("sources", {})}
    _outcome(data)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(_FIXTURES)), st.data())
def test_fuzz_mutated_snapshots(name, data):
    doc = copy.deepcopy(_FIXTURES[name])
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(_json)
    _outcome(doc)


@settings(max_examples=150, deadline=2000)
@given(st.sampled_from(sorted(_FIXTURES)), st.floats(0, 1))
def test_fuzz_truncated_text(name, fraction):
    text = json.dumps(_FIXTURES[name], indent=2)
    cut = text[: int(len(text) * fraction)]
    try:
        parsed = parse_snapshot(cut, "snap.json")
    except InvalidInputError as exc:
        assert str(exc).startswith("snap.json") and "\n" not in str(exc)
        return
    _outcome(parsed)
