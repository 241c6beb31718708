"""Shared fixtures: isolated caches so tests never read or write the user's, and no path to the real Hub."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "planner-cache"))
    monkeypatch.setenv("PLANNER_DATA_DIR", str(tmp_path_factory.getbasetemp() / "planner-data"))
    # Tests never touch the network: an empty HF cache, a dead loopback endpoint, and online mode off.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.getbasetemp() / "hf-hub-cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("PLANNER_ONLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture(scope="session")
def catalog():
    from planner.hardware.catalog import load_catalog

    return load_catalog()


@pytest.fixture(scope="session")
def registry():
    from planner.models.profiles import load_registry

    return load_registry()
