"""The second batch of published quality rows (benchmarks/data/quality_extra2.csv) against the table the planner fits."""

import csv
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXTRA2 = ROOT / "benchmarks" / "data" / "quality_extra2.csv"
PUBLISHED = ROOT / "planner" / "data" / "quality_published.csv"
# a row's source must name where to read it: a URL, a commit, a pull request or an arXiv table
LOCATOR = re.compile(r"https?://|commit [0-9a-f]{7,}|PR #\d+|arXiv \d{4}\.\d{4,5}")


def _extra2() -> list[dict[str, str]]:
    with EXTRA2.open(newline="") as f:
        return list(csv.DictReader(f))


def test_every_extra2_row_names_its_source_and_its_numbers_agree():
    """Each row cites a locatable source, and its perplexity change is the one its own perplexities give."""
    rows = _extra2()
    assert len(rows) >= 30
    for r in rows:
        assert LOCATOR.search(r["source"]), r["source"]
        pct = float(r["ppl_delta_pct"])
        if r["ppl_fp16"]:
            assert pct == pytest.approx((float(r["ppl_quant"]) / float(r["ppl_fp16"]) - 1) * 100, abs=0.005), r
        else:  # the loss is relative to something other than a 16-bit run printed in the row: the row must say what
            assert r["baseline"], r


def test_extra2_rows_reach_the_fitted_table_under_a_family():
    """Every extra2 row not held out by its fit_why is in quality_published.csv as a fitted row of a quantization
    family with the same perplexity change (a format name the build cannot map would silently drop the row)."""
    with PUBLISHED.open(newline="") as f:
        published = list(csv.DictReader(f))
    fitted = {(r["source"], r["model"], r["ppl_delta_pct"]): r for r in published if r["fit"] == "yes"}
    held = {(r["source"], r["model"]) for r in published if r["fit"] == "no"}
    for r in _extra2():
        if r["fit_why"]:
            assert (r["source"], r["model"]) in held, r
            continue
        row = fitted.get((r["source"], r["model"], r["ppl_delta_pct"]))
        assert row is not None, r
        assert row["family"] and float(row["bits"]) > 0, row
