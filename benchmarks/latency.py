"""Latency benchmark (not a test): `planner recommend` end to end as a new process, and a full sweep.

Usage: python benchmarks/latency.py [--runs 7]
Targets: recommend < 0.2 s wall; sweep of every catalog device x every profile x 10 formats x 3 contexts < 5 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SWEEP_FORMATS = ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS", "Q3_K_M", "Q2_K", "awq-int4", "fp8"]
SWEEP_CONTEXTS = [4096, 32768, 131072]


def time_cli(args: list[str], runs: int, root: Path = ROOT, cache: Path | None = None) -> tuple[float, float]:
    """Median and best wall time of `planner ARGS` in fresh processes (first run warms the caches), with the
    planner package taken from `root` (another checkout, for a before/after comparison) and, given `cache`, its own
    user cache directory."""
    cmd = [sys.executable, "-m", "planner.cli", *args]
    # bytecode on, as a pip install compiles it: with PYTHONDONTWRITEBYTECODE set (some shells and containers set it)
    # every run would compile the package from source, ~0.15 s that no installed planner pays
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"PYTHONPATH": str(root)}
    if cache is not None:
        env["PLANNER_CACHE_DIR"] = str(cache)
    # cwd=root as well: `python -m` puts the working directory first on sys.path, ahead of PYTHONPATH, so without it
    # --compare timed the checkout it was started from twice
    subprocess.run(cmd, env=env, cwd=root, capture_output=True, check=False)  # warm the user cache
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, cwd=root, capture_output=True, check=False)
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def base_devices(cat) -> list:  # type: ignore[no-untyped-def]
    """Catalog products without their extra memory configurations ('m3-max' but not 'm3-max-48gb')."""
    from planner.hardware.catalog import memory_variant_ids

    variant_ids = memory_variant_ids(cat)
    return [d for d in cat if d.id not in variant_ids]


def sweep(products_only: bool = False) -> tuple[int, float]:
    """Evaluate every device x profile x format x context with the first runtime that runs the format, reading the
    verdict of each plan and the decode speed of those that fit; return (plans, seconds)."""
    from planner.cost.evaluate import evaluate
    from planner.cost.model import ModelCost
    from planner.formats import get_format
    from planner.hardware.catalog import load_catalog
    from planner.models.profiles import load_registry
    from planner.plan import target_from_catalog
    from planner.runtimes import RUNTIMES

    t = time.perf_counter()
    cat, reg = load_catalog(), load_registry()
    fmts = [get_format(f) for f in SWEEP_FORMATS]
    n = 0
    costs = [ModelCost(m) for m in reg]
    for dev in (base_devices(cat) if products_only else cat):
        target = target_from_catalog(dev)
        for fmt in fmts:
            rt = next((r for r in RUNTIMES.values() if r.support(fmt, dev).runs), None)
            if rt is None:
                continue
            for mc in costs:
                for ctx in SWEEP_CONTEXTS:
                    plan = evaluate(mc, fmt, rt, target, context=min(ctx, mc.spec.max_context))
                    if plan.fits:  # what a fit matrix shows: the verdict, and the speed of what fits
                        plan.decode_tokens_per_s
                    n += 1
    for mc in costs:
        mc.flush()
    return n, time.perf_counter() - t


# The planning paths whose start-up is compared: a catalog device, and this machine (probed; on a CPU-only machine
# with its memory bandwidth measured once and then read from the cache, which the warm-up run fills).
COMPARE_ARGS = (["recommend", "--model", "70B", "--device", "rtx-4090"], ["recommend", "--model", "8B"],
                ["recommend", "--model", "70B"])


def compare(other: Path, runs: int) -> None:
    """Start-up of `planner recommend` (COMPARE_ARGS) in this checkout and in `other`, interleaved run by run so that
    load on a shared machine falls on both alike."""
    import tempfile

    print(f"{'command':40} {'checkout':40} {'median s':>9} {'best s':>8}")
    # one user cache per checkout: two versions in one cache would replace each other's keyed files (a quality fit
    # built by one version is a miss for the other), which times cache misses, not start-up
    caches = tempfile.TemporaryDirectory(prefix="planner-latency-")
    for args in COMPARE_ARGS:
        times: dict[Path, list[float]] = {ROOT: [], other.resolve(): []}
        for _ in range(runs):
            for i, root in enumerate(times):
                times[root].append(time_cli(args, 1, root, Path(caches.name) / str(i))[0])
        for root, ts in times.items():
            print(f"{' '.join(args):40} {str(root):40} {statistics.median(ts):9.3f} {min(ts):8.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--compare", type=Path, metavar="CHECKOUT",
                    help="time recommend's start-up here and in another checkout (e.g. a git worktree of an older "
                         "commit), alternating, and print both; the rest of the benchmark is skipped")
    a = ap.parse_args()
    if a.compare is not None:
        compare(a.compare, a.runs)
        return
    print(f"{'what':58} {'median s':>9} {'best s':>8}")
    for args in (["--version"], ["recommend", "--model", "70B", "--device", "rtx-4090"], ["recommend", "--model", "8B"],
                 ["recommend", "--model", "8B", "--device", "h100-sxm", "--json"],
                 ["estimate", "--model", "70B", "--format", "Q4_K_M", "--device", "rtx-4090", "--json"]):
        med, best = time_cli(args, a.runs)
        print(f"{'planner ' + ' '.join(args):58} {med:9.3f} {best:8.3f}")
    for products_only, what in ((True, "products"), (False, "ids incl. memory configurations")):
        n, secs = sweep(products_only)
        print(f"{'sweep: devices (' + what + ') x profiles x 10 formats x 3 ctx':58} {secs:9.3f}  ({n} plans)")


if __name__ == "__main__":
    main()
