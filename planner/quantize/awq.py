"""AWQ (Lin et al. 2023, arXiv:2306.00978): scale the input channels that carry large activations up before
rounding (and the op feeding them down by the same factor), searching one exponent per group of linears.

For a group of linears that share an input x (q/k/v; gate/up; down; o when v_proj's rows line up with o_proj's
inputs), AutoAWQ's rule: s = mean|x|^a / mean(|W| / max|W| per group)^(1-a), normalised by sqrt(max s * min s), for
a in 0, 1/20, ..., 19/20, keeping the a whose quantized outputs are closest to the float outputs. Here that output
error is computed exactly from the group's input Hessian: ||(W' - W) X^T||^2 = tr((W' - W) X^T X (W' - W)^T), with
W' = Q(W diag(s)) diag(1/s), so no activations are kept. The weight grid is AutoAWQ's: asymmetric, group 128,
fp16 scales, integer zero points, min and max of the group (zero need not be inside).

Then AutoAWQ's clip search (`_search_best_clip`): for every linear but q_proj and k_proj, each (output row, group)
gets the clipping range +-m (1 - i/20), i = 0..9, m its absmax, whose quantized values give the smallest output
error over the calibration inputs of that group alone, e^T H_g e with e the error against the unclipped weight and
H_g the group's (group x group) block of the input Hessian, scaled like the inputs (x / s). AutoAWQ scores the same
error on 512 sampled tokens; the Hessian block scores it on all of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

F16_MAX = 65504.0
N_GRID = 20  # AutoAWQ's auto_scale n_grid (also its clip search's)
MAX_SHRINK = 0.5  # AutoAWQ's _compute_best_clip max_shrink: ranges down to half the absmax are tried
NO_CLIP = ("self_attn.q_proj", "self_attn.k_proj")  # AutoAWQ's avoid_clipping ("q_", "k_"): attention scores


def awq_grid(w: "torch.Tensor", bits: int, group_size: int) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """AutoAWQ's asymmetric grid: codes q (out, in) and scales, zeros (out, in // g): w ~ (q - zero) * scale."""
    import torch

    out, n = w.shape
    maxq = (1 << bits) - 1
    grp = w.reshape(out, n // group_size, group_size)
    hi, lo = grp.amax(dim=2), grp.amin(dim=2)
    scale = ((hi - lo).clamp(min=1e-5) / maxq).clamp(max=F16_MAX).half().float()
    zero = torch.clamp(-torch.round(lo / scale), 0, maxq)
    q = torch.clamp(torch.round(grp / scale[:, :, None]) + zero[:, :, None], 0, maxq)
    return q.reshape(out, n), scale, zero


def awq_fake_quant(w: "torch.Tensor", bits: int, group_size: int) -> "torch.Tensor":
    """Quantize and dequantize w on AWQ's grid."""
    q, s, z = awq_grid(w, bits, group_size)
    out, n = w.shape
    return ((q.reshape(out, -1, group_size) - z[:, :, None]) * s[:, :, None]).reshape(out, n)


def output_error(ws: list["torch.Tensor"], approx: list["torch.Tensor"], h: "torch.Tensor") -> float:
    """Sum over the group of tr(E H E^T), E = approx - w: the squared output error over the calibration inputs."""
    import torch

    total = 0.0
    for w, a in zip(ws, approx):
        e = a - w
        total += float(((e @ h) * e).sum(dtype=torch.float64))
    return total


def search_scales(ws: list["torch.Tensor"], x_mean_abs: np.ndarray, h: "torch.Tensor", bits: int = 4,
                  group_size: int = 128) -> tuple["torch.Tensor", float, float]:
    """The per-input-channel scales (in,) that minimise the group's quantized output error; also the chosen exponent
    and the error ratio against plain rounding (scales of one)."""
    import torch

    w_cat = torch.cat(ws, 0)
    out, n = w_cat.shape
    grp = w_cat.abs().reshape(out, n // group_size, group_size)
    w_mean = (grp / grp.amax(dim=2, keepdim=True).clamp(min=1e-12)).reshape(out, n).mean(0)
    x_mean = torch.from_numpy(np.asarray(x_mean_abs, dtype=np.float32))
    hd = h.float()
    base = output_error(ws, [awq_fake_quant(w, bits, group_size) for w in ws], hd)
    best = (base, torch.ones(n), 0.0)
    for i in range(1, N_GRID):
        a = i / N_GRID
        s = (x_mean.pow(a) / (w_mean.pow(1 - a) + 1e-4)).clamp(min=1e-4)
        s = s / torch.sqrt(s.max() * s.min())
        err = output_error(ws, [awq_fake_quant(w * s, bits, group_size) / s for w in ws], hd)
        if err < best[0]:
            best = (err, s, a)
    return best[1], best[2], best[0] / base if base > 0 else 1.0


def group_blocks(h: "torch.Tensor", group_size: int, scales: "torch.Tensor | None" = None) -> "torch.Tensor":
    """The (G, g, g) diagonal blocks of the input Hessian h (in, in), for inputs divided by `scales` (in,) if given."""
    import torch

    n = h.shape[0]
    G = n // group_size
    blocks = torch.stack([h[j * group_size:(j + 1) * group_size, j * group_size:(j + 1) * group_size]
                          for j in range(G)]).float()
    if scales is not None:
        inv = (1.0 / scales.float()).reshape(G, group_size)
        blocks = blocks * inv[:, :, None] * inv[:, None, :]
    return blocks


def search_clip(w: "torch.Tensor", blocks: "torch.Tensor", bits: int = 4, group_size: int = 128,
                rows: int = 512) -> tuple["torch.Tensor", float]:
    """AutoAWQ's clip search on w (out, in) (already scaled): the clipping bound (out, G) of each row's groups, and
    the group-local output error with it over the error without clipping (1.0: no clipping helped)."""
    import torch

    out, n = w.shape
    G = n // group_size
    best_max = torch.empty(out, G)
    err_clip = err_none = 0.0
    for a in range(0, out, rows):  # rows at a time: the (rows, G, g) temporaries, not (out, in) x steps
        wr = w[a:a + rows].reshape(-1, G, group_size)
        org_max = wr.abs().amax(dim=2)
        best = org_max.clone()
        min_err = torch.full_like(org_max, float("inf"))
        for i in range(int(MAX_SHRINK * N_GRID)):
            m = org_max * (1 - i / N_GRID)
            cur = torch.maximum(torch.minimum(wr, m[:, :, None]), -m[:, :, None])
            e = awq_fake_quant(cur.reshape(-1, n), bits, group_size).reshape(wr.shape) - wr
            err = torch.einsum("rgk,gkl,rgl->rg", e, blocks, e)
            if i == 0:
                err_none += float(err.sum(dtype=torch.float64))
            better = err < min_err
            min_err = torch.where(better, err, min_err)
            best = torch.where(better, m, best)
        err_clip += float(min_err.sum(dtype=torch.float64))
        best_max[a:a + rows] = best
    return best_max, err_clip / err_none if err_none > 0 else 1.0


def apply_clip(w: "torch.Tensor", max_val: "torch.Tensor", group_size: int) -> "torch.Tensor":
    """w (out, in) clamped to +-max_val (out, G) group by group."""
    import torch

    out, n = w.shape
    m = max_val[:, :, None]
    return torch.maximum(torch.minimum(w.reshape(out, -1, group_size), m), -m).reshape(out, n)


_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # AutoAWQ's GEMM packing: nibble i of a word holds column 8c + _ORDER[i]


def pack_awq(q: np.ndarray, scales: np.ndarray, zeros: np.ndarray) -> dict[str, np.ndarray]:
    """AutoAWQ GEMM tensors: q (out, in) -> qweight int32 (in, out / 8); zeros (out, G) -> qzeros int32 (G, out / 8);
    scales -> (G, out) float16. Columns are packed 8 to a word in AutoAWQ's interleaved order."""
    def pack(v: np.ndarray) -> np.ndarray:  # (rows, out) -> (rows, out / 8)
        rows, out = v.shape
        if out % 8:
            raise ValueError(f"{out} output channels do not pack 8 to an int32 (AWQ)")
        u = v.astype(np.uint32).reshape(rows, out // 8, 8)
        word = np.zeros((rows, out // 8), dtype=np.uint32)
        for i, c in enumerate(_ORDER):
            word |= u[:, :, c] << np.uint32(4 * i)
        return word.view(np.int32)

    return {"qweight": pack(q.T), "qzeros": pack(zeros.T), "scales": scales.T.astype(np.float16)}


def unpack_awq(qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Dequantize AutoAWQ GEMM tensors: (out, in) float32."""
    def unpack(v: np.ndarray) -> np.ndarray:
        u = v.view(np.uint32)
        rows, words = u.shape
        out = np.empty((rows, words, 8), dtype=np.uint8)
        for i, c in enumerate(_ORDER):
            out[:, :, c] = (u >> np.uint32(4 * i)) & 0xF
        return out.reshape(rows, words * 8)

    q = unpack(qweight).astype(np.float32)  # (in, out)
    z = unpack(qzeros).astype(np.float32)  # (G, out)
    g = q.shape[0] // z.shape[0]
    s = scales.astype(np.float32)
    return ((q - np.repeat(z, g, axis=0)) * np.repeat(s, g, axis=0)).T.copy()
