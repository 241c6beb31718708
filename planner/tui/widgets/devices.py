"""The devices pane: a searchable, sortable table of the catalog with this machine's devices pinned on top."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Static

from planner.errors import PlannerError
from planner.hardware.catalog import DeviceSpec, catalog_summary
from planner.hardware.targets import target_from_host
from planner.plan import GIB
from planner.tui.state import DEVICE_SORTS, LOCAL, device_matches, device_rows
from planner.tui.widgets.searchable import SearchableTable

COLUMNS = (("id", None), ("name", "name"), ("vendor", "vendor"), ("memory GiB", "memory"), ("kind", "kind"),
           ("GB/s", "bandwidth"), ("FP16 TFLOPS", "fp16"), ("FP8 TFLOPS", "fp8"), ("year", "year"))
LOCAL_PREFIX = f"{LOCAL}:"


def _num(x: float | None) -> str:
    return f"{x:g}" if x else "-"


def device_cells(d: DeviceSpec) -> list[Any]:
    """The table cells of one catalog device."""
    kind = Text(d.memory_kind)
    kind.append(f" {d.memory_type}", style="dim")
    return [d.id, d.name, d.vendor, Text(f"{d.memory_gib:g}", justify="right"), kind,
            Text(f"{d.mem_bandwidth_gb_s:g}", justify="right"),
            Text(_num(d.peak_fp16_tflops or d.peak_bf16_tflops), justify="right"),
            Text(_num(d.peak_fp8_tflops), justify="right"), str(d.launch_year)]


class DevicesPane(SearchableTable, Vertical):
    """Search box, table, and a status line with the count and the sort."""

    SEARCH_ID = "device-search"
    TABLE_ID = "device-table"
    COLUMNS = COLUMNS
    SORTS = DEVICE_SORTS

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.query_text = ""
        self.sort = "memory"
        self.reverse: bool | None = None
        self.shown: list[str] = []  # row keys in display order (local rows first)

    def compose(self) -> ComposeResult:
        """Search, table, status."""
        # The search box sits in its own row: when the table is hidden (tab switch), Textual moves focus to a
        # focusable sibling, and a search box there would pull the tab back.
        with Horizontal(classes="search-row"):
            yield Input(placeholder="/ search devices: name, vendor, kind, memory type; >=48 for memory GiB",
                        id="device-search", compact=True)
        table: DataTable = DataTable(id="device-table", cursor_type="row", zebra_stripes=True)
        for label, _ in COLUMNS:
            # Long CPU names would push the figures off screen: the name column is capped (ellipsis).
            table.add_column(label, key=label, width=40 if label == "name" else None)
        yield table
        yield Static("", id="device-status", classes="pane-status")

    def on_mount(self) -> None:
        """Fill the table from the catalog (cheap: no probing here), and again when the probe answers."""
        self.watch(self.app, "host", lambda _host: self.refresh_rows(), init=True)

    def refresh_rows(self) -> None:
        """Rebuild the rows for the current search, sort and probe result."""
        app: Any = self.app
        table = self.query_one("#device-table", DataTable)
        keep = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value if table.row_count else None
        had_local = any(k.startswith(LOCAL_PREFIX) for k in self.shown)
        table.clear()
        self.shown = []
        for i, g in enumerate(self._local_devices()):
            key = f"{LOCAL_PREFIX}{i}"
            spec = g.spec
            free = getattr(g, "memory_free_bytes", None)
            mem = f"{free / GIB:.1f} free / {spec.memory_gib:.0f}" if free is not None else f"{spec.memory_gib:.0f}"
            cells = device_cells(spec)
            index = getattr(g, "index", None)
            cells[0] = Text("★ this machine" + (f" #{index}" if index is not None else ""), style="bold green")
            cells[1] = Text(getattr(g, "name", spec.name), style="bold")
            cells[3] = Text(mem, justify="right", style="bold")
            table.add_row(*cells, key=key)
            self.shown.append(key)
        devices = device_rows(app.catalog, self.query_text, self.sort, self.reverse)
        for d in devices:
            table.add_row(*device_cells(d), key=d.id)
            self.shown.append(d.id)
        if keep in self.shown and (had_local or not self.shown[0].startswith(LOCAL_PREFIX)):
            table.move_cursor(row=self.shown.index(keep), animate=False)
        else:  # first probe result: this machine's row is the natural place to start
            table.move_cursor(row=0, animate=False)
        header, _, desc = DEVICE_SORTS[self.sort]
        arrow = "↓" if (desc if self.reverse is None else self.reverse) else "↑"
        self.query_one("#device-status", Static).update(
            f"{len(devices)} listed; catalog: {catalog_summary(app.catalog)} · sorted by {header} {arrow} (s or click a header) · "
            f"Enter: plan on this device · {app.probe_status}")

    def _local_devices(self) -> list[Any]:
        """Probed GPUs matching the search (a CPU-only host shows as one 'this machine' row)."""
        host = getattr(self.app, "host", None)
        if host is None:
            return []
        gpus = list(getattr(host, "gpus", []) or [])
        if not gpus:
            try:
                t = target_from_host(host)
            except PlannerError:  # a host without RAM figures has nothing to plan for: no row
                return []
            gpus = [SimpleNamespace(spec=t.device, name=f"{t.device.name} (CPU)", memory_free_bytes=t.usable_bytes[0])]
        return [g for g in gpus if device_matches(g.spec, self.query_text)]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter (or a click on the highlighted row): plan on this device."""
        key = str(event.row_key.value)
        app: Any = self.app
        app.choose_device(LOCAL if key.startswith(LOCAL_PREFIX) else key)
