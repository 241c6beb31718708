"""Small numpy helpers shared by the block encoders (planner.quantize.primitives and planner.quantize.iq4)."""

from __future__ import annotations

import numpy as np

F32 = np.float32
_F16_MAX = 65504.0


def _rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


def _inv(v: np.ndarray) -> np.ndarray:
    """1/v, and 0 where v is 0 (an all-zero block stays all-zero instead of turning into NaN)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v != 0, F32(1) / v, F32(0)).astype(F32, copy=False)


def _f16(v: np.ndarray) -> np.ndarray:
    """Round to fp16 (saturating) and back: the value a block scale is stored and read as."""
    return np.clip(v, -_F16_MAX, _F16_MAX).astype(np.float16)


def _f16_bytes(h: np.ndarray) -> np.ndarray:
    """(n,) float16 -> (n, 2) uint8, little-endian as ggml stores ggml_half."""
    return h.astype("<f2").view(np.uint8).reshape(-1, 2)


def _nibbles32(qi: np.ndarray) -> np.ndarray:
    """4-bit codes (nb, 32) -> (nb, 16): byte j = code j | code j+16 << 4 (codes < 16 never carry across bytes)."""
    w = qi.view("<u8")  # 4 words of 8 codes per block
    return (w[:, :2] | (w[:, 2:] << np.uint64(4))).view(np.uint8)


def _importance(x: np.ndarray, qw: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    """llama.cpp's weight of each value under an importance matrix: qw * sqrt(sigma2 + x^2), sigma2 per block."""
    w = x * x
    w += sigma2[:, None]
    np.sqrt(w, out=w)
    w *= qw.reshape(w.shape)
    return w
