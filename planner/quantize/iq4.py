"""IQ4_NL and IQ4_XS: 4-bit codes that index a fixed non-linear grid of 16 int8 values, scaled per block of 32.

Block layouts (ggml-common.h, `block_iq4_nl` / `block_iq4_xs`; sizes checked against planner.formats):
- IQ4_NL, 32 weights in 18 bytes: fp16 d | 16 bytes of nibbles; x = d * GRID[q].
- IQ4_XS, 256 weights in 136 bytes: fp16 d | uint16 scales_h | 4 bytes scales_l | 128 bytes of nibbles; block j's
  6-bit scale ls = (scales_l nibble j) | (2 bits j of scales_h) << 4, and x = d * (ls - 32) * GRID[q].
Nibbles pack as in Q4_0: byte j of a 32-block holds value j (low nibble) and value j + 16 (high nibble).

The grid is llama.cpp's kvalues_iq4nl (ggml-common.h), a fixed table the format defines: the decoder has it too,
so it is data, not a fitted constant. The scale search follows the idea of llama.cpp's quantize_row_iq4_nl_impl:
start from the block's largest value mapped onto the grid's end, try 15 stretched scales around it, refit each by
weighted least squares and keep the best; without an importance matrix the weights are x^2, with one they are
qw * sqrt(2 * mean square of the super-block + x^2). Vectorised over blocks (written for numpy, not ported).
"""

from __future__ import annotations

import numpy as np

from planner.quantize.block_helpers import F32, _f16, _f16_bytes, _importance, _inv, _nibbles32, _rowdot

# ggml-common.h kvalues_iq4nl: the 16 levels IQ4_NL and IQ4_XS decode to (before the block scale).
GRID = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)
_GRID_F = GRID.astype(F32)
_NTRY = 7  # stretches -7..7 of the grid's end, as llama.cpp tries
_EPS = 1e-15  # blocks whose largest |x| is below this are stored as zeros (llama.cpp's GROUP_MAX_EPS)

# Nearest grid index of any real value. Every midpoint between neighbouring levels is a multiple of 0.5, so
# floor(2 * v) decides the nearest level; a tie (v exactly on a midpoint) goes to the upper level, as llama.cpp's
# best_index_int8 does. The table covers 2v in [-256, 256); beyond it the end levels are nearest.
_MID2 = (GRID[:-1].astype(np.int32) + GRID[1:].astype(np.int32))  # twice the midpoints
_LUT = np.searchsorted(_MID2, np.arange(-256, 256), side="right").astype(np.uint8)


def nearest_level(v: np.ndarray) -> np.ndarray:
    """Index (uint8 0..15) of the grid level nearest to each value of v (float32, any shape)."""
    t = np.floor(v * F32(2))
    np.clip(t, -256, 255, out=t)
    t += F32(256)
    return _LUT[t.astype(np.intp)]


def _block_weights(b: np.ndarray, qw: np.ndarray | None, per_super: int) -> np.ndarray:
    """Importance of each value of the (nb, 32) blocks; super-blocks are `per_super` consecutive blocks."""
    if qw is None:
        return b * b
    ms = _rowdot(b, b).reshape(-1, per_super).sum(axis=1) / F32(32 * per_super)
    return _importance(b, qw, np.repeat(F32(2) * ms, per_super))


