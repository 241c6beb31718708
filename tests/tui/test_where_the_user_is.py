"""The TUI starts where the user is: on this machine (GPUs or CPU and RAM) with the catalog one key away; probe
warnings in a panel the user opens; a matrix that scrolls to every device; the same device count, architecture notes
and ranking words as the CLI."""

from __future__ import annotations

from textual.widgets import DataTable, Static

from planner.cli import main
from planner.hardware.catalog import catalog_summary
from planner.hardware.targets import target_from_host
from planner.recommend import ranking_title
from planner.tui.app import create_app
from planner.tui.state import LOCAL
from .helpers import SIZE, fake_cpu_host, fake_host, run, settle

WARNING = "No GPU found: planning for the CPU only (nvml: no NVIDIA driver)"


def test_opens_planning_for_this_cpu_with_the_catalog_one_key_away(catalog, registry):
    host = fake_cpu_host()

    async def body() -> None:
        app = create_app(catalog, registry, lambda: host)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            assert app.active_tab == "fit" and app.inputs.device_id == LOCAL
            assert app.current_recommendation.target_label == target_from_host(host).label == "Test CPU"
            assert app.current_target.is_cpu
            await pilot.press("1")
            assert app.active_tab == "devices"
            table = app.screen.query_one("#device-table", DataTable)
            assert str(table.coordinate_to_cell_key((0, 0)).row_key.value).startswith("local:")

    run(body())


def test_a_named_device_still_opens_on_the_catalog(catalog, registry):
    async def body() -> None:
        app = create_app(catalog, registry, lambda: fake_cpu_host(), device="h100-sxm")
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            assert app.active_tab == "devices" and app.inputs.device_id == "h100-sxm"

    run(body())


def test_probe_warnings_wait_in_a_panel_not_a_popup(catalog, registry):
    host = fake_cpu_host((WARNING, "cgroup memory limit 8 GiB is below the machine's 64 GiB"))

    async def body() -> None:
        app = create_app(catalog, registry, lambda: host)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            assert not app._notifications  # nothing covers the table
            assert "2 warnings (w)" in app.probe_status
            panel = app.screen.query_one("#probe-warnings", Static)
            assert not panel.display
            await pilot.press("w")
            assert panel.display and WARNING in str(panel.render())
            await pilot.press("escape")
            assert not panel.display
            await pilot.press("w", "w")
            assert not panel.display

    run(body())


def test_a_failed_probe_says_why_in_the_panel(catalog, registry):
    def broken():  # type: ignore[no-untyped-def]
        raise RuntimeError("NVML exploded")

    async def body() -> None:
        app = create_app(catalog, registry, broken)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            assert not app._notifications and "failed" in app.probe_status
            await pilot.press("w")
            assert "NVML exploded" in str(app.screen.query_one("#probe-warnings", Static).render())

    run(body())


def test_matrix_scrolls_to_every_device_column_at_160_columns(catalog, registry):
    async def body() -> None:
        app = create_app(catalog, registry, lambda: fake_host(catalog))
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await pilot.press("4")
            await settle(app, pilot)
            table = app.screen.query_one("#matrix-table", DataTable)
            n = len(table.columns)
            assert n >= 14 and table.fixed_columns == 1  # model column + this machine + 13 catalog devices
            assert table.max_scroll_x > 0  # they do not fit in 160 columns ...
            assert "scroll" in str(app.screen.query_one("#matrix-status", Static).render())
            for _ in range(n):
                await pilot.press("right")
            await pilot.pause()
            # ... and the last one is reached by scrolling, with the model names still shown
            assert table.cursor_coordinate.column == n - 1 and table.scroll_x == table.max_scroll_x

    run(body())


def test_device_count_reads_the_same_in_the_tui_and_planner_catalog(catalog, registry, capsys):
    summary = catalog_summary(catalog)
    assert main(["catalog"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(summary)
    assert f"{len(catalog)} memory configurations" in summary  # memory variants counted, and named as such

    async def body() -> None:
        app = create_app(catalog, registry, device="rtx-4090")
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            assert f"catalog: {summary}" in str(app.screen.query_one("#device-status", Static).render())

    run(body())


def test_one_gqa_notation_in_the_cli_and_the_tui(registry, capsys):
    from planner.tui.state import model_row

    spec = registry.get("llama-3.1-8b")
    assert main(["models", "--json"]) == 0
    import json

    cli = {m["id"]: m["notes"] for m in json.loads(capsys.readouterr().out)}
    assert cli["llama-3.1-8b"] == model_row(spec).notes == f"GQA {spec.num_heads // spec.num_kv_heads}:1"


def test_the_fit_summary_says_how_plans_are_ranked(catalog, registry):
    async def body() -> None:
        app = create_app(catalog, registry, device="rtx-4090")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            await settle(app, pilot)
            summary = app.screen.query_one("#fit-summary", Static)
            assert ranking_title("balanced") in str(summary.render())
            await pilot.press("p")
            await settle(app, pilot)
            assert app.inputs.prefer == "quality" and ranking_title("quality") in str(summary.render())

    run(body())
