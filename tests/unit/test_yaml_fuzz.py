"""Fuzz every YAML reader (deployment specs, catalogs, profiles, calibration records): arbitrary, truncated or
mutated input -- unbounded numbers, 4301+ digit integers, anchors and aliases (recursive ones and alias bombs),
deep nesting -- gives a result or a PlannerError whose every line names the file; never another exception or a hang."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from fuzz_values import YAML_VALUES, alias_bombs, all_paths, deep_yaml, set_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.measure.calibration import parse_calibration
from planner.errors import PlannerError
from planner.fitcheck.spec import parse_spec
from planner.hardware.catalog import validate_catalog_dir
from planner.models.profiles import parse_profile_files
from planner.paths import data_dir
from planner.yamlio import load_yaml_dir, parse_yaml

HW_TEXT = (data_dir("hwdb") / "nvidia-hopper.yaml").read_text()
PROFILE_TEXT = (data_dir("profiles") / "llama.yaml").read_text()
ALIASED_PROFILE_TEXT = (data_dir("profiles") / "deepseek.yaml").read_text()  # uses anchors and aliases
SPEC_TEXT = (Path(__file__).resolve().parents[1] / "fixtures" / "deploy" / "pass.yaml").read_text()
CALIBRATION_TEXT = """schema_version: 1
device_id: rtx-4090
records:
  - device_id: rtx-4090
    backend: cuda
    engine: llamacpp
    kernel_backend: numpy
    kernel: numpy-int8
    kernel_class: q8
    bandwidth_fraction: 0.8
    compute_fraction: 0.5
    layer_overhead_us: 10
    copy_bandwidth_gb_s: 900
    peak_bandwidth_gb_s: 1008
    peak_flops: 1.6e14
    measured_at: 2025-06-01T12:00:00Z
    planner_version: 0.1.0
    source: planner bench
"""
# A hang or a blow-up (alias expansion, quadratic work on a long value) fails the example instead of stalling CI.
SETTINGS = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                            HealthCheck.too_slow])
MAX_LINE = 1000  # a message line quotes a bounded prefix of a value, never the value whole


def _assert_names_file(exc: PlannerError, name: str) -> None:
    text = str(exc)
    assert text and "Traceback" not in text
    for line in text.splitlines():
        assert line.startswith(name), text[:2000]
        assert len(line) <= MAX_LINE, line[:2000]


def _in_dir(text: str, check: Callable[[Path], Any]) -> None:
    """Write `text` as the only YAML file of a fresh directory and run `check` on the directory."""
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "fuzz.yaml"
        f.write_text(text, encoding="utf-8")
        try:
            check(Path(d))
        except PlannerError as exc:  # CatalogError and InvalidInputError are subclasses
            _assert_names_file(exc, str(f))


def _check_catalog(text: str) -> None:
    _in_dir(text, validate_catalog_dir)


def _check_profiles(text: str) -> None:
    _in_dir(text, lambda d: parse_profile_files(load_yaml_dir(d)))


def _check_spec(text: str) -> None:
    try:
        parse_spec(text, "fuzz-spec.yaml")
    except PlannerError as exc:
        _assert_names_file(exc, "fuzz-spec.yaml")


def _check_calibration(text: str) -> None:
    try:
        parse_calibration(parse_yaml(text, "fuzz-cal.yaml"), "fuzz-cal.yaml")
    except PlannerError as exc:
        _assert_names_file(exc, "fuzz-cal.yaml")


CHECKS = {"catalog": (_check_catalog, HW_TEXT), "profiles": (_check_profiles, PROFILE_TEXT),
          "aliased-profiles": (_check_profiles, ALIASED_PROFILE_TEXT), "spec": (_check_spec, SPEC_TEXT),
          "calibration": (_check_calibration, CALIBRATION_TEXT)}
KINDS = st.sampled_from(sorted(CHECKS))


def test_seed_documents_are_valid() -> None:
    """Each fuzzed base document is valid as it stands (so a mutation is what any error is about)."""
    with tempfile.TemporaryDirectory() as d:
        for kind, (_, text) in CHECKS.items():
            f = Path(d) / f"{kind}.yaml"
            f.write_text(text, encoding="utf-8")
    parse_spec(SPEC_TEXT, "s.yaml")
    parse_calibration(parse_yaml(CALIBRATION_TEXT, "c.yaml"), "c.yaml")
    parse_profile_files([(Path("p.yaml"), parse_yaml(ALIASED_PROFILE_TEXT, "p.yaml"))])
    _check_catalog(HW_TEXT)


@SETTINGS
@given(KINDS, st.text(st.characters(blacklist_categories=("Cs",)), max_size=400))
def test_arbitrary_text(kind: str, text: str) -> None:
    CHECKS[kind][0](text)


@SETTINGS
@given(KINDS, st.data())
def test_truncated(kind: str, data: st.DataObject) -> None:
    check, text = CHECKS[kind]
    check(text[: data.draw(st.integers(0, len(text)))])


@SETTINGS
@given(KINDS, st.data())
def test_one_character_changed(kind: str, data: st.DataObject) -> None:
    check, text = CHECKS[kind]
    i = data.draw(st.integers(0, len(text) - 1))
    check(text[:i] + data.draw(st.characters(blacklist_categories=("Cs",))) + text[i + 1:])


_SENTINEL = "__fuzz_value__"


@settings(SETTINGS, max_examples=200)
@given(KINDS, st.data())
def test_one_value_replaced(kind: str, data: st.DataObject) -> None:
    """A node of a valid document replaced by YAML text: unbounded or 4301+ digit numbers, nan/inf, long strings,
    anchors and aliases (recursive ones too), alias bombs, or nesting thousands deep."""
    check, text = CHECKS[kind]
    doc = yaml.safe_load(text)
    path = data.draw(st.sampled_from(all_paths(doc)))
    doc = set_path(doc, path, _SENTINEL)
    dumped = yaml.safe_dump(doc, sort_keys=False, width=1 << 30, allow_unicode=True)
    check(dumped.replace(_SENTINEL, data.draw(YAML_VALUES), 1))


@SETTINGS
@given(KINDS, st.one_of(alias_bombs(), deep_yaml()))
def test_whole_document_is_a_bomb_or_deeply_nested(kind: str, value: str) -> None:
    CHECKS[kind][0](value)


@SETTINGS
@given(KINDS, alias_bombs())
def test_alias_bomb_beside_a_valid_document(kind: str, bomb: str) -> None:
    """A valid document with one more top-level key holding an alias bomb: refused while loading, before any walk."""
    check, text = CHECKS[kind]
    check(text.rstrip("\n") + f"\nzz_extra: {bomb}\n")