def block_scales(b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per block of (nb, 32): the scale d (signed) with x ~ d * GRID[q] that minimises the w-weighted error."""
    bt, wt = np.ascontiguousarray(b.T), np.ascontiguousarray(w.T)  # (32, nb): sums over axis 0 run contiguous
    hi, lo = bt.max(axis=0), bt.min(axis=0)
    vmax = np.where(hi >= -lo, hi, lo)  # the value of largest magnitude, with its sign
    inv_max = _inv(vmax)
    wx = wt * bt
    t = np.empty_like(bt)
    wq = np.empty_like(bt)
    best_d = np.zeros(bt.shape[1], dtype=F32)
    best = np.full(bt.shape[1], -1.0, dtype=F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        # candidate 0 puts the largest value at +127 (beyond the top level), the others at -127 + i for i in -7..7
        for i in [None, *range(-_NTRY, _NTRY + 1)]:
            iscale = F32(-int(GRID[0]) if i is None else i + int(GRID[0])) * inv_max
            q = _levels_of(bt, iscale, t)
            sqx = np.multiply(wx, q, out=wq).sum(axis=0)
            np.multiply(wt, q, out=wq)
            sqq = np.multiply(wq, q, out=wq).sum(axis=0)
            d = sqx / sqq
            score = d * sqx  # the weighted error falls by sqx^2 / sqq: maximise it
            better = (sqq > 0) & (score > best)
            best_d = np.where(better, d, best_d)
            best = np.where(better, score, best)
    best_d[np.abs(vmax) < _EPS] = 0
    return best_d.astype(F32)


# The grid level itself (not its index) for each cell of _LUT: one gather gives the value a candidate scale rounds to.
_LUT_LEVEL = _GRID_F[_LUT]


def _levels_of(bt: np.ndarray, iscale: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Grid levels nearest to bt * iscale (per column), using scratch t; truncating 2v + 256 >= 0 is its floor."""
    np.multiply(bt, F32(2) * iscale, out=t)
    t += F32(256)
    np.clip(t, 0, 511, out=t)
    return _LUT_LEVEL[t.astype(np.int16)]


def _codes(b: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Grid indices of blocks (nb, 32) for their final scales d (nb,)."""
    return nearest_level(b * _inv(d)[:, None])


def iq4_nl_blocks(b: np.ndarray, out: np.ndarray, qw: np.ndarray | None = None, row: int = 32) -> np.ndarray:
    """IQ4_NL blocks: (nb, 32) -> (nb, 18) = fp16 d | 16 bytes of grid indices."""
    d = _f16(block_scales(b, _block_weights(b, qw, 1)))
    out[:, :2] = _f16_bytes(d)
    out[:, 2:] = _nibbles32(_codes(b, d.astype(F32)))
    return out


def iq4_xs_blocks(sb: np.ndarray, out: np.ndarray, qw: np.ndarray | None = None, row: int = 256) -> np.ndarray:
    """IQ4_XS super-blocks: (nb, 256) -> (nb, 136) = fp16 d | scales_h | scales_l | 128 bytes of grid indices."""
    nb = sb.shape[0]
    b = sb.reshape(-1, 32)
    wb = None if qw is None else qw.reshape(-1, 32)
    s = block_scales(b, _block_weights(b, wb, 8)).reshape(nb, 8)
    # one fp16 super-scale; each block's scale as a 6-bit signed multiple -32..31 of it, the largest at -32
    hi, lo = s.max(axis=1), s.min(axis=1)
    smax = np.where(hi >= -lo, hi, lo)
    dd = _f16(smax / F32(-32))
    ls = np.clip(np.rint(s * _inv(dd.astype(F32))[:, None]), -32, 31)
    dl = (dd.astype(F32)[:, None] * ls).reshape(-1)
    codes = _codes(b, dl)
    u = (ls + 32).astype(np.uint8)  # 0..63
    out[:, 0:2] = _f16_bytes(dd)
    h = (u >> 4).astype(np.uint16)
    scales_h = np.zeros(nb, dtype=np.uint16)
    for j in range(8):
        scales_h |= h[:, j] << np.uint16(2 * j)
    out[:, 2:4] = scales_h.astype("<u2").view(np.uint8).reshape(nb, 2)
    lo4 = u & np.uint8(0x0F)
    out[:, 4:8] = lo4[:, 0::2] | (lo4[:, 1::2] << np.uint8(4))
    out[:, 8:] = _nibbles32(codes).reshape(nb, 128)
    return out


def dequantize_iq4_nl(raw: np.ndarray) -> np.ndarray:
    """IQ4_NL bytes (nb, 18) -> float32 (nb, 32): our inverse, checked in the tests against gguf-py's."""
    d = raw[:, :2].copy().view("<f2").astype(F32)
    qs = raw[:, 2:]
    idx = np.concatenate([qs & 0x0F, qs >> 4], axis=1)
    return d * _GRID_F[idx]


def dequantize_iq4_xs(raw: np.ndarray) -> np.ndarray:
    """IQ4_XS bytes (nb, 136) -> float32 (nb, 256)."""
    nb = raw.shape[0]
    d = raw[:, :2].copy().view("<f2").astype(F32).reshape(nb)
    sh = raw[:, 2:4].copy().view("<u2").reshape(nb).astype(np.int32)
    sl = raw[:, 4:8].astype(np.int32)
    lo = np.stack([sl & 0x0F, sl >> 4], axis=2).reshape(nb, 8)
    hi = np.stack([(sh >> (2 * j)) & 3 for j in range(8)], axis=1)
    dl = d[:, None] * ((lo | (hi << 4)) - 32)
    qs = raw[:, 8:].reshape(nb, 8, 16)
    idx = np.concatenate([qs & 0x0F, qs >> 4], axis=2)  # (nb, 8, 32)
    return (dl[:, :, None] * _GRID_F[idx]).reshape(nb, 256)
