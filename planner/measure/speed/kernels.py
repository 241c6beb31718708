"""Matmul kernels the bench times, per backend, plus copy bandwidth, last-level cache size and a timer.

Every kernel computes y = x @ W^T for activations x (M, K) and weights W (N out, K in), the nn.Linear layout:
decode is M = batch (GEMV at batch 1), prefill is M = prompt length (GEMM).

- numpy (always available; 'numpy reference kernel', not a runtime's kernel): fp32 through BLAS sgemv/sgemm;
  bf16, int8 and int4 weights dequantized per call in cache-sized row chunks on a thread pool, then BLAS. The
  quantized ones read the quantized bytes from memory once, so their GB/s says what the memory system and a
  plain dequantize-then-multiply loop reach, not what llama.cpp's fused dot products reach.
- torch (when it imports): F.linear in fp32/bf16/fp16 (oneDNN/MKL on CPU, cuBLAS on CUDA), weight-only int8
  (`_weight_int8pack_mm`), int4 group-wise (`_weight_int4pack_mm_for_cpu` on CPU, tinygemm `_weight_int4pack_mm`
  on CUDA/MPS), W8A8 `_int_mm`, and FP8 `_scaled_mm` on CUDA sm89+. Each torch kernel is smoke-tested on a tiny
  shape before use, so a torch build without an op reports the reason instead of failing mid-run.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from planner.measure.speed.quant import (
    F32, dequantize_int4, dequantize_int8, from_bf16_bits, quantize_int4, quantize_int8, to_bf16_bits, unpack_int4,
)

CHUNK_BYTES = 512 * 1024  # fp32 rows dequantized per step: with the input vector this stays in a 1 MiB L2
DEFAULT_LLC_BYTES = 64 * 2**20  # assumed when the cache size cannot be read (larger than most desktop L3s)
APPLE_SLC_BYTES = 96 * 2**20  # assumed: the largest Apple system-level cache (M-series Max/Ultra)


@dataclass(frozen=True)
class KernelInfo:
    """What a kernel is: its id, library, honest label and the cost-model class it stands for."""

    id: str
    backend: str  # library: numpy, torch or llamacpp (whole-model runs, planner.measure.speed.llamacpp)
    label: str
    kernel_class: str  # planner.cost.speed.kernel_class vocabulary: float, q8, group4, fp8
    compute: str  # dtype of the multiply: fp32, fp16, bf16, int8, fp8
    engine: str  # runtime engine it stands for ('transformers' for torch), or 'reference' (numpy)
    group_size: int | None = None


@dataclass(frozen=True)
class Timing:
    """Seconds per call over the timed repetitions."""

    median_s: float
    min_s: float
    max_s: float
    n: int

    @property
    def spread(self) -> float:
        """(max - min) / median: how much the repetitions disagreed."""
        return (self.max_s - self.min_s) / self.median_s if self.median_s > 0 else 0.0

    def scaled(self, factor: float) -> "Timing":
        """The timing times `factor` (a sampled slice of rows extrapolated to the whole matrix)."""
        return Timing(self.median_s * factor, self.min_s * factor, self.max_s * factor, self.n)


# ------------------------------------------------------------------------------------------ numpy kernels


_POOL: ThreadPoolExecutor | None = None


def cpu_threads() -> int:
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=cpu_threads(), thread_name_prefix="planner-bench")
    return _POOL


class _BlasThreads:
    """Set the thread count of the OpenBLAS numpy links (what threadpoolctl does), where it can be found.

    The chunked kernels run their own threads over small GEMVs; OpenBLAS threads inside each call then fight
    them for the cores, and on a busy machine single calls take 10-100x longer. No-op when not found.
    """

    _NAMES = (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
              ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
              ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
              ("openblas_set_num_threads", "openblas_get_num_threads"))

    def __init__(self) -> None:
        self._fns: tuple[Any, Any] | None = None
        self._looked = False

    def _find(self) -> tuple[Any, Any] | None:
        if self._looked:
            return self._fns
        self._looked = True
        import ctypes

        try:
            with open("/proc/self/maps", encoding="utf-8") as fh:  # Linux: the libraries numpy loaded
                paths = sorted({line.split()[-1] for line in fh if "openblas" in line.lower() and ".so" in line})
        except OSError:
            return None
        for path in paths:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for set_name, get_name in self._NAMES:
                if hasattr(lib, set_name) and hasattr(lib, get_name):
                    self._fns = (getattr(lib, set_name), getattr(lib, get_name))
                    return self._fns
        return None

    def get(self) -> int | None:
        """Current OpenBLAS thread count, or None when unknown."""
        fns = self._find()
        return int(fns[1]()) if fns else None

    def set(self, n: int | None) -> None:
        """Set the OpenBLAS thread count (ignored when unknown)."""
        fns = self._find()
        if fns and n:
            fns[0](int(n))


_BLAS = _BlasThreads()


class single_threaded_blas:
    """Context manager: OpenBLAS on one thread while the numpy kernels run their own threads (restored after)."""

    def __enter__(self) -> "single_threaded_blas":
        self.prev = _BLAS.get()
        if self.prev not in (None, 1):
            _BLAS.set(1)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.prev not in (None, 1):
            _BLAS.set(self.prev)


def _row_chunked(n: int, k: int, m: int, rows: Callable[[int, int], np.ndarray], chunk: int | None = None) -> np.ndarray:
    """y (M, N) from `rows(a, b)`, which returns y^T for weight rows [a, b) as (b - a, M) float32.

    Rows are split over one thread per core (numpy releases the GIL inside its loops) and OpenBLAS is held to one
    thread meanwhile: with both pools on the cores, a shared machine stalls single calls by 10-100x. Quantized
    weights are dequantized `chunk` rows at a time (cache-sized by default), so only their quantized bytes stream
    from memory.
    """
    out = np.empty((n, m), dtype=F32)
    threads = cpu_threads()
    if chunk is None:
        chunk = (CHUNK_BYTES if m <= 16 else 16 * CHUNK_BYTES) // (4 * k)
    chunk = max(8, min(n, chunk))

    def work(r0: int, r1: int) -> None:
        for a in range(r0, r1, chunk):
            b = min(a + chunk, r1)
            out[a:b] = rows(a, b)

    with single_threaded_blas():
        if threads == 1 or n <= 8:
            work(0, n)
        else:
            per = max(8, math.ceil(n / threads))
            for f in [_pool().submit(work, s, min(s + per, n)) for s in range(0, n, per)]:
                f.result()
    return out.T


class NumpyKernel:
    """Base of the numpy reference kernels (CPU only)."""

    info: KernelInfo

    def available(self, device: str) -> str | None:
        """None when the kernel runs on `device`, else why not."""
        return None if device == "cpu" else "numpy kernels run on the CPU only"

    def make_input(self, x: np.ndarray, device: str) -> np.ndarray:
        """Activations in the kernel's dtype on the device."""
        return np.ascontiguousarray(x, dtype=F32)

    def to_numpy(self, y: Any) -> np.ndarray:
        """The output as float32 numpy."""
        return np.asarray(y, dtype=F32)

    def sync(self, device: str) -> None:
        """Wait for queued work (nothing to wait for on numpy)."""

    def clone(self, state: Any) -> Any:
        """A copy of prepared weights at new addresses (cache-busting rotation)."""
        return tuple(np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in state)

    def nbytes(self, state: Any) -> int:
        """Bytes of weights (and scales) one call reads."""
        return sum(a.nbytes for a in state if isinstance(a, np.ndarray))


