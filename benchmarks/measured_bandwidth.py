"""Measured bandwidth benchmark (not a test): does `planner recommend` on this machine's CPU predict what real
llama.cpp decodes, once the planner measures the memory bandwidth instead of assuming it?

Usage: python benchmarks/measured_bandwidth.py [--rounds 3] [--pairs smollm2-135m:Q4_1,llama-3.1-8b:Q4_K_M]

Each round, for each model:format pair, in fresh processes and back to back (so they share the machine's load):
`planner probe --measure` (read bandwidth, timed), `planner recommend --json` (predicted with the measurement),
`planner recommend --no-measure --json` (predicted with the assumed 89.6 GB/s), and `planner bench --kernel llama.cpp
--prompt 0 --json` (real llama.cpp on a stand-in GGUF with the model's shapes and the format's tensor types).
Target (issue 22): predicted within 25 % of measured on a 2-vCPU VM for an 8B Q4_K_M. Caches go to a scratch
directory. Numbers are noisy on shared machines: run it on a quiet one, a few rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cli(args: list[str], env: dict[str, str]) -> tuple[dict, float]:
    """Run `planner ARGS --json` in a fresh process: (parsed output, wall seconds)."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "planner.cli", *args, "--json"], env=env, capture_output=True,
                          text=True, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"planner {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout), wall


def main(argv: list[str] | None = None) -> int:
    """Print one row per round and pair, then the medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pairs", default="smollm2-135m:Q4_1,llama-3.1-8b:Q4_K_M")
    args = ap.parse_args(argv)
    pairs = [tuple(p.split(":", 1)) for p in args.pairs.split(",")]
    scratch = Path(tempfile.mkdtemp(prefix="planner-membw-bench-"))
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PLANNER_CACHE_DIR": str(scratch / "cache"),
               "PLANNER_DATA_DIR": str(scratch / "data")}
        rows = []
        head = (f"{'round':>5}  {'model:format':<22} {'read GB/s':>9} {'probe s':>9} {'llama.cpp tok/s':>15} "
                f"{'pred. measured':>14} {'ratio':>6} {'pred. assumed':>13} {'ratio':>6}")
        print(head)
        print("-" * len(head))
        for r in range(1, args.rounds + 1):
            for model, fmt in pairs:
                probe, wall = cli(["probe", "--measure"], env)
                read = probe["memory_read_bandwidth"]["read_gb_s"]
                rec, _ = cli(["recommend", "--model", model, "--format", fmt, "--runtime", "llama.cpp"], env)
                assumed, _ = cli(["recommend", "--model", model, "--format", fmt, "--runtime", "llama.cpp", "--no-measure"], env)
                bench, _ = cli(["bench", "--model", model, "--format", fmt, "--kernel", "llama.cpp", "--prompt", "0"], env)
                measured = bench["kernels"][0]["decode_tokens_per_s"]["measured"]
                p_meas = rec["recommended"]["decode_tokens_per_s"]
                p_assumed = assumed["recommended"]["decode_tokens_per_s"]
                rows.append((model, fmt, read, measured, p_meas, p_assumed))
                print(f"{r:>5}  {model + ':' + fmt:<22} {read:>9.1f} {wall:>9.2f} {measured:>15.2f} {p_meas:>14.2f} "
                      f"{p_meas / measured:>6.2f} {p_assumed:>13.2f} {p_assumed / measured:>6.2f}")
        print("\nmedians over rounds (ratio = predicted / measured; target 0.75-1.25)")
        for model, fmt in pairs:
            mine = [x for x in rows if x[:2] == (model, fmt)]
            med = [statistics.median(x[i] for x in mine) for i in (2, 3, 4, 5)]
            print(f"  {model + ':' + fmt:<22} read {med[0]:.1f} GB/s, llama.cpp {med[1]:.2f} tok/s, predicted "
                  f"{med[2]:.2f} (ratio {med[2] / med[1]:.2f}) with the measurement, {med[3]:.2f} (ratio {med[3] / med[1]:.2f}) "
                  "assumed")
    finally:  # the cache and data directories this run made: its own temporary directory
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
