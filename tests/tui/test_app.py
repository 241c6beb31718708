"""Drive the real app with Pilot: search, pick, change context, filter, copy, probe; assert on the app's state and
check that what it recommends is what recommend() returns for the same inputs."""

from __future__ import annotations

import threading

from textual.widgets import DataTable, Input

from planner.cost.model import ModelCost
from planner.formats import FORMATS
from planner.plan import target_from_catalog
from planner.recommend import recommend
from planner.hardware.targets import target_from_host
from planner.tui.app import PlannerApp, create_app
from planner.tui.screens.help import HelpScreen
from planner.tui.state import LOCAL, filter_args
from .helpers import SIZE, fake_host, open_best_here, run, settle


def expected(app, registry, catalog, host=None):  # type: ignore[no-untyped-def]
    """recommend() called directly with the app's inputs, as `planner recommend` would."""
    i = app.inputs
    mc = ModelCost(registry.get(i.model_id))
    target = target_from_host(host) if i.device_id == LOCAL else target_from_catalog(catalog.get(i.device_id), i.count)
    fmts, rts = filter_args(i, mc.spec.native_dtype)
    return recommend(mc, target, context=i.context, concurrency=i.concurrency, formats=fmts, runtimes=rts, prefer=i.prefer)


def test_every_binding_has_an_id():
    ids = [b.id for b in PlannerApp.BINDINGS]
    assert all(ids) and len(set(ids)) == len(ids)


def test_starts_and_recommends_like_the_library(catalog, registry):
    async def body() -> None:
        app = create_app(catalog, registry)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            rec = app.current_recommendation
            assert app.inputs.model_id == "llama-3.1-8b" and app.inputs.device_id == "rtx-4090"
            assert rec is not None and rec.best is not None
            direct = expected(app, registry, catalog)
            assert (rec.best.format_id, rec.best.runtime_id) == (direct.best.format_id, direct.best.runtime_id)
            assert app.probe_status == "probe: off" and app.host is None

    run(body())


def test_search_a_device_pick_a_model_change_context(catalog, registry):
    async def body() -> None:
        app = create_app(catalog, registry)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            # Devices: / focuses the search, typing filters the table, Enter moves to it, Enter picks the row.
            await pilot.press("slash")
            assert isinstance(app.focused, Input) and app.focused.id == "device-search"
            await pilot.press(*"h100 sxm")
            table = app.screen.query_one("#device-table", DataTable)
            keys = [str(k.value) for k in table.rows]
            assert keys and "h100-sxm" in keys and all("h100" in k for k in keys)
            await pilot.press("enter")
            assert app.focused is table
            table.move_cursor(row=keys.index("h100-sxm"))
            await pilot.press("enter")
            assert app.inputs.device_id == "h100-sxm" and app.active_tab == "fit"
            # Models: search and pick with the keyboard.
            await pilot.press("2", "slash", *"qwen3 32b", "enter", "enter")
            assert app.inputs.model_id == "qwen3-32b" and app.active_tab == "fit"
            await settle(app, pilot)
            # Context: + doubles it, the fit follows.
            before = app.inputs.context
            await pilot.press("plus", "plus")
            await settle(app, pilot)
            assert app.inputs.context == before * 4
            rec = app.current_recommendation
            assert rec.context == before * 4 and rec.model_id == "qwen3-32b"
            assert rec.best.format_id == expected(app, registry, catalog).best.format_id
            # The fit table's first row is the recommendation, starred.
            fit_table = app.screen.query_one("#fit-table", DataTable)
            assert str(fit_table.get_row_at(0)[0]).startswith("★ " + rec.best.format_id)

    run(body())


