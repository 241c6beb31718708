"""The fit pane: pick a model and a target, see every format (best runtime each) with memory, speed, quality
and verdict; the recommended row is starred and the detail pane below explains the row under the cursor."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Label, Select, Static

from planner.hardware.targets import target_from_host
from planner.plan import Plan
from planner.recommend import ranking_title, speed_cell
from planner.cost.quality import quality_text
from planner.tui.state import (ALL, TIGHT_FRACTION, LOCAL, MAX_CONCURRENCY, MAX_COUNT, MIN_CONTEXT, PREFERENCES, QUALITY_STYLES,
                               best_per_format, format_families, gib, measured_formats, needed_bytes,
                               runtime_ids, used_fraction, verdict)
from planner.tui.widgets.detail import PlanDetail

COLUMNS = ("format", "runtime", "KV", "memory GiB", "decode tok/s", "total tok/s", "prefill tok/s", "TTFT s",
           "quality", "verdict")


def plan_cells(plan: Plan, recommended: bool) -> list[Any]:
    """The table cells of one plan, coloured by verdict and quality."""
    text, style = verdict(plan)
    runs = plan.runs and bool(plan.per_device)
    frac = used_fraction(plan) if runs else 0.0
    mem_style = "red" if (runs and not plan.fits) else ("yellow" if frac > TIGHT_FRACTION else "")
    q = plan.quality or {}
    label = q.get("label", "")
    fmt = Text(("★ " if recommended else "  ") + plan.format_id, style="bold green" if recommended else "")
    row_style = "" if plan.fits else "dim"

    def num(value: str) -> Text:
        return Text(value if runs else "-", justify="right", style=row_style)

    return [
        fmt, Text(plan.runtime_id, style=row_style), Text(plan.kv_dtype or "-", style=row_style),
        # A plan that does not fit stops placing layers, so its device total undercounts: show what it needs.
        Text(f"{gib(plan.total_memory_bytes if plan.fits else needed_bytes(plan))} / {gib(plan.usable_memory_bytes)}"
             if runs else "-", justify="right", style=mem_style or row_style),
        # the CLI's formatter: '~N (N1-N2)' where the speed basis is weak (calibrated elsewhere, assumed)
        num(speed_cell(plan, "decode_tokens_per_s")), num(speed_cell(plan, "throughput_tokens_per_s")),
        num(speed_cell(plan, "prefill_tokens_per_s")), num(f"{plan.ttft_s:.2f}"),
        Text(quality_text(plan.quality), style=QUALITY_STYLES.get(label, "") if plan.fits else "dim"),
        Text(text, style=style),
    ]


def device_label(d: Any) -> str:
    """'rtx-4090 · NVIDIA GeForce RTX 4090 · 24 GiB': the id first, so typing an id in the open list finds it."""
    return f"{d.id} · {d.name} · {d.memory_gib:g} GiB"


class FitPane(Vertical):
    """Controls, a summary line, the plans table and the detail pane."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.plans: list[Plan] = []  # rows in display order
        self.show_all = False  # every format x runtime x KV instead of the best runtime per format
        self.local_option = False  # whether the device select offers "this machine" yet

    def compose(self) -> ComposeResult:
        """Two rows of controls, then summary, table and detail."""
        app: Any = self.app
        inputs = app.inputs
        models = sorted(app.registry, key=lambda m: m.name.lower())
        with Horizontal(classes="controls"):
            yield Label("model", classes="ctl-label")
            yield Select([(m.name, m.id) for m in models], value=inputs.model_id, allow_blank=False, compact=True,
                         id="fit-model")
            yield Label("device", classes="ctl-label")
            yield Select(self._device_options(), value=inputs.device_id, allow_blank=False, compact=True, id="fit-device")
            yield Label("×", classes="ctl-label")
            yield Input(str(inputs.count), type="integer", compact=True, id="fit-count", tooltip="number of devices (n / N)")
        with Horizontal(classes="controls"):
            yield Label("context", classes="ctl-label")
            yield Input(str(inputs.context), type="integer", compact=True, id="fit-context",
                        tooltip="context tokens per sequence (+ / -)")
            yield Label("sequences", classes="ctl-label")
            yield Input(str(inputs.concurrency), type="integer", compact=True, id="fit-concurrency",
                        tooltip="concurrent sequences ([ / ])")
            yield Label("format", classes="ctl-label")
            yield Select([("all formats", ALL)] + [(f, f) for f in format_families()], value=inputs.format_family,
                         allow_blank=False, compact=True, id="fit-format")
            yield Label("runtime", classes="ctl-label")
            yield Select([("all runtimes", ALL)] + [(r, r) for r in runtime_ids()], value=inputs.runtime_id,
                         allow_blank=False, compact=True, id="fit-runtime")
            yield Label("prefer", classes="ctl-label")
            yield Select([(p, p) for p in PREFERENCES], value=inputs.prefer, allow_blank=False, compact=True,
                         id="fit-prefer")
        yield Static("", id="fit-summary")
        table: DataTable = DataTable(id="fit-table", cursor_type="row")
        for c in COLUMNS:
            table.add_column(c, key=c)
        yield table
        yield PlanDetail(id="fit-detail")

    def on_mount(self) -> None:
        """Follow the app's inputs, probe result and recommendation."""
        # init=True throughout: the probe (and the move to this machine) may land between compose and mount.
        self.watch(self.app, "host", lambda _host: self.refresh_device_options(), init=True)
        self.watch(self.app, "inputs", self.sync_controls, init=True)
        self.watch(self.app, "current_recommendation", self.show_recommendation, init=True)

    # ------------------------------------------------------------------ controls <-> app.inputs

    def _device_options(self) -> list[tuple[str, str]]:
        app: Any = self.app
        opts = []
        self.local_option = app.host is not None
        if app.host is not None:
            opts.append((f"★ this machine ({app.local_label()})", LOCAL))
        opts += [(device_label(d), d.id) for d in sorted(app.catalog, key=lambda d: d.id)]
        return opts

    def refresh_device_options(self) -> None:
        """Add 'this machine' once the probe has answered."""
        app: Any = self.app
        select = self.query_one("#fit-device", Select)
        with select.prevent(Select.Changed):
            select.set_options(self._device_options())
            select.value = app.inputs.device_id

    def sync_controls(self, inputs: Any) -> None:
        """Show the app's inputs in the controls without echoing change events back."""
        app: Any = self.app
        for sel_id, value in (("#fit-model", inputs.model_id), ("#fit-device", inputs.device_id),
                              ("#fit-format", inputs.format_family), ("#fit-runtime", inputs.runtime_id),
                              ("#fit-prefer", inputs.prefer)):
            select = self.query_one(sel_id, Select)
            if sel_id == "#fit-device" and value == LOCAL and not self.local_option:
                self.refresh_device_options()
            if select.value != value:
                with select.prevent(Select.Changed):
                    select.value = value
        count = inputs.count
        if inputs.device_id == LOCAL:  # the probed machine plans with the GPUs it has
            count = target_from_host(app.host).count if app.host is not None else 1
        for in_id, value in (("#fit-count", count), ("#fit-context", inputs.context),
                             ("#fit-concurrency", inputs.concurrency)):
            box = self.query_one(in_id, Input)
            if _int(box.value) != value:
                with box.prevent(Input.Changed):
                    box.value = str(value)
        self.query_one("#fit-count", Input).disabled = inputs.device_id == LOCAL

    def on_select_changed(self, event: Select.Changed) -> None:
        """A select was changed by the user."""
        field = {"fit-model": "model_id", "fit-device": "device_id", "fit-format": "format_family",
                 "fit-runtime": "runtime_id", "fit-prefer": "prefer"}.get(event.select.id or "")
        if field is None:
            return
        event.stop()
        # Programmatic updates (set_options, syncing) can post a Changed that arrives after the select moved on.
        app: Any = self.app
        if event.value is Select.NULL or event.value != event.select.value or event.value == getattr(app.inputs, field):
            return  # stale, or no change (selects post Changed when mounted)
        if field == "model_id":
            app.choose_model(str(event.value), switch=False)
        elif field == "device_id":
            app.choose_device(str(event.value), switch=False)
        else:
            app.update_inputs(**{field: event.value})

    def on_input_changed(self, event: Input.Changed) -> None:
        """Numbers apply as they are typed (the fit is debounced); values out of range wait for more digits."""
        bounds = {"fit-count": ("count", 1, MAX_COUNT), "fit-context": ("context", MIN_CONTEXT, 10**8),
                  "fit-concurrency": ("concurrency", 1, MAX_CONCURRENCY)}.get(event.input.id or "")
        if bounds is None:
            return
        event.stop()
        field, low, high = bounds
        value = _int(event.value)
        if value is None or not low <= value <= high:
            return
        app: Any = self.app
        app.update_inputs(**{field: value})

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in a number box returns to the table."""
        if event.input.id in ("fit-count", "fit-context", "fit-concurrency"):
            event.stop()
            app: Any = self.app
            self.sync_controls(app.inputs)  # show the clamped value
            self.query_one("#fit-table", DataTable).focus()

    # ------------------------------------------------------------------ recommendation -> table

    def show_recommendation(self, rec: Any) -> None:
        """Fill the table and summary; keep the cursor on the same format where it still exists."""
        table = self.query_one("#fit-table", DataTable)
        summary = self.query_one("#fit-summary", Static)
        app: Any = self.app
        if rec is None:
            summary.update(Text(app.fit_error or "computing…", style="red" if app.fit_error else "dim"))
            table.clear()
            self.plans = []
            self.query_one(PlanDetail).show(None, None)
            return
        previous = self.highlighted_plan()
        prev_key = (previous.format_id, previous.runtime_id) if previous is not None and table.cursor_row > 0 else None
        self.plans = list(rec.plans) if self.show_all else best_per_format(rec.plans)
        table.clear()
        for i, p in enumerate(self.plans):
            table.add_row(*plan_cells(p, p is rec.best), key=str(i))
        row = 0
        if prev_key is not None:
            row = next((i for i, p in enumerate(self.plans) if (p.format_id, p.runtime_id) == prev_key), 0)
        if self.plans:
            table.move_cursor(row=row, animate=False)
        summary.update(self._summary(rec))
        self.query_one(PlanDetail).show(self.plans[row] if self.plans else None, rec)

    def _summary(self, rec: Any) -> Text:
        app: Any = self.app
        t = app.current_target
        out = Text()
        out.append(f"{app.registry.get(rec.model_id).name}", style="bold")
        out.append(" on ")
        out.append(rec.target_label, style="bold")
        if t is not None:
            out.append(f" ({t.origin})", style="dim")
        out.append(f" · {rec.context:,} tok × {rec.concurrency} seq · {ranking_title(rec.prefer)}")
        shown = "every format × runtime × KV" if self.show_all else "best runtime per format"
        out.append(f" · {len(self.plans)} rows, {shown} (a: {'best per format' if self.show_all else 'all'})", style="dim")
        measured = measured_formats(rec.plans)
        if measured:
            texts = ", ".join(sorted(set(measured.values())))
            out.append(f"\nquality of {', '.join(sorted(measured))} measured by planner eval on {texts}; "
                       "the rest estimated", style="bold")
        if rec.best is None:
            out.append("\nNothing fits — see the suggestions below.", style="bold red")
        for n in (t.notes if t is not None else ()):
            out.append(f"\nnote: {n}", style="dim")
        return out

    def highlighted_plan(self) -> Plan | None:
        """The plan under the table cursor."""
        table = self.query_one("#fit-table", DataTable)
        if not self.plans or table.cursor_row < 0 or table.cursor_row >= len(self.plans):
            return None
        return self.plans[table.cursor_row]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """The detail pane follows the cursor."""
        if event.data_table.id != "fit-table":
            return
        app: Any = self.app
        self.query_one(PlanDetail).show(self.highlighted_plan(), app.current_recommendation)

    def toggle_all(self) -> None:
        """Best runtime per format <-> every plan."""
        self.show_all = not self.show_all
        app: Any = self.app
        self.show_recommendation(app.current_recommendation)


def _int(text: str) -> int | None:
    try:
        return int(text.strip().replace(",", "").replace("_", ""))
    except ValueError:
        return None
