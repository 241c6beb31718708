"""The Textual app: state (the fit inputs, the probed host, the current recommendation), key bindings, and the
workers that run the probe and the library off the UI thread. Build it with `create_app` so tests inject data."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from rich.text import Text
from textual import work
from textual.app import App
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.reactive import var
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static, TabbedContent
from textual.worker import get_current_worker

from planner.errors import PlannerError
from planner.hardware.catalog import Catalog, get_fabric
from planner.hardware.targets import target_from_host
from planner.models.profiles import ModelRegistry
from planner.plan import GIB, Target
from planner.tui.screens.help import HelpScreen
from planner.tui.screens.main import TAB_TABLES, TABS, MainScreen
from planner.tui.state import (ALL, DEFAULT_DEVICES, DEFAULT_MODELS, LOCAL, MAX_CONCURRENCY, MAX_COUNT, MAX_NODES,
                               MIN_CONTEXT, PREFERENCES, CostCache, FitInputs, clamp_context, compute_recommendation,
                               default_context, fabrics, format_families, make_target, pick_default, runtime_ids,
                               step_power_of_two)
from planner.tui.widgets.fit import FitPane

HostProvider = Callable[[], Any]
W = TypeVar("W", bound=Widget)
# Inputs settle this long before a fit starts, so holding + or typing digits runs one fit, not ten.
FIT_DEBOUNCE_S = 0.12


class PlannerApp(App[None]):
    """Browse devices and models and see what fits where; every number comes from planner's library."""

    CSS_PATH = "planner.tcss"
    TITLE = "planner"
    SUB_TITLE = "what fits where"
    BINDINGS = [
        Binding("1", "show_tab('devices')", "Devices", id="tab.devices"),
        Binding("2", "show_tab('models')", "Models", id="tab.models"),
        Binding("3", "show_tab('fit')", "Fit", id="tab.fit"),
        Binding("4", "show_tab('matrix')", "Matrix", id="tab.matrix"),
        Binding("5", "show_tab('rank')", "Best here", id="tab.rank"),
        Binding("slash", "search", "Search", id="search", key_display="/"),
        Binding("plus,equals_sign", "context(1)", "Context ×2", id="context.up", key_display="+"),
        Binding("minus", "context(-1)", "Context ÷2", id="context.down", key_display="-"),
        Binding("c", "edit('fit-context')", "Type a context length", id="context.edit", show=False),
        Binding("right_square_bracket", "concurrency(1)", "More sequences", id="concurrency.up", key_display="]", show=False),
        Binding("left_square_bracket", "concurrency(-1)", "Fewer sequences", id="concurrency.down", key_display="[", show=False),
        Binding("n", "count(1)", "One more device", id="count.up", show=False),
        Binding("N", "count(-1)", "One device fewer", id="count.down", show=False),
        Binding("m", "nodes(1)", "One more node", id="nodes.up", show=False),
        Binding("M", "nodes(-1)", "One node fewer", id="nodes.down", show=False),
        Binding("f", "cycle_fabric", "Next inter-node fabric", id="fabric", show=False),
        Binding("t", "cycle_format", "Next format filter", id="filter.format", show=False),
        Binding("r", "cycle_runtime", "Next runtime filter", id="filter.runtime", show=False),
        Binding("p", "cycle_prefer", "Next preference (balanced, quality, speed, memory)", id="prefer", show=False),
        Binding("a", "toggle_all", "Fit: best runtime per format / every plan", id="fit.all", show=False),
        Binding("s", "sort", "Devices/Models: next sort column", id="sort", show=False),
        Binding("y", "copy_launch", "Copy launch", id="copy"),
        Binding("w", "toggle_warnings", "Probe warnings", id="warnings", show=False),
        Binding("escape", "focus_table", "Leave the search / input box", id="focus.table", show=False),
        Binding("question_mark", "help", "Help", id="help", key_display="?"),
        Binding("q", "quit", "Quit", id="quit"),
    ]

    inputs: var[FitInputs] = var(FitInputs("", ""))
    host: var[Any | None] = var(None)
    probe_status: var[str] = var("probe: off")
    # always_update: a fit that returns an equal Recommendation (inputs changed and changed back) still redraws.
    current_recommendation: var[Any | None] = var(None, always_update=True)

    def __init__(self, catalog: Catalog, registry: ModelRegistry, host_provider: HostProvider | None = None,
                 inputs: FitInputs | None = None, device_chosen: bool = False):
        super().__init__()
        self.catalog = catalog
        self.registry = registry
        self.host_provider = host_provider
        self.costs = CostCache(registry)
        self.eval_reports: list[dict] = []  # stored planner eval results (create_app passes them)
        # Until the user picks a device, a probe that finds GPUs moves the plan to this machine.
        self.device_chosen = device_chosen
        self.current_target: Target | None = None
        self.fit_error: str | None = None
        self.fit_pending = True
        self.last_copied: str | None = None
        self._fit_timer: Timer | None = None
        self.probe_warnings: list[str] = []  # what the probe warned about, shown in a panel on request (w)
        self.main: MainScreen | None = None
        self.set_reactive(PlannerApp.inputs, inputs or default_inputs(catalog, registry))
        if host_provider is not None:
            self.set_reactive(PlannerApp.probe_status, "probe: scanning…")

    def get_default_screen(self) -> MainScreen:
        """The tabbed main screen: on the fit tab when it will plan for this machine (probing, no device chosen),
        else on the catalog (key 1 and 3 switch between them)."""
        self.main = MainScreen("fit" if self.host_provider is not None and not self.device_chosen else "devices")
        return self.main

    def on_mount(self) -> None:
        """Start the first fit and the probe, both in workers: nothing here blocks the first frame."""
        self._schedule_fit(0.0)
        if self.host_provider is not None:
            self._probe()
        self._update_status()

    # ---------------------------------------------------------------------------------- state

    @property
    def active_tab(self) -> str:
        """Id of the visible tab."""
        try:
            return self._q("#tabs", TabbedContent).active
        except NoMatches:  # before the main screen is composed
            return ""

    def _q(self, selector: str, expect_type: type[W] = Widget) -> W:  # type: ignore[assignment]
        """Query the main screen (not the help screen that may be on top of it)."""
        if self.main is None:
            raise NoMatches(selector)
        return self.main.query_one(selector, expect_type)

    def update_inputs(self, **changes: Any) -> None:
        """Change some inputs (context is kept within the model's maximum); the fit follows."""
        new = self.inputs.with_(**changes)
        spec = self.registry.get(new.model_id)
        new = new.with_(context=clamp_context(new.context, spec.max_context))
        if new.device_id == LOCAL and self.host is None:
            new = new.with_(device_id=self.inputs.device_id)
        if new != self.inputs:
            self.inputs = new

    def choose_model(self, model_id: str, switch: bool = True) -> None:
        """Plan for this profile; open the fit tab unless told not to."""
        self.update_inputs(model_id=model_id)
        if switch:
            self.action_show_tab("fit")

    def choose_device(self, device_id: str, switch: bool = True) -> None:
        """Plan on this device (or LOCAL, the probed machine); open the fit tab unless told not to."""
        self.device_chosen = True
        self.update_inputs(device_id=device_id)
        if switch:
            self.action_show_tab("fit")

    def watch_inputs(self, old: FitInputs, new: FitInputs) -> None:
        """Any input change re-runs the fit (debounced) and redraws the status line."""
        self._schedule_fit()
        self._update_status()

    def watch_current_recommendation(self, rec: Any) -> None:
        """Redraw the status line with the new recommendation."""
        self._update_status()

    def watch_probe_status(self, status: str) -> None:
        """Show the probe's progress."""
        self._update_status()

    def local_label(self) -> str:
        """'1x NVIDIA GeForce RTX 4090, 23.1 GiB free' for the probed host."""
        if self.host is None:
            return "not probed"
        try:
            t = target_from_host(self.host)
        except PlannerError as exc:
            return str(exc)
        return f"{t.label}, {sum(t.usable_bytes) / GIB:.1f} GiB usable"

    # ---------------------------------------------------------------------------------- fit worker

    def _schedule_fit(self, delay: float = FIT_DEBOUNCE_S) -> None:
        self.fit_pending = True
        if self._fit_timer is not None:
            self._fit_timer.stop()
            self._fit_timer = None
        if delay <= 0:
            self.call_after_refresh(self._start_fit)  # after the first frame, so it is not delayed by the fit
        else:
            self._fit_timer = self.set_timer(delay, self._start_fit)

    def _start_fit(self) -> None:
        self._fit_timer = None
        self._fit(self.inputs, self.host)

    @work(thread=True, exclusive=True, group="fit")
    def _fit(self, inputs: FitInputs, host: Any) -> None:
        """recommend() off the UI thread (0.1-0.5 s); a result for outdated inputs is dropped."""
        rec, target, error = None, None, None
        try:
            target = make_target(inputs, self.catalog, host)
            rec = compute_recommendation(inputs, self.costs, self.catalog, host, self.eval_reports)
        except Exception as exc:  # noqa: BLE001 - shown in the fit pane: the UI must survive any library error
            error = f"cannot plan this: {type(exc).__name__}: {exc}"
        if not get_current_worker().is_cancelled:
            self.call_from_thread(self._fit_done, inputs, rec, target, error)

    def _fit_done(self, inputs: FitInputs, rec: Any, target: Target | None, error: str | None) -> None:
        if inputs != self.inputs or self._fit_timer is not None:
            return  # the inputs moved on while this ran; a newer fit is coming
        self.fit_pending = False
        self.fit_error = error
        self.current_target = target
        self.current_recommendation = rec
        if error:
            self.notify(error, severity="error", timeout=6)

    # ---------------------------------------------------------------------------------- probe worker

    @work(thread=True, exclusive=True, group="probe")
    def _probe(self) -> None:
        """The hardware probe (NVML, sysfs, subprocesses) off the UI thread; its failure is shown, not raised."""
        assert self.host_provider is not None
        host, error = None, None
        try:
            host = self.host_provider()
        except Exception as exc:  # noqa: BLE001 - a missing driver or a broken probe must not take the UI down
            error = f"{type(exc).__name__}: {exc}"
        self.call_from_thread(self._probe_done, host, error)

    def _probe_done(self, host: Any, error: str | None) -> None:
        if error is not None or host is None:
            self.probe_status = "probe failed: catalog only (w: why)"
            self.probe_warnings = [f"probing this machine failed: {error}"]
            self._show_warnings_text()
            return
        self.host = host
        gpus = list(getattr(host, "gpus", []) or [])
        self.probe_warnings = [str(w) for w in getattr(host, "warnings", []) or []]
        status = f"probe: {self.local_label().split(',')[0]}" if gpus else "probe: no GPU, CPU and RAM"
        n = len(self.probe_warnings)
        # Warnings wait in a panel the user opens (w), instead of a popup over the table.
        self.probe_status = status + (f" · {n} warning{'s' if n > 1 else ''} (w)" if n else "")
        self._show_warnings_text()
        try:
            target_from_host(host)
            plannable = True
        except PlannerError:  # no GPU and no RAM figures: nothing to plan for here
            plannable = False
        if plannable and not self.device_chosen:
            self.update_inputs(device_id=LOCAL)  # open where the user is: this machine, GPUs or CPU and RAM
        elif self.inputs.device_id == LOCAL:
            self._schedule_fit()  # the host changed under a plan for it

    def _show_warnings_text(self) -> None:
        """Put the probe's warnings into their panel (shown with w)."""
        try:
            panel = self._q("#probe-warnings", Static)
        except NoMatches:
            return
        text = Text("probe warnings (w or Esc closes):\n", style="bold")
        for w in self.probe_warnings:
            text.append(f"• {w}\n", style="")
        panel.update(text)

    def action_toggle_warnings(self) -> None:
        """Show or hide the probe's warnings."""
        try:
            panel = self._q("#probe-warnings", Static)
        except NoMatches:
            return
        if not self.probe_warnings and not panel.has_class("shown"):
            self.notify("the probe reported no warnings", timeout=2)
            return
        panel.toggle_class("shown")

    # ---------------------------------------------------------------------------------- status line

    def _update_status(self) -> None:
        try:
            status = self._q("#status", Static)
            probe = self._q("#probe", Static)
        except NoMatches:  # not composed yet (watchers fire during start-up)
            return
        probe.update(Text(self.probe_status, style="dim"))
        i = self.inputs
        device = "this machine" if i.device_id == LOCAL else self.catalog.get(i.device_id).name
        out = Text()
        out.append(self.registry.get(i.model_id).name, style="bold")
        out.append(" on ")
        out.append(device + (f" ×{i.count}" if i.count > 1 and i.device_id != LOCAL else ""), style="bold")
        if i.nodes > 1 and i.device_id != LOCAL:
            out.append(f" × {i.nodes} nodes ({i.fabric_id})", style="bold")
        out.append(f" · {i.context:,} tok × {i.concurrency} seq" + (f" · prefer {i.prefer}" if i.prefer != "balanced" else ""))
        if i.format_family != ALL:
            out.append(f" · {i.format_family} only", style="cyan")
        if i.runtime_id != ALL:
            out.append(f" · {i.runtime_id} only", style="cyan")
        out.append("  →  ")
        rec = self.current_recommendation
        if self.fit_pending:
            out.append("computing…", style="dim")
        elif rec is None:
            out.append(self.fit_error or "no plan", style="red")
        elif rec.best is None:
            out.append("nothing fits", style="bold red")
        else:
            b = rec.best
            out.append(f"★ {b.format_id} with {b.runtime_id}", style="bold green")
            out.append(f"  {b.total_memory_bytes / GIB:.1f}/{b.usable_memory_bytes / GIB:.1f} GiB, "
                       f"{b.decode_tokens_per_s:.0f} tok/s")
            if i.nodes > 1 and i.device_id != LOCAL:
                out.append(f", {b.parallel_layout}", style="cyan")
        status.update(out)

    # ---------------------------------------------------------------------------------- actions

    def action_show_tab(self, tab: str) -> None:
        """Switch tabs."""
        tabs = self._q("#tabs", TabbedContent)
        if tab in TABS and tabs.active != tab:
            tabs.active = tab
            # Focus the new tab's table now, before the old one is hidden and Textual picks a focus for us.
            if self.main is not None:
                self.main.set_focus(self._q(TAB_TABLES[tab], DataTable))

    def action_search(self) -> None:
        """Focus the search box of the devices or models tab (from fit or matrix: the models search)."""
        tab = self.active_tab
        if tab not in ("devices", "models"):
            tab = "models"
        self._focus_in_tab(tab, "#device-search" if tab == "devices" else "#model-search")

    def _focus_in_tab(self, tab: str, selector: str) -> None:
        """Focus a widget of a tab: now if the tab is showing (so the next keys land in it), else once it shows."""
        widget = self._q(selector, Input)
        if self.active_tab == tab:
            widget.focus()
        else:
            self.action_show_tab(tab)
            self.call_after_refresh(widget.focus)

    def action_focus_table(self) -> None:
        """Leave a search or number box for the tab's table (and close the probe warnings)."""
        try:
            self._q("#probe-warnings", Static).remove_class("shown")
        except NoMatches:
            pass  # not composed yet
        table_id = TAB_TABLES.get(self.active_tab)
        if table_id:
            self._q(table_id, DataTable).focus()

    def action_context(self, direction: int) -> None:
        """Double or halve the context (powers of two), within the model's maximum."""
        max_ctx = self.registry.get(self.inputs.model_id).max_context
        ctx = step_power_of_two(self.inputs.context, direction > 0, MIN_CONTEXT, max_ctx)
        if ctx == self.inputs.context:
            self.bell()
            edge = f"the model's maximum of {max_ctx:,}" if direction > 0 else f"the minimum of {MIN_CONTEXT}"
            self.notify(f"context is already at {edge} tokens", timeout=2)
            return
        self.update_inputs(context=ctx)

    def action_edit(self, input_id: str) -> None:
        """Open the fit tab and focus a number box (its text is selected, so typing replaces it)."""
        self._focus_in_tab("fit", f"#{input_id}")

    def action_concurrency(self, direction: int) -> None:
        """Double or halve the number of concurrent sequences."""
        n = step_power_of_two(self.inputs.concurrency, direction > 0, 1, MAX_CONCURRENCY)
        self.update_inputs(concurrency=n)

    def action_count(self, delta: int) -> None:
        """One device more or fewer (catalog targets only)."""
        if self.inputs.device_id == LOCAL:
            self.notify("this machine plans with the GPUs it has; pick a catalog device to change the count", timeout=3)
            return
        self.update_inputs(count=max(1, min(MAX_COUNT, self.inputs.count + delta)))

    def action_nodes(self, delta: int) -> None:
        """One node more or fewer, each of `count` devices (catalog targets only)."""
        if self.inputs.device_id == LOCAL:
            self.notify("this machine is one node; pick a catalog device to plan across nodes", timeout=3)
            return
        self.update_inputs(nodes=max(1, min(MAX_NODES, self.inputs.nodes + delta)))

    def action_cycle_fabric(self) -> None:
        """Next inter-node fabric (InfiniBand, RoCE, Ethernet)."""
        self.update_inputs(fabric_id=_next(list(fabrics()), self.inputs.fabric_id))

    def action_cycle_format(self) -> None:
        """Next format family filter (all, gguf, exl2, ...)."""
        options = [ALL] + format_families()
        self.update_inputs(format_family=_next(options, self.inputs.format_family))

    def action_cycle_runtime(self) -> None:
        """Next runtime filter (all, llama.cpp, ...)."""
        options = [ALL] + runtime_ids()
        self.update_inputs(runtime_id=_next(options, self.inputs.runtime_id))

    def action_cycle_prefer(self) -> None:
        """Next ranking preference."""
        self.update_inputs(prefer=_next(list(PREFERENCES), self.inputs.prefer))

    def action_toggle_all(self) -> None:
        """Fit table: best runtime per format, or every plan."""
        self._q("#fit-pane", FitPane).toggle_all()

    def action_sort(self) -> None:
        """Next sort column of the devices or models table."""
        tab = self.active_tab
        if tab in ("devices", "models"):
            pane: Any = self._q(f"#{tab}-pane")
            pane.cycle_sort()

    def action_copy_launch(self) -> None:
        """Copy the launch command of the plan under the fit cursor (OSC 52: the terminal may refuse)."""
        plan = self._q("#fit-pane", FitPane).highlighted_plan()
        if plan is None or not plan.launch:
            self.notify("no launch command to copy (pick a plan that runs in the Fit tab)", severity="warning")
            return
        self.copy_to_clipboard(plan.launch)
        self.last_copied = plan.launch
        self.notify(f"copied: {plan.launch[:70]}{'…' if len(plan.launch) > 70 else ''}\n"
                    "(terminals without OSC 52 ignore this: select the command with the mouse)", timeout=4)

    def action_help(self) -> None:
        """Show the bindings and how the panes work."""
        self.push_screen(HelpScreen())

    def on_button_pressed(self, event: Any) -> None:
        """The detail pane's Copy button."""
        if event.button.id == "copy":
            self.action_copy_launch()


