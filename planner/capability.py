"""What a model can do, from public evaluations, and what a format leaves of it.

Capability (planner/data/capability.csv, built by benchmarks/build_capability.py; one record per bundled profile and
use, with source and snapshot date, or an explicit no-data record):
- chat: LMArena text arena score (an Elo-scale Bradley-Terry rating from human pairwise votes), snapshot 2025-08-04;
- reasoning: Open LLM Leaderboard v2, mean of its normalized BBH, MATH Lvl 5, GPQA and MuSR scores (0-100);
- coding: EvalPlus HumanEval+ pass@1 (greedy, percent).
Each source evaluated one checkpoint (the instruct/chat release where the profile is the base model with the same
shapes); `evaluated` names it.

Expected capability of a plan (model x format), simple enough to check by hand:
    recovery r = 1 - RECOVERY_PER_KLD x KLD          (fraction of benchmark accuracy kept; clamped to [MIN_RECOVERY, 1])
    percent scales:  expected = score x r
    elo scale:       expected = score + 400 log10(r)  (Bradley-Terry with strength proportional to accuracy: a model
                                                      keeping r of its strength loses 400 log10(1/r) rating points)
Models are ranked by the same formula at the upper end of the format's KLD interval (an estimated loss is charged at
its pessimistic end, as planner.recommend charges it when ranking formats); past the calibrated KLD range the mapping
is a guess, so a plan's rank slides linearly toward the low end of its interval, reaching it at EXTRAPOLATION_FULL_X
times the range's edge (continuously: a KLD just past the edge does not cost a step). The interval takes the score's
10-90 % interval, the format's KLD interval (planner.cost.quality) and the slope's 10-90 % range together, each at its
pessimistic (optimistic) end. RECOVERY_PER_KLD is calibrated against the published
accuracy recoveries of quantized checkpoints in planner/data/capability_recovery.csv (benchmarks/capability_recovery.py);
past the largest KLD those rows cover the mapping is extrapolated and says so.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from planner.cost.quality import ranking_kld

if TYPE_CHECKING:
    from planner.models.spec import ModelSpec

USES = ("chat", "coding", "reasoning")
# Calibrated against planner/data/capability_recovery.csv by benchmarks/capability_recovery.py (least squares through
# the origin of fraction lost on planner KLD, 28 rows; the range is the 10-90 % spread of the per-row ratios).
RECOVERY_PER_KLD = 0.367
RECOVERY_PER_KLD_RANGE = (0.036, 1.861)
NOISE_KLD = 0.02  # assumed: below this KLD a format's loss (<~0.5 point) is inside benchmark run-to-run noise
CALIBRATED_MAX_KLD = 0.1476  # the largest planner KLD among the calibration rows (gptq-int4 on Llama-3.1-70B)
# Assumed: past the calibrated edge the rank moves linearly from the central estimate to the interval's pessimistic end,
# reached at this multiple of the edge (a KLD twice the largest calibrated one is a guess either way).
EXTRAPOLATION_FULL_X = 2.0
MIN_RECOVERY = 0.01  # floor so that the Elo form stays finite; a format this bad is "severe" either way


@dataclass(frozen=True)
class Capability:
    """One model's published score for one use, or why there is none."""

    model_id: str
    use: str
    score: float | None  # None: no data (note says why)
    low: float | None
    high: float | None
    scale: str  # 'elo' or 'percent' ('' without data)
    benchmark: str
    evaluated: str  # the checkpoint the source evaluated
    source: str
    date: str
    note: str

    @property
    def has_data(self) -> bool:
        """Whether there is a score."""
        return self.score is not None

    def as_dict(self) -> dict:
        """JSON form."""
        return {"use": self.use, "score": self.score, "score_low": self.low, "score_high": self.high,
                "scale": self.scale or None, "benchmark": self.benchmark or None, "evaluated": self.evaluated or None,
                "source": self.source, "date": self.date, "note": self.note or None}


def data_path() -> Path:
    """planner/data/capability.csv."""
    return Path(__file__).parent / "data" / "capability.csv"


def _num(s: str) -> float | None:
    return float(s) if s.strip() else None


@lru_cache(maxsize=1)
def _table() -> dict[tuple[str, str], Capability]:
    with data_path().open(encoding="utf-8", newline="") as f:
        out = {}
        for r in csv.DictReader(f):
            out[(r["model_id"], r["use"])] = Capability(
                r["model_id"], r["use"], _num(r["score"]), _num(r["score_low"]), _num(r["score_high"]), r["scale"],
                r["benchmark"], r["evaluated"], r["source"], r["date"], r["note"])
        return out


