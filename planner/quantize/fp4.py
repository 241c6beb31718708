"""Block encoder of ggml's MXFP4 type (OCP Microscaling spec v1.0): blocks of 32 E2M1 codes (magnitudes 0, 0.5, 1,
1.5, 2, 3, 4, 6 and a sign) under one E8M0 (power-of-two) scale, the type gpt-oss ships its experts in and llama.cpp's
MXFP4_MOE file type writes for the routed experts.

It follows llama.cpp's reference quantizer (ggml-quants.c quantize_row_mxfp4_ref), so a file written here holds the
bytes llama-quantize writes; the test compares them. ggml stores the E2M1 levels doubled (kvalues_mxfp4: 0, 1, 2, 3,
4, 6, 8, 12) and halves the scale to match, which is the convention used below. (ggml's NVFP4 type has no
llama-quantize file type in the pinned llama.cpp, so nothing here writes it.)
"""

from __future__ import annotations

import numpy as np

from planner.quantize.block_helpers import F32, _nibbles32

# Midpoints between consecutive doubled E2M1 magnitudes (0, 1, 2, 3, 4, 6, 8, 12): a magnitude's code is the number
# of midpoints it exceeds. On a midpoint the smaller magnitude wins, as llama.cpp's best_index_mxfp4 keeps the first
# (lowest-index) level of equal error. The comparisons are exact: each midpoint times a power-of-two scale is a
# float32, and so is |x| - level next to x (Sterbenz), so no rounding can move a value across.
_MIDPOINTS = np.array([0.5, 1.5, 2.5, 3.5, 5.0, 7.0, 10.0], dtype=F32)


def e2m1_codes(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """4-bit codes of x (nb, k) on scales d (nb,) (doubled-level convention): the nearest level's index, bit 3 the
    sign of a nonzero level (a value that rounds to zero is code 0, never -0)."""
    a = np.abs(x)
    dd = d.astype(F32)[:, None]
    mag = np.zeros(x.shape, dtype=np.uint8)
    for m in _MIDPOINTS:
        mag += a > m * dd
    return mag | (((x < 0) & (mag > 0)).astype(np.uint8) << np.uint8(3))


def e8m0_half(e: np.ndarray) -> np.ndarray:
    """ggml's E8M0 scale, halved for the doubled levels: 2**(e - 128) as float32 (e of 0 and 1 are subnormal)."""
    e = e.astype(np.uint32)
    bits = np.where(e < 2, np.uint32(0x00200000) << e, (e - np.uint32(1)) << np.uint32(23))
    return bits.astype(np.uint32).view(F32)


def mxfp4_blocks(b: np.ndarray, out: np.ndarray, qw: np.ndarray | None = None, row: int = 32) -> np.ndarray:
    """MXFP4 blocks: (nb, 32) -> (nb, 17) = E8M0 exponent e | 16 bytes of codes (value j low nibble, j + 16 high).

    e = floor(log2 amax) - 2 + 127 (the OCP spec's shared exponent: E2M1's largest exponent is 2), so a block's
    largest value may clip to 1.5 x 2**floor(log2 amax); llama.cpp quantizes MXFP4 without importance weights (qw
    is ignored)."""
    amax = np.abs(b).max(axis=1)
    # floorf(log2f(amax)) as ggml computes it: log2f's float32 result rounds up to the next integer for an amax a few
    # float32 steps below a power of two, so the exact log2 is rounded to float32 before the floor, not taken from frexp
    with np.errstate(divide="ignore"):
        fl = np.floor(np.log2(amax.astype(np.float64)).astype(F32))
    # below 2**-125 ggml's float-to-uint8 conversion of a negative exponent is undefined in C; such a block clips to
    # e = 0 here (every code 0 either way: the values are ~1e-38)
    e = np.where(amax > 0, np.clip(np.nan_to_num(fl, neginf=0.0) - 2 + 127, 0, 255), 0).astype(np.uint8)
    q = e2m1_codes(b, e8m0_half(e))
    out[:, 0] = e
    out[:, 1:] = _nibbles32(q)
    return out
