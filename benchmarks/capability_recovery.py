"""Calibrate the quality-loss -> benchmark-loss mapping of planner.capability and print the rows behind it.

    python benchmarks/capability_recovery.py

Each row of planner/data/capability_recovery.csv is a published accuracy recovery of a quantized checkpoint (quantized
score / 16-bit score) with its source. For each, the planner's own expected KL divergence of that format on that model
(planner.cost.quality) is computed; the fraction of accuracy lost is modelled as RECOVERY_PER_KLD x KLD. The slope is
the least-squares fit through the origin; the 10-90 % range is the spread of the per-row ratios among rows whose loss
is above benchmark noise (KLD >= NOISE_KLD). planner.capability carries the three numbers as constants; a test checks
that they match this fit.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from planner.capability import NOISE_KLD, RECOVERY_PER_KLD, RECOVERY_PER_KLD_RANGE, recovery_rows  # noqa: E402


def quantile(v: list[float], q: float) -> float:
    """Linear-interpolated quantile of v (0 <= q <= 1)."""
    s = sorted(v)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def fit(rows: list[dict]) -> tuple[float, float, float]:
    """(slope, 10 % ratio, 90 % ratio) of fraction lost against KLD."""
    xs = [r["kld"] for r in rows]
    ys = [1 - r["recovery_pct"] / 100 for r in rows]
    slope = sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)
    ratios = [y / x for x, y in zip(xs, ys) if x >= NOISE_KLD]
    return slope, max(0.0, quantile(ratios, 0.1)), quantile(ratios, 0.9)


def main() -> int:
    """Print the rows and the fit next to the constants in planner.capability."""
    rows = recovery_rows()
    print("| format | model | benchmark | recovery % | planner KLD | lost / KLD |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        lost = 1 - r["recovery_pct"] / 100
        print(f"| {r['format']} | {r['model_id']} | {r['benchmark']} | {r['recovery_pct']:.2f} | {r['kld']:.4f} | "
              f"{lost / r['kld']:.2f} |")
    slope, lo, hi = fit(rows)
    print()
    print("| constant | fitted now | in planner.capability |")
    print("|---|---|---|")
    print(f"| RECOVERY_PER_KLD | {slope:.3f} | {RECOVERY_PER_KLD:.3f} |")
    print(f"| 10 % | {lo:.3f} | {RECOVERY_PER_KLD_RANGE[0]:.3f} |")
    print(f"| 90 % | {hi:.3f} | {RECOVERY_PER_KLD_RANGE[1]:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
