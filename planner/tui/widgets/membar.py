"""A memory bar: weights / KV cache / activations / overhead of one device against its usable memory."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from planner.plan import GIB, MemoryBreakdown, Plan
from planner.tui.state import needed_bytes

# (label, MemoryBreakdown attribute, colour); the same order and colours as `planner recommend`'s bar.
SEGMENTS = (("weights", "weights_bytes", "blue"), ("KV cache", "kv_cache_bytes", "magenta"),
            ("activations", "activations_bytes", "yellow"), ("overhead", "overhead_bytes", "red"))


def bar_text(d: MemoryBreakdown, width: int) -> Text:
    """One bar `width` cells wide; when the plan is over budget the bar spans the need and '┃' marks the limit."""
    width = max(width, 10)
    scale = max(d.usable_bytes, d.total_bytes, 1)
    text = Text()
    used = 0
    for _, attr, colour in SEGMENTS:
        cells = round(getattr(d, attr) / scale * width)
        cells = min(cells, width - used)
        text.append("█" * cells, style=colour)
        used += cells
    text.append("░" * (width - used), style="dim")
    if d.total_bytes > d.usable_bytes:
        limit = min(width - 1, round(d.usable_bytes / scale * width))
        text = text[:limit] + Text("┃", style="bold white on red") + text[limit + 1:]
    return text


def legend(d: MemoryBreakdown) -> Text:
    """'12.1 / 23.9 GiB  weights 9.0  KV 2.0  activations 0.6  overhead 0.5'."""
    style = "green" if d.fits else "bold red"
    out = Text.assemble((f"{d.total_bytes / GIB:.1f} / {d.usable_bytes / GIB:.1f} GiB", style), "  ")
    for label, attr, colour in SEGMENTS:
        out.append(f"■ {label} {getattr(d, attr) / GIB:.1f}  ", style=colour)
    if not d.fits:
        out.append(f"over by {(d.total_bytes - d.usable_bytes) / GIB:.1f} GiB", style="bold red")
    return out


class MemoryBar(Widget):
    """The memory breakdown of a plan's first device (and a note on the others), sized to the widget."""

    plan: reactive[Plan | None] = reactive(None, layout=True)

    def render(self) -> Text:
        """Bar, legend, and a line about the other devices of a multi-device plan."""
        p = self.plan
        if p is None or not p.per_device:
            reason = p.reason if p is not None and p.reason else "no memory figures for this plan"
            return Text(reason, style="dim")
        d = p.per_device[0]
        label = f"{d.device} "
        out = Text(label, style="bold")
        out.append_text(bar_text(d, self.size.width - len(label)))
        out.append("\n")
        out.append_text(legend(d))
        if len(p.per_device) > 1:
            worst = max(p.per_device, key=lambda x: x.total_bytes / max(x.usable_bytes, 1))
            out.append(f"\n{len(p.per_device)} devices ({p.layout}); fullest {worst.device}: "
                       f"{worst.total_bytes / GIB:.1f} / {worst.usable_bytes / GIB:.1f} GiB", style="dim")
        need = needed_bytes(p)
        if not p.fits and need > p.total_memory_bytes:
            out.append(f"\nneeds {need / GIB:.1f} GiB in all (the bar shows only what was placed before it ran out); "
                       f"{p.usable_memory_bytes / GIB:.1f} GiB usable", style="red")
        if p.host_bytes:
            what = "offloaded layers" if p.layout == "partial-offload" else "kept on the host by the runtime"
            out.append(f"\n+ {p.host_bytes / GIB:.1f} GiB in system RAM ({what})",
                       style="yellow" if p.layout == "partial-offload" else "dim")
        return out

    def get_content_height(self, container, viewport, width: int) -> int:  # type: ignore[no-untyped-def]
        """Two lines, plus one per extra note."""
        p = self.plan
        if p is None or not p.per_device:
            return 1
        return 2 + (len(p.per_device) > 1) + bool(p.host_bytes) + (not p.fits and needed_bytes(p) > p.total_memory_bytes)