def test_typed_context_and_concurrency_apply_live(catalog, registry):
    async def body() -> None:
        app = create_app(catalog, registry, model="llama-3.1-70b", device="rtx-4090", count=2)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            await settle(app, pilot)
            await pilot.press("c", *"32768")
            await settle(app, pilot)
            assert app.inputs.context == 32768 and app.current_recommendation.context == 32768
            await pilot.press("enter")  # back to the table
            await pilot.press("right_square_bracket", "right_square_bracket")
            await settle(app, pilot)
            assert app.inputs.concurrency == 4 and app.current_recommendation.concurrency == 4
            rec = app.current_recommendation
            assert rec.target_label.startswith("2x")
            direct = expected(app, registry, catalog)
            assert (rec.best is None) == (direct.best is None)
            if rec.best is not None:
                assert rec.best.format_id == direct.best.format_id

    run(body())


def test_context_stops_at_the_model_maximum(catalog, registry):
    async def body() -> None:
        app = create_app(catalog, registry, model="llama-2-7b", device="rtx-4090")
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            assert app.inputs.context == 4096  # min(8192, model max)
            await pilot.press("3", "plus")
            await settle(app, pilot)
            assert app.inputs.context == 4096

    run(body())


def test_filters_cycle_and_match_the_library(catalog, registry):
    async def body() -> None:
        app = create_app(catalog, registry)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            await settle(app, pilot)
            while app.inputs.format_family != "gguf":
                await pilot.press("t")
            while app.inputs.runtime_id != "llama.cpp":
                await pilot.press("r")
            await settle(app, pilot)
            rec = app.current_recommendation
            assert FORMATS[rec.best.format_id].family == "gguf" and rec.best.runtime_id == "llama.cpp"
            assert rec.best.format_id == expected(app, registry, catalog).best.format_id
            await pilot.press("p")  # balanced -> quality
            await settle(app, pilot)
            assert app.inputs.prefer == "quality"
            assert app.current_recommendation.best.format_id == expected(app, registry, catalog).best.format_id

    run(body())


def test_nothing_fits_shows_suggestions(catalog, registry):
    async def body() -> None:
        app = create_app(catalog, registry, model="llama-3.1-405b", device="rtx-3060-12gb")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            await settle(app, pilot)
            rec = app.current_recommendation
            assert rec.best is None and rec.suggestions
            body_text = str(app.screen.query_one("#detail-body").render())
            assert "Nothing fits" in body_text

    run(body())


def test_detail_follows_cursor_and_copy(catalog, registry):
    async def body() -> None:
        app = create_app(catalog, registry)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            await settle(app, pilot)
            fit = app.screen.query_one("#fit-pane")
            assert fit.highlighted_plan() is app.current_recommendation.best
            await pilot.press("y")
            assert app.last_copied == app.current_recommendation.best.launch
            await pilot.press("down")
            second = fit.highlighted_plan()
            assert second is not app.current_recommendation.best
            assert second.launch in str(app.screen.query_one("#launch").render())
            await pilot.click("#copy")
            assert app.last_copied == second.launch
            await pilot.press("a")  # every plan, not just the best runtime per format
            assert len(fit.plans) == len(app.current_recommendation.plans)

    run(body())


def test_probe_runs_in_a_worker_and_pins_this_machine(catalog, registry):
    release = threading.Event()
    calls: list[str] = []
    host = fake_host(catalog, "rtx-4090", count=2, free_gib=22.0)

    def slow_probe():  # type: ignore[no-untyped-def]
        calls.append(threading.current_thread().name)
        release.wait(60)  # far longer than the UI needs to start, even on a loaded 2-core CI machine
        return host

    async def body() -> None:
        app = create_app(catalog, registry, slow_probe)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(0.2)
            # The UI answers while the probe hangs (it is released only below): a placeholder is shown, the catalog
            # plan is computed. A probe run on the UI thread would have blocked until it returned the host.
            assert not release.is_set() and app.host is None and "scanning" in app.probe_status
            await pilot.press("2", "1")
            assert app.active_tab == "devices"
            release.set()
            await settle(app, pilot)
            assert app.host is host
            table = app.screen.query_one("#device-table", DataTable)
            assert str(table.coordinate_to_cell_key((0, 0)).row_key.value).startswith("local:")
            # No device was picked, so the plan moved to this machine (2 GPUs, free memory as probed).
            assert app.inputs.device_id == LOCAL
            rec = app.current_recommendation
            assert rec.target_label == target_from_host(host).label
            assert rec.best.format_id == expected(app, registry, catalog, host).best.format_id
        assert len(calls) == 1 and calls[0] != threading.main_thread().name

    run(body())


