"""The hardware catalog: schema rules, the real hwdb files, lookups, errors, the committed JSON schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

import planner
from planner.errors import AmbiguousError, CatalogError, NotFoundError
from planner.hardware.catalog import DeviceSpec, load_catalog, parse_memory, validate_catalog_dir
from planner.paths import data_dir

BASE = {
    "id": "x-gpu", "name": "X GPU", "vendor": "nvidia", "backend": "cuda", "architecture": "ampere",
    "compute_capability": "8.6", "memory_gib": 24, "memory_type": "GDDR6X", "memory_kind": "dedicated",
    "mem_bandwidth_gb_s": 936, "launch_year": 2020, "source": "https://example.invalid/datasheet",
}


def test_real_catalog_loads_with_required_coverage(catalog):
    base = [d for d in catalog if not d.id.endswith("gb") or d.memory_options_gib or d.aliases]
    assert len(catalog) >= 90
    for needed in ("h100-sxm", "rtx-4090", "rtx-3090", "a100-80gb-sxm", "mi300x", "dgx-spark", "t4", "l40s", "rtx-5090"):
        assert catalog.get(needed).id == needed
    assert {d.vendor for d in catalog} >= {"nvidia", "amd", "apple", "intel"}
    assert any(d.backend == "cpu" for d in catalog), "CPU targets are needed for CPU planning"
    assert len(base) >= 90


def test_every_device_has_a_source_and_consistent_units(catalog):
    for d in catalog:
        assert d.source.strip(), d.id
        # 1 GB/s to 20 TB/s; a factor-1000 slip cannot load (schema bound) and unified devices carry their GPU share.
        assert 1 <= d.mem_bandwidth_gb_s <= 20000
        if d.memory_kind == "unified":
            assert 0 < d.gpu_usable_fraction <= 1


def test_apple_memory_configurations_resolve(catalog):
    d = catalog.get("m3-max-128gb")
    assert d.memory_gib == 128 and d.vendor == "apple" and d.memory_kind == "unified"


@pytest.mark.parametrize("typed,expected", [("RTX 4090", "rtx-4090"), ("rtx-4090", "rtx-4090"),
                                            ("NVIDIA GeForce RTX 4090", "rtx-4090"), ("nvidia h100 80gb hbm3", "h100-sxm")])
def test_lookup_is_case_and_punctuation_insensitive(catalog, typed, expected):
    assert catalog.get(typed).id == expected


def test_miss_lists_close_candidates(catalog):
    with pytest.raises(NotFoundError) as e:
        catalog.get("rtx-4900")
    assert "rtx-4090" in e.value.candidates


def test_ambiguous_alias_is_an_error():
    from planner.hardware.catalog import Catalog

    a = DeviceSpec(**BASE)
    b = DeviceSpec(**{**BASE, "id": "y-gpu", "name": "Y GPU", "aliases": ["shared"]})
    c = DeviceSpec(**{**BASE, "id": "z-gpu", "name": "Z GPU", "aliases": ["shared"]})
    with pytest.raises(AmbiguousError):
        Catalog([a, b, c]).get("shared")


@pytest.mark.parametrize("change,message", [
    ({"peak_fp8_tflops": 100}, "no FP8"),
    ({"peak_bf16_tflops": 100, "compute_capability": "7.0"}, "no BF16"),
    ({"memory_kind": "unified"}, "gpu_usable_fraction"),
    ({"compute_capability": None}, "compute_capability"),
    ({"mem_bandwidth_gb_s": 936000}, "less than or equal"),
    ({"unverified": ["bogus_field"]}, "unknown field"),
    ({"colour": "green"}, "Extra inputs"),
])
def test_schema_rejects_inconsistent_entries(change, message):
    with pytest.raises(ValidationError) as e:
        DeviceSpec(**{**BASE, **change})
    assert message in str(e.value)


def test_broken_catalog_reports_every_problem_with_file_and_path(tmp_path):
    bad = {"family": "broken", "devices": [BASE, {**BASE, "id": "b", "mem_bandwidth_gb_s": -1},
                                           {**BASE, "id": "c", "memory_gib": "lots", "extra": 1}]}
    f = tmp_path / "broken.yaml"
    f.write_text(yaml.safe_dump(bad))
    with pytest.raises(CatalogError) as e:
        validate_catalog_dir(tmp_path)
    problems = e.value.problems
    assert any(p.startswith(f"{f}: devices[1].mem_bandwidth_gb_s:") for p in problems)
    assert any("devices[2].memory_gib" in p for p in problems)
    assert any("devices[2].extra: unknown field" in p for p in problems)


def test_user_catalog_merges_over_builtin(tmp_path, catalog):
    f = tmp_path / "mine.yaml"
    f.write_text(yaml.safe_dump({"family": "mine", "devices": [{**BASE, "id": "my-box", "name": "My Box"}]}))
    merged = load_catalog([tmp_path])
    assert merged.get("my-box").name == "My Box"
    assert len(merged) == len(catalog) + 1


def test_committed_schema_is_not_stale():
    from planner.schemas import render, schemas

    root = Path(__file__).resolve().parents[2]
    for rel, schema in schemas().items():
        committed = root / rel
        if not committed.exists():
            pytest.skip("not running from a source checkout")
        assert committed.read_text() == render(schema), f"{rel} is stale: run python -m planner.schemas"
        json.loads(committed.read_text())


def test_installed_package_finds_its_data_inside_the_package():
    pkg = Path(planner.__file__).resolve().parent
    if not (pkg / "_data").is_dir():
        pytest.skip("planner is imported from a source checkout (editable); CI runs this against a wheel install")
    assert data_dir("hwdb") == pkg / "_data" / "hwdb"
    assert data_dir("profiles") == pkg / "_data" / "profiles"
    assert any(data_dir("hwdb").glob("*.yaml"))


def test_parse_memory_units():
    assert parse_memory("24GiB") == 24
    assert parse_memory("512MiB") == 0.5
    with pytest.raises(ValueError):
        parse_memory("twenty")
