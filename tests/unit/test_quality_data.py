"""The hand-copied batches of published quality rows (benchmarks/data/quality_extra2.csv, quality_extra3.csv,
gguf_quality_extra.csv, gguf_quality_extra2.csv) against the table the planner fits."""

import csv
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXTRA2 = ROOT / "benchmarks" / "data" / "quality_extra2.csv"
EXTRA3 = ROOT / "benchmarks" / "data" / "quality_extra3.csv"
EXTRAS = [ROOT / "benchmarks" / "data" / f"quality_extra{n}.csv" for n in (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 18, 20, 21)]
PUBLISHED = ROOT / "planner" / "data" / "quality_published.csv"
# a row's source must name where to read it: a URL, a commit, a pull request or an arXiv table
LOCATOR = re.compile(r"https?://|commit [0-9a-f]{7,}|PR #\d+|arXiv \d{4}\.\d{4,5}")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("path", EXTRAS, ids=lambda p: p.name)
def test_every_extra_row_names_its_source_and_its_numbers_agree(path):
    """Each row cites a locatable source, and its perplexity change is the one its own perplexities give."""
    rows = _rows(path)
    assert len(rows) >= 10
    for r in rows:
        assert LOCATOR.search(r["source"]), r["source"]
        if not r["ppl_delta_pct"]:  # an accuracy or KLD row: it states its metric and is never fitted as a ppl change
            assert r["other_metric"] or r["kld"], r
            continue
        pct = float(r["ppl_delta_pct"])
        if r["ppl_fp16"]:
            assert pct == pytest.approx((float(r["ppl_quant"]) / float(r["ppl_fp16"]) - 1) * 100, abs=0.005), r
        else:  # the loss is relative to something other than a 16-bit run printed in the row: the row must say what
            assert r["baseline"], r


@pytest.mark.parametrize("path", EXTRAS, ids=lambda p: p.name)
def test_extra_rows_reach_the_fitted_table_under_a_family(path):
    """Every row not held out (by its fit_why, or by the build's own rules: a change <= 0 or > +100 %) is in
    quality_published.csv as a fitted row of a quantization family with the same perplexity change (a format name the
    build cannot map would silently drop the row)."""
    published = _rows(PUBLISHED)
    fitted = {(r["source"], r["model"], r["ppl_delta_pct"]): r for r in published if r["fit"] == "yes"}
    held = {(r["source"], r["model"], r["value"]): r["why"] for r in published if r["fit"] == "no"}
    for r in _rows(path):
        key = (r["source"], r["model"], r["ppl_delta_pct"])
        if not r["ppl_delta_pct"]:
            assert not any(p["source"] == r["source"] and p["model"] == r["model"] and p["dataset"] == r["dataset"]
                           for p in fitted.values()), r
            continue
        if r["fit_why"] or not 0 < float(r["ppl_delta_pct"]) <= 100:
            assert key in held, r
            continue
        row = fitted.get(key)
        if row is None:  # held out by one of the build's rules on the whole table: it must say which
            assert held.get(key), r
            continue
        assert row["family"] and float(row["bits"]) > 0, row


def test_grouped_rows_carry_the_bits_their_variant_names():
    """A GPTQ/AWQ/RTN/HQQ row whose variant names its bits ("2-bit g128", "8-bit per-channel") is fitted at those bits
    plus its group's scale/zero storage, below the next whole bit (the build once read every such row as 3 or 4 bits)."""
    published = _rows(PUBLISHED)
    named = [(r, int(m.group(1))) for r in published if r["family"] in ("gptq", "awq", "rtn", "hqq")
             if (m := re.search(r"\b([2-8])-bit", r["variant"]))]
    assert {n for _, n in named} >= {2, 3, 4, 8}
    for r, n in named:
        assert n <= float(r["bits"]) < n + 1, r


GGUF_EXTRA = ROOT / "benchmarks" / "data" / "gguf_quality_extra.csv"


def _unit(s: str) -> float:
    """One unit in the last printed digit of a number ('5.86' -> 0.01): sources round or truncate, so a full unit."""
    return 10.0 ** -len(s.split(".")[1]) if "." in s else 1.0