def test_a_chosen_device_is_kept_when_the_probe_answers(catalog, registry, host):
    async def body() -> None:
        app = create_app(catalog, registry, lambda: host, device="h100-sxm")
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            assert app.host is host and app.inputs.device_id == "h100-sxm"

    run(body())


def test_probe_failure_leaves_the_catalog_usable(catalog, registry):
    def broken():  # type: ignore[no-untyped-def]
        raise RuntimeError("NVML exploded")

    async def body() -> None:
        app = create_app(catalog, registry, broken)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            assert app.host is None and "failed" in app.probe_status
            assert app.current_recommendation.best is not None

    run(body())


def test_help_opens_and_closes(catalog, registry):
    async def body() -> None:
        app = create_app(catalog, registry)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("escape")
            assert not isinstance(app.screen, HelpScreen)

    run(body())


def test_sort_by_key_and_header_click(catalog, registry):
    async def body() -> None:
        app = create_app(catalog, registry)
        async with app.run_test(size=SIZE) as pilot:
            pane = app.screen.query_one("#devices-pane")
            assert pane.sort == "memory"
            await pilot.press("s")
            assert pane.sort != "memory"
            # Click the GB/s header (the mouse path), then click it again to reverse.
            table = app.screen.query_one("#device-table", DataTable)
            x = 0
            for key, column in table.columns.items():
                if key.value == "GB/s":
                    break
                x += column.get_render_width(table)
            await pilot.click("#device-table", offset=(x + 2, 0))
            assert pane.sort == "bandwidth"
            top = str(table.coordinate_to_cell_key((0, 0)).row_key.value)
            assert catalog.get(top).mem_bandwidth_gb_s == max(d.mem_bandwidth_gb_s for d in catalog)
            await pilot.click("#device-table", offset=(x + 2, 0))
            top = str(table.coordinate_to_cell_key((0, 0)).row_key.value)
            assert catalog.get(top).mem_bandwidth_gb_s == min(d.mem_bandwidth_gb_s for d in catalog)

    run(body())


def test_matrix_fills_and_opens_a_cell(catalog, registry):
    async def body() -> None:
        app = create_app(catalog, registry)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("4")
            await settle(app, pilot)
            matrix = app.screen.query_one("#matrix-pane")
            cell = matrix.cells[("llama-3.1-8b", "rtx-4090")]
            assert cell.plan is not None and cell.plan.fits
            table = app.screen.query_one("#matrix-table", DataTable)
            row = [str(k.value) for k in table.rows].index("qwen3-32b")
            col = [str(k.value) for k in table.columns].index("h100-sxm")
            table.move_cursor(row=row, column=col)
            await pilot.press("enter")
            assert app.inputs.model_id == "qwen3-32b" and app.inputs.device_id == "h100-sxm"
            assert app.active_tab == "fit"

    run(body())


