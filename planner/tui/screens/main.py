"""The main screen: a status line, five tabs (devices, models, fit, matrix, best models) and the footer."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Header, Static, TabbedContent, TabPane

from planner.tui.widgets.devices import DevicesPane
from planner.tui.widgets.fit import FitPane
from planner.tui.widgets.matrix import MatrixPane
from planner.tui.widgets.models import ModelsPane
from planner.tui.widgets.rank import RankPane

TABS = ("devices", "models", "fit", "matrix", "rank")
TAB_TABLES = {"devices": "#device-table", "models": "#model-table", "fit": "#fit-table", "matrix": "#matrix-table",
              "rank": "#rank-table"}


class MainScreen(Screen[None]):
    """Everything the app shows; state lives on the app, the panes read it."""

    def __init__(self, initial: str = "devices"):
        super().__init__()
        self.initial = initial if initial in TABS else "devices"
        # Start on the table, not the search box, so the tab and context keys work at once.
        self.AUTO_FOCUS = TAB_TABLES[self.initial]

    def compose(self) -> ComposeResult:
        """Header, status line, the probe's warnings (hidden until asked for), tabs, footer."""
        yield Header(icon="▦")
        with Horizontal(id="status-row"):
            yield Static("", id="status")
            yield Static("", id="probe")
        yield Static("", id="probe-warnings")
        with TabbedContent(id="tabs", initial=self.initial):
            with TabPane("1 Devices", id="devices"):
                yield DevicesPane(id="devices-pane")
            with TabPane("2 Models", id="models"):
                yield ModelsPane(id="models-pane")
            with TabPane("3 Fit", id="fit"):
                yield FitPane(id="fit-pane")
            with TabPane("4 Matrix", id="matrix"):
                yield MatrixPane(id="matrix-pane")
            with TabPane("5 Best here", id="rank"):
                yield RankPane(id="rank-pane")
        yield Footer()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """Compute the matrix lazily, the first time its tab is shown; focus the tab's main table."""
        pane_id = event.pane.id
        if pane_id == "matrix":
            matrix = self.query_one(MatrixPane)
            if matrix.dirty:
                matrix.recompute()
        if pane_id == "rank":
            rank = self.query_one(RankPane)
            if rank.dirty:
                rank.recompute()
        table_id = TAB_TABLES.get(pane_id or "")
        focused = self.focused
        if event.pane.id != self.query_one("#tabs", TabbedContent).active:
            return  # a later key already switched on; focusing here would switch back
        # A click or focus inside the pane activates it too: leave that focus alone.
        if table_id and (focused is None or event.pane not in focused.ancestors):
            self.query_one(table_id).focus()
