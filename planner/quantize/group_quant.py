"""Group-wise quantization for GPU checkpoint formats: GPTQ int4/int8 (round to nearest), bitsandbytes NF4 with
double quantization, FP8 E4M3 per channel, MLX affine 4/8-bit.

Plain functions with shape comments. Weights are float32 matrices (out, in) as PyTorch stores nn.Linear, and
groups run along `in`. Scales stored as fp16 are rounded to fp16 before the codes are chosen, so the codes fit
the scale a loader will read.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
_F16_MAX = 65504.0


def _check_matrix(w: np.ndarray, group_size: int) -> np.ndarray:
    """Precondition: a 2-D float matrix whose row length is a multiple of the group size."""
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight (out, in), got shape {w.shape}")
    if group_size <= 0 or w.shape[1] % group_size:
        raise ValueError(f"row length {w.shape[1]} is not a multiple of the group size {group_size}")
    return np.ascontiguousarray(w, dtype=F32)


def _to_f16(v: np.ndarray) -> np.ndarray:
    """Round to fp16 (saturating) and back to float32."""
    return np.clip(v, -_F16_MAX, _F16_MAX).astype(np.float16).astype(F32)


def _safe_inv(v: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(v != 0, F32(1) / v, F32(0)).astype(F32)


# ---------------------------------------------------------------------------------------------- integer groups (GPTQ)


def group_quantize(w: np.ndarray, bits: int, group_size: int | None, *, symmetric: bool = True
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Round-to-nearest integer quantization per group: w ~ (q - zero) * scale.

    w: (out, in) float; group_size None: one group per row. Returns q (out, in) uint8 in 0..2**bits-1,
    scales (out, in // g) float32 (fp16-representable) and zeros (out, in // g) uint8.
    Symmetric (GPTQ's sym=True): scale = 2 * absmax / (2**bits - 1), zero = 2**(bits-1).
    """
    if bits not in (2, 3, 4, 8):
        raise ValueError(f"bits must be 2, 3, 4 or 8, got {bits}")
    g = group_size or w.shape[-1]
    w = _check_matrix(w, g)
    out, n = w.shape
    maxq = (1 << bits) - 1
    grp = w.reshape(out, n // g, g)  # (out, G, g)
    if symmetric:
        amax = np.abs(grp).max(axis=2)
        scale = _to_f16(2 * amax / F32(maxq))
        zero = np.full(scale.shape, (maxq + 1) // 2, dtype=F32)
    else:
        lo = np.minimum(grp.min(axis=2), 0)
        hi = np.maximum(grp.max(axis=2), 0)
        scale = _to_f16((hi - lo) / F32(maxq))
        zero = np.clip(np.rint(-lo * _safe_inv(scale)), 0, maxq)
    scale = np.where(scale > 0, scale, F32(1))  # an all-zero group: any scale, q = zero gives back 0
    q = grp * (F32(1) / scale)[:, :, None]
    q += zero[:, :, None]
    np.rint(q, out=q)
    np.clip(q, 0, maxq, out=q)
    return q.astype(np.uint8).reshape(out, n), scale.astype(F32), zero.astype(np.uint8)


def group_dequantize(q: np.ndarray, scales: np.ndarray, zeros: np.ndarray, group_size: int | None) -> np.ndarray:
    """Inverse of group_quantize: (q - zero) * scale, shape (out, in) float32."""
    out, n = q.shape
    g = group_size or n
    grp = q.reshape(out, n // g, g).astype(F32) - zeros.astype(F32)[:, :, None]
    return (grp * scales.astype(F32)[:, :, None]).reshape(out, n)


def _pack_along0(v: np.ndarray, bits: int) -> np.ndarray:
    """(k, m) values of `bits` bits -> (k * bits / 32, m) int32: 32/bits consecutive rows share a word, row j at bits j*bits."""
    per = 32 // bits
    k, m = v.shape
    if k % per:
        raise ValueError(f"{k} values do not pack into whole 32-bit words of {per}")
    u = v.astype(np.uint32).reshape(k // per, per, m)
    word = np.zeros((k // per, m), dtype=np.uint32)
    for j in range(per):
        word |= u[:, j, :] << np.uint32(bits * j)
    return word.view(np.int32)


def _unpack_along0(words: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of _pack_along0: (k', m) int32 -> (k' * 32 / bits, m) uint8."""
    per = 32 // bits
    u = words.view(np.uint32)
    parts = [(u >> np.uint32(bits * j)) & np.uint32((1 << bits) - 1) for j in range(per)]
    return np.stack(parts, axis=1).reshape(-1, u.shape[1]).astype(np.uint8)


def pack_gptq(q: np.ndarray, scales: np.ndarray, zeros: np.ndarray, bits: int, group_size: int | None,
              g_idx: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """GPTQ (AutoGPTQ v1) tensors of one linear layer from group_quantize (or gptq.gptq_quantize) output.

    q (out, in) -> qweight int32 (in * bits / 32, out); zeros (out, G) -> qzeros int32 (G, out * bits / 32), stored
    minus one as AutoGPTQ's original checkpoint format does; scales -> (G, out) float16; g_idx int32 (in,): the
    group of each input column, i // g unless given (act-order).
    """
    out, n = q.shape
    g = group_size or n
    if bits not in (4, 8):
        raise ValueError(f"GPTQ packing supports 4 and 8 bits, got {bits}")
    stored_zeros = (zeros.astype(np.int32) - 1) & ((1 << bits) - 1)
    return {
        "qweight": _pack_along0(q.T, bits),
        "qzeros": _pack_rows(stored_zeros.T, bits),
        "scales": scales.T.astype(np.float16),
        "g_idx": (np.arange(n, dtype=np.int32) // g).astype(np.int32) if g_idx is None else g_idx.astype(np.int32),
    }


def _pack_rows(v: np.ndarray, bits: int) -> np.ndarray:
    """(G, out) values -> (G, out * bits / 32) int32: 32/bits consecutive columns share a word (qzeros layout)."""
    return _pack_along0(v.T, bits).T.copy()


def unpack_gptq(qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of pack_gptq: (q (out, in) uint8, scales (out, G) float32, zeros (out, G) uint8)."""
    q = _unpack_along0(qweight, bits).T
    stored = _unpack_along0(np.ascontiguousarray(qzeros.T), bits).T  # (G, out)
    zeros = (stored.astype(np.int32) + 1) & ((1 << bits) - 1)
    return np.ascontiguousarray(q), scales.T.astype(F32), zeros.T.astype(np.uint8)


# ---------------------------------------------------------------------------------------------- NF4 (bitsandbytes)

# The 16 NormalFloat4 levels (QLoRA, Dettmers et al. 2023): quantiles of N(0, 1) scaled to [-1, 1], exact zero included.
NF4_LEVELS = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
], dtype=F32)
_NF4_MIDS = ((NF4_LEVELS[1:] + NF4_LEVELS[:-1]) / 2).astype(F32)
# The map the nested (double) quantization of absmax values uses: 256 evenly spaced levels in [-1, 1].
NESTED_LEVELS = np.linspace(-1.0, 1.0, 256, dtype=F32)


def nf4_quantize(w: np.ndarray, block: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """NF4 codes per block of `block` consecutive values of the flattened tensor.

    w: any shape, size a multiple of 2 * block. Returns packed (size / 2,) uint8 (first value in the high
    nibble, as bitsandbytes packs) and absmax (size / block,) float32.
    """
    flat = np.ascontiguousarray(w, dtype=F32).reshape(-1)
    if flat.size % block or flat.size % 2:
        raise ValueError(f"{flat.size} values do not fill whole NF4 blocks of {block}")
    b = flat.reshape(-1, block)
    absmax = np.abs(b).max(axis=1)
    y = (b * _safe_inv(absmax)[:, None]).reshape(-1)
    codes = np.zeros(y.size, dtype=np.uint8)
    piece = 1 << 16
    for a in range(0, y.size, piece):  # nearest level = how many midpoints lie below; 15 compares beat searchsorted
        yp, cp = y[a:a + piece], codes[a:a + piece]
        for mid in _NF4_MIDS:
            np.add(cp, yp > mid, out=cp, casting="unsafe")
    return (codes[0::2] << 4) | codes[1::2], absmax.astype(F32)


def nf4_dequantize(packed: np.ndarray, absmax: np.ndarray, block: int = 64) -> np.ndarray:
    """Inverse of nf4_quantize: flat float32 values (reshape to the tensor's shape)."""
    codes = np.empty(packed.size * 2, dtype=np.uint8)
    codes[0::2] = packed.reshape(-1) >> 4
    codes[1::2] = packed.reshape(-1) & 0x0F
    return (NF4_LEVELS[codes].reshape(-1, block) * absmax.astype(F32)[:, None]).reshape(-1)


def double_quantize(absmax: np.ndarray, block: int = 256) -> tuple[np.ndarray, np.ndarray, float]:
    """bitsandbytes' double quantization of NF4 absmax values: subtract their mean, then 8-bit codes per `block`.

    absmax: (n,) float32. Returns codes (n,) uint8 (indices into NESTED_LEVELS), nested absmax
    (ceil(n / block),) float32 and the offset (the mean).
    """
    a = np.asarray(absmax, dtype=F32).reshape(-1)
    offset = float(a.mean()) if a.size else 0.0
    v = a - F32(offset)
    n = v.size
    pad = (-n) % block
    vp = np.concatenate([v, np.zeros(pad, dtype=F32)]).reshape(-1, block)
    nested = np.abs(vp).max(axis=1)
    y = vp * _safe_inv(nested)[:, None]
    codes = np.clip(np.rint((y + 1) * F32(127.5)), 0, 255).astype(np.uint8).reshape(-1)[:n]
    return codes, nested.astype(F32), offset


def double_dequantize(codes: np.ndarray, nested: np.ndarray, offset: float, block: int = 256) -> np.ndarray:
    """Inverse of double_quantize: the absmax values (n,) float32."""
    n = codes.size
    per = np.repeat(nested.astype(F32), block)[:n]
    return NESTED_LEVELS[codes] * per + F32(offset)


# ---------------------------------------------------------------------------------------------- FP8 E4M3

E4M3_MAX = 448.0


def e4m3_decode(codes: np.ndarray) -> np.ndarray:
    """FP8 E4M3 (the 'fn' variant: no infinities, 0x7F/0xFF are NaN) codes -> float32."""
    c = np.asarray(codes, dtype=np.uint8)
    e = ((c >> 3) & 0x0F).astype(np.int32)
    m = (c & 0x07).astype(F32)
    mag = np.where(e == 0, m / 8 * F32(2.0**-6), (1 + m / 8) * np.exp2((e - 7).astype(F32)))
    mag = np.where((c & 0x7F) == 0x7F, np.nan, mag)
    return np.where(c & 0x80, -mag, mag).astype(F32)


def e4m3_encode(y: np.ndarray) -> np.ndarray:
    """float32 -> FP8 E4M3 codes, round to nearest even, saturating at +-448 (no NaN output for finite input)."""
    y = np.asarray(y, dtype=F32)
    a = np.minimum(np.abs(y), F32(E4M3_MAX))
    bits = a.view(np.uint32)
    # Normal numbers: drop 20 of float32's 23 mantissa bits with round-to-nearest-even, then rebias 127 -> 7;
    # a carry out of the mantissa correctly bumps the exponent.
    r = bits + np.uint32(0x7FFFF) + ((bits >> np.uint32(20)) & np.uint32(1))
    exp = (r >> np.uint32(23)).astype(np.int32) - 120
    normal = ((exp << 3) | ((r >> np.uint32(20)) & np.uint32(7)).astype(np.int32))
    # Subnormals (below 2**-6) are multiples of 2**-9; code 8 is the smallest normal, so the two paths meet.
    sub = np.rint(a * F32(512.0)).astype(np.int32)
    code = np.where(a < F32(2.0**-6), sub, normal)
    sign = (y < 0) & (code > 0)
    return (code | (sign.astype(np.int32) << 7)).astype(np.uint8)


def fp8_quantize(w: np.ndarray, *, per_channel: bool = True, amax: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """FP8 E4M3 weights with float32 scales: w ~ decode(codes) * scale.

    w: (out, in). Per channel: scale (out, 1) = row absmax / 448. Per tensor: scale (1,) from `amax` (the whole
    tensor's absmax, which a streaming caller measures first) or from w. Returns codes (out, in) uint8 and scale.
    """
    w = np.ascontiguousarray(w, dtype=F32)
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight (out, in), got shape {w.shape}")
    if per_channel:
        scale = (np.abs(w).max(axis=1, keepdims=True) / F32(E4M3_MAX)).astype(F32)
    else:
        top = float(np.abs(w).max()) if amax is None else amax
        scale = np.array([top / E4M3_MAX], dtype=F32)
    scale = np.where(scale > 0, scale, F32(1)).astype(F32)
    inv = (F32(1) / scale).reshape(-1, 1) if per_channel else F32(1) / scale[0]
    return e4m3_encode(w * inv), scale


def fp8_dequantize(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Inverse of fp8_quantize."""
    s = scale.reshape(-1, 1) if scale.size > 1 or scale.ndim == 2 else scale.reshape(())
    return e4m3_decode(codes) * s


# ---------------------------------------------------------------------------------------------- MLX affine


def mlx_quantize(w: np.ndarray, bits: int, group_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MLX affine quantization: w ~ q * scale + bias per group of `group_size` along the row.

    w: (out, in). Returns packed (out, in * bits / 32) uint32 (value j of a word at bits j*bits), scales and
    biases (out, in // group_size) float16.
    """
    if bits not in (2, 4, 8):
        raise ValueError(f"MLX packing supports 2, 4 and 8 bits, got {bits}")
    w = _check_matrix(w, group_size)
    out, n = w.shape
    maxq = (1 << bits) - 1
    grp = w.reshape(out, n // group_size, group_size)
    lo, hi = grp.min(axis=2), grp.max(axis=2)
    scale = _to_f16((hi - lo) / F32(maxq))
    bias = _to_f16(lo)
    q = (grp - bias[:, :, None]) * _safe_inv(scale)[:, :, None]
    np.rint(q, out=q)
    np.clip(q, 0, maxq, out=q)
    per = 32 // bits
    u = q.astype(np.uint32).reshape(out, n // per, per)
    packed = np.zeros((out, n // per), dtype=np.uint32)
    for j in range(per):
        packed |= u[:, :, j] << np.uint32(bits * j)
    return packed, scale.astype(np.float16), bias.astype(np.float16)


def mlx_dequantize(packed: np.ndarray, scales: np.ndarray, biases: np.ndarray, bits: int, group_size: int = 64) -> np.ndarray:
    """Inverse of mlx_quantize: (out, in) float32."""
    per = 32 // bits
    out = packed.shape[0]
    parts = [(packed >> np.uint32(bits * j)) & np.uint32((1 << bits) - 1) for j in range(per)]
    q = np.stack(parts, axis=2).reshape(out, -1).astype(F32)
    grp = q.reshape(out, -1, group_size)
    return (grp * scales.astype(F32)[:, :, None] + biases.astype(F32)[:, :, None]).reshape(out, -1)