def test_a_real_probe_snapshot_plans_like_the_cli(catalog, registry):
    """The provider `planner tui --snapshot FILE` uses: load_snapshot + interpret give a real Host."""
    from pathlib import Path

    from planner.commands.tui import host_provider
    from planner.hardware import probe

    path = Path(__file__).resolve().parents[1] / "fixtures" / "snapshots" / "rtx4090-2x-pcie.json"
    host = probe.interpret(probe.load_snapshot(path), catalog)

    async def body() -> None:
        app = create_app(catalog, registry, host_provider(catalog, str(path)))
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            assert app.inputs.device_id == LOCAL, (app.probe_status, app.device_chosen, app._exception, app.inputs)
            table = app.screen.query_one("#device-table", DataTable)
            assert [str(k.value) for k in table.rows][:2] == ["local:0", "local:1"]
            rec = app.current_recommendation
            assert rec.target_label == target_from_host(host).label
            assert rec.best.format_id == expected(app, registry, catalog, host).best.format_id
            await pilot.press("4")
            await settle(app, pilot)
            matrix = app.screen.query_one("#matrix-pane")
            assert (app.inputs.model_id, LOCAL) in matrix.cells

    run(body())


def test_nodes_and_fabric_plan_across_nodes(catalog, registry):
    async def body() -> None:
        app = create_app(catalog, registry, model="llama-3.1-405b", device="h100-sxm", count=8, concurrency=4)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            await settle(app, pilot)
            await pilot.press("m")  # a second node of 8 GPUs
            await settle(app, pilot)
            await pilot.press("f")  # next fabric
            await settle(app, pilot)
            i = app.inputs
            assert i.nodes == 2 and i.fabric_id != "ib-ndr"
            rec = app.current_recommendation
            assert rec.target_label.startswith("2 nodes x 8x") and f"({i.fabric_id})" in rec.target_label
            best = rec.best
            assert best is not None
            # the fit view names the layout, and it is what recommend() picks for the same multi-node target
            from planner.tui.state import fabrics

            t = target_from_catalog(catalog.get("h100-sxm"), 8, nodes=2, fabric=fabrics()[i.fabric_id])
            fmts, rts = filter_args(i, registry.get(i.model_id).native_dtype)
            direct = recommend(ModelCost(registry.get(i.model_id)), t, context=i.context, concurrency=i.concurrency,
                               formats=fmts, runtimes=rts, prefer=i.prefer)
            assert (best.format_id, best.runtime_id, best.parallel_layout) == (
                direct.best.format_id, direct.best.runtime_id, direct.best.parallel_layout)
            assert best.parallel_layout in str(app.screen.query_one("#status").render())
            await pilot.press("M")
            await settle(app, pilot)
            assert app.inputs.nodes == 1 and "nodes" not in app.current_recommendation.target_label

    run(body())


def test_best_here_tab_ranks_like_the_library_and_opens_a_model(catalog, registry):
    """Tab 5 shows planner.fit's ranking for the fit's device and context; another use re-ranks; Enter plans it."""
    from planner.fit import bundled_models, rank_models

    async def body() -> None:
        app = create_app(catalog, registry)
        async with app.run_test(size=SIZE) as pilot:
            pane = await open_best_here(app, pilot, 100)
            i = app.inputs
            want = rank_models(bundled_models(registry), target_from_catalog(catalog.get(i.device_id), i.count),
                               context=i.context)
            assert [f.spec.id for f in pane.ranking.ranked] == [f.spec.id for f in want.ranked]
            table = app.screen.query_one("#rank-table", DataTable)
            assert [str(k.value) for k in table.rows] == [f.spec.id for f in want.ranked]
            from planner.recommend import speed_cell  # the decode cell is the CLI's formatter (a band where weak)

            assert all(str(table.get_row_at(n)[5]) == speed_cell(f.plan, "decode_tokens_per_s")
                       for n, f in enumerate(pane.ranking.ranked))
            pane.use = "coding"
            pane.recompute()
            for _ in range(100):
                if pane.ranking.use == "coding":
                    break
                await pilot.pause(0.05)
            assert pane.ranking.use == "coding"
            assert all("HumanEval+" in f.capability.benchmark for f in pane.ranking.ranked)
            second = str(list(table.rows)[1].value)
            table.move_cursor(row=1)
            await pilot.press("enter")
            assert app.inputs.model_id == second and app.active_tab == "fit"

    run(body())


