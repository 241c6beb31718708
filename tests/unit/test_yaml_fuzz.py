"""Fuzz the YAML catalog and profile parsers: arbitrary or truncated input gives a clear error, never a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.errors import InvalidInputError
from planner.hardware.catalog import validate_catalog_dir
from planner.models.profiles import parse_profile_files
from planner.paths import data_dir
from planner.yamlio import load_yaml_dir

HW_TEXT = (data_dir("hwdb") / "nvidia-hopper.yaml").read_text()
PROFILE_TEXT = (data_dir("profiles") / "llama.yaml").read_text()
SETTINGS = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check_catalog(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "fuzz.yaml"
        f.write_text(text, encoding="utf-8")
        try:
            validate_catalog_dir(Path(d))
        except InvalidInputError as exc:  # CatalogError is a subclass
            assert str(exc).startswith(str(f)), str(exc)


def _check_profiles(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "fuzz.yaml"
        f.write_text(text, encoding="utf-8")
        try:
            parse_profile_files(load_yaml_dir(Path(d)))
        except InvalidInputError as exc:
            assert str(exc).startswith(str(f)), str(exc)


@SETTINGS
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=400))
def test_arbitrary_text_as_catalog(text):
    _check_catalog(text)


@SETTINGS
@given(st.integers(min_value=0, max_value=len(HW_TEXT)))
def test_truncated_catalog(n):
    _check_catalog(HW_TEXT[:n])


@SETTINGS
@given(st.integers(min_value=0, max_value=len(HW_TEXT) - 1), st.characters(blacklist_categories=("Cs",)))
def test_mutated_catalog(i, ch):
    _check_catalog(HW_TEXT[:i] + ch + HW_TEXT[i + 1:])


@SETTINGS
@given(st.integers(min_value=0, max_value=len(PROFILE_TEXT)))
def test_truncated_profiles(n):
    _check_profiles(PROFILE_TEXT[:n])


@SETTINGS
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=400))
def test_arbitrary_text_as_profiles(text):
    _check_profiles(text)