def test_gguf_extra_rows_agree_with_one_16bit_perplexity_per_source_and_model():
    """Every hand-copied GGUF row cites a locatable source, and within one source and model the rows that print both a
    perplexity and a relative change imply the same 16-bit perplexity (ppl / (1 + change)) as each other and as the
    source's F16 row, within the printed digits: a transposed digit, a swapped model label or a change copied from the
    wrong column breaks the agreement."""
    groups: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in _rows(GGUF_EXTRA):
        assert LOCATOR.search(r["source"]), r["source"]
        ppl, pct = r["ppl"].strip(), r["ppl_delta_or_pct"].strip()
        key = (r["source"][:60], r["model"])
        if "source inconsistent" in r["notes"]:  # the source's own numbers disagree; the row says so and which is used
            continue
        if r["quant_type"] in ("F16", "BF16") and ppl:
            groups.setdefault(key, []).append((float(ppl) - _unit(ppl), float(ppl) + _unit(ppl)))
        elif ppl and pct.endswith("%"):
            p, q = float(pct[:-1]), float(ppl)
            u, uq = _unit(pct[:-1]), _unit(ppl)
            groups.setdefault(key, []).append(((q - uq) / (1 + (p + u) / 100), (q + uq) / (1 + (p - u) / 100)))
    checked = [k for k, iv in groups.items() if len(iv) >= 2]
    assert len(checked) >= 5  # not vacuous: several sources print both numbers
    for k in checked:
        iv = groups[k]
        assert max(lo for lo, _ in iv) <= min(hi for _, hi in iv), (k, iv)


GGUF_EXTRA2 = ROOT / "benchmarks" / "data" / "gguf_quality_extra2.csv"


def test_gguf_extra2_tables_have_one_baseline_and_agree_with_their_printed_accuracy():
    """Each (source, model) table of gguf_quality_extra2.csv has exactly one F16 row, every other row is a quantized
    type with an importance matrix and a perplexity, and where the source also prints Accuracy (%) = 100 x PPL(F16) /
    PPL(Q) (kept in the notes), the copied perplexities give it back within the printed digits: a mistyped perplexity
    or a row moved to the wrong model breaks this."""
    rows = _rows(GGUF_EXTRA2)
    tables: dict[tuple[str, str], list[dict[str, str]]] = {}
    for r in rows:
        assert LOCATOR.search(r["source"]), r["source"]
        tables.setdefault((r["source"][:60], r["model"]), []).append(r)
    assert len(tables) >= 4
    n_acc = 0
    for key, rs in tables.items():
        base = [r for r in rs if r["quant_type"] == "F16"]
        assert len(base) == 1, key
        f16 = base[0]["ppl"]
        for r in rs:
            if r is base[0]:
                continue
            assert r["imatrix"] not in ("", "None", "unstated") and float(r["ppl"]) > 0, r
            m = re.search(r"Accuracy \(%\) printed ([\d.]+)", r["notes"])
            if m:
                n_acc += 1
                hi = (float(f16) + _unit(f16)) / (float(r["ppl"]) - _unit(r["ppl"])) * 100
                lo = (float(f16) - _unit(f16)) / (float(r["ppl"]) + _unit(r["ppl"])) * 100
                assert lo - _unit(m.group(1)) <= float(m.group(1)) <= hi + _unit(m.group(1)), r
    assert n_acc >= 20  # not vacuous: one table prints the accuracy column


@pytest.mark.parametrize("path", [GGUF_EXTRA, GGUF_EXTRA2], ids=lambda p: p.name)
def test_gguf_extra_rows_reach_the_table_under_a_gguf_family(path):
    """Every non-baseline GGUF row is in quality_published.csv under a GGUF family; a fitted one carries the bits of the
    planner's own mix on its model, and one left out says why (no profile, change <= 0, ...)."""
    published = [r for r in _rows(PUBLISHED) if r["family"].startswith("gguf")]
    by_key = {(r["source"], r["model"], r["variant"].split(" ")[0]): r for r in published}
    n_fit = 0
    for r in _rows(path):
        if r["quant_type"] in ("F16", "BF16"):
            continue
        row = by_key.get((r["source"], r["model"], r["quant_type"]))
        assert row is not None, r
        if row["fit"] == "yes":
            n_fit += 1
            assert 1 < float(row["bits"]) < 9, row
        else:
            assert row["why"], row
    assert n_fit >= 40


