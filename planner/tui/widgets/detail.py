"""The detail pane: one plan's memory breakdown, speed, quality, reasons and launch command."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Static

from planner.plan import GIB, Plan
from planner.recommend import speed_cell
from planner.tui.state import QUALITY_STYLES, verdict
from planner.tui.widgets.membar import MemoryBar


def plan_title(plan: Plan, recommended: bool) -> Text:
    """'★ recommended: Q4_K_M with llama.cpp, KV q8_0, single GPU — fits'."""
    text, style = verdict(plan)
    out = Text()
    if recommended:
        out.append("★ recommended: ", style="bold green")
    out.append(plan.format_id, style="bold")
    out.append(f" with {plan.runtime_id}")
    if plan.kv_dtype:
        out.append(f", KV {plan.kv_dtype}")
    if plan.runs:
        par = plan.parallel or {}
        # multi-node and replicated plans show their parallel shape (tp × pp × dp); others their placement
        out.append(f", {plan.parallel_layout if par.get('nodes', 1) > 1 or par.get('data_parallel', 1) > 1 else plan.layout}")
    out.append("  ")
    out.append(text, style=style)
    return out


def plan_body(plan: Plan, rec: Any | None, recommended: bool) -> Text:
    """Speed, quality, size, then the reasons (for the recommended plan), warnings and suggestions."""
    out = Text()
    if plan.runs and plan.per_device:
        out.append("decode ", style="dim")
        # speeds through the CLI's formatter: '~N (N1-N2)' where the basis is weak
        out.append(f"{speed_cell(plan, 'decode_tokens_per_s')} tok/s", style="bold")
        if plan.concurrency > 1:
            out.append(f" per sequence, {speed_cell(plan, 'throughput_tokens_per_s')} tok/s total", style="bold")
        out.append(f" ({speed_cell(plan, 'decode_tokens_per_s_full_context')} at full context)", style="dim")
        out.append("   prefill ", style="dim")
        out.append(f"{speed_cell(plan, 'prefill_tokens_per_s')} tok/s", style="bold")
        if plan.speed_basis:
            out.append(f" [{plan.speed_basis}]", style="dim")
        out.append("   TTFT ", style="dim")
        out.append(f"{plan.ttft_s:.2f} s", style="bold")
        out.append(f" ({plan.prompt_tokens}-token prompt)\n", style="dim")
        q = plan.quality
        if q:
            out.append("quality ", style="dim")
            out.append(f"{q.get('label', '?')}", style=QUALITY_STYLES.get(q.get("label", ""), ""))
            out.append(f": KLD {q.get('kld', 0):.4f}, perplexity {q.get('ppl_delta_pct', 0):+.2f}%")
            if q.get("source") == "measured":
                out.append(f" measured by planner eval on {q.get('text', '?')}", style="bold")
        out.append(f"   {plan.bits_per_weight:.2f} bits/weight, file {plan.file_size_bytes / GIB:.1f} GiB", style="dim")
        if plan.gpu_layers is not None and plan.layout != "cpu":
            out.append(f", {plan.gpu_layers}/{plan.n_layers} layers on GPU", style="dim")
        out.append("\n")
    if recommended and rec is not None:
        for r in rec.reasons:
            out.append("• ", style="green")
            out.append(r + "\n")
    for w in plan.warnings:
        out.append(f"! {w}\n", style="yellow")
    if rec is not None and rec.best is None:
        out.append("Nothing fits. ", style="bold red")
        for s in rec.suggestions:
            out.append(f"\n• {s}")
    return out


class PlanDetail(Vertical):
    """The plan under the fit table's cursor; only the body scrolls, so the launch command stays in view."""

    def compose(self) -> ComposeResult:
        """Title, bar, scrolling body, launch row."""
        yield Static("", id="detail-title")
        yield MemoryBar(id="detail-bar")
        with VerticalScroll(id="detail-scroll"):
            yield Static("", id="detail-body")
        with Horizontal(id="launch-row"):
            yield Static("", id="launch", markup=False)
            yield Button("Copy (y)", id="copy", compact=True, tooltip="copy the launch command to the clipboard")

    def show(self, plan: Plan | None, rec: Any | None) -> None:
        """Show a plan (None: a placeholder, or the suggestions when nothing fits)."""
        recommended = plan is not None and rec is not None and rec.best is plan
        title = self.query_one("#detail-title", Static)
        body = self.query_one("#detail-body", Static)
        launch = self.query_one("#launch", Static)
        self.query_one(MemoryBar).plan = plan
        if plan is None:
            title.update(Text("no plan selected", style="dim"))
            body.update(plan_body_none(rec))
            launch.update("")
            self.query_one("#copy", Button).disabled = True
            return
        title.update(plan_title(plan, recommended))
        body.update(plan_body(plan, rec, recommended))
        launch.update(f"$ {plan.launch}" if plan.launch else "(no launch command: this plan cannot run)")
        self.query_one("#copy", Button).disabled = not plan.launch


def plan_body_none(rec: Any | None) -> Text:
    """The body with no plan: the suggestions when nothing fits, else a hint."""
    if rec is None:
        return Text("computing…", style="dim")
    out = Text("Nothing fits.", style="bold red")
    for s in rec.suggestions:
        out.append(f"\n• {s}")
    return out