def capability(model_id: str, use: str) -> Capability:
    """The record for a profile id and use; an unknown model gets a no-data record that says so."""
    if use not in USES:
        raise ValueError(f"use must be one of {', '.join(USES)}")
    got = _table().get((model_id, use))
    if got is not None:
        return got
    return Capability(model_id, use, None, None, None, "", "", "", "", "",
                      "no data: not a bundled profile, so no published evaluation is on file")


def for_spec(spec: ModelSpec, use: str, profile_id: str | None = None) -> Capability:
    """The record for a model: by its own id, else by the bundled profile it was matched to (`profile_id`, e.g. a
    local HF-cache copy of a profile's repo)."""
    rec = capability(spec.id, use)
    if not rec.has_data and profile_id and profile_id != spec.id:
        other = capability(profile_id, use)
        if other.has_data or (profile_id, use) in _table():
            return other
    return rec


def recovery(kld: float, per_kld: float = RECOVERY_PER_KLD) -> float:
    """Fraction of benchmark accuracy a format keeps at this KL divergence."""
    return min(1.0, max(MIN_RECOVERY, 1.0 - per_kld * max(0.0, kld)))


def _apply(score: float, r: float, scale: str) -> float:
    return score + 400.0 * math.log10(r) if scale == "elo" else score * r


@dataclass(frozen=True)
class Expected:
    """Expected capability of one plan: central value and 10-90 % interval, on the capability's scale."""

    value: float
    low: float
    high: float
    recovery: float
    extrapolated: bool  # the format's KLD is past what the calibration rows cover
    rank_value: float  # what models are ranked by: the value at the upper end of the format's KLD interval

    def as_dict(self) -> dict:
        """JSON form."""
        return {"value": round(self.value, 2), "low": round(self.low, 2), "high": round(self.high, 2),
                "recovery": round(self.recovery, 4), "extrapolated": self.extrapolated,
                "rank_value": round(self.rank_value, 2)}


def expected(cap: Capability, quality: dict) -> Expected | None:
    """Combine a capability record with a plan's quality dict (kld, kld_low, kld_high); None without data."""
    if cap.score is None:
        return None
    kld = float(quality.get("kld", 0.0))
    k_lo = float(quality.get("kld_low", kld))
    k_hi = float(quality.get("kld_high", kld))
    r = recovery(kld)
    r_worst = recovery(k_hi, RECOVERY_PER_KLD_RANGE[1])
    r_best = recovery(k_lo, RECOVERY_PER_KLD_RANGE[0])
    low = cap.low if cap.low is not None else cap.score
    high = cap.high if cap.high is not None else cap.score
    # ranked like planner.recommend ranks formats: an estimated loss counts at its interval's upper end, a
    # measured one (planner eval) as measured
    extrapolated = kld > CALIBRATED_MAX_KLD
    worst = _apply(low, r_worst, cap.scale)
    central = _apply(cap.score, recovery(ranking_kld(quality)), cap.scale)
    # past the calibrated range the mapping is a guess: the rank slides toward the pessimistic end of the interval,
    # continuously, so that a KLD just past the edge does not drop a model's rank by a step
    rank = central + past_calibration_weight(kld) * (worst - central)
    return Expected(_apply(cap.score, r, cap.scale), worst, _apply(high, r_best, cap.scale), r, extrapolated, rank)


def past_calibration_weight(kld: float) -> float:
    """How far a ranking leans on the pessimistic end: 0 inside the calibrated KLD range, rising linearly to 1 at
    EXTRAPOLATION_FULL_X times its edge."""
    span = (EXTRAPOLATION_FULL_X - 1.0) * CALIBRATED_MAX_KLD
    return min(1.0, max(0.0, (kld - CALIBRATED_MAX_KLD) / span))


def unit(cap: Capability) -> str:
    """How to print the scale after a number."""
    return " Elo" if cap.scale == "elo" else ("%" if cap.scale == "percent" else "")


def recovery_path() -> Path:
    """planner/data/capability_recovery.csv."""
    return Path(__file__).parent / "data" / "capability_recovery.csv"


def recovery_rows() -> list[dict]:
    """The calibration rows with the planner's KLD for each (used by the benchmark and the constant's test)."""
    from planner.cost.model import ModelCost  # lazy: only the calibration check needs the cost model
    from planner.cost.quality import expected_quality
    from planner.formats import FORMATS
    from planner.models.profiles import load_registry

    reg = load_registry()
    out = []
    with recovery_path().open(encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            spec = reg.get(r["model_id"])
            q = expected_quality(FORMATS[r["format"]], ModelCost(spec), spec.native_dtype)
            out.append({**r, "recovery_pct": float(r["recovery_pct"]), "kld": q.kld})
    return out
