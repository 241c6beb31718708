"""GPTQ (Frantar et al. 2022, arXiv:2210.17323, Algorithm 1) in torch: quantize a linear layer's weight one input
column at a time, pushing each column's rounding error onto the columns not yet quantized through the Cholesky
factor of the damped inverse input Hessian, with lazy batch updates (the error of a block of columns is applied
to the rest of the matrix once per block).

Options as GPTQ implementations name them: group size (scales per group of input columns), act-order (`desc_act`:
columns in order of decreasing Hessian diagonal, the groups formed in that order and recorded in `g_idx`), damping
(`damp_percent` of the mean diagonal added to H) and symmetric or asymmetric grids. The grids are group_quant's:
fp16-rounded scales, so the codes fit the scale a loader reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    import torch

F16_MAX = 65504.0


@dataclass
class GPTQResult:
    """One layer: codes q (out, in) uint8, scales (out, G) float32, zeros (out, G) uint8, g_idx (in,) int32."""

    q: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray
    g_idx: np.ndarray

    def dequantize(self) -> np.ndarray:
        """(q - zero[g_idx]) * scale[g_idx], (out, in) float32; one group at a time (no (out, in) temporaries)."""
        out = self.q.astype(np.float32)
        for j in range(self.scales.shape[1]):
            cols = np.nonzero(self.g_idx == j)[0]
            out[:, cols] = (out[:, cols] - self.zeros[:, j:j + 1].astype(np.float32)) * self.scales[:, j:j + 1]
        return out


def _grid(w: "torch.Tensor", bits: int, sym: bool) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Scale and zero per row of w (out, k), as group_quant.group_quantize chooses them (fp16 scales)."""
    import torch

    maxq = (1 << bits) - 1
    if sym:
        amax = w.abs().amax(dim=1)
        scale = (2 * amax / maxq).clamp(max=F16_MAX).half().float()
        zero = torch.full_like(scale, (maxq + 1) // 2)
    else:
        lo = w.amin(dim=1).clamp(max=0)
        hi = w.amax(dim=1).clamp(min=0)
        scale = ((hi - lo) / maxq).clamp(max=F16_MAX).half().float()
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero = torch.round(-lo / safe).clamp(0, maxq)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero group: q = zero gives back 0
    return scale, zero


def gptq_quantize(w: np.ndarray | "torch.Tensor" | Callable[[], np.ndarray | "torch.Tensor"], h: "torch.Tensor",
                  bits: int, group_size: int | None, *, sym: bool = True, act_order: bool = True, damp: float = 0.01,
                  block: int = 128) -> GPTQResult:
    """GPTQ-quantize w (out, in) float given the input Hessian h (in, in) = 2 X^T X / N of its calibration inputs.

    h is overwritten (a 7B down_proj's Hessian is 485 MB: no copies of it are kept). w may be a function that
    returns the weight: it is called once the inverse Hessian is built, so the weight is not resident while two
    Hessian-sized matrices are (the peak of a 7B block: 180 MB less for down_proj), and what it returns is handed
    over: GPTQ overwrites it (act-order permutes it in place). A weight passed as an array is left alone."""
    import torch

    n = h.shape[0]
    g = group_size or n
    if n % g:
        raise ValueError(f"row length {n} is not a multiple of the group size {g}")
    if h.shape != (n, n):
        raise ValueError(f"Hessian shape {tuple(h.shape)} is not square")
    H = h if h.dtype == torch.float32 else h.float()
    del h
    diag = torch.diagonal(H)
    dead = diag == 0  # inputs never active: their weights cannot matter, zero them (GPTQ reference code)
    diag[dead] = 1
    perm = torch.argsort(diag, descending=True) if act_order else torch.arange(n)
    diag.add_(damp * float(diag.mean()))  # the mean diagonal does not depend on the column order
    del diag
    # The Cholesky below factors the act-ordered Hessian with its order reversed: both permutations in one index,
    # and each (in, in) temporary freed as soon as the next exists (a 7B down_proj's is 485 MB): at most two alive.
    rev = perm.flip(0)
    held = [H]
    del H
    Hinv = _inverse_cholesky_upper(held, rev)
    owned = callable(w)  # a weight the function made is ours to overwrite
    W = torch.as_tensor(w() if owned else w, dtype=torch.float32)
    del w
    if W.shape[1] != n:
        raise ValueError(f"Hessian shape {(n, n)} does not match {W.shape[1]} input columns")
    out = W.shape[0]
    if owned:
        _permute_columns(W, perm)  # in place: no second (out, in) copy beside the inverse Hessian
    else:
        W = W[:, perm]  # a copy: the caller's weight is left alone
    W[:, dead[perm]] = 0
    block = max(g, block // g * g) if group_size else block  # whole groups per block: a group's grid is set at its start
    Q = torch.zeros(out, n, dtype=torch.uint8)
    G = n // g
    scales = torch.zeros(out, G)
    zeros = torch.zeros(out, G)
    if not group_size:
        s, z = _grid(W, bits, sym)
        scales[:, 0], zeros[:, 0] = s, z
    threads = torch.get_num_threads()
    try:
        _columns(W, Hinv, Q, scales, zeros, bits, g if group_size else 0, sym, block, threads)
    finally:
        torch.set_num_threads(threads)
    inv = torch.argsort(perm)
    g_idx = (torch.arange(n) // g)[inv]  # the group each original column was quantized in
    return GPTQResult(Q[:, inv].numpy(), scales.numpy().astype(np.float32), zeros.numpy().astype(np.uint8),
                      g_idx.numpy().astype(np.int32))


def _permute_columns(W: "torch.Tensor", perm: "torch.Tensor", rows: int = 256) -> None:
    """W[:, perm] written into W a band of rows at a time (the same values as the copy, one band's temporary)."""
    for r in range(0, W.shape[0], rows):
        W[r:r + rows] = W[r:r + rows][:, perm]


def _columns(W: "torch.Tensor", Hinv: "torch.Tensor", Q: "torch.Tensor", scales: "torch.Tensor", zeros: "torch.Tensor",
             bits: int, g: int, sym: bool, block: int, threads: int) -> None:
    """GPTQ's loop over columns (in place): quantize a column, spread its error over the later columns."""
    import torch

    n = W.shape[1]
    maxq = (1 << bits) - 1
    for i1 in range(0, n, block):
        i2 = min(i1 + block, n)
        # One thread for the column loop: its ops are small, and waking a second thread for each costs more
        # than the op (6x slower measured on 2 busy cores); all threads for the block update below.
        torch.set_num_threads(1)
        W1 = W[:, i1:i2].clone()
        Err = torch.zeros_like(W1)
        Hi = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            grp = col // g if g else 0
            if g and col % g == 0:  # this group's grid from its columns as updated so far
                s, z = _grid(W1[:, i:i + g], bits, sym)
                scales[:, grp], zeros[:, grp] = s, z
            s, z = scales[:, grp], zeros[:, grp]
            x = W1[:, i]
            q = torch.clamp(torch.round(x / s) + z, 0, maxq)
            Q[:, col] = q.to(torch.uint8)
            err = (x - (q - z) * s) / Hi[i, i]
            W1[:, i:] -= err[:, None] * Hi[i, i:][None, :]
            Err[:, i] = err
        torch.set_num_threads(threads)
        W[:, i2:] -= Err @ Hinv[i1:i2, i2:]


def _inverse_cholesky_upper(held: list["torch.Tensor"], rev: "torch.Tensor", step: int = 1024) -> "torch.Tensor":
    """Upper Cholesky factor U of (P H P)^-1 (U^T U = (P H P)^-1, P the act-order permutation), given H (taken out of
    `held`, so that it is freed here) and rev, the act order reversed. More damping when H is not numerically
    positive definite.

    With R = P J (J the order reversal) and R^T H R = L L^T, U = J L^-1 J: one Cholesky and one triangular inverse,
    no second factorisation of H^-1 (torch.cholesky_inverse is ~50x slower on CPU here). L^-1 is solved `step`
    columns at a time straight into U's reversed place, so no identity matrix and no flipped copy are made: two
    (in, in) matrices at most (a 7B down_proj's Hessian is 485 MB)."""
    import torch

    A = held.pop()[rev]  # rows; H itself is freed here (the caller keeps no reference)
    A = A[:, rev]
    n = A.shape[0]
    mean = float(torch.diagonal(A).mean())
    added = 0.0
    for extra in (0.0, 0.01, 0.1, 1.0):
        torch.diagonal(A).add_((extra - added) * mean)
        added = extra
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) == 0:
            break
        del L
    else:
        raise ValueError("the calibration Hessian is not positive definite even with damping")
    del A
    U = torch.zeros(n, n)
    for j in range(0, n, step):
        b = min(step, n - j)
        # columns j..j+b of L^-1: zero above row j, below it the solve of L[j:, j:] against the identity's columns
        eye = torch.zeros(n - j, b)
        eye[:b, :b] = torch.eye(b)
        cols = torch.linalg.solve_triangular(L[j:, j:], eye, upper=False)
        U[: n - j, n - j - b: n - j] = cols.flip(0, 1)  # J L^-1 J: entry (r, c) goes to (n-1-r, n-1-c)
    return U
