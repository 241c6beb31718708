"""Minimal weight quantization for the bench: int8 per output channel, int4 asymmetric per group.

These make random weights look like what a runtime's kernel reads (bytes, layout, value range); the real
quantizers (GGUF encoders, GPTQ/AWQ) live in planner.quantize. Shapes follow torch.nn.Linear: w is (N out, K in).
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
WEIGHT_STD = 0.02  # trained LLM linear weights are roughly N(0, 0.02^2) (the usual initialiser's scale)


def random_weights(n: int, k: int, seed: int = 0) -> np.ndarray:
    """(n, k) float32 weights drawn from N(0, WEIGHT_STD^2)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k), dtype=F32)
    w *= F32(WEIGHT_STD)
    return w


def quantize_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output row: (q int8 (N, K), scale float32 (N,)), w ~= q * scale[:, None]."""
    if w.ndim != 2:
        raise ValueError(f"expected (N, K) weights, got shape {w.shape}")
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(F32)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def dequantize_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Inverse of quantize_int8: float32 (N, K)."""
    return q.astype(F32) * scale[:, None]


def quantize_int4(w: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric 4-bit per group of `group_size` along K: (packed uint8 (N, K/2), scale f16 (N, K/g), min f16 (N, K/g)).

    Codes q in 0..15 with w ~= q * scale + min; byte j of a row holds code 2j in its low nibble and 2j+1 in its high.
    """
    n, k = w.shape
    if group_size <= 0 or k % group_size or group_size % 2:
        raise ValueError(f"row length {k} is not a multiple of the (even) group size {group_size}")
    g = w.reshape(n, k // group_size, group_size)
    lo, hi = g.min(axis=2), g.max(axis=2)
    scale = ((hi - lo) / 15.0).astype(np.float16)
    mn = lo.astype(np.float16)
    s32 = scale.astype(F32)
    safe = np.where(s32 > 0, s32, 1.0)
    q = np.clip(np.rint((g - mn.astype(F32)[..., None]) / safe[..., None]), 0, 15).astype(np.uint8).reshape(n, k)
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)
    return packed, scale, mn


def unpack_int4(packed: np.ndarray) -> np.ndarray:
    """Codes 0..15 as uint8 (N, K) from packed (N, K/2)."""
    n, half = packed.shape
    q = np.empty((n, half * 2), dtype=np.uint8)
    q[:, 0::2] = packed & 0x0F
    q[:, 1::2] = packed >> 4
    return q


def dequantize_int4(packed: np.ndarray, scale: np.ndarray, mn: np.ndarray, group_size: int) -> np.ndarray:
    """Inverse of quantize_int4: float32 (N, K)."""
    q = unpack_int4(packed).astype(F32)
    n, k = q.shape
    g = q.reshape(n, k // group_size, group_size)
    return (g * scale.astype(F32)[..., None] + mn.astype(F32)[..., None]).reshape(n, k)


def sqnr_db(ref: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (higher is better)."""
    noise = float(np.sum((ref.astype(np.float64) - approx) ** 2))
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(signal / noise)


def to_bf16_bits(w: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even (NaN stays NaN)."""
    u = np.ascontiguousarray(w, dtype=F32).view(np.uint32)
    rounded = ((u + (0x7FFF + ((u >> 16) & 1))) >> 16).astype(np.uint16)
    return np.where(np.isnan(w), np.uint16(0x7FC0), rounded).astype(np.uint16)


def from_bf16_bits(h: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32 (exact)."""
    return (h.astype(np.uint32) << 16).view(F32)
