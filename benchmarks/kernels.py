"""Kernel benchmark (not a test): the `planner bench` per-layer table for a fixed set of shapes, so runs on one
machine can be compared over time and across machines.

Usage: python benchmarks/kernels.py [--device cpu|cuda:0|mps] [--kernel ID ...] [--batch 1,8] [--prompt 512]
                                    [--catalog-device ID] [--quick] [--json]
Shapes (N out x K in, as nn.Linear weights): 4096x4096 (7-8B attention), 4096x14336 (8B down), 14336x4096 (8B
gate/up), 8192x28672 (70B down). Every kernel available on the device is timed; unavailable ones are listed with
the reason. Targets (issue 9): CPU int8 and int4 decode GEMV >= 70 % of the measured copy bandwidth; CUDA fp16 and
int4 GEMV >= 70 % of the catalog's peak bandwidth. numpy rows are reference kernels, not a runtime's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672)]


def main(argv: list[str] | None = None) -> int:
    """Time every available kernel on the fixed shapes and print the table (or JSON)."""
    from planner.measure.speed.kernels import all_kernels, copy_bandwidth_gb_s, last_level_cache_bytes
    from planner.measure.speed.kernels import available_memory_bytes, kernel_by_id, single_threaded_blas
    from planner.measure.speed.runner import bench_shape
    from planner.measure.speed.shapes import MatmulShape
    from planner.commands.bench import bench_target, parse_batches
    from planner.hardware.catalog import load_catalog

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--kernel", action="append", default=[], help="only these kernel ids (repeatable)")
    ap.add_argument("--batch", default="1", help="decode batch sizes, comma-separated (default 1)")
    ap.add_argument("--prompt", type=int, default=512, help="prefill length (0 skips prefill)")
    ap.add_argument("--catalog-device", help="catalog entry whose peak to compare with (default: probe)")
    ap.add_argument("--quick", action="store_true", help="small samples and short timings")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    batches = parse_batches(args.batch)
    target = bench_target(args.device, load_catalog(), args.catalog_device)
    peak = target.device.mem_bandwidth_gb_s
    kernels = [kernel_by_id(k) for k in args.kernel] or all_kernels()
    usable, skipped = [], []
    for k in kernels:
        why = k.available(args.device)
        (skipped.append((k.info.id, why)) if why else usable.append(k))
    copy = copy_bandwidth_gb_s(args.device, nbytes=(128 if args.quick else 1024) * 2**20)
    llc = last_level_cache_bytes(args.device)
    budget = available_memory_bytes(args.device) // 2
    sample = (32 if args.quick else 256) * 2**20
    rows = []
    with single_threaded_blas():
        for k in usable:
            for n, kk in SHAPES:
                lr, note = bench_shape(k, MatmulShape(f"{n}x{kk}", n, kk, 1), device=args.device, batches=batches,
                                       prompt=args.prompt, budget_bytes=budget, llc_bytes=llc, max_sample_bytes=sample,
                                       budget_s=0.05 if args.quick else 0.5)
                gbs = lr.achieved_gb_s(batches[0])
                rows.append({"kernel": lr.kernel, "shape": [n, kk], "rows_timed": lr.rows_timed,
                             "decode_s": {str(b): t.median_s for b, t in lr.decode.items()},
                             "decode_spread": round(lr.decode[batches[0]].spread, 3), "achieved_gb_s": round(gbs, 2),
                             "fraction_of_peak_bandwidth": round(gbs / peak, 4),
                             "fraction_of_copy_bandwidth": round(gbs / copy, 4),
                             "prefill_tflops": round(lr.prefill_tflops, 4) if lr.prefill_tflops else None,
                             "error_vs_float": round(lr.error_vs_float, 5), "note": note})
                print(f"  {lr.kernel} {n}x{kk}: {gbs:.1f} GB/s", file=sys.stderr, flush=True)
    if args.json:
        json.dump({"device": args.device, "device_id": target.device.id, "peak_bandwidth_gb_s": peak,
                   "copy_bandwidth_gb_s": round(copy, 3), "last_level_cache_bytes": llc, "batches": batches,
                   "prompt_tokens": args.prompt, "rows": rows,
                   "skipped": [{"kernel": k, "reason": w} for k, w in skipped]}, sys.stdout, indent=2)
        print()
        return 0
    print(f"device {args.device} ({target.device.name}, catalog {target.device.id}): peak {peak:g} GB/s, "
          f"copy {copy:.1f} GB/s (read + write), last-level cache {llc / 2**20:.0f} MiB, batch {batches[0]}")
    head = f"{'kernel':<24} {'shape':>11} {'decode ms':>10} {'spread':>7} {'GB/s':>7} {'%peak':>6} {'%copy':>6} {'TFLOPS':>8} {'err':>6}"
    print(head)
    print("-" * len(head))
    for r in rows:
        d = r["decode_s"][str(batches[0])]
        tf = f"{r['prefill_tflops']:.3f}" if r["prefill_tflops"] else "-"
        print(f"{r['kernel']:<24} {r['shape'][0]:>5}x{r['shape'][1]:<5} {d * 1e3:>10.3f} {r['decode_spread']:>7.0%} "
              f"{r['achieved_gb_s']:>7.1f} {r['fraction_of_peak_bandwidth']:>6.0%} {r['fraction_of_copy_bandwidth']:>6.0%} "
              f"{tf:>8} {r['error_vs_float']:>6.3f}")
    for k, why in skipped:
        print(f"skipped {k}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
