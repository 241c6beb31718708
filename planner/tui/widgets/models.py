"""The models pane: the profiles with parameters, active parameters, context and architecture notes."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Static

from planner.tui.widgets.searchable import SearchableTable

from planner.tui.state import MODEL_SORTS, ModelRow, format_params, model_row, model_rows

COLUMNS = (("id", None), ("name", "name"), ("family", "family"), ("params", "params"), ("active", "active"),
           ("context", "context"), ("dtype", None), ("architecture", None), ("notes", None))


class ModelsPane(SearchableTable, Vertical):
    """Search box, table, status line; parameter counts are computed in a worker so start-up stays fast."""

    SEARCH_ID = "model-search"
    TABLE_ID = "model-table"
    COLUMNS = COLUMNS
    SORTS = MODEL_SORTS

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.rows: list[ModelRow] = []
        self.query_text = ""
        self.sort = "family"
        self.reverse: bool | None = None
        self.shown: list[str] = []

    def compose(self) -> ComposeResult:
        """Search, table, status."""
        # The search box sits in its own row: when the table is hidden (tab switch), Textual moves focus to a
        # focusable sibling, and a search box there would pull the tab back.
        with Horizontal(classes="search-row"):
            yield Input(placeholder="/ search models: name, family, architecture, MoE, MLA, 70B", id="model-search", compact=True)
        table: DataTable = DataTable(id="model-table", cursor_type="row", zebra_stripes=True)
        for label, _ in COLUMNS:
            table.add_column(label, key=label)
        yield table
        yield Static("counting parameters…", id="model-status", classes="pane-status")

    def on_mount(self) -> None:
        """Count parameters off the UI thread."""
        self._count_params()

    @work(thread=True, group="models")
    def _count_params(self) -> None:
        """Tensor inventories of every profile (about 0.1 s for 55 profiles)."""
        app: Any = self.app
        rows = [model_row(m) for m in app.registry]
        self.app.call_from_thread(self._loaded, rows)

    def _loaded(self, rows: list[ModelRow]) -> None:
        self.rows = rows
        self.refresh_rows()

    def refresh_rows(self) -> None:
        """Rebuild the rows for the current search and sort."""
        app: Any = self.app
        table = self.query_one("#model-table", DataTable)
        keep = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value if table.row_count else None
        table.clear()
        rows = model_rows(self.rows, self.query_text, self.sort, self.reverse)
        self.shown = [r.spec.id for r in rows]
        current = app.inputs.model_id
        for r in rows:
            m = r.spec
            name = Text(("● " if m.id == current else "") + m.name, style="bold" if m.id == current else "")
            table.add_row(m.id, name, m.family, Text(format_params(r.params), justify="right"),
                          Text(format_params(r.active_params), justify="right", style="cyan" if m.moe else ""),
                          Text(f"{m.max_context:,}", justify="right"), m.native_dtype, m.architecture, r.notes, key=m.id)
        if keep in self.shown:
            table.move_cursor(row=self.shown.index(keep), animate=False)
        header, _, desc = MODEL_SORTS[self.sort]
        arrow = "↓" if (desc if self.reverse is None else self.reverse) else "↑"
        self.query_one("#model-status", Static).update(
            f"{len(rows)} of {len(app.registry)} profiles · sorted by {header} {arrow} (s or click a header) · "
            "Enter: plan this model · ● current")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter (or a click on the highlighted row): plan this model."""
        app: Any = self.app
        app.choose_model(str(event.row_key.value))
