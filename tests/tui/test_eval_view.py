"""Stored `planner eval` results in the fit view: the real recommend() ranks by the measured KL divergence, the
quality column marks measured values, the summary and detail say on what text."""

from __future__ import annotations

from textual.widgets import DataTable, Static

from planner.measure.quality.core import EvalReport, FormatResult
from planner.measure.reports import model_key, text_sha256
from planner.tui.app import create_app
from planner.tui.state import CostCache, FitInputs, compute_recommendation
from .helpers import SIZE, run, settle

MODEL = "smollm2-135m"


def report(spec, kld: dict[str, float]) -> dict:
    """A report as stored.load_reports() returns it, measured on a text called my-chats.txt."""
    rep = EvalReport("/models/SmolLM2-135M", "my-chats.txt", 128, 4, 252, created="2025-01-01T00:00:00Z",
                     text_sha256=text_sha256("my chats"), model={"id": spec.id, "name": spec.name, "key": model_key(spec)})
    rep.results.append(FormatResult("F16", "f", 1, 16.0, 252, 10.0, 0.1, 0, 0, 0, 1.0, reference=True))
    for fmt, k in kld.items():
        rep.results.append(FormatResult(fmt, "f", 1, 5.0, 252, 10.0 * (1 + k), 0.1, k, 4 * k, k, 0.9))
    d = rep.as_dict()
    d["path"] = "/data/eval/SmolLM2-135M-2025-01-01T000000Z.json"
    return d


def test_compute_recommendation_ranks_by_stored_measurements(catalog, registry):
    inputs = FitInputs(MODEL, "rtx-4090", context=4096, format_family="gguf")
    costs = CostCache(registry)
    plain = compute_recommendation(inputs, costs, catalog)
    first = plain.best.format_id
    assert plain.best.quality["source"] == "estimated"
    # Measured on this model and text, the table's choice loses a lot: it must drop out of first place.
    kld = {first: 0.5, "Q2_K": 0.0001}
    rec = compute_recommendation(inputs, costs, catalog, eval_reports=[report(registry.get(MODEL), kld)])
    assert rec.best.format_id != first
    q = {p.format_id: p.quality for p in rec.plans}
    assert q[first]["source"] == "measured" and q[first]["kld"] == 0.5 and q["Q2_K"]["kld"] == 0.0001
    # another model's reports change nothing
    other = compute_recommendation(inputs, costs, catalog, eval_reports=[report(registry.get("smollm2-360m"), kld)])
    assert other.best.format_id == first


def test_fit_view_shows_measured_quality(catalog, registry):
    stored = [report(registry.get(MODEL), {"Q8_0": 0.0113, "Q4_K_M": 0.0456})]

    async def body() -> None:
        app = create_app(catalog, registry, model=MODEL, device="rtx-4090", eval_reports=stored)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            await settle(app, pilot)
            pane = app.screen.query_one("FitPane")
            table = app.screen.query_one("#fit-table", DataTable)
            cells = {p.format_id: str(table.get_row_at(i)[8]) for i, p in enumerate(pane.plans)}
            assert cells["Q8_0"] == "0.0113 negligible (measured)"
            assert cells["Q4_K_M"] == "0.0456 noticeable (measured)"
            assert "(measured)" not in cells["Q6_K"]  # no measurement: the table's estimate, unmarked
            summary = str(app.screen.query_one("#fit-summary", Static).render())
            assert "quality of Q4_K_M, Q8_0 measured by planner eval on my-chats.txt" in summary
            # the detail pane of a measured row says so
            row = next(i for i, p in enumerate(pane.plans) if p.format_id == "Q8_0")
            table.move_cursor(row=row)
            await pilot.pause()
            body_text = str(app.screen.query_one("#detail-body", Static).render())
            assert "KLD 0.0113" in body_text and "measured by planner eval on my-chats.txt" in body_text

    run(body())


def test_fit_view_without_reports_is_unchanged(catalog, registry):
    async def body() -> None:
        app = create_app(catalog, registry, model=MODEL, device="rtx-4090")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            await settle(app, pilot)
            assert app.eval_reports == []
            assert all(p.quality.get("source") != "measured" for p in app.current_recommendation.plans if p.quality)
            assert "measured" not in str(app.screen.query_one("#fit-summary", Static).render())

    run(body())
