"""Vectorised numpy encoders for ggml tensor types, each writing ggml's exact block layout.

Every encoder takes float32 rows, shape (n_rows, row_length), and returns uint8 of shape
(n_rows, row_length // block_weights * bytes_per_block): the bytes a GGUF file stores, which
`gguf.quants.dequantize` reads back. Block layouts are the ones `planner.formats.GGML_TYPES` describes
(ggml-common.h); the byte counts are checked against `GGMLType.nbytes`, the one function that sizes a tensor.

Inputs must be finite (the pipeline checks every chunk it reads). Numpy is slow at reducing along a short
last axis, so the 32-blocks find extremes with one integer `reduceat` on the float bits (or a transposed
copy), and the k-quant searches work on the transposed (values, sub-blocks) matrix where per-block sums are
reductions over axis 0. Work is cut into cache-sized pieces written straight into the output, and `encode`
runs pieces on threads (numpy releases the GIL inside its loops).

The k-quant scale search follows the idea of llama.cpp's make_qkx2_quants / make_qx_quants: try a few
candidate scales per sub-block, refit scale (and min) by weighted least squares for each, keep the best.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from planner.formats import QK_K, ggml_type
from planner.quantize.block_helpers import _F16_MAX, F32, _f16, _f16_bytes, _importance, _inv, _nibbles32, _rowdot
from planner.quantize.fp4 import mxfp4_blocks
from planner.quantize.iq4 import iq4_nl_blocks, iq4_xs_blocks

_PIECE = 1 << 17  # values per piece: the working set of a k-quant search stays in L2 cache
_LEGACY_PIECE = 1 << 18  # the 32-blocks do few passes per piece: fewer, larger pieces cost less overhead

Encoder = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------------------------- helpers


def _check_rows(x: np.ndarray, block: int) -> np.ndarray:
    """Precondition shared by all encoders: 2-D float32 rows whose length is a multiple of the block."""
    if x.ndim != 2:
        raise ValueError(f"expected 2-D rows (n_rows, row_length), got shape {x.shape}")
    if x.shape[1] % block:
        raise ValueError(f"row length {x.shape[1]} is not a multiple of the block of {block} weights")
    return np.ascontiguousarray(x, dtype=F32)


def _seg_max(b: np.ndarray) -> np.ndarray:
    """Max of each row of a contiguous (n, k) array: reduceat is ~3x faster than max(axis=1) for small k."""
    n, k = b.shape
    return np.maximum.reduceat(b.reshape(-1), np.arange(0, n * k, k))


def _seg_min(b: np.ndarray) -> np.ndarray:
    """Min of each row of a contiguous (n, k) array."""
    n, k = b.shape
    return np.minimum.reduceat(b.reshape(-1), np.arange(0, n * k, k))


def _signed_absmax(b: np.ndarray) -> np.ndarray:
    """Per row, the value of largest magnitude with its sign: (n, k) -> (n,)."""
    hi, lo = _seg_max(b), _seg_min(b)
    return np.where(hi >= -lo, hi, lo)


def _pack_nibbles(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Two arrays of 4-bit codes -> one byte each: low nibble from `lo`, high nibble from `hi`."""
    return (lo & np.uint8(0x0F)) | (hi << np.uint8(4))


def _bits8_to_bytes(bits: np.ndarray) -> np.ndarray:
    """0/1 bytes, 8 consecutive per output byte (..., 8k) -> (..., k) with element i in bit i.

    Viewed as little-endian uint64 words, one multiply gathers the eight low bits into the top byte
    (np.packbits is ~30x slower on this machine).
    """
    w = np.ascontiguousarray(bits).view("<u8")
    return ((w * np.uint64(0x0102040810204080)) >> np.uint64(56)).astype(np.uint8)


def _bit_planes(bits: np.ndarray) -> np.ndarray:
    """0/1 values (n, 8, k) -> (n, k) bytes whose bit j is plane j (Q5_K's qh, Q3_K's hmask)."""
    out = bits[:, 0].copy()
    for j in range(1, 8):
        out |= bits[:, j] << np.uint8(j)
    return out


