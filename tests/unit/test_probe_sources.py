"""The probe's reading side: the live read on this machine, NVML through a fake pynvml, per-source time limits and
failures, and the parsers of tool output and sysfs."""

from __future__ import annotations

import json
import types
from types import SimpleNamespace
from typing import Any

import pytest
from probe_fixtures import make_catalog, snap, warned

from planner.hardware import probe
from planner.hardware.catalog import Catalog
from planner.hardware.probe import GIB, MIB, Host, _shared, amd, apple, interpret, nvml, parse_snapshot, read_raw, system


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return make_catalog()


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


def _install_fake_nvml(monkeypatch, module: types.ModuleType, cuda: dict | None = None) -> None:
    import ctypes
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", module)
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: None)  # pretend libnvidia-ml.so.1 is installed
    from planner.hardware.probe import nvml

    monkeypatch.setattr(nvml, "_cuda_attributes", lambda: cuda or {})  # no libcuda behind the fake


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
