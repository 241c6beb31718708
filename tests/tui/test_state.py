"""The TUI's pure helpers: search, sort, steps, fit rows and matrix cells (no Textual)."""

from __future__ import annotations

from planner.cost.evaluate import evaluate
from planner.cost.model import ModelCost
from planner.formats import FORMATS
from planner.plan import target_from_catalog
from planner.recommend import recommend
from planner.runtimes import RUNTIMES
from planner.tui import state
from planner.tui.state import CostCache, FitInputs


def test_device_search_tokens_and_memory_filter(catalog):
    rows = state.device_rows(catalog, "rtx 4090")
    assert "rtx-4090" in [d.id for d in rows]
    assert all("4090" in state.device_haystack(d) for d in rows)
    big = state.device_rows(catalog, "nvidia >=80")
    assert big and all(d.vendor == "nvidia" and d.memory_gib >= 80 for d in big)
    assert state.device_rows(catalog, "no-such-device-xyz") == []


def test_device_sort_orders(catalog):
    by_bw = state.device_rows(catalog, "", "bandwidth")
    assert [d.mem_bandwidth_gb_s for d in by_bw] == sorted((d.mem_bandwidth_gb_s for d in by_bw), reverse=True)
    by_name = state.device_rows(catalog, "", "name")
    assert [d.name.lower() for d in by_name] == sorted(d.name.lower() for d in by_name)
    asc = state.device_rows(catalog, "", "memory", reverse=False)
    assert asc[0].memory_gib == min(d.memory_gib for d in catalog)


def test_model_rows_search_and_counts(registry):
    rows = [state.model_row(m) for m in registry]
    moe = state.model_rows(rows, "moe")
    assert moe and all(r.spec.moe is not None for r in moe)
    assert all(r.active_params < r.params for r in moe)
    llama = state.model_rows(rows, "llama 70b")
    assert llama and all("70b" in (r.spec.id + r.spec.name).lower() for r in llama)


def test_power_of_two_steps():
    step = state.step_power_of_two
    assert step(8192, True, 256, 131072) == 16384
    assert step(8192, False, 256, 131072) == 4096
    assert step(5000, True, 256, 131072) == 8192
    assert step(5000, False, 256, 131072) == 4096
    assert step(100000, True, 256, 131072) == 131072  # the model maximum is a stop
    assert step(131072, True, 256, 131072) == 131072
    assert step(256, False, 256, 131072) == 256


def test_compute_recommendation_is_recommend(catalog, registry):
    inputs = FitInputs("llama-3.1-8b", "rtx-4090", context=16384)
    rec = state.compute_recommendation(inputs, CostCache(registry), catalog)
    direct = recommend(ModelCost(registry.get("llama-3.1-8b")), target_from_catalog(catalog.get("rtx-4090")), context=16384)
    assert rec.best is not None and rec.best.format_id == direct.best.format_id
    assert rec.best.runtime_id == direct.best.runtime_id
    assert [p.format_id for p in state.best_per_format(rec.plans)][0] == rec.best.format_id


def test_format_filter_narrows_to_family(catalog, registry):
    inputs = FitInputs("llama-3.1-8b", "rtx-4090", format_family="gguf", runtime_id="llama.cpp")
    rec = state.compute_recommendation(inputs, CostCache(registry), catalog)
    assert rec.best is not None and FORMATS[rec.best.format_id].family == "gguf"
    assert {p.runtime_id for p in rec.plans} == {"llama.cpp"}


def test_verdict_words(catalog, registry):
    mc = ModelCost(registry.get("llama-3.1-8b"))
    fits = evaluate(mc, FORMATS["Q4_K_M"], RUNTIMES["llama.cpp"], target_from_catalog(catalog.get("rtx-4090")), context=8192)
    assert state.verdict(fits) == ("fits", "green")
    big = ModelCost(registry.get("llama-3.1-70b"))
    over = evaluate(big, FORMATS["BF16"], RUNTIMES["vllm"], target_from_catalog(catalog.get("rtx-4090")), context=8192)
    text, style = state.verdict(over)
    assert style == "red" and text == over.reason


def test_matrix_cell_best_ladder_and_fixed_format(catalog, registry):
    mc = ModelCost(registry.get("llama-3.1-8b"))
    t = target_from_catalog(catalog.get("rtx-4090"))
    best = state.matrix_cell(mc, t, state.BEST, 8192)
    assert best.plan is not None and best.plan.fits and best.plan.format_id in state.BEST_LADDER
    assert best.text.startswith(best.plan.format_id) and best.style in ("green", "yellow")
    # The ladder stops at the highest-quality rung that fits: every rung above it does not fit.
    q4 = state.matrix_cell(mc, t, "Q4_K_M", 8192)
    assert q4.plan.format_id == "Q4_K_M" and q4.plan.fits
    big = state.matrix_cell(ModelCost(registry.get("llama-3.1-405b")), target_from_catalog(catalog.get("rtx-3060-12gb")),
                            state.BEST, 8192)
    assert big.style == "red" and big.text.startswith("✗")


def test_matrix_axes_are_bounded(catalog, registry):
    models, devices = state.matrix_axes(catalog, registry)
    assert 1 <= len(models) <= state.MATRIX_SIZE[0] and 1 <= len(devices) <= state.MATRIX_SIZE[1]
    assert all(m in registry.models for m in models) and all(d in catalog.devices for d in devices)
