"""Accuracy of the serving engines' speed constants against published measurements (not a test: prints tables).

Rows come from `benchmarks/data/engine_perf.csv` (one source per row: model cards, engine READMEs and docs, issue
and pull-request threads). Every figure is predicted by `evaluate()` with the engine's constants from
`planner/cost/speed.py`; nothing is fitted per row. Metrics:
- `request_latency_s`: one request alone (GuideLLM single stream): TTFT + (output - 1) tokens at the decode speed
  half-way through the output.
- `decode_tok_s` / `prefill_tok_s`: decode speed per sequence half-way through the output / prompt tokens per s.
- `static_out_tok_s_per_gpu`, `ttft_ms`, `maxload_out_tok_s`: TensorRT-LLM tables, as in benchmarks/multinode.py.

Two reports per engine:
- *shipped*: the constants as they are in speed.py (which were fitted once to these rows with --fit);
- *leave-one-source-out*: the engine's free constants (bandwidth and compute fractions, per-layer and per-step
  costs, per-SM decode rates) fitted on the other sources' rows, then the held-out source predicted. An engine whose
  rows come from one source is reported as leave-one-device-out instead (and says so).

Usage: python benchmarks/engines.py [--rows] [--fit] [--engine vllm]
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

import multinode  # noqa: E402  (the TensorRT-LLM table metrics)

from planner.cost import speed  # noqa: E402
from planner.cost.evaluate import evaluate  # noqa: E402
from planner.cost.model import ModelCost  # noqa: E402
from planner.formats import get_format  # noqa: E402
from planner.hardware.catalog import load_catalog  # noqa: E402
from planner.models.profiles import load_registry  # noqa: E402
from planner.plan import target_from_catalog  # noqa: E402
from planner.runtimes import get_runtime  # noqa: E402

RUNTIME_OF = {"vllm": "vllm", "sglang": "sglang", "trtllm": "tensorrt-llm", "tgi": "tgi", "exllamav2": "exllamav2",
              "mlx": "mlx", "transformers": "transformers"}
BACKEND_OF = {"mlx": "metal"}
MIN_ROWS = 10  # an engine with fewer sourced rows is reported as assumed (issue 19's target)
# Which speed each metric tests: the decode p90 and prefill p90 per engine are what planner/cost/speed.py's SPEED_P90
# bands use. Request latency of a single stream is mostly decode (hundreds of output tokens after a short TTFT);
# static-batch and max-load throughputs are decode steps at a large batch.
PREFILL_METRICS = frozenset({"prefill_tok_s", "ttft_ms"})


def load_rows() -> list[dict]:
    """The published rows."""
    return list(csv.DictReader(open(ROOT / "data" / "engine_perf.csv", encoding="utf-8")))


def predict(row: dict, mc: ModelCost, catalog, calibration: dict | None = None) -> float:  # type: ignore[no-untyped-def]
    """The planner's figure for one published row."""
    metric = row["metric"]
    if metric in ("static_out_tok_s_per_gpu", "ttft_ms", "maxload_out_tok_s"):
        return multinode.predict(row, mc, catalog)[0] if calibration is None else _multinode(row, mc, catalog, calibration)
    fmt, rt = get_format(row["format"]), get_runtime(RUNTIME_OF[row["engine"]])
    tp, isl, osl, batch = int(row["tp"]), int(row["input_len"]), int(row["output_len"]), int(row["batch"] or 1)
    target = target_from_catalog(catalog.get(row["device"]), tp)
    kv = row["kv_dtype"] or None
    ctx = isl + osl
    if metric == "prefill_tok_s":
        return evaluate(mc, fmt, rt, target, context=ctx, prompt_tokens=isl, kv_dtype=kv,
                        calibration=calibration).prefill_tokens_per_s
    mid = evaluate(mc, fmt, rt, target, context=ctx, concurrency=batch, prompt_tokens=isl + osl // 2, kv_dtype=kv,
                   calibration=calibration)
    if metric == "decode_tok_s":
        return mid.decode_tokens_per_s
    if metric == "request_latency_s":
        first = evaluate(mc, fmt, rt, target, context=ctx, prompt_tokens=isl, kv_dtype=kv, calibration=calibration)
        return first.ttft_s + (osl - 1) / mid.decode_tokens_per_s
    raise ValueError(f"unknown metric {metric}")