class NumpyFP32(NumpyKernel):
    """fp32 weights through BLAS (sgemv at batch 1, sgemm otherwise)."""

    info = KernelInfo("numpy-fp32", "numpy", "numpy reference kernel: fp32 BLAS sgemv/sgemm", "float", "fp32", "reference")

    def prepare(self, w: np.ndarray, device: str) -> tuple:
        """Weights as stored for this kernel."""
        return (np.ascontiguousarray(w, dtype=F32),)

    def __call__(self, state: tuple, x: np.ndarray) -> np.ndarray:
        (w,) = state
        xt = np.ascontiguousarray(x.T, dtype=F32)
        n = w.shape[0]
        # no dequantization: each thread runs one sgemv/sgemm over its share of the rows
        return _row_chunked(n, w.shape[1], x.shape[0], lambda a, b: w[a:b] @ xt, chunk=math.ceil(n / cpu_threads()))

    def reference_weight(self, w: np.ndarray) -> np.ndarray:
        """The weights this kernel effectively multiplies by (after its quantization)."""
        return np.asarray(w, dtype=F32)


class NumpyBF16(NumpyKernel):
    """bf16 weights widened to fp32 per chunk (a shift; numpy has no 16-bit BLAS and its fp16 cast is slow)."""

    info = KernelInfo("numpy-bf16", "numpy", "numpy reference kernel: bf16 weights widened to fp32 per call",
                      "float", "bf16", "reference")

    def prepare(self, w: np.ndarray, device: str) -> tuple:
        """Weights as stored for this kernel."""
        return (to_bf16_bits(w),)

    def __call__(self, state: tuple, x: np.ndarray) -> np.ndarray:
        (h,) = state
        xt = np.ascontiguousarray(x.T, dtype=F32)

        def rows(a: int, b: int) -> np.ndarray:
            u = h[a:b].astype(np.uint32)
            u <<= 16
            return u.view(F32) @ xt

        return _row_chunked(h.shape[0], h.shape[1], x.shape[0], rows)

    def reference_weight(self, w: np.ndarray) -> np.ndarray:
        """The weights this kernel effectively multiplies by (after its quantization)."""
        return from_bf16_bits(to_bf16_bits(w))