def test_no_fitted_row_is_smaller_than_a_decrease_its_own_column_prints():
    """A source's column (one method, variant and dataset across models) that prints a perplexity decrease of d % has
    run-to-run scatter of at least d %: no positive change below d % in it is fitted (intel/ipex-llm's fp8 column prints
    -0.89 % and +0.03 %), and such rows say why."""
    published = _rows(PUBLISHED)

    def column(r: dict[str, str]) -> tuple[str, ...]:
        return r["source"][:60], r["family"], r["variant"], r["dataset"]

    floor: dict[tuple[str, ...], float] = {}
    for r in published:
        if r["metric"] == "ppl_delta_pct" and r["value"] and float(r["value"]) < 0:
            floor[column(r)] = max(floor.get(column(r), 0.0), -float(r["value"]))
    assert len(floor) >= 3
    held = [r for r in published if r["fit"] == "no" and "noise" in r["why"] and column(r) in floor]
    assert any(r["source"].startswith("intel/ipex-llm") for r in held)
    for r in published:
        if r["fit"] == "yes" and column(r) in floor:
            assert float(r["ppl_delta_pct"]) >= floor[column(r)], r


GGUF_EXTRA3 = ROOT / "benchmarks" / "data" / "gguf_quality_extra3.csv"
EXTRA12 = ROOT / "benchmarks" / "data" / "quality_extra12.csv"


def test_exllamav3_chart_rows_agree_with_their_anchor_and_with_each_other():
    """The points read off exllamav3's charts (quality_extra12.csv and gguf_quality_extra3.csv): each change is the
    row's perplexity over the anchor its note names, every model's anchor is one value, EXL2 perplexity falls as its
    bits rise, and on Llama-3.1-8B (the one chart pair with KLD) ranking the points by perplexity ranks them by KLD too:
    a misread label, a digit typed wrong or a point copied to the wrong model breaks one of these."""
    anchors: dict[str, set[str]] = {}
    pairs: list[tuple[float, float]] = []
    exl2: dict[str, list[tuple[float, float]]] = {}
    rows = [(r, r["ppl_quant"], r["ppl_delta_pct"]) for r in _rows(EXTRA12)]
    rows += [(r, r["ppl"], r["ppl_delta_or_pct"].rstrip("%")) for r in _rows(GGUF_EXTRA3)]
    assert len(rows) >= 60
    for r, ppl, pct in rows:
        assert LOCATOR.search(r["source"]), r["source"]
        if not ppl:  # a point on the KLD chart only: it says so and carries no perplexity change
            assert r["kld"] and not pct and "KLD chart" in r["notes"] or "kld_bpw" in r["notes"], r
            continue
        m = re.search(r"\(PPL ([\d.]+)\)", r.get("baseline") or r["notes"])
        assert m, r
        anchors.setdefault(r["model"], set()).add(m.group(1))
        assert float(pct) == pytest.approx((float(ppl) / float(m.group(1)) - 1) * 100, abs=0.0005), r
        if r.get("format") == "EXL2":
            exl2.setdefault(r["model"], []).append((float(r["bits_per_weight"]), float(ppl)))
        if r["kld"]:
            pairs.append((float(ppl), float(r["kld"])))
    assert all(len(a) == 1 for a in anchors.values()) and len(anchors) == 4, anchors
    for model, pts in exl2.items():
        by_bits = [ppl for _, ppl in sorted(pts)]
        assert by_bits == sorted(by_bits, reverse=True), model
    assert len(pairs) >= 15
    klds = [k for _, k in sorted(pairs)]
    assert klds == sorted(klds), sorted(pairs)


