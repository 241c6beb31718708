"""The fit matrix: a bounded selection of models x devices for one format (or the best of a ladder) and context."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Label, Select, Static
from textual.worker import get_current_worker

from planner.errors import PlannerError
from planner.formats import FORMATS
from planner.hardware.targets import target_from_host
from planner.plan import target_from_catalog
from planner.tui.state import BEST, LOCAL, MATRIX_FORMATS, MatrixCell, matrix_axes, matrix_cell


class MatrixPane(Vertical):
    """Rows are models, columns devices; cells fill in from a worker; Enter opens the cell in the fit pane."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.models: list[str] = []
        self.devices: list[str] = []
        self.cells: dict[tuple[str, str], MatrixCell] = {}
        self.format_id = BEST
        self.dirty = True  # recompute when next shown
        self.computed_for: tuple | None = None

    def compose(self) -> ComposeResult:
        """Format picker, hint, table, status."""
        with Horizontal(classes="controls"):
            yield Label("format", classes="ctl-label")
            yield Select([("best that fits (GGUF ladder)" if f == BEST else f, f) for f in MATRIX_FORMATS
                          if f == BEST or f in FORMATS], value=BEST, allow_blank=False, compact=True, id="matrix-format")
            yield Static("", id="matrix-hint")
        # The model column stays put while the device columns scroll sideways (← →): 13 of them do not fit in 160.
        yield DataTable(id="matrix-table", cursor_type="cell", fixed_columns=1)
        yield Static("", id="matrix-status", classes="pane-status")

    def on_mount(self) -> None:
        """Pick the axes; the cells are computed when the tab is first shown."""
        app: Any = self.app
        self.models, self.devices = matrix_axes(app.catalog, app.registry)
        self.watch(app, "inputs", lambda _i: self.invalidate(), init=False)
        self.watch(app, "host", lambda _h: self.invalidate(), init=False)

    def invalidate(self) -> None:
        """Inputs changed: recompute now if visible, else when shown."""
        self.dirty = True
        if self.is_visible_tab():
            self.recompute()

    def is_visible_tab(self) -> bool:
        """Whether the matrix tab is the active one."""
        app: Any = self.app
        return app.active_tab == "matrix"

    def recompute(self) -> None:
        """Rebuild the table skeleton and start the worker (only when something that matters changed)."""
        app: Any = self.app
        inputs = app.inputs
        models = list(self.models)
        if inputs.model_id not in models:
            models = [inputs.model_id] + models  # the current model is always a row
        devices = list(self.devices)
        if inputs.device_id not in devices and inputs.device_id != LOCAL:
            devices = [inputs.device_id] + devices
        if app.host is not None and _plannable(app.host):
            devices = [LOCAL] + devices  # this machine: its GPUs, or its CPU and RAM
        key = (tuple(models), tuple(devices), self.format_id, inputs.context, id(app.host))
        self.dirty = False
        if key == self.computed_for:
            return
        self.computed_for = key
        self.cells = {}
        table = self.query_one("#matrix-table", DataTable)
        table.clear(columns=True)
        table.add_column("model", key="model")
        for d in devices:
            label = "★ this machine" if d == LOCAL else d
            table.add_column(label, key=d)
        for m in models:
            table.add_row(Text(app.registry.get(m).name, style="bold" if m == inputs.model_id else ""),
                          *[Text("…", style="dim") for _ in devices], key=m)
        fmt = "best GGUF quant that fits" if self.format_id == BEST else self.format_id
        self.query_one("#matrix-hint", Static).update(
            f"  {fmt} · {inputs.context:,} tokens · 1 device · cell = format + decode tok/s · Enter opens it in Fit")
        self._fill(models, devices, self.format_id, inputs.context, key)

    @work(thread=True, exclusive=True, group="matrix")
    def _fill(self, models: list[str], devices: list[str], format_id: str, context: int, key: tuple) -> None:
        """Evaluate cell by cell (evaluate(), not recommend(): a few ms per cell) and post each row."""
        app: Any = self.app
        worker = get_current_worker()
        targets = {}
        for d in devices:
            if d == LOCAL:
                targets[d] = target_from_host(app.host)
            else:
                targets[d] = target_from_catalog(app.catalog.get(d), 1)
        for i, m in enumerate(models):
            mc = app.costs.get(m)
            row = {}
            for d in devices:
                if worker.is_cancelled:
                    return
                row[d] = matrix_cell(mc, targets[d], format_id, min(context, mc.spec.max_context))
            app.call_from_thread(self._row_done, key, m, row, i + 1, len(models))

    def _row_done(self, key: tuple, model_id: str, row: dict[str, MatrixCell], done: int, total: int) -> None:
        if key != self.computed_for:
            return  # a worker for older inputs finished a row after the table was rebuilt
        table = self.query_one("#matrix-table", DataTable)
        for d, cell in row.items():
            self.cells[(model_id, d)] = cell
            table.update_cell(model_id, d, Text(cell.text, style=cell.style), update_width=True)
        status = f"{done}/{total} models computed" if done < total else f"{total} models × {len(row)} devices"
        if table.max_scroll_x > 0:
            status += " (← → scroll to every device)"
        self.query_one("#matrix-status", Static).update(
            f"{status} · green fits · yellow tight (>92% of usable) · red ✗ does not fit (GiB it needs) · — no runtime runs it")

    def on_select_changed(self, event: Select.Changed) -> None:
        """A new format: recompute."""
        if event.select.id == "matrix-format" and event.value is not Select.NULL:
            event.stop()
            self.format_id = str(event.value)
            self.recompute()

    def on_data_table_cell_selected(self, event: DataTable.CellSelected) -> None:
        """Enter on a cell: that model on that device in the fit pane."""
        if event.data_table.id != "matrix-table":
            return
        model_id = str(event.cell_key.row_key.value)
        device_id = str(event.cell_key.column_key.value)
        if device_id == "model":
            return
        app: Any = self.app
        app.choose_model(model_id, switch=False)
        app.choose_device(device_id)


def _plannable(host: Any) -> bool:
    """Whether the probed host can be planned for (GPUs, or a CPU whose RAM the probe read)."""
    try:
        target_from_host(host)
    except PlannerError:
        return False
    return True
