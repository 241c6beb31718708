"""MoE expert offload in llama.cpp (--n-cpu-moe): predicted against published measurements (not a test: prints tables).

Rows come from `benchmarks/data/moe_offload_published.csv`, each with its source. A row is predicted at the
published --n-cpu-moe N (what that command line does), on the catalog GPU, with the host RAM bandwidth the source
states (or the planner's default where it does not: those rows are marked 'weak' and reported apart). The planner's
own choice of N for the same GPU is printed next to the published one as a check of the memory model.

The second table is the issue's target: gpt-oss-120b and Qwen3-30B-A3B on one RTX 4090 with 64 and 96 GiB of RAM,
with both offload placements predicted (the plan keeps the faster one).

    python benchmarks/moe_offload.py
"""

from __future__ import annotations

import csv
import dataclasses
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.cost.evaluate import evaluate  # noqa: E402
from planner.cost.model import ModelCost  # noqa: E402
from planner.cost.offload import place_expert_offload, predict_offload_speeds  # noqa: E402
from planner.formats import get_format  # noqa: E402
from planner.hardware.catalog import load_catalog  # noqa: E402
from planner.models.profiles import load_registry  # noqa: E402
from planner.plan import GIB, Plan, target_from_catalog  # noqa: E402
from planner.runtimes import get_runtime  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "moe_offload_published.csv"
ROOMY_RAM = 256 * GIB  # the published machines held their models; RAM size is not what these rows test


def at_published_n(plan: Plan, mc: ModelCost, fmt_id: str, target, n_cpu_moe: int) -> Plan:  # type: ignore[no-untyped-def]
    """The same candidate placed with exactly `n_cpu_moe` layers' experts in RAM, with its speeds."""
    fmt, rt = get_format(fmt_id), get_runtime("llama.cpp")
    lay = mc.layout(fmt)
    forced = dataclasses.replace(plan, per_device=[], warnings=[], offload_alternative={}, _speeds=None, speed_fn=None)
    ok = place_expert_offload(forced, mc, lay, fmt, rt, target, plan.kv_dtype, True, cpu_layers=n_cpu_moe)
    assert ok, "the published N moves no expert"
    predict_offload_speeds(forced, mc, lay, fmt, rt, target, plan.kv_dtype, "native", None)
    return forced


def published_rows() -> None:
    """Predicted vs published tokens/s per row, and the median absolute error."""
    catalog, registry = load_catalog(), load_registry()
    rows = list(csv.DictReader(DATA.open(encoding="utf-8")))
    print(f"{'model':14} {'format':10} {'GPU':11} {'host GB/s':>9} {'N pub':>5} {'N plan':>6} {'metric':6} "
          f"{'published':>9} {'predicted':>9} {'error':>7}  use")
    errors: dict[str, list[float]] = {"yes": [], "weak": []}
    for r in rows:
        mc = ModelCost(registry.get(r["model"]))
        dev = catalog.get(r["device"])
        target = dataclasses.replace(target_from_catalog(dev, 1, host_ram_bytes=ROOMY_RAM),
                                     host_bandwidth_gb_s=float(r["host_bandwidth_gb_s"]))
        plan = evaluate(mc, get_format(r["format"]), get_runtime("llama.cpp"), target, context=int(r["context"]),
                        prompt_tokens=int(r["prompt_tokens"]))
        own = plan.cpu_moe_layers if plan.layout == "expert-offload" else (
            plan.offload_alternative.get("cpu_moe_layers") if plan.offload_alternative else None)
        forced = at_published_n(plan, mc, r["format"], target, int(r["n_cpu_moe"]))
        pred = forced.decode_tokens_per_s if r["metric"] == "tg" else forced.prefill_tokens_per_s
        pub = float(r["tokens_per_s"])
        err = pred / pub - 1
        if r["use"] in errors:
            errors[r["use"]].append(abs(err))
        print(f"{r['model']:14} {r['format']:10} {r['device']:11} {float(r['host_bandwidth_gb_s']):9.1f} "
              f"{r['n_cpu_moe']:>5} {str(own if own is not None else 'fits'):>6} {r['metric']:6} {pub:9.1f} {pred:9.1f} "
              f"{err:+7.0%}  {r['use']}")
    print()
    print("| rows | n | median abs error | max abs error |")
    print("|---|---|---|---|")
    for use, label in (("yes", "host memory stated"), ("weak", "host or GPU not stated (assumed)")):
        e = errors[use]
        if e:
            print(f"| {label} | {len(e)} | {statistics.median(e):.0%} | {max(e):.0%} |")
    both = errors["yes"] + errors["weak"]
    print(f"| all used | {len(both)} | {statistics.median(both):.0%} | {max(both):.0%} |")
    print("(rows marked 'no' are listed for the record and left out; see the CSV's notes)")


def target_table() -> None:
    """The issue's target: gpt-oss-120b and Qwen3-30B-A3B on one RTX 4090 with 64 / 96 GiB of RAM."""
    catalog, registry = load_catalog(), load_registry()
    dev = catalog.get("rtx-4090")
    print()
    print("RTX 4090 + 64 / 96 GiB RAM (DDR5-5600 dual channel, planner default), context 8192, 512-token prompt:")
    print("| model | format | RAM | chosen | --n-cpu-moe / -ngl | decode tok/s | prefill tok/s | other placement | its decode | its prefill |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    cases = [("gpt-oss-120b", "MXFP4_MOE"), ("gpt-oss-120b", "Q4_K_M"), ("qwen3-30b-a3b", "Q8_0"),
             ("qwen3-30b-a3b", "BF16"), ("qwen3-235b-a22b", "Q2_K")]
    for model, fmt in cases:
        mc = ModelCost(registry.get(model))
        for ram in (64, 96):
            t = target_from_catalog(dev, 1, host_ram_bytes=ram * GIB)
            p = evaluate(mc, get_format(fmt), get_runtime("llama.cpp"), t, context=8192)
            alt = p.offload_alternative or {}
            knob = f"--n-cpu-moe {p.cpu_moe_layers}" if p.layout == "expert-offload" else f"-ngl {p.gpu_layers}"
            other = (f"--n-cpu-moe {alt.get('cpu_moe_layers')}" if alt.get("layout") == "expert-offload"
                     else f"-ngl {alt.get('gpu_layers')}") if alt else "-"
            verdict = "" if p.fits else f" (does not fit: {p.reason})"
            print(f"| {model} | {fmt} | {ram} GiB | {p.layout}{verdict} | {knob} | {p.decode_tokens_per_s:.1f} | "
                  f"{p.prefill_tokens_per_s:.0f} | {alt.get('layout', '-')} {other} | "
                  f"{alt.get('decode_tokens_per_s', 0):.1f} | {alt.get('prefill_tokens_per_s', 0):.0f} |")


if __name__ == "__main__":
    published_rows()
    target_table()
