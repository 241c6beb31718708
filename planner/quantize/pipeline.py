"""The streaming quantization pipeline: source -> (format's per-tensor assignment) -> encoders -> atomic output.

One tensor at a time, in row chunks of about CHUNK_VALUES values, from memory-mapped inputs (GGUF outputs: a few
chunks in flight at once, one per thread, written in order); so peak memory is a few chunks plus, for layouts that
store a tensor transposed (GPTQ) or need whole-tensor statistics (NF4's double quantization), that tensor's packed
output. The output goes to OUT.partial, is fsynced and renamed; on any error
or Ctrl-C, OUT.partial is removed and OUT is left as it was. An existing OUT is replaced only as planner.outputs
allows (--force, and only an output file or a directory planner wrote; its marker is written into every directory).

Sizes are not computed here: every tensor's bytes come from the format's assignment (`Assignment.nbytes`, the
formats table), the writers check what the encoders produce against them, and the prediction reported beside the
result is `ModelCost(...).layout(fmt)`, what `planner estimate` prints.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from planner.errors import InvalidInputError, PlannerError
from planner.formats import (
    Assignment, FloatType, GGMLType, GroupQuant, ShapeError, WeightFormat, get_format, imatrix_format, no_imatrix_format,
)
from planner.quantize.config import (
    AWQConfig, FloatConfig, FP8Config, GGUFConfig, GPTQConfig, MLXConfig, NF4Config, QuantConfig, check_encodings, config_for,
)
from planner.quantize.group_quant import (
    NESTED_LEVELS, NF4_LEVELS, double_dequantize, double_quantize, fp8_dequantize, fp8_quantize, group_dequantize, group_quantize, mlx_dequantize,
    mlx_quantize, nf4_dequantize, nf4_quantize, pack_gptq,
)
from planner.quantize.gguf_writer import GGUFWriter, PlannedTensor, general_metadata, kv_i32, kv_str
from planner.quantize.primitives import default_threads, encode, from_bf16_bits, quantize_bf16, quantize_f16, quantize_f32
from planner.quantize.safetensors_writer import SafetensorsWriter, TensorSpec
from planner.quantize.sources import Source, SourceTensor, open_source
from planner.outputs import (
    Kind, OutputRefusedError, check_output, occupied, remove_written, why_not_replaceable, write_marker,
)
from planner.paths import user_path

CHUNK_VALUES = 1 << 22  # values per row chunk: 16 MB as float32
SAMPLE_ROWS = 256  # at most this many rows per tensor have their reconstruction error measured for the report,
SAMPLE_EVERY = 16  # and at most one row in 16 (a small model's tensors have few rows: measuring a quarter of them
MIN_SAMPLE_ROWS = 16  # cost more than half the encoding time), but at least 16 rows, or all of a smaller tensor
DISK_MARGIN = 16 << 20  # headers, config files and NF4's small side tensors, beyond the predicted size


class Progress(Protocol):
    """Where the pipeline reports progress (a rich progress bar in the CLI)."""

    def start(self, total_bytes: int) -> None: ...

    def advance(self, nbytes: int, tensor: str) -> None: ...


@dataclass
class TensorResult:
    """One written tensor: name in the output, encoding, shape, bytes the formats table counts, SQNR in dB."""

    name: str
    encoding: str
    shape: tuple[int, ...]
    nbytes: int
    sqnr_db: float  # inf: stored exactly

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (an exact tensor's SQNR is null)."""
        return {"name": self.name, "encoding": self.encoding, "shape": list(self.shape), "bytes": self.nbytes,
                "sqnr_db": None if math.isinf(self.sqnr_db) else round(self.sqnr_db, 3)}


