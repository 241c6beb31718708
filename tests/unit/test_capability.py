"""planner.capability: the sourced records per profile and use, and the expected capability of a plan."""

from __future__ import annotations

import csv
import math

import pytest

from planner import capability as C
from planner.models.profiles import load_registry


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    with C.data_path().open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_every_profile_has_a_record_per_use_with_data_or_a_reason(rows):
    have = {(r["model_id"], r["use"]) for r in rows}
    for spec in load_registry():
        for use in C.USES:
            assert (spec.id, use) in have, f"{spec.id}/{use} has no record"
            rec = C.capability(spec.id, use)
            assert rec.has_data or rec.note.startswith("no data"), (spec.id, use, rec.note)
            assert rec.source and rec.date  # even a no-data record names the source it is absent from


def test_scored_records_name_benchmark_scale_checkpoint_and_bracket_the_score(rows):
    scored = [r for r in rows if r["score"]]
    assert len(scored) > 60  # three sources over 60 profiles
    for r in scored:
        assert r["scale"] in ("elo", "percent") and r["benchmark"] and r["evaluated"], r
        lo, s, hi = float(r["score_low"]), float(r["score"]), float(r["score_high"])
        assert lo <= s <= hi, r
        if r["scale"] == "percent":
            assert 0 <= lo and hi <= 100, r


def test_no_data_is_said_plainly_for_models_after_the_snapshot():
    rec = C.capability("gpt-oss-120b", "chat")
    assert not rec.has_data and "after the snapshot" in rec.note
    assert C.expected(rec, {"kld": 0.01}) is None
    unknown = C.capability("my-own-finetune", "coding")
    assert not unknown.has_data and "not a bundled profile" in unknown.note


def test_use_must_be_known():
    with pytest.raises(ValueError, match="chat, coding, reasoning"):
        C.capability("llama-3.1-8b", "poetry")


@pytest.mark.parametrize("model,use", [("llama-3.1-70b", "chat"), ("llama-3.1-70b", "reasoning"), ("llama-3.1-8b", "coding")])
def test_expected_follows_the_documented_formula(model, use):
    """The README's hand check: r = 1 - k KLD; percent x r; Elo + 400 log10 r."""
    cap = C.capability(model, use)
    q = {"kld": 0.1, "kld_low": 0.05, "kld_high": 0.15}
    e = C.expected(cap, q)
    r = 1 - C.RECOVERY_PER_KLD * 0.1
    want = cap.score + 400 * math.log10(r) if cap.scale == "elo" else cap.score * r
    assert e.value == pytest.approx(want)
    assert e.recovery == pytest.approx(r)
    assert e.low < e.value < e.high
    assert e.low <= cap.low and e.high <= cap.high  # a format never adds capability
    # ranked at the upper end of the KLD interval (as recommend ranks formats)
    r_rank = 1 - C.RECOVERY_PER_KLD * 0.15
    want_rank = cap.score + 400 * math.log10(r_rank) if cap.scale == "elo" else cap.score * r_rank
    assert e.rank_value == pytest.approx(want_rank)
    assert not e.extrapolated


def test_more_loss_never_means_more_capability():
    cap = C.capability("qwen3-32b", "chat")
    values = [C.expected(cap, {"kld": k, "kld_low": k, "kld_high": k}).value for k in (0, 0.01, 0.05, 0.2, 0.6, 2.0, 50)]
    assert values == sorted(values, reverse=True)
    assert values[0] == cap.score  # lossless keeps the published score
    assert all(math.isfinite(v) for v in values)  # a ruinous format stays finite (MIN_RECOVERY)


def test_past_the_calibrated_range_ranks_at_the_pessimistic_end():
    cap = C.capability("llama-3.3-70b", "chat")
    e = C.expected(cap, {"kld": 0.45, "kld_low": 0.3, "kld_high": 0.7})
    assert e.extrapolated and e.rank_value == e.low < e.value


def test_measured_quality_is_ranked_as_measured():
    cap = C.capability("llama-3.1-8b", "chat")
    est = C.expected(cap, {"kld": 0.05, "kld_low": 0.02, "kld_high": 0.09})
    meas = C.expected(cap, {"kld": 0.05, "kld_low": 0.02, "kld_high": 0.09, "source": "measured"})
    assert meas.rank_value == pytest.approx(meas.value) and est.rank_value < meas.rank_value


def test_recovery_constant_matches_its_calibration_rows():
    """RECOVERY_PER_KLD is calibrated against planner/data/capability_recovery.csv with the planner's own KLD; a change
    to the quality model or the rows must be followed by re-running benchmarks/capability_recovery.py."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "capability_recovery.py"
    spec = importlib.util.spec_from_file_location("capability_recovery", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = C.recovery_rows()
    assert len(rows) >= 20 and all(r["source"] for r in rows)
    slope, lo, hi = mod.fit(rows)
    assert slope == pytest.approx(C.RECOVERY_PER_KLD, abs=0.01)
    assert (lo, hi) == pytest.approx(C.RECOVERY_PER_KLD_RANGE, abs=0.02)
    assert max(r["kld"] for r in rows) == pytest.approx(C.CALIBRATED_MAX_KLD, abs=0.01)


def test_crossing_the_calibrated_edge_moves_the_rank_without_a_step():
    """Past CALIBRATED_MAX_KLD the rank slides toward the pessimistic end: no jump at the edge, never up, and the
    pessimistic end itself at EXTRAPOLATION_FULL_X times the edge."""
    cap = C.capability("gemma-3-27b", "chat")
    edge = C.CALIBRATED_MAX_KLD

    def at(k: float) -> C.Expected:
        return C.expected(cap, {"kld": k, "kld_low": k * 0.6, "kld_high": k * 1.6})

    below, above = at(edge * (1 - 1e-6)), at(edge * (1 + 1e-6))
    assert not below.extrapolated and above.extrapolated
    assert above.rank_value == pytest.approx(below.rank_value, abs=0.01)
    sweep = [at(edge * x).rank_value for x in (0.5, 0.9, 1.0, 1.1, 1.3, 1.5, 1.8, 2.0, 2.5, 4.0)]
    assert sweep == sorted(sweep, reverse=True)
    half = at(edge * 1.5)
    assert half.low < half.rank_value < half.value
    full = at(edge * C.EXTRAPOLATION_FULL_X)
    assert full.rank_value == pytest.approx(full.low)
