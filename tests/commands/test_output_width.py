"""Output that fits the terminal and survives pipes: memory bars capped at the console width, text not wrapped when
stdout is not a terminal, and the alternatives table saying how it is ranked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from planner.cli import main
from planner.commands import options
from planner.commands.recommend import memory_bar
from planner.recommend import ranking_title

SNAPSHOTS = Path(__file__).resolve().parents[1] / "fixtures" / "snapshots"
MARKUP = re.compile(r"\[/?[a-z ]*\]")


def _bar_cells(text: str) -> str:
    """The bar of a memory_bar() line, markup removed."""
    return MARKUP.sub("", text).split("  ")[0]


def test_a_plan_far_over_its_memory_draws_a_bar_no_wider_than_the_terminal(capsys):
    assert main(["estimate", "--model", "405B", "--format", "fp16", "--device", "rtx-2060"]) == 0
    out = capsys.readouterr().out
    bar = next(line for line in out.splitlines() if "█" in line)
    assert len(bar) <= options.console().width  # 5,661 characters before
    cells = bar.split("  ")[0]
    assert 4 <= len(cells) <= 40 and "│" in cells  # drawn to scale, with a mark where usable memory ends


@pytest.mark.parametrize("width", [12, 30, 200])
def test_memory_bar_respects_a_narrow_terminal(width):
    from planner.cost.model import ModelCost
    from planner.cost.evaluate import evaluate
    from planner.formats import get_format
    from planner.hardware.catalog import load_catalog
    from planner.models.profiles import load_registry
    from planner.plan import target_from_catalog
    from planner.runtimes import get_runtime

    mc = ModelCost(load_registry().get("llama-3.1-8b"))
    plan = evaluate(mc, get_format("Q4_K_M"), get_runtime("llama.cpp"), target_from_catalog(load_catalog().get("rtx-4090"), 1),
                    context=8192)
    cells = _bar_cells(memory_bar(plan, max_width=width))
    assert len(cells) == min(40, width)
    assert "│" not in cells  # it fits: no overflow mark
    assert cells.count("█") < len(cells)  # and some memory is left


def test_notes_are_not_wrapped_when_output_is_not_a_terminal(capsys):
    # a CPU-only snapshot always gets this note (about 250 characters): rich used to cut it at column 160
    assert main(["recommend", "--model", "llama-3.1-8b", "--format", "Q4_K_M", "--snapshot", str(SNAPSHOTS / "cpu-only-laptop.json")]) == 0
    out = capsys.readouterr().out
    note = next(line for line in out.splitlines() if "planning for this CPU" in line)
    assert len(note) > 160 and note.rstrip().endswith("later plans use it")


@pytest.mark.parametrize("prefer", ["balanced", "quality", "speed", "memory"])
def test_the_alternatives_table_says_how_it_is_ranked(capsys, prefer):
    assert main(["recommend", "--model", "llama-3.1-8b", "--device", "rtx-4090", "--prefer", prefer]) == 0
    out = capsys.readouterr().out
    assert f"Alternatives (best runtime per format), {ranking_title(prefer)}" in out
    assert f"({prefer})" in ranking_title(prefer)