def _codes(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Round to nearest and clamp to [lo, hi], in place; returns v."""
    np.rint(v, out=v)
    np.clip(v, lo, hi, out=v)
    return v


def _pieces(x: np.ndarray, piece: int) -> list[tuple[int, int]]:
    """Row ranges of about `piece` values each (at least one row)."""
    rows = max(1, piece // max(1, x.shape[1]))
    return [(r, min(r + rows, x.shape[0])) for r in range(0, x.shape[0], rows)]


def _by_pieces(fn: Callable[..., np.ndarray], block: int, block_bytes: int, piece: int = _PIECE) -> Encoder:
    """Wrap a block encoder fn(blocks (nb, block), out (nb, block_bytes), qw, row) into a row encoder run by pieces.

    `qw` is the importance of each value, (nb, block) like the blocks, or None: an importance matrix gives one
    weight per input column (row_length,) or per row and column (n_rows, row_length), broadcast here per piece.
    `row` is the row length (the legacy types' importance uses the whole row's RMS).
    """

    def encode_rows(x: np.ndarray, pool: ThreadPoolExecutor | None = None, qw: np.ndarray | None = None) -> np.ndarray:
        x = _check_rows(x, block)
        n, row = x.shape
        out = np.empty((n, row // block * block_bytes), dtype=np.uint8)
        w = None if qw is None else _check_weights(qw, x.shape)

        def one(span: tuple[int, int]) -> None:
            a, b = span
            wp = None
            if w is not None:  # a fresh (rows, row_length) copy: the encoders reshape it into blocks
                wp = np.ascontiguousarray(np.broadcast_to(w if w.ndim == 1 else w[a:b], (b - a, row))).reshape(-1, block)
            fn(x[a:b].reshape(-1, block), out[a:b].reshape(-1, block_bytes), wp, row)  # writes into its rows of `out`

        spans = _pieces(x, piece)
        if pool is None or len(spans) < 2:
            for span in spans:
                one(span)
        else:
            for _ in pool.map(one, spans):  # pieces write disjoint rows of `out`
                pass
        return out

    encode_rows.__doc__ = fn.__doc__
    encode_rows.__name__ = fn.__name__.lstrip("_")
    encode_rows.blocked = True  # type: ignore[attr-defined]
    return encode_rows


def _check_weights(qw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Importance weights for rows of `shape`: (row_length,) or (n_rows, row_length), finite and >= 0."""
    w = np.ascontiguousarray(qw, dtype=F32)
    if w.shape not in ((shape[1],), shape):
        raise ValueError(f"importance weights of shape {w.shape} do not fit rows of shape {shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("importance weights must be finite and non-negative")
    return w


# ---------------------------------------------------------------------------------------------- floats


def quantize_f32(x: np.ndarray) -> np.ndarray:
    """F32 rows -> bytes (a copy in little-endian order)."""
    x = _check_rows(x, 1)
    return x.astype("<f4", copy=True).view(np.uint8).reshape(x.shape[0], -1)


def quantize_f16(x: np.ndarray) -> np.ndarray:
    """F32 rows -> IEEE half bytes; values beyond fp16 range saturate at +-65504 instead of becoming inf."""
    x = _check_rows(x, 1)
    if x.size and (x.max() > _F16_MAX or x.min() < -_F16_MAX):  # rare: only then pay for the saturating copy
        x = np.clip(x, -_F16_MAX, _F16_MAX)
    return x.astype("<f2").view(np.uint8).reshape(x.shape[0], -1)


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """F32 -> bfloat16 bit patterns (uint16), round to nearest even; NaN stays a quiet NaN."""
    x = np.ascontiguousarray(x, dtype=F32)
    u = x.reshape(-1).view(np.uint32)
    out = np.empty(u.shape, dtype=np.uint16)
    t = np.empty(min(u.size, _PIECE), dtype=np.uint32)
    for a in range(0, u.size, _PIECE):  # cache-sized pieces, in place: this is a memory-bound loop
        src = u[a:a + _PIECE]
        tp = t[: src.size]
        np.right_shift(src, np.uint32(16), out=tp)
        tp &= np.uint32(1)
        tp += np.uint32(0x7FFF)
        tp += src  # no overflow below NaN's bit patterns: 0x7F7FFFFF + 0x8000 < 2**32
        tp >>= np.uint32(16)
        out[a:a + src.size] = tp
    nan = np.isnan(x.reshape(-1))
    if nan.any():
        out[nan] = ((u[nan] >> np.uint32(16)) | np.uint32(0x40)).astype(np.uint16)
    return out.reshape(x.shape)


def from_bf16_bits(h: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32 (exact)."""
    return (np.asarray(h, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(F32)


def quantize_bf16(x: np.ndarray) -> np.ndarray:
    """F32 rows -> bfloat16 bytes (round to nearest even)."""
    x = _check_rows(x, 1)
    return to_bf16_bits(x).astype("<u2", copy=False).view(np.uint8).reshape(x.shape[0], -1)


# ---------------------------------------------------------------------------------------------- legacy 32-blocks
# Same results as ggml's reference quantizers (byte for byte, but for exact .5 ties); each encoder writes its
# blocks into `out` (nb, block bytes), a view of the caller's output rows.


def _extremes(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-block (max, min) of (nb, 32) blocks, through a transposed copy (reducing a short last axis is slow)."""
    bt = np.ascontiguousarray(b.T)
    return bt.max(axis=0), bt.min(axis=0)


def _signed_absmax_32(b: np.ndarray) -> np.ndarray:
    """Per block of (nb, k) float32, the value of largest magnitude with its sign, in one integer segment max.

    The float bits rotated left by one put the magnitude in the high 31 bits and the sign in bit 0, so the
    largest key is the largest magnitude (a tie between +a and -a picks -a).
    """
    u = b.view(np.uint32)
    key = u << np.uint32(1)
    key |= u >> np.uint32(31)
    top = _seg_max(key)
    return ((top >> np.uint32(1)) | (top << np.uint32(31))).view(F32)


_JUST_BELOW_HALF = np.nextafter(F32(0.5), F32(0))  # 0.49999997


def _q8_0(b: np.ndarray, out: np.ndarray, qw: np.ndarray | None = None, row: int = 32) -> np.ndarray:
    """Q8_0 blocks: (nb, 32) -> (nb, 34) = fp16 d | 32 x int8, x = d * q."""
    # |x| as integers (float order = integer order for non-negative floats): one integer segment max per block
    mag = b.view(np.uint32) & np.uint32(0x7FFFFFFF)
    d = _seg_max(mag).view(F32) / F32(127)
    q = b * _inv(d)[:, None]  # |q| <= 127 by construction (the unrounded d is used, as ggml does)
    # ggml's roundf: halves away from zero (rint would take them to even; ties are common when the input holds 16-bit
    # values). For |q| <= 127, adding the largest float32 below 0.5 with q's sign and truncating is exactly roundf: it
    # carries a .5 over the integer and nothing below it (the sum's rounding cannot reach the next integer)
    q += np.copysign(_JUST_BELOW_HALF, q)
    np.trunc(q, out=q)
    out[:, :2] = _f16_bytes(_f16(d))
    np.copyto(out[:, 2:].view(np.int8), q, casting="unsafe")  # exact: q holds integers
    return out


def _q4_0(b: np.ndarray, out: np.ndarray, qw: np.ndarray | None = None, row: int = 32) -> np.ndarray:
    """Q4_0 blocks: (nb, 32) -> (nb, 18) = fp16 d | 16 bytes of nibbles, x = d * (q - 8).

    The value of largest magnitude maps to code 0 (-8 * d), so the asymmetric range -8..7 loses nothing on it.
    With importance weights the scale is searched instead (weighted error, as llama.cpp's quantize_row_q4_0_impl).
    """
    if qw is not None:
        return _weighted_symmetric_32(b, out, qw, row, 8)
    d = _signed_absmax_32(b) / F32(-8)
    q = b * _inv(d)[:, None]
    q += F32(8.5)
    np.clip(q, 0, 15.99, out=q)  # truncation below is rounding (q + 8.5 >= 0)
    out[:, :2] = _f16_bytes(_f16(d))
    out[:, 2:] = _nibbles32(q.astype(np.uint8))
    return out


def _q4_1(b: np.ndarray, out: np.ndarray, qw: np.ndarray | None = None, row: int = 32) -> np.ndarray:
    """Q4_1 blocks: (nb, 32) -> (nb, 20) = fp16 d | fp16 m | nibbles, x = d * q + m."""
    if qw is not None:
        return _weighted_affine_32(b, out, qw, row, 15)
    hi, lo = _extremes(b)
    d = (hi - lo) / F32(15)
    q = (b - lo[:, None]) * _inv(d)[:, None]
    out[:, :2] = _f16_bytes(_f16(d))
    out[:, 2:4] = _f16_bytes(_f16(lo))
    out[:, 4:] = _nibbles32(_codes(q, 0, 15).astype(np.uint8))
    return out


def _q5_0(b: np.ndarray, out: np.ndarray, qw: np.ndarray | None = None, row: int = 32) -> np.ndarray:
    """Q5_0 blocks: (nb, 32) -> (nb, 22) = fp16 d | 32 high bits | nibbles, x = d * (q - 16)."""
    if qw is not None:
        return _weighted_symmetric_32(b, out, qw, row, 16)
    d = _signed_absmax_32(b) / F32(-16)
    q = b * _inv(d)[:, None]
    q += F32(16.5)
    np.clip(q, 0, 31.99, out=q)
    qi = q.astype(np.uint8)
    out[:, :2] = _f16_bytes(_f16(d))
    out[:, 2:6] = _bits8_to_bytes(qi >> 4)  # bit i of the 32-bit field: value i's fifth bit
    out[:, 6:] = _nibbles32(qi & np.uint8(0x0F))
    return out


def _q5_1(b: np.ndarray, out: np.ndarray, qw: np.ndarray | None = None, row: int = 32) -> np.ndarray:
    """Q5_1 blocks: (nb, 32) -> (nb, 24) = fp16 d | fp16 m | 32 high bits | nibbles, x = d * q + m."""
    if qw is not None:
        return _weighted_affine_32(b, out, qw, row, 31)
    hi, lo = _extremes(b)
    d = (hi - lo) / F32(31)
    q = (b - lo[:, None]) * _inv(d)[:, None]
    qi = _codes(q, 0, 31).astype(np.uint8)
    out[:, :2] = _f16_bytes(_f16(d))
    out[:, 2:4] = _f16_bytes(_f16(lo))
    out[:, 4:8] = _bits8_to_bytes(qi >> 4)
    out[:, 8:] = _nibbles32(qi & np.uint8(0x0F))
    return out


def _row_sigma2(b: np.ndarray, row: int) -> np.ndarray:
    """Per block of (nb, 32), the mean square of the row it belongs to (llama.cpp's legacy imatrix weighting)."""
    per_row = row // b.shape[1]
    sq = _rowdot(b, b).reshape(-1, per_row).sum(axis=1) / F32(row)
    return np.repeat(sq.astype(F32), per_row)


def _weighted_symmetric_32(b: np.ndarray, out: np.ndarray, qw: np.ndarray, row: int, nmax: int) -> np.ndarray:
    """Q4_0 (nmax 8) / Q5_0 (nmax 16) blocks with the scale chosen by importance-weighted error."""
    d = _f16(fit_symmetric(b, _importance(b, qw, _row_sigma2(b, row)), nmax, *_SEARCH["legacy"]))
    qi = _symmetric_codes(b, d.astype(F32), nmax)  # 0..2*nmax-1
    out[:, :2] = _f16_bytes(d)
    if nmax == 8:
        out[:, 2:] = _nibbles32(qi)
    else:
        out[:, 2:6] = _bits8_to_bytes(qi >> 4)
        out[:, 6:] = _nibbles32(qi & np.uint8(0x0F))
    return out


def _weighted_affine_32(b: np.ndarray, out: np.ndarray, qw: np.ndarray, row: int, nmax: int) -> np.ndarray:
    """Q4_1 (nmax 15) / Q5_1 (nmax 31) blocks with scale and min chosen by importance-weighted error."""
    d, m = fit_affine(b, _importance(b, qw, _row_sigma2(b, row)), nmax, *_SEARCH["Q4_K"])
    d16, m16 = _f16(d), _f16(m)
    qi = _affine_codes(b, d16.astype(F32), m16.astype(F32), nmax)
    out[:, :2] = _f16_bytes(d16)
    out[:, 2:4] = _f16_bytes(_f16(-m16.astype(F32)))  # stored as x = d * q + min
    if nmax == 15:
        out[:, 4:] = _nibbles32(qi)
    else:
        out[:, 4:8] = _bits8_to_bytes(qi >> 4)
        out[:, 8:] = _nibbles32(qi & np.uint8(0x0F))
    return out


# ---------------------------------------------------------------------------------------------- k-quant searches


def fit_affine(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of x (n, k): scale d >= 0 and min m >= 0 so that x ~ d * q - m with q in 0..nmax.

    Tries iscale = (nmax + rmin + rdelta * i) / (max - min) for i in 0..nstep, refits (d, m) by least squares
    weighted by w for each candidate's codes, and keeps the lowest weighted squared error. Returns (d, m), (n,).
    """
    # Work transposed, (k, n): reductions over axis 0 and per-row scalings then run along contiguous memory.
    xt, wt = np.ascontiguousarray(x.T), np.ascontiguousarray(w.T)
    lo = np.minimum(xt.min(axis=0), F32(0))  # the min is stored as a non-negative offset, so it is at most 0
    hi = xt.max(axis=0)
    inv_span = _inv(hi - lo)
    t = xt - lo  # >= 0
    wx = wt * xt
    sw, swx, swxx = wt.sum(axis=0), wx.sum(axis=0), (wx * xt).sum(axis=0)
    q = np.empty_like(xt)
    wq = np.empty_like(xt)
    tmp = np.empty_like(xt)
    best_d = best_c = best_err = None
    with np.errstate(divide="ignore", invalid="ignore"):
        # Candidate -1 is the plain min/max fit (d = span / nmax, c = lo), the fallback when nothing beats it.
        for i in range(-1, nstep + 1):
            factor = nmax if i < 0 else nmax + rmin + rdelta * i
            np.multiply(t, F32(factor) * inv_span, out=q)
            np.rint(q, out=q)
            np.clip(q, 0, nmax, out=q)
            np.multiply(wt, q, out=wq)
            sq = wq.sum(axis=0)
            sqq = np.multiply(wq, q, out=tmp).sum(axis=0)
            sqx = np.multiply(wq, xt, out=tmp).sum(axis=0)
            if i < 0:
                d, c = (hi - lo) / F32(nmax), lo
                ok = np.ones(d.shape, dtype=bool)
            else:
                det = sw * sqq - sq * sq
                d = (sw * sqx - sq * swx) / det
                c = (sqq * swx - sq * sqx) / det
                clamp = c > 0  # a positive offset cannot be stored: refit the scale alone
                d = np.where(clamp, sqx / sqq, d)
                c = np.where(clamp, F32(0), c)
                ok = (det > 0) & (d > 0)
            err = swxx - 2 * d * sqx - 2 * c * swx + d * d * sqq + 2 * d * c * sq + c * c * sw
            if best_err is None:
                best_d, best_c, best_err = d, c, err
                continue
            better = ok & (err < best_err)
            best_d = np.where(better, d, best_d)
            best_c = np.where(better, c, best_c)
            best_err = np.where(better, err, best_err)
    return best_d.astype(F32), (-best_c).astype(F32)


def fit_symmetric(x: np.ndarray, w: np.ndarray, nmax: int, nstep: int, delta: float) -> np.ndarray:
    """Per row of x (n, k): scale d so that x ~ d * q with q in -nmax..nmax-1. Returns d, shape (n,).

    The value of largest magnitude maps to -nmax (the side with one more level); candidates stretch that by
    delta * i for i in -nstep..nstep; each is refit by weighted least squares, the best one kept.
    """
    xt, wt = np.ascontiguousarray(x.T), np.ascontiguousarray(w.T)  # (k, n), see fit_affine
    hi, lo = xt.max(axis=0), xt.min(axis=0)
    inv_v = _inv(np.where(hi >= -lo, hi, lo))
    wx = wt * xt
    best_d = np.zeros(xt.shape[1], dtype=F32)
    best_score = np.full(xt.shape[1], -1.0, dtype=F32)
    q = np.empty_like(xt)
    wq = np.empty_like(xt)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(-nstep, nstep + 1):
            np.multiply(xt, F32(-(nmax + delta * i)) * inv_v, out=q)
            np.rint(q, out=q)
            np.clip(q, -nmax, nmax - 1, out=q)
            sqx = np.multiply(wx, q, out=wq).sum(axis=0)
            np.multiply(q, q, out=q)
            sqq = np.multiply(wt, q, out=wq).sum(axis=0)
            d = sqx / sqq
            score = d * sqx  # the error reduction sqx^2 / sqq: maximise it
            better = (score > best_score) & (sqq > 0)
            best_d = np.where(better, d, best_d)
            best_score = np.where(better, score, best_score)
    return best_d.astype(F32)


def quantize_scales(v: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative sub-block scales (n, k) -> (super scale D as fp16 (n,), codes 0..levels (n, k) uint8)."""
    dd = _f16(_seg_max(v) / F32(levels))
    codes = v * _inv(dd.astype(F32))[:, None]
    return dd, _codes(codes, 0, levels).astype(np.uint8)


def quantize_scales_weighted(v: np.ndarray, levels: int, sw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Like quantize_scales, but D minimises the error weighted by `sw` (n, k), the importance of each sub-block.

    The idea of llama.cpp's make_qp_quants: try D = max / (levels + 0.1 i) for i in -4..4, keep the one with the
    lowest weighted squared error, then refit D by weighted least squares for its codes.
    """
    vmax = _seg_max(v)
    inv_max = _inv(vmax)
    best_is = F32(levels) * inv_max
    best_err = None
    for i in range(-4, 5):
        iscale = F32(levels + 0.1 * i) * inv_max
        q = np.minimum(np.rint(v * iscale[:, None]), F32(levels))
        err = v - q * _inv(iscale)[:, None]
        err = (sw * err * err).sum(axis=1)
        if best_err is None:
            best_is, best_err = iscale, err
        else:
            better = err < best_err
            best_is = np.where(better, iscale, best_is)
            best_err = np.where(better, err, best_err)
    q = np.minimum(np.rint(v * best_is[:, None]), F32(levels))
    sqx, sqq = (sw * q * v).sum(axis=1), (sw * q * q).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(sqq > 0, sqx / sqq, _inv(best_is)).astype(F32)
    dd = _f16(d)
    codes = v * _inv(dd.astype(F32))[:, None]
    return dd, _codes(codes, 0, levels).astype(np.uint8)


def quantize_signed_scales(v: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Signed sub-block scales (n, k) -> (fp16 D (n,), codes -levels..levels-1 (n, k) int8); D * code ~ v."""
    dd = _f16(_signed_absmax(v) / F32(-levels))
    codes = v * _inv(dd.astype(F32))[:, None]
    return dd, _codes(codes, -levels, levels - 1).astype(np.int8)


def _affine_codes(x: np.ndarray, d: np.ndarray, m: np.ndarray, nmax: int) -> np.ndarray:
    """Codes of x ~ d * q - m for the final (stored) d and m: (n, k) -> uint8."""
    q = (x + m[:, None]) * _inv(d)[:, None]
    return _codes(q, 0, nmax).astype(np.uint8)


def _symmetric_codes(x: np.ndarray, d: np.ndarray, nmax: int) -> np.ndarray:
    """Codes of x ~ d * q for the final d, offset by +nmax to be unsigned: (n, k) -> uint8 in 0..2*nmax-1."""
    q = x * _inv(d)[:, None]
    _codes(q, -nmax, nmax - 1)
    q += F32(nmax)
    return q.astype(np.uint8)


def _rms_weights(sb: np.ndarray, sub: int) -> np.ndarray:
    """Importance of each value: super-block RMS plus its magnitude (big values matter more): (n, 256) -> (n*256/sub, sub)."""
    rms = np.sqrt(_rowdot(sb, sb) / F32(sb.shape[1]))
    w = np.abs(sb)
    w += rms[:, None]
    return w.reshape(-1, sub)


def _pack_k_scales(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins (n, 8) -> 12 bytes (Q4_K/Q5_K): low 6 bits of 0-3 whole, 4-7 split over the rest."""
    out = np.empty((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    out[:, 4:8] = mn[:, :4] | ((mn[:, 4:] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:] & 0x0F) | ((mn[:, 4:] & 0x0F) << 4)
    return out


def _pack_2bit_planes(q: np.ndarray) -> np.ndarray:
    """(n, 256) 2-bit codes -> (n, 64): value h*128 + s*32 + l in bits 2s of byte h*32 + l (Q2_K/Q3_K qs)."""
    p = q.reshape(-1, 2, 4, 32)
    return (p[:, :, 0] | (p[:, :, 1] << 2) | (p[:, :, 2] << 4) | (p[:, :, 3] << 6)).reshape(-1, 64)


# ---------------------------------------------------------------------------------------------- k-quants

# Scale-search grids: affine (rmin, rdelta, nstep) for fit_affine, symmetric (nstep, delta) for fit_symmetric.
# llama.cpp tries 16-21 candidates per sub-block; on N(0,1) and Student-t(4) weights these sparser grids lose at
# most 0.1 dB of SQNR against it (measured here) and run 2-3x faster.
_SEARCH: dict[str, tuple] = {
    "Q2_K": (-0.5, 0.25, 6),
    "Q3_K": (4, 0.2),
    "Q4_K": (-0.8, 0.2, 8),
    "Q5_K": (-0.5, 0.25, 6),
    "Q6_K": (3, 0.3),
    "legacy": (4, 0.2),  # Q4_0 / Q5_0 under an importance matrix (llama.cpp: 9 steps of 0.1)
}


def _weighted_k_scales(sb: np.ndarray, sub: np.ndarray, qw: np.ndarray, nmax: int,
                       search: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Q4_K / Q5_K scales and mins under an importance matrix (llama.cpp quantize_row_q4_K_impl's weighting:
    qw * sqrt(2 * mean square of the super-block + x^2), sub-block scales quantized by weighted error)."""
    nb = sb.shape[0]
    w = _importance(sub, qw, np.repeat(2 * _rowdot(sb, sb) / F32(QK_K), 8))
    d, m = fit_affine(sub, w, nmax, *search)
    sw = w.sum(axis=1).reshape(nb, 8)
    dd, sc = quantize_scales_weighted(d.reshape(nb, 8), 63, sw)
    dm, mn = quantize_scales_weighted(m.reshape(nb, 8), 63, sw)
    return dd, sc, dm, mn


def _q2_k(sb: np.ndarray, out: np.ndarray, qw: np.ndarray | None = None, row: int = 256) -> np.ndarray:
    """Q2_K super-blocks: (nb, 256) -> (nb, 84) = 16 x (4-bit scale | 4-bit min) | 64 bytes of 2-bit q | d | dmin."""
    nb = sb.shape[0]
    sub = sb.reshape(-1, 16)
    if qw is None:
        d, m = fit_affine(sub, np.abs(sub), 3, *_SEARCH["Q2_K"])
        dd, sc = quantize_scales(d.reshape(nb, 16), 15)
        dm, mn = quantize_scales(m.reshape(nb, 16), 15)
    else:  # llama.cpp quantize_row_q2_K_impl: sigma2 = mean square of the super-block
        w = _importance(sub, qw, np.repeat(_rowdot(sb, sb) / F32(QK_K), 16))
        d, m = fit_affine(sub, w, 3, *_SEARCH["Q2_K"])
        sw = w.sum(axis=1).reshape(nb, 16)
        dd, sc = quantize_scales_weighted(d.reshape(nb, 16), 15, sw)
        dm, mn = quantize_scales_weighted(m.reshape(nb, 16), 15, sw)
    q = _affine_codes(sub, (dd.astype(F32)[:, None] * sc).reshape(-1), (dm.astype(F32)[:, None] * mn).reshape(-1), 3)
    out[:, :16] = sc | (mn << 4)
    out[:, 16:80] = _pack_2bit_planes(q.reshape(nb, 256))
    out[:, 80:82] = _f16_bytes(dd)
    out[:, 82:84] = _f16_bytes(dm)
    return out


def _q3_k(sb: np.ndarray, out: np.ndarray, qw: np.ndarray | None = None, row: int = 256) -> np.ndarray:
    """Q3_K super-blocks: (nb, 256) -> (nb, 110) = 32 bytes high-bit mask | 64 bytes low 2 bits | 12 bytes of 6-bit scales | d."""
    nb = sb.shape[0]
    sub = sb.reshape(-1, 16)
    # with an importance matrix, llama.cpp's quantize_row_q3_K_impl weights: qw * sqrt(2 * mean square + x^2)
    w = sub * sub if qw is None else _importance(sub, qw, np.repeat(2 * _rowdot(sb, sb) / F32(QK_K), 16))
    d = fit_symmetric(sub, w, 4, *_SEARCH["Q3_K"])
    dd, sc = quantize_signed_scales(d.reshape(nb, 16), 32)
    q = _symmetric_codes(sub, (dd.astype(F32)[:, None] * sc).reshape(-1), 4).reshape(nb, 256)  # 0..7
    # hmask: bit i of byte l holds the high bit of value i*32 + l.
    out[:, :32] = _bit_planes((q >> 2).reshape(nb, 8, 32))
    out[:, 32:96] = _pack_2bit_planes(q & 3)
    s = (sc.astype(np.int16) + 32).astype(np.uint8)  # 0..63
    out[:, 96:104] = (s[:, :8] & 0x0F) | ((s[:, 8:] & 0x0F) << 4)
    hi = (s >> 4).reshape(nb, 4, 4)  # scale j = k*4 + i -> bits 2k of byte 8 + i
    out[:, 104:108] = hi[:, 0] | (hi[:, 1] << 2) | (hi[:, 2] << 4) | (hi[:, 3] << 6)
    out[:, 108:110] = _f16_bytes(dd)
    return out


def _q4_k(sb: np.ndarray, out: np.ndarray, qw: np.ndarray | None = None, row: int = 256) -> np.ndarray:
    """Q4_K super-blocks: (nb, 256) -> (nb, 144) = d | dmin | 12 bytes of 6-bit scales/mins | 128 bytes of nibbles."""
    nb = sb.shape[0]
    sub = sb.reshape(-1, 32)
    if qw is None:
        d, m = fit_affine(sub, _rms_weights(sb, 32), 15, *_SEARCH["Q4_K"])
        dd, sc = quantize_scales(d.reshape(nb, 8), 63)
        dm, mn = quantize_scales(m.reshape(nb, 8), 63)
    else:
        dd, sc, dm, mn = _weighted_k_scales(sb, sub, qw, 15, _SEARCH["Q4_K"])
    q = _affine_codes(sub, (dd.astype(F32)[:, None] * sc).reshape(-1), (dm.astype(F32)[:, None] * mn).reshape(-1), 15)
    q = q.reshape(nb, 4, 2, 32)  # sub-block 2c in the low nibbles of bytes c*32.., 2c+1 in the high ones
    out[:, 0:2] = _f16_bytes(dd)
    out[:, 2:4] = _f16_bytes(dm)
    out[:, 4:16] = _pack_k_scales(sc, mn)
    out[:, 16:] = _pack_nibbles(q[:, :, 0], q[:, :, 1]).reshape(nb, 128)
    return out


def _q5_k(sb: np.ndarray, out: np.ndarray, qw: np.ndarray | None = None, row: int = 256) -> np.ndarray:
    """Q5_K super-blocks: (nb, 256) -> (nb, 176) = d | dmin | 12 bytes scales/mins | 32 bytes high bits | 128 bytes nibbles."""
    nb = sb.shape[0]
    sub = sb.reshape(-1, 32)
    if qw is None:
        d, m = fit_affine(sub, _rms_weights(sb, 32), 31, *_SEARCH["Q5_K"])
        dd, sc = quantize_scales(d.reshape(nb, 8), 63)
        dm, mn = quantize_scales(m.reshape(nb, 8), 63)
    else:
        dd, sc, dm, mn = _weighted_k_scales(sb, sub, qw, 31, _SEARCH["Q5_K"])
    q = _affine_codes(sub, (dd.astype(F32)[:, None] * sc).reshape(-1), (dm.astype(F32)[:, None] * mn).reshape(-1), 31)
    q = q.reshape(nb, 8, 32)
    out[:, 0:2] = _f16_bytes(dd)
    out[:, 2:4] = _f16_bytes(dm)
    out[:, 4:16] = _pack_k_scales(sc, mn)
    out[:, 16:48] = _bit_planes(q >> 4)  # bit j of byte l: sub-block j, value l
    lo = q.reshape(nb, 4, 2, 32)
    out[:, 48:] = _pack_nibbles(lo[:, :, 0], lo[:, :, 1]).reshape(nb, 128)
    return out


def _q6_k(sb: np.ndarray, out: np.ndarray, qw: np.ndarray | None = None, row: int = 256) -> np.ndarray:
    """Q6_K super-blocks: (nb, 256) -> (nb, 210) = 128 bytes low nibbles | 64 bytes high 2 bits | 16 int8 scales | d."""
    nb = sb.shape[0]
    sub = sb.reshape(-1, 16)
    d = fit_symmetric(sub, sub * sub if qw is None else qw.reshape(sub.shape), 32, *_SEARCH["Q6_K"])  # llama.cpp: the imatrix alone
    dd, sc = quantize_signed_scales(d.reshape(nb, 16), 128)
    q = _symmetric_codes(sub, (dd.astype(F32)[:, None] * sc).reshape(-1), 32).reshape(nb, 256)  # 0..63
    lo = q.reshape(nb, 2, 2, 64)  # value h*128 + k*64 + m -> nibble k of byte h*64 + m
    out[:, :128] = _pack_nibbles(lo[:, :, 0], lo[:, :, 1]).reshape(nb, 128)
    hi = (q >> 4).reshape(nb, 2, 4, 32)  # value h*128 + s*32 + l -> bits 2s of byte h*32 + l
    out[:, 128:192] = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).reshape(nb, 64)
    out[:, 192:208] = sc.view(np.uint8)
    out[:, 208:210] = _f16_bytes(dd)
    return out


# ---------------------------------------------------------------------------------------------- registry


quantize_q8_0 = _by_pieces(_q8_0, 32, 34, _LEGACY_PIECE)
quantize_q4_0 = _by_pieces(_q4_0, 32, 18, _LEGACY_PIECE)
quantize_q4_1 = _by_pieces(_q4_1, 32, 20, _LEGACY_PIECE)
quantize_q5_0 = _by_pieces(_q5_0, 32, 22, _LEGACY_PIECE)
quantize_q5_1 = _by_pieces(_q5_1, 32, 24, _LEGACY_PIECE)
quantize_q2_k = _by_pieces(_q2_k, QK_K, 84)
quantize_q3_k = _by_pieces(_q3_k, QK_K, 110)
quantize_q4_k = _by_pieces(_q4_k, QK_K, 144)
quantize_q5_k = _by_pieces(_q5_k, QK_K, 176)
quantize_q6_k = _by_pieces(_q6_k, QK_K, 210)

ENCODERS: dict[str, Encoder] = {
    "F32": quantize_f32, "F16": quantize_f16, "BF16": quantize_bf16,
    "Q8_0": quantize_q8_0, "Q4_0": quantize_q4_0, "Q4_1": quantize_q4_1, "Q5_0": quantize_q5_0, "Q5_1": quantize_q5_1,
    "Q2_K": quantize_q2_k, "Q3_K": quantize_q3_k, "Q4_K": quantize_q4_k, "Q5_K": quantize_q5_k, "Q6_K": quantize_q6_k,
}


# IQ4_NL / IQ4_XS: the non-linear grid types, whose block encoders live in planner.quantize.iq4.
ENCODERS["IQ4_NL"] = _by_pieces(iq4_nl_blocks, 32, 18, _LEGACY_PIECE)
ENCODERS["IQ4_XS"] = _by_pieces(iq4_xs_blocks, QK_K, 136, _LEGACY_PIECE)
# MXFP4: E2M1 codes under an E8M0 scale per 32, whose block encoder lives in planner.quantize.fp4.
ENCODERS["MXFP4"] = _by_pieces(mxfp4_blocks, 32, 17, _LEGACY_PIECE)


def supported_types() -> list[str]:
    """The ggml types we can encode."""
    return list(ENCODERS)


def default_threads() -> int:
    """Worker threads for encoding: the CPUs this process may use (at most 16)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(16, n))


def tune_allocator() -> bool:
    """Keep freed numpy temporaries in the process heap (glibc only); returns whether it applied.

    The encoders allocate and free the same few hundred-KB buffers for every piece. By default glibc maps such
    buffers fresh and unmaps them on free, so every piece page-faults them in again: about a third of the k-quant
    time on this machine. Raising the mmap and trim thresholds keeps them. Process-wide, so only the CLI command
    and the benchmark call it, never the library functions.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
        return bool(libc.mallopt(m_mmap_threshold, 64 << 20)) and bool(libc.mallopt(m_trim_threshold, 256 << 20))
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return False


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    """A shared pool of `threads` workers (kept for the process: encoders are called once per row chunk)."""
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="planner-quant")
    return _POOLS[threads]


def encode(type_name: str, x: np.ndarray, *, threads: int | None = None, qw: np.ndarray | None = None) -> np.ndarray:
    """Encode float rows (n_rows, row_length) as ggml type `type_name`; returns uint8 (n_rows, row bytes).

    `qw`: importance of each input column (row_length,) or value (n_rows, row_length), from an importance matrix;
    the block types search their scales by the error it weights (float types and Q8_0 ignore it, as llama.cpp).
    The byte count equals `ggml_type(type_name).nbytes(x.shape)`; row pieces run on `threads` threads.
    """
    enc = ENCODERS.get(type_name.upper())
    if enc is None:
        raise ValueError(f"no encoder for ggml type {type_name}; supported: {', '.join(ENCODERS)}")
    t = ggml_type(type_name)
    x = _check_rows(np.asarray(x), t.layout.block_weights)
    want = t.nbytes(x.shape)
    threads = default_threads() if threads is None else threads
    blocked = getattr(enc, "blocked", False)
    kw = {"qw": qw} if (qw is not None and blocked) else {}
    if threads > 1 and blocked and x.size >= 2 * _PIECE:
        out = enc(x, _pool(threads), **kw)
    else:
        out = enc(x, **kw)
    if out.nbytes != want:  # the formats table and the encoder must agree on every tensor's bytes
        raise AssertionError(f"{type_name} encoder wrote {out.nbytes} bytes for {x.shape}, the formats table says {want}")
    return out


def sqnr_db(ref: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(sum ref^2 / sum (ref - approx)^2); inf when exact."""
    ref = np.asarray(ref, dtype=np.float64).ravel()
    err = ref - np.asarray(approx, dtype=np.float64).ravel()
    noise = float(np.einsum("i,i->", err, err))
    signal = float(np.einsum("i,i->", ref, ref))
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10 * math.log10(signal / noise)

