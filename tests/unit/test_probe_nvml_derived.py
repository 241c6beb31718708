"""NVIDIA GPUs the catalog does not know are planned from what NVML reports (bus width, memory clock, cores, clocks),
and catalog entries are matched more tolerantly (names without vendor/brand words, PCI device ids) first."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from probe_fixtures import make_catalog, warned
from test_probe_sources import FakeNVMLError, _install_fake_nvml, fake_pynvml, mem

from planner.hardware.catalog import load_catalog, nvidia_products
from planner.hardware.probe import interpret, read_raw
from planner.hardware.probe.interpret import PLACEHOLDER_MEM_BANDWIDTH_GB_S
from planner.hardware.probe.nvml import _pci_key


def nvml_with_clocks(gpus: list[dict]):  # type: ignore[no-untyped-def]
    """The pynvml double, plus the calls that report bus width, clocks, cores and PCI ids."""
    m = fake_pynvml(gpus)
    m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM = 1, 2

    def value(h: dict, key: str):  # type: ignore[no-untyped-def]
        v = h.get(key, FakeNVMLError(3))  # Not Supported where the GPU dict does not say
        if isinstance(v, FakeNVMLError):
            raise v
        return v

    m.nvmlDeviceGetMemoryBusWidth = lambda h: value(h, "bus_bits")
    m.nvmlDeviceGetMaxClockInfo = lambda h, clock: value(h, "mem_mhz" if clock == m.NVML_CLOCK_MEM else "sm_max_mhz")
    m.nvmlDeviceGetNumGpuCores = lambda h: value(h, "cores")
    m.nvmlDeviceGetPciInfo = lambda h: SimpleNamespace(busId=h.get("bus", b"00000000:18:00.0"),
                                                       pciDeviceId=h.get("pci", 0), pciSubSystemId=h.get("subsys", 0))
    return m


def probe(monkeypatch, gpus: list[dict], cuda: dict | None = None, catalog=None):  # type: ignore[no-untyped-def]
    """read_raw through the fake NVML, a JSON round trip (what `planner probe --save` keeps), then interpret."""
    _install_fake_nvml(monkeypatch, nvml_with_clocks(gpus), cuda)
    raw = json.loads(json.dumps(read_raw()))
    return raw, interpret(raw, catalog or make_catalog())


def test_gpu_newer_than_the_catalog_is_planned_from_nvml(monkeypatch) -> None:
    """A made-up next-generation board: 512-bit bus at 16001 MHz, 24576 cores, rated 2600 MHz from the CUDA driver."""
    gpu = {"name": "NVIDIA GeForce RTX 6090", "uuid": "GPU-new", "mem": mem(48 * 1024, 300), "cc": (12, 0),
           "bus": b"00000000:41:00.0", "bus_bits": 512, "mem_mhz": 16001, "sm_max_mhz": 3200, "cores": 24576,
           "pci": 0x2FFF10DE}
    raw, host = probe(monkeypatch, [gpu], cuda={(0, 0x41, 0): {"sm_count": 192, "sm_clock_khz": 2_600_000}})
    rec = raw["nvidia"]["gpus"][0]
    assert (rec["memory_bus_width_bits"], rec["max_memory_clock_mhz"], rec["cuda_cores"]) == (512, 16001, 24576)
    assert (rec["pci_device_id"], rec["sm_count"], rec["sm_clock_mhz"]) == ("2fff", 192, 2600)
    (dev,) = host.gpus
    assert dev.catalog_id is None and not dev.catalogued
    assert dev.spec.mem_bandwidth_gb_s == pytest.approx(512 / 8 * 16001 * 2 / 1000, abs=0.1)  # 2048.1 GB/s
    assert dev.spec.mem_bandwidth_gb_s != PLACEHOLDER_MEM_BANDWIDTH_GB_S
    assert dev.spec.peak_fp32_tflops == pytest.approx(24576 * 2 * 2600 / 1e6, abs=0.01)  # rated clock, not the max
    assert "derived from NVML" in dev.spec.source
    assert "512-bit bus / 8 x 16001 MHz" in dev.spec.sources["mem_bandwidth_gb_s"]
    assert "24576 CUDA cores x 2 FLOP (FMA) x 2600 MHz (rated SM clock)" in dev.spec.sources["peak_fp32_tflops"]
    assert "mem_bandwidth_gb_s" not in dev.spec.unverified and "architecture" in dev.spec.unverified
    assert warned(host, "GPU 0 'NVIDIA GeForce RTX 6090' is not in the catalog", "2048 GB/s", "derived from NVML")
    assert not warned(host, "placeholder")


def test_without_bus_width_the_placeholder_stays_and_says_so(monkeypatch) -> None:
    gpu = {"name": "NVIDIA Mystery GPU", "uuid": "GPU-x", "mem": mem(16 * 1024, 0), "cc": (8, 9)}
    raw, host = probe(monkeypatch, [gpu])
    assert raw["nvidia"]["gpus"][0]["memory_bus_width_bits"] is None and "memory_bus_width" not in raw["nvidia"]["gpus"][0]["errors"]
    (dev,) = host.gpus
    assert dev.spec.mem_bandwidth_gb_s == PLACEHOLDER_MEM_BANDWIDTH_GB_S and "mem_bandwidth_gb_s" in dev.spec.unverified
    assert warned(host, "placeholder bandwidth")


# What NVML and the CUDA driver report on catalogued GPUs (sources in planner/hardware/probe/derived.py): bus width,
# max memory clock, and either NVML's core count or the CUDA driver's SM count, with the rated SM clock.
DATASHEET_CASES = [
    ("rtx-4090", {"bus_bits": 384, "mem_mhz": 10501, "cores": 16384, "cc": (8, 9)}, {"sm_count": 128, "sm_clock_khz": 2_520_000}),
    ("rtx-3090", {"bus_bits": 384, "mem_mhz": 9751, "cores": 10496, "cc": (8, 6)}, {"sm_count": 82, "sm_clock_khz": 1_695_000}),
    ("rtx-5090", {"bus_bits": 512, "mem_mhz": 14001, "cores": 21760, "cc": (12, 0)}, {"sm_count": 170, "sm_clock_khz": 2_407_000}),
    # No core count from NVML (older drivers): SMs x FP32 lanes per SM for compute capability 7.0.
    ("v100-sxm2-32gb", {"bus_bits": 4096, "mem_mhz": 877, "cc": (7, 0)}, {"sm_count": 80, "sm_clock_khz": 1_530_000}),
]


@pytest.mark.parametrize(("device_id", "nvml", "cuda"), DATASHEET_CASES, ids=[c[0] for c in DATASHEET_CASES])
def test_catalog_gpu_probed_through_nvml_derives_its_datasheet(monkeypatch, device_id: str, nvml: dict, cuda: dict) -> None:
    """The same derivation on GPUs the catalog knows (hidden behind an unknown name) lands on their datasheet figures."""
    cat = load_catalog()
    want = cat.get(device_id)
    gpu = {"name": "NVIDIA Engineering Sample", "uuid": "GPU-es", "mem": mem(int(want.memory_gib * 1024), 0),
           "bus": b"00000000:01:00.0", **nvml}
    _, host = probe(monkeypatch, [gpu], cuda={(0, 1, 0): cuda}, catalog=cat)
    (dev,) = host.gpus
    assert dev.catalog_id is None
    assert dev.spec.mem_bandwidth_gb_s == pytest.approx(want.mem_bandwidth_gb_s, rel=0.01)
    assert dev.spec.peak_fp32_tflops == pytest.approx(want.peak_fp32_tflops, rel=0.01)


def test_nvml_max_sm_clock_is_the_fallback_and_flagged(monkeypatch) -> None:
    gpu = {"name": "NVIDIA Engineering Sample", "uuid": "GPU-es", "mem": mem(24 * 1024, 0), "cc": (8, 9),
           "bus_bits": 384, "mem_mhz": 10501, "cores": 16384, "sm_max_mhz": 3105}
    _, host = probe(monkeypatch, [gpu])  # no libcuda: no rated clock
    (dev,) = host.gpus
    assert dev.spec.peak_fp32_tflops == pytest.approx(16384 * 2 * 3105 / 1e6, abs=0.01)
    assert "upper bound" in dev.spec.sources["peak_fp32_tflops"]


# --- tolerant catalog matching ------------------------------------------------------------------------------------


def test_name_without_vendor_and_brand_words_matches(monkeypatch) -> None:
    gpus = [{"name": "GeForce RTX 4090", "uuid": "GPU-a", "mem": mem(24564, 0), "cc": (8, 9)}]
    _, host = probe(monkeypatch, gpus)
    assert host.gpus[0].catalog_id == "rtx-4090"
    assert warned(host, "matched to rtx-4090 by its name without vendor and brand words")


def test_a_laptop_part_is_not_its_desktop_namesake(monkeypatch) -> None:
    gpus = [{"name": "NVIDIA GeForce RTX 4090 Laptop GPU", "uuid": "GPU-l", "mem": mem(16376, 0), "cc": (8, 9),
             "bus_bits": 256, "mem_mhz": 9001, "pci": 0x271710DE}]
    _, host = probe(monkeypatch, gpus)
    assert host.gpus[0].catalog_id is None  # 2717 is the laptop part in NVIDIA's table, not the desktop rtx-4090
    assert host.gpus[0].spec.mem_bandwidth_gb_s == pytest.approx(256 / 8 * 9001 * 2 / 1000, abs=0.1)


def test_pci_device_id_matches_when_the_name_does_not(monkeypatch) -> None:
    """An older driver names a newer board 'NVIDIA Graphics Device'; its PCI id still says what it is."""
    gpus = [{"name": "NVIDIA Graphics Device", "uuid": "GPU-p", "mem": mem(81559, 0), "cc": (9, 0), "pci": 0x233010DE,
             "subsys": 0x16C110DE, "bus_bits": 5120, "mem_mhz": 2619},
            {"name": "NVIDIA Graphics Device", "uuid": "GPU-q", "mem": mem(81920, 0), "cc": (8, 0), "pci": 0x20B210DE,
             "subsys": 0x146310DE, "bus": b"00000000:19:00.0"}]
    raw, host = probe(monkeypatch, gpus)
    assert raw["nvidia"]["gpus"][0]["pci_subsystem_id"] == "10de:16c1"
    assert [g.catalog_id for g in host.gpus] == ["h100-sxm", "a100-80gb-sxm"]
    assert warned(host, "GPU 0", "by its PCI device id 2330 (NVIDIA H100 80GB HBM3")


def test_pci_table_lookup() -> None:
    assert nvidia_products("2684") == ["NVIDIA GeForce RTX 4090"]
    assert nvidia_products("20B0", "10de:1450") == ["NVIDIA A100-PG509-200"]  # told apart by the subsystem id
    assert nvidia_products("20b0") == ["NVIDIA A100-SXM4-40GB"]
    assert nvidia_products("ffff") == []


def test_cuda_and_nvml_bus_ids_are_one_key() -> None:
    assert _pci_key("00000000:41:00.0") == _pci_key("0000:41:00.0") == (0, 0x41, 0)
    assert _pci_key("garbage") is None and _pci_key(None) is None


def test_cuda_driver_is_asked_only_when_a_gpu_is_not_catalogued(monkeypatch) -> None:
    """cuInit costs a fraction of a second on every `recommend`: with the catalog at hand it runs only when needed."""
    from planner.hardware import probe as probe_pkg
    from planner.hardware.probe import nvml

    known = {"name": "NVIDIA GeForce RTX 4090", "uuid": "GPU-k", "mem": mem(24564, 0), "cc": (8, 9)}
    unknown = {"name": "NVIDIA GeForce RTX 6090", "uuid": "GPU-u", "mem": mem(32768, 0), "cc": (12, 0),
               "bus": b"00000000:02:00.0"}
    calls: list[int] = []
    for gpus, asked in (([known], 0), ([known, unknown], 1)):
        _install_fake_nvml(monkeypatch, nvml_with_clocks(gpus))
        monkeypatch.setattr(nvml, "_cuda_attributes", lambda: calls.append(1) or {})
        calls.clear()
        probe_pkg.read_raw(catalog=make_catalog())
        assert len(calls) == asked
    probe_pkg.read_raw()  # no catalog (planner probe --save): always asked, so a saved snapshot is complete
    assert len(calls) == 2
