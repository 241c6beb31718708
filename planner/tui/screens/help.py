"""The help screen: every key binding (with its id) and how the panes work."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

USAGE = """\
[b]Devices[/b] (1)  the catalog; this machine's devices are pinned on top once the probe answers.
           Type to search (name, vendor, kind, memory type; [b]>=48[/b] filters memory GiB); Enter plans on a device.
[b]Models[/b]  (2)  the profiles; Enter plans for a model.
[b]Fit[/b]     (3)  every format with its best runtime (a: every runtime and KV dtype); ★ is the recommendation.
           Context, sequences and device count take typed numbers or + - [ ] n N; filters narrow formats and runtimes.
           The detail pane follows the cursor: memory bar, speed, quality, reasons, launch command (y copies it).
[b]Matrix[/b]  (4)  models × devices for one format (or the best GGUF quant that fits) at the current context.
The mouse works everywhere: click tabs, headers (sort), rows, selects and the Copy button."""


class HelpScreen(ModalScreen[None]):
    """A modal listing the bindings; any of escape, ? or q closes it."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss_help", "close help", id="help.close")]

    def compose(self) -> ComposeResult:
        """Usage text and the bindings table."""
        with VerticalScroll(id="help-box"):
            yield Static(Text.from_markup(USAGE), id="help-usage")
            yield Static(self._bindings_table(), id="help-bindings")

    def _bindings_table(self) -> Table:
        app: Any = self.app
        table = Table(title="Key bindings", title_justify="left", header_style="bold", expand=True, box=None)
        table.add_column("key", style="bold cyan", no_wrap=True)
        table.add_column("what it does")
        table.add_column("binding id", style="dim")
        for b in app.BINDINGS:
            if isinstance(b, Binding) and b.id:
                table.add_row(b.key_display or app.get_key_display(b), b.description, b.id)
        return table

    def action_dismiss_help(self) -> None:
        """Close."""
        self.dismiss(None)
