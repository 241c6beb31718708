"""Accuracy of the multi-GPU cost model against published engine numbers (not a test: prints tables).

Rows come from `benchmarks/data/multigpu_published.csv` (TensorRT-LLM performance tables, each row with its source).
The multi-GPU llama.cpp rows of `benchmarks/data/llamacpp_perf.csv` are covered by `benchmarks/accuracy.py`.

Metrics and how the planner predicts them, all from `evaluate()` (no per-row factors):
- `static_out_tok_s_per_gpu`: a static batch of B prompts of ISL tokens, then OSL decode steps at batch B. Time =
  B x ISL / prefill tokens/s + OSL x B / aggregate decode tokens/s (at the mid-generation position); per GPU / TP.
- `ttft_ms`: batch-1 time to first token for an ISL-token prompt (`Plan.ttft_s`).
- `maxload_out_tok_s`: trtllm-bench at an unlimited request rate; the batch is not published, so it is taken as the
  sequences of ISL+OSL tokens whose KV cache fits in 0.9 of the memory left after weights (TensorRT-LLM's default
  kv_cache_free_gpu_memory_fraction), capped at MAX_BATCH; then as for a static batch.

Usage: python benchmarks/multinode.py [--rows]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from planner.cost.evaluate import evaluate  # noqa: E402
from planner.cost.model import ModelCost  # noqa: E402
from planner.formats import get_format  # noqa: E402
from planner.hardware.catalog import load_catalog  # noqa: E402
from planner.models.profiles import load_registry  # noqa: E402
from planner.plan import target_from_catalog  # noqa: E402
from planner.runtimes import get_runtime  # noqa: E402

# Source model names -> profile ids ("LLaMA 7B/70B" in TensorRT-LLM v0.5/v0.6 tables are Llama 2).
MODELS = {"LLaMA 7B": "llama-2-7b", "LLaMA 70B": "llama-2-70b", "Llama-3.3-70B-Instruct-FP8": "llama-3.3-70b",
          "Llama-3.1-405B-Instruct-FP8": "llama-3.1-405b", "Llama-3.1-8B-Instruct-FP8": "llama-3.1-8b",
          "Qwen3-235B-A22B-FP8": "qwen3-235b-a22b"}
RUNTIMES = {"trtllm": "tensorrt-llm", "vllm": "vllm", "sglang": "sglang"}
KV_FREE_FRACTION = 0.9  # TensorRT-LLM default kv_cache_free_gpu_memory_fraction (trtllm-serve docs)
MAX_BATCH = 2048  # assumed cap on the runtime batch at maximum load (trtllm-bench tunes it; not published)


def _summary(errs: list[float]) -> tuple[float, float, float, int]:
    a = sorted(abs(e) for e in errs)
    if not a:
        return float("nan"), float("nan"), float("nan"), 0
    p90 = a[min(len(a) - 1, int(round(0.9 * (len(a) - 1))))]
    return statistics.median(a), p90, statistics.median(errs), len(a)


def predict(row: dict, mc: ModelCost, catalog) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """The planner's figure for one published row, and the batch it assumed."""
    tp, isl, osl = int(row["tp"]), int(row["input_len"]), int(row["output_len"])
    fmt, rt = get_format(row["format"]), get_runtime(RUNTIMES[row["engine"]])
    target = target_from_catalog(catalog.get(row["device"]), tp)
    kv = row["kv_dtype"] or None
    ctx = isl + osl
    if row["metric"] == "ttft_ms":
        p = evaluate(mc, fmt, rt, target, context=max(ctx, isl + 1), prompt_tokens=isl, kv_dtype=kv)
        return p.ttft_s * 1000, 1
    batch = int(row["batch"] or 0)
    if batch <= 0:  # max load: as many sequences as the KV cache holds
        one = evaluate(mc, fmt, rt, target, context=ctx, concurrency=1, kv_dtype=kv)
        d = one.per_device[0]
        free = d.usable_bytes - d.weights_bytes - d.activations_bytes - d.overhead_bytes
        batch = max(1, min(MAX_BATCH, int(KV_FREE_FRACTION * free / max(d.kv_cache_bytes, 1))))
    mid = isl + osl // 2
    dec = evaluate(mc, fmt, rt, target, context=ctx, concurrency=batch, prompt_tokens=mid, kv_dtype=kv)
    pre = evaluate(mc, fmt, rt, target, context=ctx, concurrency=1, prompt_tokens=isl, kv_dtype=kv)
    seconds = batch * isl / pre.prefill_tokens_per_s + osl * batch / dec.throughput_tokens_per_s
    out = batch * osl / seconds
    return (out / tp if row["metric"].endswith("per_gpu") else out), batch


def main() -> None:
    """Print predicted against published figures and the error per group."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", action="store_true", help="print every compared row")
    a = ap.parse_args()
    reg, cat = load_registry(), load_catalog()
    costs: dict[str, ModelCost] = {}
    groups: dict[str, list[float]] = defaultdict(list)
    if a.rows:
        print(f"{'engine':8} {'model':14} {'device':14} {'tp':>3} {'ISL/OSL':>10} {'batch':>6} {'metric':26} "
              f"{'published':>10} {'predicted':>10} {'err %':>7}")
    for row in csv.DictReader(open(ROOT / "data" / "multigpu_published.csv", encoding="utf-8")):
        mid = MODELS[row["model"]]
        mc = costs.setdefault(mid, ModelCost(reg.get(mid)))
        pred, batch = predict(row, mc, cat)
        real = float(row["value"])
        err = 100.0 * (pred - real) / real
        gpus = "multi-gpu" if int(row["tp"]) * int(row["pp"]) > 1 else "1 gpu"
        groups[f"{row['metric']} | {gpus}"].append(err)
        groups[f"ALL | {gpus}"].append(err)
        if a.rows:
            print(f"{row['engine']:8} {mid:14} {row['device']:14} {row['tp']:>3} {row['input_len'] + '/' + row['output_len']:>10} "
                  f"{batch:>6} {row['metric']:26} {real:>10.1f} {pred:>10.1f} {err:>+7.1f}")
    print("\nMulti-GPU engines: |predicted - published| / published")
    print(f"{'group':40} {'n':>4} {'median |err| %':>15} {'p90 |err| %':>12} {'median signed %':>16}")
    for k in sorted(groups, key=lambda g: (g.startswith("ALL"), g)):
        med, p90, signed, n = _summary(groups[k])
        print(f"{k:40} {n:>4} {med:>15.1f} {p90:>12.1f} {signed:>16.1f}")


if __name__ == "__main__":
    main()
