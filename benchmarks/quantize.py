"""Encoder speed and accuracy: MB/s of float32 input for every output type, next to gguf-py's own quantizer.

One random N(0, 1) float32 matrix (4096 x 4096 by default) goes through each of our GGUF encoders and group
quantizers; where gguf-py can encode the same type (`gguf.quants.quantize`: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, BF16,
F16), the same tensor goes through it too. Printed: best-of-N wall time, MB/s of input (10^6 bytes of float32),
speed-up over gguf-py, SQNR of the round trip (ours decoded by gguf-py's dequantizer), and how many bytes are
identical to gguf-py's output. gguf-py cannot encode k-quants, so those rows have no reference. Not a test.

Usage: python benchmarks/quantize.py [--rows 4096] [--cols 4096] [--threads N] [--repeat 3] [--types Q8_0,Q4_K]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from planner.quantize import group_quant as gq  # noqa: E402
from planner.quantize.primitives import ENCODERS, default_threads, encode, sqnr_db, tune_allocator  # noqa: E402


def _best(fn, repeat: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> int:
    """Print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--types", default=",".join(t for t in ENCODERS if t != "F32"))
    args = ap.parse_args()

    import gguf
    from gguf import GGMLQuantizationType as QT

    tuned = tune_allocator()  # as `planner quantize` does (it helps gguf-py's temporaries alike)

    x = np.random.default_rng(0).standard_normal((args.rows, args.cols), dtype=np.float32)
    mb = x.nbytes / 1e6
    print(f"input: {args.rows}x{args.cols} float32 ({mb:.1f} MB), {args.threads} encoder thread(s), best of {args.repeat}, "
          f"malloc tuned: {tuned}")
    print(f"{'type':8} {'ours s':>8} {'ours MB/s':>10} {'gguf-py s':>10} {'gguf MB/s':>10} {'speed-up':>9} "
          f"{'SQNR dB':>8} {'gguf SQNR':>9} {'same bytes':>10}")
    for name in args.types.split(","):
        qt = QT[name]
        # Alternate ours and gguf-py's runs, so that load from other processes hits both alike; keep each one's best.
        t_ours, t_ref, ours, ref = float("inf"), float("inf"), None, None
        for _ in range(args.repeat):
            t, ours = _best(lambda: encode(name, x, threads=args.threads), 1)
            t_ours = min(t_ours, t)
            try:
                t, ref = _best(lambda: gguf.quants.quantize(x, qt), 1)
                t_ref = min(t_ref, t)
            except NotImplementedError:
                ref = None
        ours_deq = gguf.quants.dequantize(ours, qt).reshape(x.shape)
        row = f"{name:8} {t_ours:8.3f} {mb / t_ours:10.1f} "
        if ref is None:
            row += f"{'-':>10} {'-':>10} {'-':>9} {sqnr_db(x, ours_deq):8.2f} {'-':>9} {'-':>10}"
        else:
            ref_bytes = np.asarray(ref).view(np.uint8).reshape(-1)
            same = np.mean(ref_bytes == ours.reshape(-1)) * 100
            ref_deq = gguf.quants.dequantize(np.asarray(ref), qt).reshape(x.shape)
            row += (f"{t_ref:10.3f} {mb / t_ref:10.1f} {t_ref / t_ours:8.2f}x {sqnr_db(x, ours_deq):8.2f} "
                    f"{sqnr_db(x, ref_deq):9.2f} {same:9.2f}%")
        print(row, flush=True)

    print("\ngroup quantizers (single thread, numpy):")
    print(f"{'format':22} {'s':>8} {'MB/s':>8} {'SQNR dB':>8}")
    cases = {
        "gptq-int4 (g128)": lambda: gq.group_dequantize(*gq.group_quantize(x, 4, 128), 128),
        "gptq-int8 (g128)": lambda: gq.group_dequantize(*gq.group_quantize(x, 8, 128), 128),
        "nf4 (block 64)": lambda: gq.nf4_dequantize(*gq.nf4_quantize(x)).reshape(x.shape),
        "fp8 e4m3 per-channel": lambda: gq.fp8_dequantize(*gq.fp8_quantize(x)),
        "mlx-4bit (g64)": lambda: gq.mlx_dequantize(*gq.mlx_quantize(x, 4), 4),
        "mlx-8bit (g64)": lambda: gq.mlx_dequantize(*gq.mlx_quantize(x, 8), 8),
    }
    encoders = {
        "gptq-int4 (g128)": lambda: gq.pack_gptq(*gq.group_quantize(x, 4, 128), 4, 128),
        "gptq-int8 (g128)": lambda: gq.pack_gptq(*gq.group_quantize(x, 8, 128), 8, 128),
        "nf4 (block 64)": lambda: gq.nf4_quantize(x),
        "fp8 e4m3 per-channel": lambda: gq.fp8_quantize(x),
        "mlx-4bit (g64)": lambda: gq.mlx_quantize(x, 4),
        "mlx-8bit (g64)": lambda: gq.mlx_quantize(x, 8),
    }
    for name, enc in encoders.items():
        t, _ = _best(enc, args.repeat)
        print(f"{name:22} {t:8.3f} {mb / t:8.1f} {sqnr_db(x, cases[name]()):8.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
