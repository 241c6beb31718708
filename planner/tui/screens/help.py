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

USAGE = (
    ("Start", "The app opens planning for this machine (its GPUs, or its CPU and RAM) once the probe answers; the "
              "catalog is one key away ([b]1[/b]). The probe's warnings wait behind [b]w[/b] (Esc closes them)."),
    ("1 Devices", "The catalog; this machine's devices are pinned on top once the probe answers. Type to search "
                  "(name, vendor, kind, memory type; [b]>=48[/b] filters memory GiB); Enter plans on a device."),
    ("2 Models", "The profiles with parameters, active parameters, context and architecture notes; Enter plans for a model."),
    ("3 Fit", "Every format with its best runtime ([b]a[/b]: every runtime and KV dtype); [green]★[/green] is the recommendation. "
              "Context, sequences and device count take typed numbers ([b]c[/b] jumps to the context) or + - [ ] n N; "
              "t, r and p cycle the format, runtime and preference filters. The detail pane follows the cursor: memory "
              "bar, speed, quality, reasons and the launch command ([b]y[/b] copies it)."),
    ("4 Matrix", "Models × devices for one format (or the best GGUF quant that fits) at the current context; Enter "
                 "opens a cell in Fit. The model column stays while ← → scroll through the device columns."),
    ("5 Best here", "Models ranked for the current device and context by expected capability (published score x what "
                    "the format keeps) among plans that fit and decode at least 10 tok/s, as [b]planner recommend[/b] "
                    "without --model; pick the use (chat, coding, reasoning); Enter opens a model in Fit."),
    ("Mouse", "Click tabs, headers (sort; again to reverse), rows, selects and the Copy button."),
)


class HelpScreen(ModalScreen[None]):
    """A modal listing the bindings; any of escape, ? or q closes it."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss_help", "close help", id="help.close")]

    def compose(self) -> ComposeResult:
        """Usage text and the bindings table."""
        with VerticalScroll(id="help-box"):
            yield Static(self._usage_table(), id="help-usage")
            yield Static(self._bindings_table(), id="help-bindings")

    def _usage_table(self) -> Table:
        table = Table(title="How it works", title_justify="left", show_header=False, expand=True, box=None)
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        for name, text in USAGE:
            table.add_row(name, Text.from_markup(text))
        return table

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
