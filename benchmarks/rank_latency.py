"""Latency of `planner recommend` without --model (rank every bundled profile on one target), as a new process.

    python benchmarks/rank_latency.py [--runs 5]

Target: under 1 s. Three states of the user cache: cold (a fresh cache directory: catalog validated, tensor layouts,
quality fits and estimates computed; on "this machine" also its memory bandwidth measured, once per machine), layouts
cached but no quality caches (after a planner upgrade that changed the quality model), and warm. Wall time is shared-machine dependent, so the CPU time of the process (user + system) is printed too.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = [("this machine (probe)", []), ("rtx-3060-12gb", ["--device", "rtx-3060-12gb"]),
           ("rtx-4090", ["--device", "rtx-4090"]), ("m3-max-128gb", ["--device", "m3-max-128gb"]),
           ("2x h100-sxm", ["--device", "h100-sxm", "--count", "2"]), ("dgx-spark", ["--device", "dgx-spark"])]


def once(args: list[str], cache: Path) -> tuple[float, float]:
    """(wall s, CPU s) of one `planner recommend ARGS --json` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PLANNER_CACHE_DIR": str(cache)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    # cwd too: `python -m` puts the working directory first on sys.path, ahead of PYTHONPATH
    subprocess.run([sys.executable, "-m", "planner.cli", "recommend", *args, "--json"], env=env, cwd=ROOT,
                   capture_output=True, check=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    """Print a table: per target, cold / layouts-only / warm wall and CPU time."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    runs = ap.parse_args().runs
    print("| target | cold wall / CPU s | quality-cache cold wall / CPU s | warm wall / CPU s (median of "
          f"{runs}) |")
    print("|---|---|---|---|")
    for label, args in TARGETS:
        with tempfile.TemporaryDirectory() as d:
            cache = Path(d)
            cold = once(args, cache)
            for f in (*cache.glob("fit-quality-*.json"), *cache.glob("quality-fits-*.json")):
                f.unlink()
            layouts_only = once(args, cache)
            warm = [once(args, cache) for _ in range(runs)]
        w = statistics.median(x[0] for x in warm)
        c = statistics.median(x[1] for x in warm)
        print(f"| {label} | {cold[0]:.2f} / {cold[1]:.2f} | {layouts_only[0]:.2f} / {layouts_only[1]:.2f} | "
              f"{w:.2f} / {c:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