def _multinode(row: dict, mc: ModelCost, catalog, calibration: dict) -> float:  # type: ignore[no-untyped-def]
    """multinode.predict with a calibration dict (the fit's trial constants)."""
    real = multinode.evaluate
    multinode.evaluate = lambda *a, **k: real(*a, calibration=calibration, **k)  # type: ignore[assignment]
    try:
        return multinode.predict(row, mc, catalog)[0]
    finally:
        multinode.evaluate = real  # type: ignore[assignment]


# ---- fitting (run once with --fit; the results are copied into planner/cost/speed.py with a comment)

def _params(engine: str, backend: str) -> dict[str, float]:
    """The engine's free constants as they are in speed.py."""
    e = speed.efficiency(engine, backend)
    p = {"bandwidth": e.bandwidth, "compute": e.compute, "layer_us": e.layer_overhead_us, "step_us": e.step_overhead_us}
    for k, v in speed.UNIT_RATE_GB_S.get((engine, backend), {}).items():
        p[f"unit_{k}"] = v
    return p


def _apply(engine: str, backend: str, p: dict[str, float]) -> dict:
    """Install trial constants: the unit rates into speed.UNIT_RATE_GB_S, the rest as a calibration dict."""
    units = {k[5:]: v for k, v in p.items() if k.startswith("unit_")}
    if units:
        speed.UNIT_RATE_GB_S[(engine, backend)] = units
    return {(engine, backend): speed.Efficiency(p["bandwidth"], p["compute"], p["layer_us"], "calibrated", p["step_us"])}


BOUNDS = {"bandwidth": (0.3, 0.93), "compute": (0.1, 0.8), "layer_us": (0.0, 200.0), "step_us": (0.0, 20000.0)}


def _loss(rows: list[dict], costs: dict, catalog, cal: dict) -> float:  # type: ignore[no-untyped-def]
    """Mean |log(predicted / published)| (smooth enough to descend; the report prints median relative errors)."""
    errs = []
    for r in rows:
        pred = predict(r, costs[r["model"]], catalog, cal)
        errs.append(abs(math.log(max(pred, 1e-9) / float(r["value"]))))
    return sum(errs) / max(len(errs), 1)


def fit(engine: str, backend: str, rows: list[dict], costs: dict, catalog, start: dict[str, float],  # type: ignore[no-untyped-def]
        rounds: int = 4) -> dict[str, float]:
    """Coordinate descent on the engine's constants (multiplicative steps, shrinking each round)."""
    p = dict(start)
    best = _loss(rows, costs, catalog, _apply(engine, backend, p))
    for step in (2.0, 1.5, 1.2, 1.07)[:rounds]:
        improved = True
        while improved:  # descend at this step size until no constant moves
            improved = False
            for k in list(p):
                for f in (step, 1 / step):
                    trial = dict(p)
                    v = p[k] * f if p[k] > 0 else (50.0 if k.endswith("_us") else 0.1)
                    lo, hi = BOUNDS.get(k, (0.5, 60.0))
                    trial[k] = min(max(v, lo), hi)
                    got = _loss(rows, costs, catalog, _apply(engine, backend, trial))
                    if got < best - 1e-6:
                        best, p, improved = got, trial, True
    _apply(engine, backend, p)
    return p


def _rel(pred: float, real: float) -> float:
    return 100.0 * (pred - real) / real


def _med(errs: list[float]) -> float:
    return statistics.median(abs(e) for e in errs) if errs else float("nan")


def _p90(errs: list[float]) -> float:
    a = sorted(abs(e) for e in errs)
    return a[min(len(a) - 1, int(round(0.9 * (len(a) - 1))))] if a else float("nan")