@dataclass
class QuantizeResult:
    """What was written and how well: sizes against the cost model's prediction, per-tensor SQNR, bits per weight."""

    source: str
    format: str
    output: str
    kind: str  # 'gguf' | 'safetensors'
    file_bytes: int
    tensor_bytes: int  # the bytes the formats table counts (GGUF: tensor data without alignment padding)
    predicted_tensor_bytes: int
    predicted_file_bytes: int
    n_values: int
    seconds: float
    input_bytes: int
    tensors: list[TensorResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per weight over every written tensor."""
        return self.tensor_bytes * 8 / max(1, self.n_values)

    def worst(self, n: int = 10) -> list[TensorResult]:
        """The n lossy tensors with the lowest SQNR."""
        lossy = [t for t in self.tensors if not math.isinf(t.sqnr_db)]
        return sorted(lossy, key=lambda t: t.sqnr_db)[:n]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary; tensors worst first."""
        lossy = [t.sqnr_db for t in self.tensors if not math.isinf(t.sqnr_db)]
        return {
            "source": self.source, "format": self.format, "output": self.output, "kind": self.kind,
            "file_bytes": self.file_bytes, "tensor_bytes": self.tensor_bytes,
            "predicted_tensor_bytes": self.predicted_tensor_bytes, "predicted_file_bytes": self.predicted_file_bytes,
            "bits_per_weight": round(self.bits_per_weight, 4), "seconds": round(self.seconds, 3),
            "input_mb_per_s": round(self.input_bytes / 1e6 / max(self.seconds, 1e-9), 1),
            "min_sqnr_db": round(min(lossy), 3) if lossy else None,
            "tensors": [t.as_dict() for t in sorted(self.tensors, key=lambda t: t.sqnr_db)],
            "warnings": self.warnings,
        }


class _Sqnr:
    """Running signal and noise energy of one tensor's sampled rows."""

    def __init__(self) -> None:
        self.signal = 0.0
        self.noise = 0.0

    def add(self, ref: np.ndarray, approx: np.ndarray) -> None:
        ref = ref.astype(np.float64, copy=False).ravel()
        err = ref - approx.astype(np.float64, copy=False).ravel()
        # einsum, not BLAS: OpenBLAS's own threads fight the encoder threads for the cores.
        self.signal += float(np.einsum("i,i->", ref, ref))
        self.noise += float(np.einsum("i,i->", err, err))

    @property
    def db(self) -> float:
        if self.noise == 0:
            return math.inf
        return 10 * math.log10(self.signal / self.noise) if self.signal > 0 else -math.inf


@dataclass
class _Run:
    """State shared by the writers of one run."""

    src: Source
    threads: int | None
    progress: Progress | None
    results: list[TensorResult] = field(default_factory=list)
    imatrix: Any = None  # planner.quantize.imatrix.ImportanceMatrix for the '-imat' formats
    calibrated: Any = None  # calibrated.CalibratedQuantizer for GPTQ/AWQ

    def chunks(self, t: SourceTensor, multiple: int = 1) -> Iterator[tuple[int, int, np.ndarray]]:
        """Row ranges of tensor t (a multiple of `multiple` rows each) and which of their rows are sampled."""
        rows = max(multiple, CHUNK_VALUES // max(1, t.row_length) // multiple * multiple)
        stride = max(1, t.n_rows // SAMPLE_ROWS, min(SAMPLE_EVERY, t.n_rows // MIN_SAMPLE_ROWS))
        for a in range(0, t.n_rows, rows):
            b = min(a + rows, t.n_rows)
            first = -(-a // stride) * stride
            yield a, b, np.arange(first, b, stride) - a
            if self.progress is not None:
                self.progress.advance(t.nbytes * (b - a) // max(1, t.n_rows), t.info.name)


# ---------------------------------------------------------------------------------------------- entry point


def quantize_model(source: Path | str, fmt: WeightFormat | str, out: Path | str, *, force: bool = False,
                   threads: int | None = None, progress: Progress | None = None, imatrix: Any = None,
                   calib: str | None = None, config: QuantConfig | None = None) -> QuantizeResult:
    """Quantize the model at `source` (HF directory or GGUF file) to `fmt`, writing `out` atomically.

    `imatrix` (an ImportanceMatrix, or the path of a llama.cpp imatrix file) makes a GGUF format its '-imat'
    variant: the encoders weight each value's error by it, as llama-quantize --imatrix does. calib: the calibration
    text for GPTQ/AWQ (default: the bundled sample text); config: options that replace the format's default config
    (e.g. GPTQ's damping or act-order), of the same type."""
    from planner.cost.model import ModelCost

    t0 = time.perf_counter()
    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    imatrix = _load_imatrix(imatrix)
    if imatrix is not None:
        if fmt.family != "gguf":
            raise PlannerError(f"an importance matrix applies to GGUF formats; {fmt.id} is not one")
        fmt = imatrix_format(fmt)
    cfg = config_for(fmt)
    if isinstance(cfg, GGUFConfig) and cfg.imatrix and imatrix is None:
        raise InvalidInputError(f"{fmt.id} is made with an importance matrix: pass --imatrix FILE (llama.cpp's "
                                "imatrix.gguf or imatrix.dat), or quantize to the plain type")
    if imatrix is None and isinstance(cfg, GGUFConfig):  # the types llama-quantize picks without an imatrix
        fmt = no_imatrix_format(fmt)
    if config is not None:
        if type(config) is not type(cfg):
            raise PlannerError(f"{fmt.id} is made with {type(cfg).__name__}, not {type(config).__name__}")
        cfg = config
    out = user_path(out)
    source = user_path(source)
    if out.exists() and source.exists():
        o, s = out.resolve(), source.resolve()
        if o == s or o in s.parents:  # replacing OUT would delete the input
            raise PlannerError(f"{out} is (or contains) the source {source}; choose another output path")
    kind: Kind = "file" if isinstance(cfg, GGUFConfig) else "dir"
    check_output(out, kind, force=force)  # before the work: a refusal must not cost a whole run
    src = open_source(source)
    try:
        if not isinstance(cfg, GGUFConfig) and src.gguf_only:
            raise PlannerError(f"{src.path}: {src.gguf_only}; {fmt.id} writes a safetensors checkpoint: choose a GGUF "
                               "format (f16, q8_0, q4_k_m, ...)")
        if not isinstance(cfg, GGUFConfig):  # llama.cpp-only tensors (rope_freqs) have no place in an HF checkpoint
            src.tensors = [t for t in src.tensors if t.hf_name is not None]
        infos = src.infos
        try:
            assignments = fmt.assignments(src.spec, infos)
            layout = ModelCost(src.spec, infos).layout(fmt)
        except ShapeError as exc:
            raise InvalidInputError(f"{src.path}: {exc}") from None
        check_encodings(fmt, assignments)
        _check_disk(out, layout.file_size_bytes)
        partial = out.with_name(out.name + ".partial")
        _remove_leftover(partial, kind)
        run = _Run(src, threads, progress, imatrix=imatrix)
        if imatrix is not None:
            src.warnings.extend(_imatrix_coverage(imatrix, assignments))
        elif isinstance(cfg, GGUFConfig) and cfg.ftype in ("IQ4_XS", "IQ4_NL"):
            src.warnings.append(f"{cfg.ftype} without an importance matrix: the scales minimise the plain squared error; "
                                "pass --imatrix FILE for the quality imatrix quants have")
        if getattr(cfg, "calibrated", False):
            run.calibrated = _calibrated(src, cfg, assignments, calib)
        if progress is not None:
            progress.start(src.input_bytes)
        try:
            writer = _WRITERS[type(cfg)]
            file_bytes = writer(run, fmt, cfg, assignments, partial)
            _fsync_tree(partial)
            warnings = _install(partial, out, kind, force)
        except BaseException:
            remove_written(partial)
            raise
    finally:
        src.close()
    return QuantizeResult(
        source=str(source), format=fmt.id, output=str(out), kind="gguf" if isinstance(cfg, GGUFConfig) else "safetensors",
        file_bytes=file_bytes, tensor_bytes=sum(r.nbytes for r in run.results),
        predicted_tensor_bytes=layout.stored_bytes, predicted_file_bytes=layout.file_size_bytes,
        n_values=sum(t.info.n_elements for t in src.tensors), seconds=time.perf_counter() - t0,
        input_bytes=src.input_bytes, tensors=run.results, warnings=list(src.warnings) + warnings,
    )


def _load_imatrix(imatrix: Any) -> Any:
    """An ImportanceMatrix from a path (read and checked), or the object itself, or None."""
    if imatrix is None or not isinstance(imatrix, (str, Path)):
        return imatrix
    from planner.quantize.imatrix import read_imatrix

    return read_imatrix(user_path(imatrix))


def _imatrix_coverage(imatrix: Any, assignments: list[Assignment]) -> list[str]:
    """Warnings for quantized matrices the importance matrix has no entry for (they are quantized unweighted).

    The token embedding is looked up, not multiplied, and llama-imatrix leaves the output head out by default, so
    those two are expected to be missing."""
    missing = [a.tensor.name for a in assignments
               if isinstance(a.encoding, GGMLType) and a.encoding.quantized and a.tensor.is_matrix
               and a.tensor.name not in imatrix.entries and a.tensor.name not in ("token_embd.weight", "output.weight")]
    if not missing:
        return []
    return [f"the importance matrix has no entry for {len(missing)} quantized tensor(s) ({', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''}): quantized without weights"]


def _calibrated(src: Source, cfg: QuantConfig, assignments: list[Assignment], calib: str | None) -> Any:
    """The block-by-block GPTQ/AWQ quantizer of the linears this format quantizes."""
    from planner.quantize.calibrated import CalibratedQuantizer

    if src.kind != "hf":
        raise PlannerError(f"{src.path}: GPTQ/AWQ calibration runs a Hugging Face directory (config.json, safetensors, "
                           "tokenizer.json); convert the GGUF first with -f bf16")
    try:
        import torch  # noqa: F401  (the calibrated quantizers run the model block by block in torch)
    except ImportError:
        raise PlannerError(f"{type(cfg).__name__.removesuffix('Config')} calibration runs the model in torch, which is "
                           "not installed: pip install 'llm-deploy-planner[quant]' (torch==2.13.0 is the CPU build), or "
                           "use rtn-int4 / rtn-int8, which need no torch") from None
    if calib is None:  # the bundled calibration text, which is not eval's default text (no calibrating on the test)
        from planner.measure.quality.text import GPU_CALIB_TEXT

        calib = GPU_CALIB_TEXT.read_text(encoding="utf-8")
    names = {st.hf_name for st, a in zip(src.tensors, assignments) if isinstance(a.encoding, GroupQuant) and st.hf_name}
    return CalibratedQuantizer(src, cfg, calib, names)  # type: ignore[arg-type]


def _check_disk(out: Path, predicted: int) -> None:
    """Refuse to start when the output's file system has less room than the predicted size."""
    parent = out.parent
    if not parent.is_dir():
        raise PlannerError(f"{parent}: no such directory for the output")
    free = shutil.disk_usage(parent).free
    need = int(predicted * 1.01) + DISK_MARGIN
    if free < need:
        raise PlannerError(f"{parent}: {free / 1e9:.2f} GB free, the output needs about {need / 1e9:.2f} GB")


def _remove_leftover(partial: Path, kind: Kind) -> None:
    """Remove OUT.partial left by an earlier run that was killed, if the planner wrote it; else refuse."""
    if not occupied(partial):
        return
    why = why_not_replaceable(partial, kind)
    if why is not None:
        raise OutputRefusedError(f"{partial}: {why}; planner writes its unfinished output under this name and will "
                                 "not replace it: move it away or choose another -o")
    if not remove_written(partial):
        raise OutputRefusedError(f"{partial}: could not be removed (something planner did not write appeared in it)")


def _fsync_tree(path: Path) -> None:
    """fsync a file, or every file of a directory and the directory itself."""
    files = [p for p in path.iterdir() if p.is_file()] if path.is_dir() else [path]
    for f in files:
        with f.open("rb+") as fh:
            os.fsync(fh.fileno())
    if path.is_dir():
        _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # not possible on every platform; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _install(partial: Path, out: Path, kind: Kind, force: bool) -> list[str]:
    """Move the finished output into place: a file by atomic rename; a directory via a side name for the old one,
    of which only what the planner wrote is deleted. Returns warnings (an old directory that could not go)."""
    check_output(out, kind, force=force)  # again: OUT may have changed during a long run
    warnings: list[str] = []
    if kind == "file":
        os.replace(partial, out)
    else:
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        if occupied(out):
            os.replace(out, old)
        try:
            os.replace(partial, out)
        except BaseException:
            if occupied(old):
                os.replace(old, out)
            raise
        if occupied(old) and not remove_written(old):
            warnings.append(f"the previous {out.name} was kept as {old}: files planner did not write appeared in it")
    _fsync_dir(out.parent)
    return warnings


# ---------------------------------------------------------------------------------------------- GGUF


def _write_gguf(run: _Run, fmt: WeightFormat, cfg: GGUFConfig, assignments: list[Assignment], partial: Path) -> int:
    src = run.src
    meta = general_metadata(src.arch, src.spec.name, cfg.ftype) + src.gguf_kvs
    im = run.imatrix if cfg.imatrix else None
    if im is not None:  # the keys llama-quantize writes, so readers (and planner) can tell an imatrix quant
        meta += [kv_str("quantize.imatrix.file", Path(im.source).name or "computed"),
                 kv_str("quantize.imatrix.dataset", im.datasets[0] if im.datasets else ""),
                 kv_i32("quantize.imatrix.entries_count", len(im.entries)),
                 kv_i32("quantize.imatrix.chunks_count", im.chunks)]
    planned = []
    for a in assignments:
        assert isinstance(a.encoding, GGMLType)
        planned.append(PlannedTensor(a.tensor.name, a.tensor.shape, a.encoding, a.nbytes))
    workers = default_threads() if run.threads is None else run.threads
    with partial.open("wb") as fh:
        w = GGUFWriter(fh, meta, planned)
        w.write_header()
        acc = _Sqnr()
        for st, a, last, (enc, signal, noise) in _gguf_chunks(run, assignments, im, workers):
            if enc.size:  # a tensor without rows has nothing to write
                w.write(enc)
            acc.signal += signal  # summed in file order, so the reported SQNR does not depend on the thread count
            acc.noise += noise
            if last:
                src.release(st)
                run.results.append(TensorResult(st.info.name, a.encoding.name, st.info.shape, a.nbytes, acc.db))
                acc = _Sqnr()
        size = w.finish()
    return size


def _gguf_chunk(run: _Run, st: SourceTensor, typ: str, qw: np.ndarray | None, r0: int, r1: int,
                sample: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Read, encode (one thread) and measure rows [r0, r1) of one tensor: (bytes, signal and noise of sampled rows)."""
    x = run.src.read_rows(st, r0, r1, "gguf")
    enc = encode(typ, x, threads=1, qw=None if qw is None else (qw if qw.ndim == 1 else qw[r0:r1]))
    part = _Sqnr()
    if sample.size:  # measured through gguf-py's reader: checks the layout as well as the error
        part.add(x[sample], dequantize(enc[sample], GGMLQuantizationType[typ]).reshape(sample.size, -1))
    return enc, part.signal, part.noise


def _gguf_chunks(run: _Run, assignments: list[Assignment], im: Any,
                 workers: int) -> Iterator[tuple[SourceTensor, Assignment, bool, tuple[np.ndarray, float, float]]]:
    """Every row chunk of every tensor, encoded, in file order, with whether it ends its tensor.

    Whole chunks (reading and converting the input, encoding, measuring) run on `workers` threads, not only the
    encoders' inner loops: numpy releases the GIL in each of those steps. At most workers + 1 chunks are in flight,
    so memory stays a few chunks. A chunk's bytes do not depend on how rows are split, so the file is the same for
    any thread count."""
    src = run.src
    empty = (np.empty(0, dtype=np.uint8), 0.0, 0.0)  # a tensor without rows still gets its result
    if workers <= 1:
        for st, a in zip(src.tensors, assignments):
            qw = _tensor_weights(im, st, a)
            n = 0
            for r0, r1, sample in run.chunks(st):
                n += 1
                yield st, a, r1 >= st.n_rows, _gguf_chunk(run, st, a.encoding.name, qw, r0, r1, sample)
            if n == 0:
                yield st, a, True, empty
        return
    pool = _chunk_pool(workers)
    pending: deque[tuple[SourceTensor, Assignment, bool, Future[tuple[np.ndarray, float, float]]]] = deque()

    def ready(limit: int) -> Iterator[tuple[SourceTensor, Assignment, bool, tuple[np.ndarray, float, float]]]:
        while len(pending) > limit:
            t, b, last, fut = pending.popleft()
            yield t, b, last, fut.result()

    try:
        mapped = None
        for st, a in zip(src.tensors, assignments):
            qw = _tensor_weights(im, st, a)
            if st.file is not None and st.file != mapped:
                yield from ready(0)  # the source maps one file at a time: in-flight reads of the last one finish first
                src.map_file(st.file)  # here, not in a worker: two workers must not both remap it
                mapped = st.file
            n = 0
            for r0, r1, sample in run.chunks(st):
                n += 1
                pending.append((st, a, r1 >= st.n_rows,
                                pool.submit(_gguf_chunk, run, st, a.encoding.name, qw, r0, r1, sample)))
                yield from ready(workers)
            if n == 0:
                done: Future[tuple[np.ndarray, float, float]] = Future()
                done.set_result(empty)
                pending.append((st, a, True, done))
        yield from ready(0)
    finally:  # an error or Ctrl-C: nothing may still read the source once the caller closes it
        for *_, fut in pending:
            fut.cancel()
        wait([fut for *_, fut in pending])


def _tensor_weights(im: Any, st: SourceTensor, a: Assignment) -> np.ndarray | None:
    """The importance of a quantized tensor's values under an importance matrix, else None."""
    return im.weights_for(st.info.name, st.info.shape) if (im is not None and a.encoding.quantized) else None


_CHUNK_POOLS: dict[int, ThreadPoolExecutor] = {}


def _chunk_pool(workers: int) -> ThreadPoolExecutor:
    """Threads for whole GGUF chunks, kept for the process (separate from the encoders' own pool)."""
    if workers not in _CHUNK_POOLS:
        _CHUNK_POOLS[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="planner-chunk")
    return _CHUNK_POOLS[workers]


# ---------------------------------------------------------------------------------------------- safetensors

_FLOAT_ST = {"fp32": ("F32", quantize_f32), "fp16": ("F16", quantize_f16), "bf16": ("BF16", quantize_bf16)}
_TORCH_DTYPE = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def _prefix(st: SourceTensor) -> str:
    assert st.hf_name is not None
    return st.hf_name[: -len(".weight")] if st.hf_name.endswith(".weight") else st.hf_name


class _TensorJob:
    """How one tensor is written to safetensors: its output tensors, then a run over its rows."""

    def specs(self) -> list[TensorSpec]:
        raise NotImplementedError

    def counted_bytes(self) -> int:
        """Bytes of the parts the formats table counts (checked against Assignment.nbytes)."""
        return sum(s.nbytes for s in self.specs())

    def run(self, run: _Run, w: SafetensorsWriter) -> float:
        raise NotImplementedError


@dataclass
class _FloatJob(_TensorJob):
    st: SourceTensor
    enc: FloatType

    def specs(self) -> list[TensorSpec]:
        return [TensorSpec(self.st.hf_name or "", _FLOAT_ST[self.enc.name][0], tuple(self.st.info.shape))]

    def run(self, run: _Run, w: SafetensorsWriter) -> float:
        dtype, fn = _FLOAT_ST[self.enc.name]
        acc = _Sqnr()
        row_bytes = self.st.row_length * self.enc.bits // 8
        changed = run.calibrated.float_override(self.st.hf_name or "") if run.calibrated is not None else None
        for r0, r1, sample in run.chunks(self.st):
            # AWQ folds its scales into the norms before the linears: those are written as changed
            x = run.src.read_rows(self.st, r0, r1, "hf") if changed is None else \
                changed.reshape(self.st.n_rows, -1)[r0:r1].astype(np.float32)
            raw = fn(x)
            w.write(self.st.hf_name or "", raw, r0 * row_bytes)
            if sample.size and dtype != "F32":
                got = raw[sample].view("<f2").astype(np.float32) if dtype == "F16" else from_bf16_bits(raw[sample].view("<u2"))
                acc.add(x[sample], got)
        return acc.db


@dataclass
class _GPTQJob(_TensorJob):
    st: SourceTensor
    cfg: GPTQConfig

    def _dims(self) -> tuple[int, int, int]:
        out, n = self.st.info.shape
        g = self.cfg.group_size or n
        return out, n, g

    def specs(self) -> list[TensorSpec]:
        out, n, g = self._dims()
        per = 32 // self.cfg.bits
        if out % per:
            raise PlannerError(f"{self.st.hf_name}: {out} output channels do not pack into GPTQ's {per}-per-word qzeros")
        p = _prefix(self.st)
        return [TensorSpec(f"{p}.qweight", "I32", (n // per, out)), TensorSpec(f"{p}.qzeros", "I32", (n // g, out // per)),
                TensorSpec(f"{p}.scales", "F16", (n // g, out)), TensorSpec(f"{p}.g_idx", "I32", (n,))]

    def run(self, run: _Run, w: SafetensorsWriter) -> float:
        if run.calibrated is not None:
            return self._run_calibrated(run, w)
        out, n, g = self._dims()
        bits, per = self.cfg.bits, 32 // self.cfg.bits
        # qweight and scales are stored transposed (input dim first): collect this tensor's columns, write once.
        qweight = np.empty((n // per, out), dtype=np.int32)
        qzeros = np.empty((n // g, out // per), dtype=np.int32)
        scales = np.empty((n // g, out), dtype=np.float16)
        g_idx = None
        acc = _Sqnr()
        for r0, r1, sample in run.chunks(self.st, multiple=per):
            x = run.src.read_rows(self.st, r0, r1, "hf")
            q, s, z = group_quantize(x, bits, self.cfg.group_size, symmetric=self.cfg.sym)
            packed = pack_gptq(q, s, z, bits, self.cfg.group_size)
            qweight[:, r0:r1] = packed["qweight"]
            qzeros[:, r0 // per:r1 // per] = packed["qzeros"]
            scales[:, r0:r1] = packed["scales"]
            g_idx = packed["g_idx"]
            if sample.size:
                acc.add(x[sample], group_dequantize(q[sample], s[sample], z[sample], self.cfg.group_size))
        p = _prefix(self.st)
        assert g_idx is not None
        for name, arr in (("qweight", qweight), ("qzeros", qzeros), ("scales", scales), ("g_idx", g_idx)):
            w.write(f"{p}.{name}", arr)
        return acc.db

    def _run_calibrated(self, run: _Run, w: SafetensorsWriter) -> float:
        res = run.calibrated.take(self.st.hf_name)
        if run.progress is not None:
            run.progress.advance(self.st.nbytes, self.st.info.name)
        packed = res.packed if res.packed is not None else \
            pack_gptq(res.q, res.scales, res.zeros, self.cfg.bits, self.cfg.group_size, g_idx=res.g_idx)
        p = _prefix(self.st)
        for name in ("qweight", "qzeros", "scales", "g_idx"):
            w.write(f"{p}.{name}", packed[name])
        run.src.release(self.st)
        return _sqnr_of(res)


def _sqnr_of(res: Any) -> float:
    """SQNR of a calibrated layer's codes against the float weight they encode (sampled rows)."""
    from planner.quantize.gptq import GPTQResult

    rows = res.rows
    acc = _Sqnr()
    q = res.q if res.packed is not None else res.q[rows]  # packed results keep only the sampled rows' codes
    acc.add(res.reference, GPTQResult(q, res.scales[rows], res.zeros[rows], res.g_idx).dequantize())
    return acc.db


@dataclass
class _AWQJob(_TensorJob):
    st: SourceTensor
    cfg: AWQConfig

    def specs(self) -> list[TensorSpec]:
        out, n = self.st.info.shape
        g = self.cfg.group_size
        if out % 8:
            raise PlannerError(f"{self.st.hf_name}: {out} output channels do not pack 8 to an int32 (AWQ)")
        p = _prefix(self.st)
        return [TensorSpec(f"{p}.qweight", "I32", (n, out // 8)), TensorSpec(f"{p}.qzeros", "I32", (n // g, out // 8)),
                TensorSpec(f"{p}.scales", "F16", (n // g, out))]

    def run(self, run: _Run, w: SafetensorsWriter) -> float:
        from planner.quantize.awq import pack_awq

        res = run.calibrated.take(self.st.hf_name)
        if run.progress is not None:
            run.progress.advance(self.st.nbytes, self.st.info.name)
        packed = pack_awq(res.q, res.scales, res.zeros)
        p = _prefix(self.st)
        for name in ("qweight", "qzeros", "scales"):
            w.write(f"{p}.{name}", packed[name])
        run.src.release(self.st)
        return _sqnr_of(res)


_NF4_STATE_KEY = "quant_state.bitsandbytes__nf4"


@dataclass
class _NF4Job(_TensorJob):
    st: SourceTensor
    cfg: NF4Config
    keep_dtype: str

    def _n(self) -> int:
        return self.st.info.n_elements

    def _state_json(self, offset: float) -> bytes:
        # Fixed width: the header (and so this tensor's size) is written before the offset is known.
        doc = {"quant_type": "nf4", "blocksize": self.cfg.block_size, "dtype": self.keep_dtype,
               "shape": list(self.st.info.shape)}
        if self.cfg.double_quant:
            doc.update({"nested_blocksize": self.cfg.nested_block_size, "nested_dtype": "float32", "nested_offset": "@"})
        number = f"{offset:.16e}"
        text = json.dumps(doc).replace('"@"', number if number.startswith("-") else " " + number)  # JSON has no '+'
        return text.encode()

    def specs(self) -> list[TensorSpec]:
        n, b = self._n(), self.cfg.block_size
        name = self.st.hf_name or ""
        out = [TensorSpec(name, "U8", (n // 2, 1)),
               TensorSpec(f"{name}.absmax", "U8" if self.cfg.double_quant else "F32", (n // b,)),
               TensorSpec(f"{name}.quant_map", "F32", (16,))]
        if self.cfg.double_quant:
            out += [TensorSpec(f"{name}.nested_absmax", "F32", (-(-(n // b) // self.cfg.nested_block_size),)),
                    TensorSpec(f"{name}.nested_quant_map", "F32", (256,))]
        out.append(TensorSpec(f"{name}.{_NF4_STATE_KEY}", "U8", (len(self._state_json(0.0)),)))
        return out

    def counted_bytes(self) -> int:
        return sum(s.nbytes for s in self.specs()[:2])  # packed codes and absmax; the rest is per-tensor constants

    def run(self, run: _Run, w: SafetensorsWriter) -> float:
        name = self.st.hf_name or ""
        b = self.cfg.block_size
        row = self.st.row_length
        absmax = np.empty(self._n() // b, dtype=np.float32)
        samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (rows, packed, absmax slice index)
        for r0, r1, sample in run.chunks(self.st):
            x = run.src.read_rows(self.st, r0, r1, "hf")
            packed, am = nf4_quantize(x, b)
            w.write(name, packed, r0 * row // 2)
            absmax[r0 * row // b:r1 * row // b] = am
            for s in sample:
                samples.append((x[s].copy(), packed[s * row // 2:(s + 1) * row // 2].copy(), np.arange((r0 + s) * row // b, (r0 + s + 1) * row // b)))
        offset = 0.0
        stored = absmax
        if self.cfg.double_quant:
            codes, nested, offset = double_quantize(absmax, self.cfg.nested_block_size)
            w.write(f"{name}.absmax", codes)
            w.write(f"{name}.nested_absmax", nested)
            w.write(f"{name}.nested_quant_map", NESTED_LEVELS)
            stored = double_dequantize(codes, nested, offset, self.cfg.nested_block_size)
        else:
            w.write(f"{name}.absmax", absmax)
        w.write(f"{name}.quant_map", NF4_LEVELS)
        w.write(f"{name}.{_NF4_STATE_KEY}", np.frombuffer(self._state_json(offset), dtype=np.uint8))
        acc = _Sqnr()
        for x, packed, idx in samples:
            acc.add(x, nf4_dequantize(packed, stored[idx], b))
        return acc.db


@dataclass
class _FP8Job(_TensorJob):
    st: SourceTensor
    cfg: FP8Config

    def specs(self) -> list[TensorSpec]:
        out = self.st.info.shape[0]
        p = _prefix(self.st)
        return [TensorSpec(f"{p}.weight", "F8_E4M3", tuple(self.st.info.shape)),
                TensorSpec(f"{p}.weight_scale", "F32", (out, 1) if self.cfg.per_channel else (1,))]

    def run(self, run: _Run, w: SafetensorsWriter) -> float:
        p = _prefix(self.st)
        row = self.st.row_length
        amax = None
        if not self.cfg.per_channel:  # one scale for the whole tensor: measure it in a first pass
            amax = 0.0
            for r0, r1, _ in _plain_chunks(self.st):
                amax = max(amax, float(np.abs(run.src.read_rows(self.st, r0, r1, "hf")).max()))
        acc = _Sqnr()
        scale = None
        for r0, r1, sample in run.chunks(self.st):
            x = run.src.read_rows(self.st, r0, r1, "hf")
            codes, scale = fp8_quantize(x, per_channel=self.cfg.per_channel, amax=amax)
            w.write(f"{p}.weight", codes, r0 * row)
            if self.cfg.per_channel:
                w.write(f"{p}.weight_scale", scale, r0 * 4)
            if sample.size:
                s = scale[sample] if self.cfg.per_channel else scale
                acc.add(x[sample], fp8_dequantize(codes[sample], s))
        if not self.cfg.per_channel:
            assert scale is not None
            w.write(f"{p}.weight_scale", scale)
        return acc.db


def _plain_chunks(t: SourceTensor) -> Iterator[tuple[int, int, None]]:
    rows = max(1, CHUNK_VALUES // max(1, t.row_length))
    for a in range(0, t.n_rows, rows):
        yield a, min(a + rows, t.n_rows), None


@dataclass
class _MLXJob(_TensorJob):
    st: SourceTensor
    cfg: MLXConfig

    def specs(self) -> list[TensorSpec]:
        out, n = self.st.info.shape
        p = _prefix(self.st)
        groups = n // self.cfg.group_size
        return [TensorSpec(f"{p}.weight", "U32", (out, n * self.cfg.bits // 32)),
                TensorSpec(f"{p}.scales", "F16", (out, groups)), TensorSpec(f"{p}.biases", "F16", (out, groups))]

    def run(self, run: _Run, w: SafetensorsWriter) -> float:
        p = _prefix(self.st)
        _, n = self.st.info.shape
        bits, g = self.cfg.bits, self.cfg.group_size
        acc = _Sqnr()
        for r0, r1, sample in run.chunks(self.st):
            x = run.src.read_rows(self.st, r0, r1, "hf")
            packed, scales, biases = mlx_quantize(x, bits, g)
            w.write(f"{p}.weight", packed, r0 * n * bits // 8)
            w.write(f"{p}.scales", scales, r0 * (n // g) * 2)
            w.write(f"{p}.biases", biases, r0 * (n // g) * 2)
            if sample.size:
                acc.add(x[sample], mlx_dequantize(packed[sample], scales[sample], biases[sample], bits, g))
        return acc.db


def _job(st: SourceTensor, a: Assignment, cfg: QuantConfig, keep_dtype: str) -> _TensorJob:
    """The writer job of one tensor: float encodings are copied, GroupQuant ones quantized per the config."""
    if isinstance(a.encoding, FloatType):
        return _FloatJob(st, a.encoding)
    if not isinstance(a.encoding, GroupQuant) or len(st.info.shape) != 2:
        raise PlannerError(f"{st.info.name}: {a.encoding.name} cannot be written to a safetensors checkpoint")
    if isinstance(cfg, GPTQConfig):
        return _GPTQJob(st, cfg)
    if isinstance(cfg, AWQConfig):
        return _AWQJob(st, cfg)
    if isinstance(cfg, NF4Config):
        return _NF4Job(st, cfg, keep_dtype)
    if isinstance(cfg, FP8Config):
        return _FP8Job(st, cfg)
    if isinstance(cfg, MLXConfig):
        return _MLXJob(st, cfg)
    raise PlannerError(f"{st.info.name}: no writer for {a.encoding.name} under {type(cfg).__name__}")


def _keep_dtype(assignments: list[Assignment]) -> str:
    """The float dtype a format keeps unquantized matrices in (what config.json's torch_dtype says)."""
    for a in assignments:
        if isinstance(a.encoding, FloatType) and len(a.tensor.shape) >= 2:
            return a.encoding.name
    return "bf16"


def _block_modules(src: Source, assignments: list[Assignment]) -> tuple[list[list[str]], list[str]]:
    """Block linears by input group that the format quantizes (module suffixes, e.g. 'self_attn.q_proj') and the
    block linears it keeps in float (the loader must not expect quantized tensors for those)."""
    from planner.quantize.calib import GROUPS

    quantized, kept = set(), set()
    for st, a in zip(src.tensors, assignments):
        name = st.hf_name or ""
        parts = name.split(".")
        if len(parts) < 5 or parts[:2] != ["model", "layers"] or not name.endswith(".weight"):
            continue
        mod = ".".join(parts[3:-1])
        if any(mod in ms for _, ms in GROUPS):
            (quantized if isinstance(a.encoding, GroupQuant) else kept).add(mod)
    groups = [[m for m in ms if m in quantized] for _, ms in GROUPS]
    return [g for g in groups if g], sorted(kept - quantized)


def quantization_config(cfg: QuantConfig, skipped: list[str] | None = None,
                        in_block: list[list[str]] | None = None) -> dict[str, Any] | None:
    """The `quantization_config` entry of config.json that a loader reads for this config (None: unquantized).

    skipped / in_block: block linears kept in float (a row too short for the group) and those quantized, so
    loaders that replace every block linear by a quantized one leave the float ones alone."""
    if isinstance(cfg, GPTQConfig):
        # What transformers' GPTQ path (GPTQConfig), gptqmodel's QuantizeConfig and vLLM's gptq/gptq_marlin read:
        # quant_method, bits, group_size, desc_act, sym, checkpoint_format ('gptq' = v1 zeros stored minus one).
        # The `meta` block is gptqmodel's record of who made it and how; RTN says so and claims no GPTQ settings.
        qc: dict[str, Any] = {"quant_method": "gptq", "bits": cfg.bits, "group_size": cfg.group_size or -1,
                              "desc_act": cfg.desc_act, "sym": cfg.sym, "static_groups": False,
                              "checkpoint_format": "gptq", "lm_head": False}
        if skipped:
            # optimum (transformers' GPTQ path) reads modules_in_block_to_quantize; gptqmodel and vLLM read
            # `dynamic`, where a '-:' regex key means "not quantized"
            qc["modules_in_block_to_quantize"] = in_block
            qc["dynamic"] = {rf"-:model\.layers\.\d+\.{re.escape(m)}$": {} for m in skipped}
        if cfg.method == "gptq":
            qc.update({"damp_percent": cfg.damp, "true_sequential": True})
            qc["meta"] = {"quantizer": ["planner"], "method": "gptq", "damp_percent": cfg.damp, "true_sequential": True}
        else:
            qc["meta"] = {"quantizer": ["planner"], "method": "rtn",
                          "note": "round to nearest, absmax scales, no calibration (not GPTQ)"}
        return qc
    if isinstance(cfg, AWQConfig):
        # transformers' AwqConfig and vLLM's awq / awq_marlin read quant_method, bits (w_bit), group_size
        # (q_group_size), zero_point and version ('gemm' = AutoAWQ's WQLinear_GEMM packing).
        # modules_to_not_convert: name substrings left as float Linear (transformers, AutoAWQ, vLLM)
        return {"quant_method": "awq", "bits": cfg.bits, "group_size": cfg.group_size, "zero_point": True,
                "version": "gemm", "modules_to_not_convert": list(skipped) if skipped else None}
    if isinstance(cfg, NF4Config):
        return {"quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False, "bnb_4bit_quant_type": "nf4",
                "bnb_4bit_use_double_quant": cfg.double_quant, "bnb_4bit_compute_dtype": cfg.compute_dtype,
                "bnb_4bit_quant_storage": "uint8", "llm_int8_threshold": 6.0, "llm_int8_skip_modules": None,
                "llm_int8_has_fp16_weight": False, "llm_int8_enable_fp32_cpu_offload": False}
    if isinstance(cfg, FP8Config):
        weights = {"num_bits": 8, "type": "float", "symmetric": True, "dynamic": False, "observer": "minmax",
                   "strategy": "channel" if cfg.per_channel else "tensor", "group_size": None, "block_structure": None,
                   "actorder": None}
        acts = {"num_bits": 8, "type": "float", "symmetric": True, "dynamic": True, "observer": None,
                "strategy": "token" if cfg.per_channel else "tensor", "group_size": None, "block_structure": None,
                "actorder": None}
        return {"quant_method": "compressed-tensors", "format": "float-quantized", "quantization_status": "compressed",
                "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": acts,
                                              "output_activations": None}},
                "ignore": ["lm_head"], "kv_cache_scheme": None, "global_compression_ratio": None}
    if isinstance(cfg, MLXConfig):
        return {"group_size": cfg.group_size, "bits": cfg.bits}
    return None


def _write_safetensors(run: _Run, fmt: WeightFormat, cfg: QuantConfig, assignments: list[Assignment], partial: Path) -> int:
    src = run.src
    keep = _keep_dtype(assignments)
    jobs = [_job(st, a, cfg, _TORCH_DTYPE[keep]) for st, a in zip(src.tensors, assignments)]
    for job, a in zip(jobs, assignments):
        if job.counted_bytes() != a.nbytes:  # the formats table and the writer must agree on every tensor
            raise AssertionError(f"{a.tensor.name}: writer lays out {job.counted_bytes()} bytes, the formats table says {a.nbytes}")
    config = dict(src.hf_config)
    config["torch_dtype"] = _TORCH_DTYPE[cfg.dtype if isinstance(cfg, FloatConfig) else keep]
    in_block, skipped = _block_modules(src, assignments)
    qc = quantization_config(cfg, skipped, in_block)
    if isinstance(cfg, MLXConfig):
        config["quantization"] = qc
        config["quantization_config"] = qc
    elif qc is not None:
        config["quantization_config"] = qc
    files = dict(src.hf_side_files())
    files["config.json"] = json.dumps(config, indent=2).encode()
    if isinstance(cfg, GPTQConfig):
        assert qc is not None
        files["quantize_config.json"] = json.dumps(qc, indent=2).encode()
    partial.mkdir()
    # The marker first, listing every file about to be written: a run killed midway leaves a directory that the
    # next run recognises as its own, and --force later replaces this output only while it holds nothing else.
    write_marker(partial, fmt.id, ["model.safetensors", *files])
    with (partial / "model.safetensors").open("wb+") as fh:
        w = SafetensorsWriter(fh, [s for j in jobs for s in j.specs()], {"format": "pt"})
        for st, a, job in zip(src.tensors, assignments, jobs):
            db = job.run(run, w)
            src.release(st)
            run.results.append(TensorResult(st.hf_name or st.info.name, a.encoding.name, st.info.shape, a.nbytes, db))
        size = w.finish()
    for name, data in files.items():
        (partial / name).write_bytes(data)
    return size + sum(len(d) for d in files.values())


_WRITERS: dict[type, Callable[..., int]] = {
    GGUFConfig: _write_gguf,
    FloatConfig: _write_safetensors,
    GPTQConfig: _write_safetensors,
    AWQConfig: _write_safetensors,
    NF4Config: _write_safetensors,
    FP8Config: _write_safetensors,
    MLXConfig: _write_safetensors,
}
