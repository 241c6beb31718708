"""The ranking view: which model runs best on the current target (planner.fit.rank_here, the function `planner
recommend` without --model ranks with: bundled profiles and the models in the local HF cache), computed in a worker
when the tab is shown; Enter opens the model in the fit pane."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Label, Select, Static

from planner.capability import USES, unit
from planner.fit import DEFAULT_MIN_TOKENS_PER_S, Ranking, rank_here
from planner.plan import GIB
from planner.recommend import speed_cell
from planner.tui.state import make_target


class RankPane(Vertical):
    """Rows: models ranked by expected capability for the chosen use on the fit's target."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.use = "chat"
        self.dirty = True
        self.computed_for: tuple | None = None
        self.ranking: Ranking | None = None
        self.skipped: list[str] = []  # HF-cache repos that could not be read

    def compose(self) -> ComposeResult:
        """Use picker, hint, table, status."""
        with Horizontal(classes="controls"):
            yield Label("use", classes="ctl-label")
            yield Select([(u, u) for u in USES], value="chat", allow_blank=False, compact=True, id="rank-use")
            yield Static("", id="rank-hint")
        yield DataTable(id="rank-table", cursor_type="row")
        yield Static("", id="rank-status", classes="pane-status")

    def on_mount(self) -> None:
        """Recompute when the target or context changes (now if visible, else when shown)."""
        app: Any = self.app
        self.watch(app, "inputs", lambda _i: self.invalidate(), init=False)
        self.watch(app, "host", lambda _h: self.invalidate(), init=False)

    def invalidate(self) -> None:
        """Inputs changed."""
        self.dirty = True
        app: Any = self.app
        if app.active_tab == "rank":
            self.recompute()

    def recompute(self) -> None:
        """Start the worker for the current target, context and use (only when one of them changed)."""
        app: Any = self.app
        inputs = app.inputs
        try:
            target = make_target(inputs, app.catalog, app.host)
        except (LookupError, Exception) as exc:  # noqa: BLE001 - shown in the pane, like the fit pane's errors
            self.query_one("#rank-status", Static).update(f"no target: {exc}")
            return
        key = (inputs.device_id, inputs.count, inputs.nodes, inputs.context, self.use, id(app.host))
        self.dirty = False
        if key == self.computed_for:
            return
        self.computed_for = key
        self.query_one("#rank-hint", Static).update(
            f"  {target.label} · {inputs.context:,} tokens · ≥ {DEFAULT_MIN_TOKENS_PER_S:g} tok/s · Enter opens it in Fit")
        self.query_one("#rank-status", Static).update("ranking…")
        self._rank(target, inputs.context, self.use, key)

    @work(thread=True, exclusive=True, group="rank")
    def _rank(self, target: Any, context: int, use: str, key: tuple) -> None:
        """rank_here off the UI thread (well under a second with warm caches)."""
        from planner.measure.calibration import for_target

        app: Any = self.app
        calibration, _note = for_target(target)  # as `planner recommend` ranks: bench records, measured bandwidth
        ranking, skipped = rank_here(app.registry, target, use=use, context=context, calibration=calibration)
        app.call_from_thread(self._done, key, ranking, skipped)

    def _done(self, key: tuple, ranking: Ranking, skipped: list[str] | None = None) -> None:
        if key != self.computed_for:
            return  # a ranking for older inputs
        self.ranking, self.skipped = ranking, list(skipped or [])
        table = self.query_one("#rank-table", DataTable)
        table.clear(columns=True)
        for col in ("#", "model", "format", "runtime", "GiB", "decode tok/s", "loss (KLD)", f"{ranking.use} published",
                    "expected (10-90 %)"):
            table.add_column(col, key=col)
        for i, f in enumerate(ranking.ranked, 1):
            p, e = f.plan, f.expected
            assert p is not None and e is not None and f.capability.score is not None
            table.add_row(str(i), Text(f.spec.name, style="bold" if i == 1 else ""), p.format_id, p.runtime_id,
                          f"{p.total_memory_bytes / GIB:.1f}", speed_cell(p, "decode_tokens_per_s"),
                          f"{p.quality.get('kld', 0):.3f} {p.quality.get('label', '')}",
                          f"{f.capability.score:g}{unit(f.capability)}",
                          Text(f"{e.value:.0f} ({e.low:.0f}-{e.high:.0f})" + (" extrapolated" if e.extrapolated else ""),
                               style="yellow" if e.extrapolated else ""),
                          key=f.spec.id)
        left = [f for f in ranking.fits if not f.ranked]
        no_score = sum(1 for f in left if not f.capability.has_data)
        # as the CLI lists them: models that run here but have no published score (the user's HF-cache models)
        unscored = [f"{f.spec.id} ({f.plan.format_id}, {f.plan.decode_tokens_per_s:.0f} tok/s)" for f in left
                    if not f.capability.has_data and f.plan is not None]
        self.query_one("#rank-status", Static).update(
            f"{len(ranking.ranked)} ranked · {no_score} without a published {ranking.use} score · "
            f"{len(left) - no_score} do not fit, are too slow or need a longer context · source: "
            + (ranking.ranked[0].capability.source if ranking.ranked else "-")
            + (f"\nrun here, not ranked (no published score): {', '.join(unscored)}" if unscored else "")
            + (f"\nHF cache: {len(self.skipped)} repo(s) could not be read" if self.skipped else ""))

    def on_select_changed(self, event: Select.Changed) -> None:
        """Another use: re-rank."""
        if event.select.id == "rank-use" and event.value is not Select.NULL:
            event.stop()
            self.use = str(event.value)
            self.recompute()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a model: plan it in the fit pane."""
        if event.data_table.id != "rank-table" or event.row_key.value is None:
            return
        app: Any = self.app
        app.choose_model(str(event.row_key.value))
