"""This machine's measured read bandwidth: the timing itself (tiny buffer), the per-machine cache, the LLC reader, and
how a measurement caps CPU plans (measurements injected: no test depends on this machine's speed)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.cli import main
from planner.hardware import membw
from planner.hardware.membw import ReadBandwidth
from planner.hardware.membw import measure_read_bandwidth as real_measure  # before conftest patches the module
from planner.hardware.probe import interpret
from probe_fixtures import snap


def fixed(gb_s: float, calls: list | None = None):  # type: ignore[no-untyped-def]
    """A measurer that returns `gb_s` and records its calls."""
    def measure(threads: int, buffer_bytes: int, key: str = "") -> ReadBandwidth:
        if calls is not None:
            calls.append((threads, buffer_bytes, key))
        return ReadBandwidth(gb_s, threads, buffer_bytes, 3, "2026-02-03T04:05:06Z", key)
    return measure


def test_real_measurement_on_a_small_buffer_reads_every_byte_and_reports_a_rate():
    m = real_measure(2, 4 * 2**20, "k")
    assert m.buffer_bytes == 4 * 2**20 and m.threads == 2 and m.key == "k"
    assert membw.MIN_PASSES <= m.passes <= membw.MAX_PASSES
    assert math.isfinite(m.read_gb_s) and m.read_gb_s > 0


def test_measured_once_then_cached_per_machine(monkeypatch, tmp_path):
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path))  # its own cache: other tests plan for this machine too
    calls: list = []
    monkeypatch.setattr(membw, "measure_read_bandwidth", fixed(12.5, calls))
    first, now = membw.local_bandwidth("Test CPU", 4, 8, 16 * 2**30, 8 * 2**30)
    assert now and first.read_gb_s == 12.5 and len(calls) == 1
    assert calls[0][0] == 4  # one thread per physical core (llama.cpp's default)
    again, now = membw.local_bandwidth("Test CPU", 4, 8, 16 * 2**30, 8 * 2**30)
    assert not now and again == first and len(calls) == 1
    # another machine (more RAM) is measured on its own; the first entry stays
    membw.local_bandwidth("Test CPU", 4, 8, 64 * 2**30, 8 * 2**30)
    assert len(calls) == 2
    doc = json.loads(membw.cache_path().read_text())
    assert len(doc["machines"]) == 2 and doc["version"] == membw.CACHE_VERSION
    # refresh measures again and replaces the entry
    monkeypatch.setattr(membw, "measure_read_bandwidth", fixed(30.0, calls))
    fresh, now = membw.local_bandwidth("Test CPU", 4, 8, 16 * 2**30, refresh=True)
    assert now and fresh.read_gb_s == 30.0
    assert membw.cached(membw.machine_key("Test CPU", 4, 16 * 2**30)).read_gb_s == 30.0
    assert not [p for p in membw.cache_path().parent.iterdir() if p.name.endswith(".partial")]


@pytest.mark.parametrize("text", ["", "{not json", "[]", '{"version": 99, "machines": {}}',
                                  '{"version": 1, "machines": {"Test CPU|4 cores|16 GiB": {"read_gb_s": -1}}}'])
def test_a_damaged_cache_is_measured_again_and_replaced(monkeypatch, text):
    path = membw.cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    calls: list = []
    monkeypatch.setattr(membw, "measure_read_bandwidth", fixed(9.0, calls))
    m, now = membw.local_bandwidth("Test CPU", 4, 4, 16 * 2**30)
    assert now and m.read_gb_s == 9.0 and calls
    assert json.loads(path.read_text())["machines"]["Test CPU|4 cores|16 GiB"]["read_gb_s"] == 9.0


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                    max_leaves=20))
def test_fuzz_cache_reader_never_raises(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("membw") / "membw.json"
    path.write_text(json.dumps({"version": 1, "machines": {"k": doc}}))
    for raw in membw._read_cache(path).values():
        got = membw._entry(raw)
        assert got is None or (0 < got.read_gb_s <= 20000 and got.threads >= 1)


def test_llc_is_the_highest_data_cache_level_times_its_instances(tmp_path):
    for cpu, l3_shared in ((0, "0-1"), (1, "0-1"), (2, "2-3"), (3, "2-3")):
        for idx, (level, typ, size, shared) in enumerate(((1, "Data", "32K", str(cpu)), (1, "Instruction", "32K", str(cpu)),
                                                          (2, "Unified", "1024K", str(cpu)), (3, "Unified", "32768K", l3_shared))):
            d = tmp_path / f"cpu{cpu}" / "cache" / f"index{idx}"
            d.mkdir(parents=True)
            for name, value in (("level", level), ("type", typ), ("size", size), ("shared_cpu_list", shared)):
                (d / name).write_text(f"{value}\n")
    assert membw.llc_bytes(tmp_path) == 2 * 32 * 2**20
    assert membw.llc_bytes(tmp_path / "missing") == membw.DEFAULT_LLC_BYTES


def test_buffer_is_larger_than_the_cache_within_bounds():
    assert membw.buffer_size(32 * 2**20, None) == 128 * 2**20
    assert membw.buffer_size(1 * 2**20, None) == membw.MIN_BUFFER_BYTES
    assert membw.buffer_size(2**30, None) == membw.MAX_BUFFER_BYTES
    assert membw.buffer_size(32 * 2**20, 256 * 2**20) == 32 * 2**20  # an eighth of what is free


def test_llama_threads_follow_physical_cores_within_affinity():
    assert membw.llama_threads(8, 16) == 8
    assert membw.llama_threads(8, 2) == 2
    assert membw.llama_threads(None, 6) == 6


def _cpu_decode(capsys, monkeypatch, gb_s: float | None, *extra: str) -> tuple[float, dict]:
    """recommend on the captured CPU-only laptop as if it were this machine, with `gb_s` measured (None: no measure)."""
    from planner.hardware import probe

    monkeypatch.setattr(probe, "read_raw", lambda timeout_s=None, catalog=None: snap("cpu-only-laptop.json"))
    if gb_s is not None:
        monkeypatch.setattr(membw, "measure_read_bandwidth", fixed(gb_s))
    membw.cache_path().unlink(missing_ok=True)
    code = main(["recommend", "--model", "llama-3.1-8b", "--format", "Q4_K_M", "--json", *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    return doc["recommended"]["decode_tokens_per_s"], doc


def test_measured_bandwidth_sets_cpu_decode_speed(capsys, monkeypatch):
    slow, doc = _cpu_decode(capsys, monkeypatch, 10.0)
    fast, _ = _cpu_decode(capsys, monkeypatch, 20.0)
    assert fast == pytest.approx(2 * slow, rel=0.05)  # decode is bandwidth-bound: twice the bandwidth, twice the speed
    assert any("measured: 10.0 GB/s read" in n for n in doc["target"]["notes"])
    # the bandwidth was measured, not llama.cpp: the speed keeps its constants' basis, not "measured here"
    assert doc["recommended"]["speed_basis"] != "measured here"
    assumed, doc = _cpu_decode(capsys, monkeypatch, None, "--no-measure")
    assert assumed > fast  # the assumed 89.6 GB/s peak is far above what was measured
    assert not any("measured:" in n for n in doc["target"]["notes"])


def test_no_measure_never_measures(capsys, monkeypatch):
    calls: list = []
    monkeypatch.setattr(membw, "measure_read_bandwidth", fixed(10.0, calls))
    _cpu_decode(capsys, monkeypatch, None, "--no-measure")
    assert calls == []


def test_a_snapshot_of_another_machine_is_not_measured(capsys, monkeypatch, tmp_path):
    calls: list = []
    monkeypatch.setattr(membw, "measure_read_bandwidth", fixed(10.0, calls))
    path = tmp_path / "laptop.json"
    path.write_text(json.dumps(snap("cpu-only-laptop.json")))
    assert main(["recommend", "--model", "llama-3.1-8b", "--format", "Q4_K_M", "--snapshot", str(path)]) == 0
    assert calls == []


def test_a_machine_with_a_gpu_is_not_measured(capsys, monkeypatch):
    from planner.hardware.catalog import load_catalog

    host = interpret(snap("rtx4090-2x-pcie.json"), load_catalog())
    assert membw.for_host(host) is None


def test_probe_measure_refreshes_and_reports(capsys, monkeypatch):
    calls: list = []
    monkeypatch.setattr(membw, "measure_read_bandwidth", fixed(14.2, calls))
    assert main(["probe", "--measure"]) == 0
    assert "Memory read bandwidth: 14.2 GB/s read" in capsys.readouterr().out and len(calls) == 1
    assert main(["probe", "--json"]) == 0  # cached: shown, not measured again
    doc = json.loads(capsys.readouterr().out)
    assert doc["memory_read_bandwidth"]["read_gb_s"] == 14.2 and not doc["memory_read_bandwidth"]["measured_now"]
    assert len(calls) == 1
    assert main(["probe", "--measure", "--snapshot", "x.json"]) == 2
    assert "--measure" in capsys.readouterr().err


def test_estimate_for_this_cpu_says_the_bandwidth_was_measured(capsys, monkeypatch):
    from planner.hardware import probe

    monkeypatch.setattr(probe, "read_raw", lambda timeout_s=None, catalog=None: snap("cpu-only-laptop.json"))
    monkeypatch.setattr(membw, "measure_read_bandwidth", fixed(11.0))
    assert main(["estimate", "--model", "llama-3.1-8b", "--format", "Q4_K_M", "--local", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["memory_bandwidth_measured"].startswith("11.0 GB/s read")
    assert main(["estimate", "--model", "llama-3.1-8b", "--format", "Q4_K_M", "--local"]) == 0
    assert "memory bandwidth measured here: 11.0 GB/s read" in capsys.readouterr().out
    assert main(["estimate", "--model", "llama-3.1-8b", "--format", "Q4_K_M", "--local", "--no-measure", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["memory_bandwidth_measured"] is None