def test_best_here_tab_ranks_what_the_cli_ranks_hf_cache_models_included(catalog, registry, tmp_path, monkeypatch,
                                                                          capsys):
    """Tab 5 and `planner recommend --json` (no --model) rank with the same function: the same ranked models in the
    same order, and the same models left out, a model in the local HF cache among them (planned here; not ranked
    without a published score), which the tab's status line names with its plan, as the CLI does."""
    import json

    from planner.cli import main

    from fakehub import cache_chat_1b

    cache_chat_1b(monkeypatch, tmp_path)  # the cache path comes from the library

    seen: dict = {}

    async def body() -> None:
        app = create_app(catalog, registry)
        async with app.run_test(size=SIZE) as pilot:
            pane = await open_best_here(app, pilot, 200)
            table = app.screen.query_one("#rank-table", DataTable)
            seen.update(inputs=app.inputs, ranking=pane.ranking, rows=[str(k.value) for k in table.rows],
                        status=str(app.screen.query_one("#rank-status").render()))

    run(body())
    i, ranking = seen["inputs"], seen["ranking"]
    capsys.readouterr()  # only the CLI's output below (run after the app: it owns stdout while it runs)
    assert main(["recommend", "--device", i.device_id, "--count", str(i.count), "--context", str(i.context),
                 "--top", "1000", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert [f.spec.id for f in ranking.ranked] == [r["model"] for r in cli["ranked"]] == seen["rows"]
    assert [f.spec.id for f in ranking.fits if not f.ranked] == [r["model"] for r in cli["not_ranked"]]
    (mine,) = [f for f in ranking.fits if f.origin == "HF cache (acme/chat-1b)"]
    assert mine.plan is not None and not mine.ranked
    assert [r["plan"]["format"] for r in cli["not_ranked"] if r["model"] == mine.spec.id] == [mine.plan.format_id]
    assert f"{mine.spec.id} ({mine.plan.format_id}," in seen["status"] and "no published score" in seen["status"]


def test_fit_table_and_detail_show_speed_bands_where_the_basis_is_weak(catalog, registry):
    """The plan and alternatives views print speeds with the CLI's formatter: '~N (N1-N2)' for a weak basis (vLLM on
    an RTX 4090 is calibrated elsewhere), plain 'N' for a firm one (llama.cpp is calibrated on Ada)."""
    from planner.cost.speed import WEAK_BASES
    from planner.recommend import speed_cell
    from planner.tui.widgets.fit import COLUMNS

    async def body() -> None:
        app = create_app(catalog, registry)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            await settle(app, pilot)
            await pilot.press("a")  # every plan, so vLLM rows are there beside llama.cpp ones
            await settle(app, pilot)
            fit = app.screen.query_one("#fit-pane")
            table = app.screen.query_one("#fit-table", DataTable)
            dec, pre = COLUMNS.index("decode tok/s"), COLUMNS.index("prefill tok/s")
            weak = firm = None
            for i, p in enumerate(fit.plans):
                if not (p.runs and p.per_device):
                    continue
                row = table.get_row_at(i)
                assert str(row[dec]) == speed_cell(p, "decode_tokens_per_s")
                assert str(row[pre]) == speed_cell(p, "prefill_tokens_per_s")
                if p.speed_basis in WEAK_BASES:
                    assert str(row[dec]).startswith("~") and "(" in str(row[dec])
                    weak = weak if weak is not None else i
                else:
                    assert "(" not in str(row[dec])
                    firm = firm if firm is not None else i
            assert weak is not None and firm is not None
            table.move_cursor(row=weak)
            await settle(app, pilot)
            plan = fit.highlighted_plan()
            assert plan.speed_basis in WEAK_BASES
            text = str(app.screen.query_one("#detail-body").render())
            lo, hi = plan.speed_range("decode_tokens_per_s")
            assert f"{speed_cell(plan, 'decode_tokens_per_s')} tok/s" in text and f"{hi:.0f})" in text
            assert plan.speed_basis in text

    run(body())