def _next(options: list[str], current: str) -> str:
    return options[(options.index(current) + 1) % len(options)] if current in options else options[0]


def default_inputs(catalog: Catalog, registry: ModelRegistry, model: str | None = None, device: str | None = None,
                   count: int = 1, context: int | None = None, concurrency: int = 1, nodes: int = 1,
                   fabric: str | None = None) -> FitInputs:
    """Starting inputs: the given model and device (resolved by name) or sensible defaults present in the data."""
    model_id = registry.get(model).id if model else pick_default(DEFAULT_MODELS, registry.models)
    device_id = catalog.get(device).id if device else pick_default(DEFAULT_DEVICES, catalog.devices)
    if model_id is None or device_id is None:
        raise ValueError("the TUI needs at least one model profile and one catalog device")
    max_ctx = registry.get(model_id).max_context
    ctx = clamp_context(context, max_ctx) if context else default_context(max_ctx)
    fabric_id = get_fabric(fabric, fabrics()).id if fabric else "ib-ndr"
    return FitInputs(model_id, device_id, max(1, min(MAX_COUNT, count)), ctx, max(1, min(MAX_CONCURRENCY, concurrency)),
                     nodes=max(1, min(MAX_NODES, nodes)), fabric_id=fabric_id)


def create_app(catalog: Catalog, registry: ModelRegistry, host_provider: HostProvider | None = None, *,
               model: str | None = None, device: str | None = None, count: int = 1, context: int | None = None,
               concurrency: int = 1, eval_reports: Sequence[dict] = (), nodes: int = 1,
               fabric: str | None = None) -> PlannerApp:
    """Build the app from data: a catalog, the profiles, optionally a callable that returns the probed Host
    (called once, in a worker; None means no probing), and stored planner eval reports (planner.measure.reports.load_reports())."""
    inputs = default_inputs(catalog, registry, model, device, count, context, concurrency, nodes, fabric)
    app = PlannerApp(catalog, registry, host_provider, inputs, device_chosen=device is not None)
    app.eval_reports = list(eval_reports)
    return app