def main() -> None:
    """Print shipped and held-out errors per engine (and, with --fit, the constants fitted on every row)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", action="store_true", help="print every row with the shipped constants")
    ap.add_argument("--fit", action="store_true", help="fit each engine's constants on all its rows and print them")
    ap.add_argument("--engine", action="append", default=[], help="only this engine (repeatable)")
    ap.add_argument("--no-holdout", action="store_true", help="skip the leave-one-source-out fits (fast)")
    a = ap.parse_args()
    reg, cat = load_registry(), load_catalog()
    rows = [r for r in load_rows() if not a.engine or r["engine"] in a.engine]
    costs = {m: ModelCost(reg.get(m)) for m in {r["model"] for r in rows}}
    by_engine: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_engine[r["engine"]].append(r)
    shipped_units = copy.deepcopy(speed.UNIT_RATE_GB_S)
    table = []
    for engine in sorted(RUNTIME_OF):
        er = by_engine.get(engine, [])
        backend = BACKEND_OF.get(engine, "cuda")
        sources = sorted({r["source"] for r in er})
        shipped = [_rel(predict(r, costs[r["model"]], cat), float(r["value"])) for r in er]
        if a.rows:
            for r, e in zip(er, shipped):
                print(f"{engine:9} {r['model']:15} {r['device']:14} tp{r['tp']} {r['format']:12} {r['metric']:22} "
                      f"{r['input_len']:>6}/{r['output_len']:<5} {float(r['value']):>9.2f} {e:+7.1f}%")
        held: list[float] = []
        how = "-"
        if len(er) >= MIN_ROWS and not a.no_holdout:
            groups = sources if len(sources) > 1 else sorted({r["device"] for r in er})
            how = "source" if len(sources) > 1 else "device"
            key = "source" if len(sources) > 1 else "device"
            start = _params(engine, backend)
            for g in groups:
                train = [r for r in er if r[key] != g]
                test = [r for r in er if r[key] == g]
                if not train:
                    continue
                p = fit(engine, backend, train, costs, cat, start)
                cal = _apply(engine, backend, p)
                held += [_rel(predict(r, costs[r["model"]], cat, cal), float(r["value"])) for r in test]
                speed.UNIT_RATE_GB_S.clear()
                speed.UNIT_RATE_GB_S.update(copy.deepcopy(shipped_units))
        if a.fit and er:
            p = fit(engine, backend, er, costs, cat, _params(engine, backend))
            print(f"fitted {engine}/{backend} on {len(er)} rows: " + ", ".join(f"{k}={v:.3g}" for k, v in p.items()))
            speed.UNIT_RATE_GB_S.clear()
            speed.UNIT_RATE_GB_S.update(copy.deepcopy(shipped_units))
        basis = speed.efficiency(engine, backend).provenance
        dec = [e for r, e in zip(er, shipped) if r["metric"] not in PREFILL_METRICS]
        pre = [e for r, e in zip(er, shipped) if r["metric"] in PREFILL_METRICS]
        table.append((engine, len(er), len(sources), _med(shipped), _p90(shipped), _med(held), how, basis,
                      (len(dec), _p90(dec)), (len(pre), _p90(pre))))
    print("\nServing engines: |predicted - published| / published")
    print(f"{'engine':13} {'rows':>5} {'sources':>8} {'shipped med %':>14} {'shipped p90 %':>14} "
          f"{'held-out med %':>15} {'held out by':>12} {'decode p90 % (n)':>17} {'prefill p90 % (n)':>18}  constants")
    for engine, n, ns, med, p90, hmed, how, basis, (nd, dp90), (np_, pp90) in table:
        if n < MIN_ROWS:
            print(f"{engine:13} {n:>5} {ns:>8} {'-':>14} {'-':>14} {'-':>15} {'-':>12} {'-':>17} {'-':>18}  "
                  f"{basis} (fewer than {MIN_ROWS} rows)")
            continue
        d = f"{dp90:.1f} ({nd})" if nd else "-"
        q = f"{pp90:.1f} ({np_})" if np_ else "-"
        print(f"{engine:13} {n:>5} {ns:>8} {med:>14.1f} {p90:>14.1f} {hmed:>15.1f} {how:>12} {d:>17} {q:>18}  {basis}")


if __name__ == "__main__":
    main()