class NumpyInt8(NumpyKernel):
    """int8 weights, one fp32 scale per output row, widened per chunk; the scale is applied to the outputs."""

    info = KernelInfo("numpy-int8", "numpy", "numpy reference kernel: int8 per-channel weights dequantized per call",
                      "q8", "fp32", "reference")

    def prepare(self, w: np.ndarray, device: str) -> tuple:
        """Weights as stored for this kernel."""
        return quantize_int8(w)

    def __call__(self, state: tuple, x: np.ndarray) -> np.ndarray:
        q, s = state
        xt = np.ascontiguousarray(x.T, dtype=F32)

        def rows(a: int, b: int) -> np.ndarray:
            y = q[a:b].astype(F32) @ xt
            y *= s[a:b, None]
            return y

        return _row_chunked(q.shape[0], q.shape[1], x.shape[0], rows)

    def reference_weight(self, w: np.ndarray) -> np.ndarray:
        """The weights this kernel effectively multiplies by (after its quantization)."""
        return dequantize_int8(*quantize_int8(w))


class NumpyInt4(NumpyKernel):
    """4-bit codes with an fp16 scale and min per group, dequantized per chunk.

    The packed bytes of each row are stored group-minor, (g/2 bytes, G groups) instead of (G, g/2): the same
    bytes in another order (runtimes repack too), so scaling a chunk broadcasts over a long contiguous axis
    instead of numpy looping over g/2-element runs. Low and high nibbles are widened as two planes and multiplied
    with the matching columns of x (no interleaving pass); the per-group minimum is folded in as
    min @ (sum of x per group).
    """

    def __init__(self, group_size: int = 32):
        self.group_size = group_size
        self.info = KernelInfo(f"numpy-int4-g{group_size}", "numpy",
                               f"numpy reference kernel: int4 group-{group_size} weights dequantized per call",
                               "group4", "fp32", "reference", group_size)

    def prepare(self, w: np.ndarray, device: str) -> tuple:
        """Weights as stored for this kernel."""
        packed, scale, mn = quantize_int4(w, self.group_size)
        n, half = packed.shape
        groups = half * 2 // self.group_size
        minor = np.ascontiguousarray(packed.reshape(n, groups, self.group_size // 2).transpose(0, 2, 1))
        return minor.reshape(n, half), scale, mn

    def _columns(self, x: np.ndarray, parity: int, groups: int) -> np.ndarray:
        """(K/2, M): the columns of x (even or odd) in the group-minor byte order of the prepared weights."""
        m = x.shape[0]
        cols = x[:, parity::2].reshape(m, groups, self.group_size // 2).transpose(0, 2, 1).reshape(m, -1)
        return np.ascontiguousarray(cols.T, dtype=F32)

    def __call__(self, state: tuple, x: np.ndarray) -> np.ndarray:
        packed, scale, mn = state
        g = self.group_size
        n, half = packed.shape
        k, groups, m = half * 2, half * 2 // g, x.shape[0]
        x = np.asarray(x, dtype=F32)
        xe, xo = self._columns(x, 0, groups), self._columns(x, 1, groups)
        xs = np.ascontiguousarray(x.reshape(m, groups, g).sum(axis=2).T)  # (G, M)

        def rows(a: int, b: int) -> np.ndarray:
            p = packed[a:b]
            r = b - a
            sc = scale[a:b].astype(F32)[:, None, :]  # (r, 1, G)
            lo = (p & 0x0F).astype(F32).reshape(r, g // 2, groups)
            lo *= sc
            hi = (p >> 4).astype(F32).reshape(r, g // 2, groups)
            hi *= sc
            y = lo.reshape(r, half) @ xe
            y += hi.reshape(r, half) @ xo
            y += mn[a:b].astype(F32) @ xs
            return y

        return _row_chunked(n, k, m, rows)

    def reference_weight(self, w: np.ndarray) -> np.ndarray:
        """The weights this kernel effectively multiplies by (after its quantization)."""
        return dequantize_int4(*quantize_int4(w, self.group_size), self.group_size)


def numpy_kernels() -> list[Any]:
    """Every numpy reference kernel."""
    return [NumpyFP32(), NumpyBF16(), NumpyInt8(), NumpyInt4(32), NumpyInt4(128)]


# ------------------------------------------------------------------------------------------ torch kernels


def torch_module() -> Any | None:
    """torch if it imports, else None (torch is optional: its wheels pull gigabytes of CUDA libraries)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_missing_reason() -> str | None:
    """Why torch kernels cannot run here, or None when torch imports."""
    return None if torch_module() is not None else "torch is not installed (optional: pip install torch to time its kernels)"


def _kind(device: str) -> str:
    return device.split(":", 1)[0]


class TorchKernel:
    """Base of the torch kernels: placement, sync, and a smoke test that reports a missing op as a reason."""

    info: KernelInfo
    devices: tuple[str, ...] = ("cpu", "cuda", "mps")
    smoke_shape = (64, 256)

    def available(self, device: str) -> str | None:
        """None when the kernel runs on `device`, else why not (checked by running it on a tiny shape)."""
        torch = torch_module()
        if torch is None:
            return torch_missing_reason()
        if _kind(device) not in self.devices:
            return f"{self.info.id} has no {_kind(device)} kernel"
        why = self.requirement(torch, device)
        if why:
            return why
        try:
            n, k = self.smoke_shape
            w = np.random.default_rng(1).standard_normal((n, k), dtype=F32) * F32(0.02)
            st = self.prepare(w, device)
            self(st, self.make_input(np.ones((1, k), dtype=F32), device))
            self.sync(device)
        except (RuntimeError, TypeError, NotImplementedError, AttributeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return f"{self.info.id} failed on {device} with this torch build: {first[:200]}"
        return None

    def requirement(self, torch: Any, device: str) -> str | None:
        """Device requirements beyond the op existing (compute capability); None when met."""
        return None

    def act_dtype(self, torch: Any) -> Any:
        """dtype of the activations the kernel takes."""
        return torch.bfloat16

    def make_input(self, x: np.ndarray, device: str) -> Any:
        """Activations in the kernel's dtype on the device."""
        torch = torch_module()
        return torch.from_numpy(np.ascontiguousarray(x, dtype=F32)).to(device=device, dtype=self.act_dtype(torch))

    def to_numpy(self, y: Any) -> np.ndarray:
        """The output as float32 numpy."""
        return y.float().cpu().numpy()

    def sync(self, device: str) -> None:
        """Wait for queued device work."""
        torch = torch_module()
        if _kind(device) == "cuda":
            torch.cuda.synchronize(device)
        elif _kind(device) == "mps":
            torch.mps.synchronize()

    def clone(self, state: Any) -> Any:
        """A copy of prepared weights at new addresses (cache-busting rotation)."""
        return tuple(a.clone() if hasattr(a, "clone") else a for a in state)

    def nbytes(self, state: Any) -> int:
        """Bytes of weights (and scales) one call reads."""
        return sum(a.numel() * a.element_size() for a in state if hasattr(a, "element_size"))


class TorchDense(TorchKernel):
    """F.linear with fp32, bf16 or fp16 weights and activations (oneDNN/MKL on CPU, cuBLAS on CUDA)."""

    def __init__(self, dtype: str):
        self.dtype = dtype
        lib = {"fp32": "MKL/oneDNN sgemm on CPU, cuBLAS on GPU", "bf16": "oneDNN on CPU, cuBLAS on GPU",
               "fp16": "cuBLAS on GPU"}[dtype]
        self.info = KernelInfo(f"torch-{dtype}", "torch", f"torch F.linear {dtype} ({lib})", "float", dtype, "transformers")
        if dtype == "fp16":
            self.devices = ("cuda", "mps")  # fp16 GEMM on CPU is an emulated slow path, not what runtimes use

    def _dt(self, torch: Any) -> Any:
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.dtype]

    def act_dtype(self, torch: Any) -> Any:
        """dtype of the activations the kernel takes."""
        return self._dt(torch)

    def prepare(self, w: np.ndarray, device: str) -> tuple:
        """Weights as stored for this kernel."""
        torch = torch_module()
        return (torch.from_numpy(np.ascontiguousarray(w, dtype=F32)).to(device=device, dtype=self._dt(torch)),)

    def __call__(self, state: tuple, x: Any) -> Any:
        torch = torch_module()
        return torch.nn.functional.linear(x, state[0])

    def reference_weight(self, w: np.ndarray) -> np.ndarray:
        """The weights this kernel effectively multiplies by (after its quantization)."""
        torch = torch_module()
        return torch.from_numpy(np.ascontiguousarray(w, dtype=F32)).to(self._dt(torch)).float().numpy()


class TorchInt8WeightOnly(TorchKernel):
    """torch._weight_int8pack_mm: int8 per-channel weights, bf16 activations and scales (W8A16)."""

    info = KernelInfo("torch-int8-weight-only", "torch", "torch._weight_int8pack_mm (int8 weights, bf16 activations)",
                      "q8", "bf16", "transformers")

    def prepare(self, w: np.ndarray, device: str) -> tuple:
        """Weights as stored for this kernel."""
        torch = torch_module()
        q, s = quantize_int8(w)
        return (torch.from_numpy(q).to(device), torch.from_numpy(s).to(device=device, dtype=torch.bfloat16))

    def __call__(self, state: tuple, x: Any) -> Any:
        torch = torch_module()
        return torch._weight_int8pack_mm(x, state[0], state[1])

    def reference_weight(self, w: np.ndarray) -> np.ndarray:
        """The weights this kernel effectively multiplies by (after its quantization)."""
        torch = torch_module()
        q, s = quantize_int8(w)
        return q.astype(F32) * torch.from_numpy(s).to(torch.bfloat16).float().numpy()[:, None]


def _scales_and_zeros(torch: Any, scale: np.ndarray, mn: np.ndarray) -> Any:
    """tinygemm's (K/g, N, 2) bf16 table: w = (q - 8) * scale + zero, so zero = min + 8 * scale."""
    s = scale.astype(F32)
    z = mn.astype(F32) + 8.0 * s
    return torch.from_numpy(np.ascontiguousarray(np.stack([s.T, z.T], axis=2))).to(torch.bfloat16)


class TorchInt4(TorchKernel):
    """4-bit group-wise weights, bf16 activations: `_weight_int4pack_mm_for_cpu` on CPU, tinygemm on CUDA/MPS."""

    smoke_shape = (64, 256)

    def __init__(self, group_size: int = 128):
        self.group_size = group_size
        self.info = KernelInfo(f"torch-int4-g{group_size}", "torch",
                               f"torch int4 group-{group_size} (_weight_int4pack_mm[_for_cpu], bf16 activations)",
                               "group4", "bf16", "transformers", group_size)

    def prepare(self, w: np.ndarray, device: str) -> tuple:
        """Weights as stored for this kernel."""
        torch = torch_module()
        packed, scale, mn = quantize_int4(w, self.group_size)
        q = unpack_int4(packed)
        sz = _scales_and_zeros(torch, scale, mn).to(device)
        if _kind(device) == "cpu":
            # The CPU op packs element-wise int32 codes (N, K) itself.
            wp = torch.ops.aten._convert_weight_to_int4pack_for_cpu(torch.from_numpy(q.astype(np.int32)), 1)
        else:
            # CUDA/MPS tinygemm (torch >= 2.5) take uint8 (N, K/2) with the even column in the high nibble.
            u8 = ((q[:, 0::2] << 4) | q[:, 1::2]).astype(np.uint8)
            wp = torch.ops.aten._convert_weight_to_int4pack(torch.from_numpy(u8).to(device), 8)
        return (wp, sz)

    def __call__(self, state: tuple, x: Any) -> Any:
        torch = torch_module()
        if x.device.type == "cpu":
            return torch.ops.aten._weight_int4pack_mm_for_cpu(x, state[0], self.group_size, state[1])
        return torch.ops.aten._weight_int4pack_mm(x, state[0], self.group_size, state[1])

    def reference_weight(self, w: np.ndarray) -> np.ndarray:
        """The weights this kernel effectively multiplies by (after its quantization)."""
        torch = torch_module()
        packed, scale, mn = quantize_int4(w, self.group_size)
        sz = _scales_and_zeros(torch, scale, mn).float().numpy()  # (G, N, 2) after bf16 rounding
        q = unpack_int4(packed).astype(F32)
        n, k = q.shape
        g = self.group_size
        s, z = sz[..., 0].T[:, :, None], sz[..., 1].T[:, :, None]
        return ((q.reshape(n, k // g, g) - 8.0) * s + z).reshape(n, k)


class TorchIntMM(TorchKernel):
    """W8A8: activations quantized per row at run time (counted in the time), torch._int_mm, rescale to bf16."""

    info = KernelInfo("torch-w8a8-int-mm", "torch", "torch._int_mm (int8 weights and dynamically quantized activations)",
                      "q8", "int8", "transformers")
    devices = ("cpu", "cuda")

    def prepare(self, w: np.ndarray, device: str) -> tuple:
        """Weights as stored for this kernel."""
        torch = torch_module()
        q, s = quantize_int8(w)
        return (torch.from_numpy(q).to(device), torch.from_numpy(s).to(device))

    def __call__(self, state: tuple, x: Any) -> Any:
        torch = torch_module()
        wq, ws = state
        m = x.shape[0]
        xf = x.float()
        sx = xf.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        xq = torch.clamp(torch.round(xf / sx[:, None]), -127, 127).to(torch.int8)
        if x.device.type == "cuda" and m <= 16:
            # cuBLASLt int8 GEMM needs more than 16 rows: pad (a runtime pads the same way).
            xq = torch.nn.functional.pad(xq, (0, 0, 0, 32 - m))
        y = torch._int_mm(xq, wq.t())[:m]
        return (y.float() * sx[:, None] * ws[None, :]).to(torch.bfloat16)

    def reference_weight(self, w: np.ndarray) -> np.ndarray:
        """The weights this kernel effectively multiplies by (after its quantization)."""
        return dequantize_int8(*quantize_int8(w))


class TorchFP8(TorchKernel):
    """FP8 E4M3 weights and activations with per-tensor scales through torch._scaled_mm (CUDA sm89+)."""

    info = KernelInfo("torch-fp8-scaled-mm", "torch", "torch._scaled_mm FP8 E4M3 (per-tensor scales)", "fp8", "fp8",
                      "transformers")
    devices = ("cuda",)

    def requirement(self, torch: Any, device: str) -> str | None:
        """FP8 tensor cores need compute capability 8.9 (Ada) or newer."""
        major, minor = torch.cuda.get_device_capability(device)
        return None if (major, minor) >= (8, 9) else f"FP8 needs compute capability 8.9+, this GPU is {major}.{minor}"

    def prepare(self, w: np.ndarray, device: str) -> tuple:
        """Weights as stored for this kernel."""
        torch = torch_module()
        wt = torch.from_numpy(np.ascontiguousarray(w, dtype=F32)).to(device)
        sw = (wt.abs().max() / 448.0).clamp(min=1e-12).reshape(())
        return ((wt / sw).to(torch.float8_e4m3fn), sw.float())

    def __call__(self, state: tuple, x: Any) -> Any:
        torch = torch_module()
        w8, sw = state
        m = x.shape[0]
        sx = (x.abs().max().float() / 448.0).clamp(min=1e-12).reshape(())
        x8 = (x.float() / sx).to(torch.float8_e4m3fn)
        pad = (-m) % 16  # _scaled_mm needs dimensions divisible by 16
        if pad:
            x8 = torch.nn.functional.pad(x8.view(torch.uint8), (0, 0, 0, pad)).view(torch.float8_e4m3fn)
        y = torch._scaled_mm(x8, w8.t(), scale_a=sx, scale_b=sw, out_dtype=torch.bfloat16)
        y = y[0] if isinstance(y, tuple) else y  # torch < 2.4 returned (out, amax)
        return y[:m]

    def reference_weight(self, w: np.ndarray) -> np.ndarray:
        """The weights this kernel effectively multiplies by (after its quantization)."""
        torch = torch_module()
        wt = torch.from_numpy(np.ascontiguousarray(w, dtype=F32))
        sw = (wt.abs().max() / 448.0).clamp(min=1e-12)
        return ((wt / sw).to(torch.float8_e4m3fn).float() * sw).numpy()


def torch_kernels() -> list[Any]:
    """Every torch kernel (whether each runs is decided per device by `available`)."""
    return [TorchDense("fp32"), TorchDense("bf16"), TorchDense("fp16"), TorchInt8WeightOnly(), TorchInt4(32),
            TorchInt4(128), TorchIntMM(), TorchFP8()]


def all_kernels() -> list[Any]:
    """numpy reference kernels, then torch kernels."""
    return numpy_kernels() + torch_kernels()


def kernel_by_id(kernel_id: str) -> Any:
    """Look a kernel up by id."""
    for k in all_kernels():
        if k.info.id == kernel_id:
            return k
    from planner.errors import NotFoundError

    raise NotFoundError("kernel", kernel_id, [k.info.id for k in all_kernels()])


# ------------------------------------------------------------------------------------------ the device


def device_kind(device: str) -> str:
    """'cpu', 'cuda' or 'mps' from a torch-style device string; refuses anything else."""
    kind = _kind(device)
    if kind not in ("cpu", "cuda", "mps") or (kind != "cuda" and device != kind):
        from planner.errors import PlannerError

        raise PlannerError(f"--device must be cpu, cuda, cuda:N or mps, got '{device}'")
    return kind


def last_level_cache_bytes(device: str = "cpu") -> int:
    """Size of the device's last-level cache (CPU L3 from sysfs/sysconf, GPU L2 from torch); assumed if unknown."""
    kind = _kind(device)
    if kind == "cuda":
        torch = torch_module()
        if torch is not None:
            size = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0)
            if size:
                return int(size)
        return 50 * 2**20  # assumed: H100's L2
    if kind == "mps":
        return APPLE_SLC_BYTES
    best_level, best = -1, 0
    for idx in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = int((idx / "level").read_text().strip())
            text = (idx / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        try:
            size = int(text.rstrip("KMG")) * mult
        except ValueError:
            continue
        if level > best_level or (level == best_level and size > best):
            best_level, best = level, size
    if best:
        return best
    for name in ("SC_LEVEL3_CACHE_SIZE", "SC_LEVEL2_CACHE_SIZE"):
        try:
            v = os.sysconf(name)
        except (ValueError, OSError, AttributeError):
            continue
        if v and v > 0:
            return int(v)
    return DEFAULT_LLC_BYTES


def available_memory_bytes(device: str = "cpu") -> int:
    """Memory free for the bench on the device now (RAM for CPU and MPS, free VRAM for CUDA)."""
    if _kind(device) == "cuda":
        torch = torch_module()
        if torch is not None:
            return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)


def copy_bandwidth_gb_s(device: str = "cpu", nbytes: int = 2**30, repeat: int = 5) -> float:
    """Measured copy bandwidth, decimal GB/s counting bytes read plus bytes written (STREAM's convention).

    Copies into a preallocated buffer (allocating per copy pays page faults and reads several times low); the
    first copy is a warm-up; the median of `repeat` copies is reported. Never uses more than a quarter of free memory.
    """
    nbytes = int(min(nbytes, available_memory_bytes(device) // 4))
    nbytes -= nbytes % 4096
    if nbytes < 2**20:
        from planner.errors import PlannerError

        raise PlannerError(f"not enough free memory on {device} to measure its bandwidth")
    times = []
    if _kind(device) == "cpu" and torch_module() is None:
        src = np.ones(nbytes, dtype=np.uint8)
        dst = np.empty_like(src)
        for i in range(repeat + 1):
            t = time.perf_counter()
            np.copyto(dst, src)
            if i:
                times.append(time.perf_counter() - t)
        del src, dst
    else:
        torch = torch_module()
        src = torch.ones(nbytes, dtype=torch.uint8, device=device)
        dst = torch.empty_like(src)
        sync = TorchKernel().sync
        for i in range(repeat + 1):
            sync(device)
            t = time.perf_counter()
            dst.copy_(src)
            sync(device)
            if i:
                times.append(time.perf_counter() - t)
        del src, dst
    return 2 * nbytes / statistics.median(times) / 1e9


def time_calls(call: Callable[[int], Any], sync: Callable[[], None], *, warmup: int = 2, repeat: int = 25,
               budget_s: float = 0.5) -> Timing:
    """Time `call(i)` (i counts up, for rotating through weight copies): warm-up, then as many timed calls as fit
    in about `budget_s` (at least 3, at most `repeat`), each bracketed by `sync`; median and range.

    Many short samples rather than a few long ones: on a shared machine single calls stall now and then (another
    process, BLAS threads yielding), and the median of many ignores the stalls.
    """
    i = 0
    first = float("inf")
    for _ in range(max(warmup, 1)):
        sync()
        t = time.perf_counter()
        call(i)
        sync()
        first = min(first, time.perf_counter() - t)
        i += 1
    n = max(3, min(repeat, int(budget_s / max(first, 1e-9))))
    times = []
    for _ in range(n):
        sync()
        t = time.perf_counter()
        call(i)
        sync()
        times.append(time.perf_counter() - t)
        i += 1
    return Timing(statistics.median(times), min(times), max(times), n)


def time_calls_cuda(call: Callable[[int], Any], device: str, *, warmup: int = 2, repeat: int = 25,
                    budget_s: float = 0.5) -> Timing:
    """time_calls with CUDA events around each call (host timers would add launch and sync latency)."""
    torch = torch_module()
    for i in range(max(warmup, 1)):
        call(i)
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    call(warmup)
    end.record()
    end.synchronize()
    first = start.elapsed_time(end) / 1e3
    n = max(3, min(repeat, int(budget_s / max(first, 1e-9))))
    pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
    for j, (a, b) in enumerate(pairs):
        a.record()
        call(warmup + 1 + j)
        b.record()
    torch.cuda.synchronize(device)
    times = [a.elapsed_time(b) / 1e3 for a, b in pairs]
    return Timing(statistics.median(times), min(times), max(times), n)

