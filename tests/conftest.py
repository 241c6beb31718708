"""Shared fixtures: an isolated cache directory so tests never read or write the user's cache."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "planner-cache"))
    monkeypatch.setenv("PLANNER_DATA_DIR", str(tmp_path_factory.getbasetemp() / "planner-data"))


@pytest.fixture(scope="session")
def catalog():
    from planner.hardware.catalog import load_catalog

    return load_catalog()


@pytest.fixture(scope="session")
def registry():
    from planner.models.profiles import load_registry

    return load_registry()
