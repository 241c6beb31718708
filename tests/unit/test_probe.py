"""The hardware probe's interpretation: captured snapshots interpreted against a test catalog, visibility, failures and
memory edge cases, snapshot validation, and fuzzing (anything in gives a Host or an InvalidInputError)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from fuzz_values import all_paths
from probe_fixtures import SNAPSHOTS, SRC, make_catalog, snap, warned

from planner.errors import InvalidInputError
from planner.hardware.catalog import Catalog, parse_catalog_files
from planner.hardware.probe import (GIB, MIB, PLACEHOLDER_MEM_BANDWIDTH_GB_S, Host, interpret, load_snapshot, parse_snapshot,
                                    validate_snapshot)


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return make_catalog()


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


def _gpu(**fields: Any) -> dict:
    return {"snapshot_version": 1, "sources": {}, "nvidia": {"gpus": [{"index": 0, **fields}]}}


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (_gpu(memory_total_bytes=True), "memory_total_bytes: expected an integer"),  # a bool is not an int
        (_gpu(memory_total_bytes=24.0 * 2**30), "memory_total_bytes: expected an integer"),  # nor is a float
        (_gpu(power_limit_w=float("inf")), "power_limit_w: expected a finite number"),
        (_gpu(power_limit_w=True), "power_limit_w: expected a number"),
        (_gpu(pci_device_id="2684\n"), "pci_device_id: expected the form"),  # matched whole, newline included
        (_gpu(name="x" * 257), "name: longer than 256 characters"),
        (_gpu(mig_devices=None), "mig_devices: must not be null"),
        (_gpu(mig_devices=[{"name": "MIG 1g.10gb"}]), "mig_devices[0].index: missing"),
        (_gpu(errors={"memory": 3}), "errors.memory: expected a string"),
        ({"snapshot_version": 1, "sources": {"nvml": {"ok": "yes"}}}, "sources.nvml.ok: expected true or false"),
        ({"snapshot_version": 1, "sources": {}, "cpu": {"flags": ["avx2"] * 4097}}, "cpu.flags: more than 4096 items"),
        ({"snapshot_version": 1, "sources": {}, "memory": [1]}, "memory: expected an object"),
        ({"snapshot_version": 1, "sources": {}, "env": {"CUDA_VISIBLE_DEVICES": 0}}, "env.CUDA_VISIBLE_DEVICES"),
        ({"snapshot_version": True, "sources": {}}, "snapshot_version: expected an integer"),
        ({"snapshot_version": 1, "sources": {}, "memory": {"total_bytes": -1, "available_bytes": -2}},
         "memory.total_bytes: must be >= 0, got -1 (and 1 more problem(s))"),
    ],
)
def test_snapshot_types_are_strict(data, fragment):
    """The snapshot validator's rules: strict types, finite floats, whole-string patterns, lengths, nulls, required
    fields; the first problem named with its path, and the count of the others."""
    with pytest.raises(InvalidInputError) as err:
        validate_snapshot(data, "snap.json")
    assert str(err.value).startswith("snap.json: ") and fragment in str(err.value), str(err.value)


def test_snapshot_defaults_and_accepted_forms():
    """What the validator fills in and lets through: defaults for missing fields, an int where a float is asked,
    nulls where allowed, unknown keys ignored (a newer planner's additions)."""
    s = validate_snapshot({"snapshot_version": 1, "sources": {"cpu": {"ok": True, "elapsed_ms": 3}},
                           "nvidia": {"gpus": [{"index": 0, "power_limit_w": 450, "uuid": None, "new_key": [1]}]},
                           "env": {"CUDA_VISIBLE_DEVICES": None}, "future_section": {"x": 1}})
    gpu = s.nvidia.gpus[0]
    assert gpu.power_limit_w == 450 and gpu.uuid is None and gpu.mig_devices == [] and gpu.errors == {}
    assert not hasattr(gpu, "new_key") and not hasattr(s, "future_section")
    assert s.sources["cpu"].absent is False and s.sources["cpu"].elapsed_ms == 3 and s.cpu is None
    assert s.env == {"CUDA_VISIBLE_DEVICES": None}
    with pytest.raises(AttributeError):
        gpu.index = 1  # validated records are read-only


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


def test_host_json_is_plain_json_with_every_field(cat):
    """`planner probe --json` prints Host.model_dump(mode='json'): every field, the derived interconnect, each device's
    full spec, and each source's status with the snapshot's defaults filled in."""
    import dataclasses

    statuses = 0
    for path in sorted(SNAPSHOTS.glob("*.json")):
        if path.name in ("malformed.json", "truncated.json"):
            continue
        raw = snap(path.name)
        host = interpret(raw, cat)
        doc = host.model_dump(mode="json")
        assert json.loads(json.dumps(doc)) == doc  # plain JSON types all the way down
        assert set(doc) == {f.name for f in dataclasses.fields(Host)} | {"interconnect"}
        assert doc["interconnect"] == host.interconnect
        assert [d["spec"] for d in doc["gpus"]] == [json.loads(json.dumps(g.spec.model_dump(mode="json"))) for g in host.gpus]
        assert [d["memory_usable_bytes"] for d in doc["gpus"]] == [g.memory_usable_bytes for g in host.gpus]
        for name, status in raw["sources"].items():
            want = {"absent": False, "reason": None, "elapsed_ms": None, **{k: status[k] for k in status
                                                                            if k in ("ok", "absent", "reason", "elapsed_ms")}}
            assert doc["sources"][name] == want
            statuses += 1
    assert statuses > 10


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
_FUZZ_CATALOG = make_catalog()


def _outcome(data: Any) -> None:
    """interpret() must give a Host or an InvalidInputError, nothing else."""
    try:
        host = interpret(data, _FUZZ_CATALOG)
    except InvalidInputError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert isinstance(host, Host)
    json.dumps(host.model_dump(mode="json"))


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
        paths = [p for p in all_paths(doc) if p]
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
