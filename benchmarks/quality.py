"""Quality model against every sourced row: in-sample and leave-one-source-out, per family.

For each source (rows grouped by the start of their `source`), the per-family fit of planner.cost.quality is redone
without that source's rows and asked to predict them (a family left with no rows is extrapolated by the model's own
rule). Factor error = max(pred / obs, obs / pred) of the perplexity increase. Prints per family the rows, the median
factor error and the share within 2x, in-sample and leave-one-source-out. Run: python benchmarks/quality.py
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from planner.cost.quality import SOURCE_KEY_CHARS, Row, fit_all, fit_rows, model_key, predict  # noqa: E402


def source_key(r: Row) -> str:
    """The source a row is left out with."""
    return r.source[:SOURCE_KEY_CHARS]


def factor(pred: float, obs: float) -> float:
    """max(pred/obs, obs/pred)."""
    return max(pred / obs, obs / pred)


def errors(rows: list[Row], loso: bool) -> dict[str, list[float]]:
    """Family -> factor errors of its rows (leave-one-source-out when `loso`)."""
    out: dict[str, list[float]] = {}
    full = fit_all(rows)
    for src in sorted({source_key(r) for r in rows}):
        test = [r for r in rows if source_key(r) == src]
        fits = fit_all([r for r in rows if source_key(r) != src]) if loso else full
        for r in test:
            pred = predict(fits, r.family, r.bits, r.group, model_key(r.model))[0]
            out.setdefault(r.family, []).append(factor(pred, r.ppl_pct))
    return out


def main() -> None:
    """Print the table."""
    rows = fit_rows()
    ins, loo = errors(rows, False), errors(rows, True)
    print(f"{len(rows)} fitted rows from {len({source_key(r) for r in rows})} sources")
    print(f"{'family':14} {'rows':>4} {'sources':>7} | {'in-sample med':>13} {'<=2x':>5} | {'LOSO med':>8} {'<=2x':>5}")
    allin: list[float] = []
    allout: list[float] = []
    for fam in sorted(loo):
        a, b = ins[fam], loo[fam]
        allin += a
        allout += b
        n_src = len({source_key(r) for r in rows if r.family == fam})
        print(f"{fam:14} {len(b):4d} {n_src:7d} | {statistics.median(a):13.2f} {sum(x <= 2 for x in a) / len(a):5.0%} | "
              f"{statistics.median(b):8.2f} {sum(x <= 2 for x in b) / len(b):5.0%}")
    print(f"{'all':14} {len(allout):4d} {'':7} | {statistics.median(allin):13.2f} "
          f"{sum(x <= 2 for x in allin) / len(allin):5.0%} | {statistics.median(allout):8.2f} "
          f"{sum(x <= 2 for x in allout) / len(allout):5.0%}")


if __name__ == "__main__":
    main()