SMALL_BATCHES = [ROOT / "benchmarks" / "data" / "quality_extra16.csv", ROOT / "benchmarks" / "data" / "gguf_quality_extra5.csv"]
SMALL_GPU_BATCHES = [SMALL_BATCHES[0], ROOT / "benchmarks" / "data" / "quality_extra19.csv",
                     ROOT / "benchmarks" / "data" / "quality_extra22.csv"]
SMALL_GGUF_BATCHES = [SMALL_BATCHES[1], ROOT / "benchmarks" / "data" / "gguf_quality_extra9.csv"]


def _gguf_rows_as_published(rows: list[dict[str, str]], published: list[dict[str, str]]):  # type: ignore[no-untyped-def]
    """(batch row, the quality_published.csv row it became) for each non-baseline GGUF batch row (same source, model
    and quant type), after checking that the row names where to read it."""
    for r in rows:
        assert LOCATOR.search(r["source"]), r["source"]
        if r["quant_type"] != "F16":
            yield r, next(p for p in published if p["source"] == r["source"] and p["model"] == r["model"]
                          and p["variant"].split(" ")[0] == r["quant_type"])


def test_small_batches_cite_a_locator_and_reach_the_table_as_copied():
    """The small batches quality_extra16/19/22.csv and gguf_quality_extra5/9.csv (too few rows for the
    per-file checks above): each row names where to read it, a GPU row's change is its own perplexities' ratio, and every non-baseline row is
    in quality_published.csv, fitted at the copied change or held out with a reason (its fit_why, the build's <= 0
    rule, or a GGUF note's 'Kept out of the fit')."""
    published = _rows(PUBLISHED)
    gpu = [r for p in SMALL_GPU_BATCHES for r in _rows(p)]
    gguf = [r for p in SMALL_GGUF_BATCHES for r in _rows(p)]
    for r in gpu:
        assert LOCATOR.search(r["source"]), r["source"]
        pct = float(r["ppl_delta_pct"])
        assert pct == pytest.approx((float(r["ppl_quant"]) / float(r["ppl_fp16"]) - 1) * 100, abs=0.005), r
        row = next(p for p in published if p["source"] == r["source"] and p["model"] == r["model"]
                   and p["value"] == r["ppl_delta_pct"])
        assert (row["fit"] == "yes") == (not r["fit_why"] and pct > 0), row
        assert row["fit"] == "yes" or row["why"], row
    n_fit = 0
    for r, row in _gguf_rows_as_published(gguf, published):
        assert row["family"].startswith("gguf"), row
        if "Kept out of the fit" in r["notes"]:
            assert row["fit"] == "no" and row["why"], row
        else:
            n_fit += row["fit"] == "yes"
            assert row["fit"] == "yes" and 1 < float(row["bits"]) < 9, row
    # Q8_0 (ParetoQ), Q4_K_S and Q4_0 (ik_llama.cpp discussion #63), Q3_K_M, Q4_0, Q4_K_M (AutoAWQ PR #285), Q4_K_M (LocalAI)
    assert n_fit == 7


def test_gguf_rows_without_a_stated_imatrix_reach_the_table_held_out():
    """gguf_quality_extra8.csv (ik_llama.cpp discussion #8 / PR #14, gptq-gguf-toolkit's Unsloth k-quants): neither source
    says whether an importance matrix was used, so every non-baseline row is in quality_published.csv under a GGUF family,
    held out for that reason, at the change its source prints (or its perplexities give against the source's baseline)."""
    path = ROOT / "benchmarks" / "data" / "gguf_quality_extra8.csv"
    published = _rows(PUBLISHED)
    rows = _rows(path)
    base = {(r["source"], r["model"]): float(r["ppl"]) for r in rows if r["quant_type"] == "F16"}
    n = 0
    for r, row in _gguf_rows_as_published(rows, published):
        assert row["family"].startswith("gguf") and row["fit"] == "no" and "importance matrix" in row["why"], row
        if r["ppl_delta_or_pct"]:
            assert row["value"] == r["ppl_delta_or_pct"].rstrip("%"), row
        else:
            assert float(row["value"]) == float(r["ppl"]) and (r["source"], r["model"]) in base, row
        n += 1
    assert n == 9
