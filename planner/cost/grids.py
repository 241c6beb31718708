"""The 4-bit code grids of the group quantizers and their rounding error, from their definitions.

Families that share a group layout but differ in the grid their codes stand for (bitsandbytes NF4 against FP4,
NVFP4/MXFP4's E2M1 against bitsandbytes' FP4) lose in proportion to the grid's mean squared rounding error on the
weights: a loss in the small-noise regime is quadratic in the weight error. quality.GRID_PRIOR_OFFSET holds the log
ratios that grid_offset computes here, so a family without rows of its own (or with few) starts from its sibling's
level times the ratio of the two grids' errors instead of the sibling's level alone; a test recomputes them.

The errors are Monte Carlo averages over blocks of independent Gaussian and Laplace weights (real weights' tails lie
between: quality.GAMMA fits 1.63 between their 1 and 2), each block scaled as the format scales it.
"""

from __future__ import annotations

import math

# bitsandbytes' NF4 code values (bitsandbytes/functional.py get_4bit_type("nf4"): quantiles of N(0, 1),
# create_normal_map(offset=0.9677083, use_extra_value=True); QLoRA, arXiv 2305.14314), scaled by the block's absmax
NF4 = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0)
# bitsandbytes' FP4 (get_4bit_type("fp4"): 1 sign, 2 exponent, 1 mantissa bit with exponent bias 2, values
# 0, 0.0625, 2, 3, 4, 6, 8, 12 divided by 12), scaled by the block's absmax
BNB_FP4 = tuple(sorted({s * v / 12 for v in (0, 0.0625, 2, 3, 4, 6, 8, 12) for s in (1, -1)}))
# OCP E2M1 (OCP Microscaling Formats spec v1.0, table 6: 0, 0.5, 1, 1.5, 2, 3, 4, 6): NVFP4 scales each block of 16 so
# that its absmax maps to 6 (an FP8 E4M3 scale; its own rounding, <= 2^-4 relative, is ignored here)
E2M1 = tuple(sorted({s * v for v in (0, 0.5, 1, 1.5, 2, 3, 4, 6) for s in (1, -1)}))
E2M1_MAX = 6.0
E2M1_EMAX = 2  # the largest E2M1 exponent: MX's shared scale is 2^(floor(log2 absmax) - 2) (OCP MX v1.0, sec. 6.3)

GRIDS = ("int4-asym", "int4-sym", "nf4", "bnb-fp4", "e2m1", "mx-e2m1")


def _nearest(x, grid):
    """Each x rounded to its nearest grid value (numpy arrays)."""
    import numpy as np

    g = np.asarray(grid)
    i = np.clip(np.searchsorted(g, x), 1, len(g) - 1)
    lo, hi = g[i - 1], g[i]
    return np.where(x - lo < hi - x, lo, hi)


def grid_mse(grid: str, group: int, dist: str, blocks: int = 1 << 15, seed: int = 0) -> float:
    """Mean squared rounding error per weight of `grid` on blocks of `group` i.i.d. weights ('gauss' or 'laplace', unit
    scale), each block scaled as the format does: int4-asym 16 uniform levels from the block's min to max (RTN, AWQ,
    GPTQ with sym=False); int4-sym GPTQ's symmetric grid (step 2 absmax / 15 around a zero of 8); nf4 / bnb-fp4 the
    block's absmax onto +-1; e2m1 the absmax onto 6 (NVFP4); mx-e2m1 a power-of-two scale 2^(floor(log2 absmax) - 2),
    values beyond 6 saturating (MXFP4)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal if dist == "gauss" else rng.laplace)(size=(blocks, group))
    amax = np.abs(w).max(axis=1, keepdims=True)
    if grid == "int4-asym":
        lo, hi = w.min(axis=1, keepdims=True), w.max(axis=1, keepdims=True)
        step = (hi - lo) / 15
        q = np.round((w - lo) / step) * step + lo
    elif grid == "int4-sym":  # GPTQ's sym=True: step 2 absmax / 15, zero 8, codes 0..15 (AutoGPTQ/GPTQModel quantizer)
        step = 2 * amax / 15
        q = (np.clip(np.round(w / step) + 8, 0, 15) - 8) * step
    elif grid in ("nf4", "bnb-fp4"):
        q = _nearest(w / amax, NF4 if grid == "nf4" else BNB_FP4) * amax
    elif grid == "e2m1":
        scale = amax / E2M1_MAX
        q = _nearest(w / scale, E2M1) * scale
    elif grid == "mx-e2m1":
        scale = 2.0 ** (np.floor(np.log2(amax)) - E2M1_EMAX)
        q = _nearest(np.clip(w / scale, -E2M1_MAX, E2M1_MAX), E2M1) * scale
    else:
        raise ValueError(f"unknown grid {grid!r}: expected one of {', '.join(GRIDS)}")
    return float(((w - q) ** 2).mean())


def grid_offset(grid: str, parent_grid: str, group: int) -> float:
    """ln(grid's rounding error / parent_grid's) at one group size, the mean of the Gaussian and Laplace cases."""
    return sum(math.log(grid_mse(grid, group, d) / grid_mse(parent_grid, group, d)) for d in ("gauss", "laplace")) / 2
