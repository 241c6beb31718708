"""The pure arithmetic of `planner eval`: log-softmax, perplexity, KL divergence against a compact reference,
top-1 agreement and the knee of a size/quality curve. numpy only; no runtime needed (tested on synthetic logits).

The reference (the 16-bit model's token distributions) is stored compactly per scored position: either the full
log-probability row (small vocabularies), or its top-k log-probabilities plus the log of the rest's total mass.
KL(P || Q) from the compact form keeps the top-k terms exactly and folds the rest into one bucket:
    sum_{i in top-k} P_i (log P_i - log Q_i)  +  R_P (log R_P - log R_Q),
with R_P, R_Q the mass outside the reference's top-k. By the log-sum inequality this is a lower bound on the full
KL divergence, and it is exact when the top-k hold all the mass (or when the rest is distributed alike).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FULL_ROWS_MAX_VOCAB = 4096  # vocabularies up to this size keep full rows in the reference cache
DEFAULT_TOP_K = 32
_TINY = 1e-30


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (logits: [n, vocab]) -> [n, vocab]."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    z = x - m
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def log1mexp_sum(logp: np.ndarray) -> np.ndarray:
    """log(1 - sum(exp(logp), axis=-1)): the log-mass outside the given entries, clamped away from log(0)."""
    s = np.exp(np.asarray(logp, dtype=np.float64)).sum(axis=-1)
    return np.log(np.clip(1.0 - s, _TINY, None))


@dataclass
class RefRows:
    """The reference distribution at n scored positions, compact.

    full: logp [n, vocab] (idx None, rest None); or top-k: idx [n, k] int32 token ids, logp [n, k] float32
    log-probabilities (descending), rest [n] float32 log of the mass outside the top-k. `targets` [n] int32 are the
    tokens that actually came next in the text."""

    logp: np.ndarray
    targets: np.ndarray
    idx: np.ndarray | None = None
    rest: np.ndarray | None = None

    @property
    def full(self) -> bool:
        return self.idx is None

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @property
    def top1(self) -> np.ndarray:
        """The reference's most likely token at each position."""
        if self.full:
            return self.logp.argmax(axis=-1).astype(np.int32)
        return self.idx[:, 0]


def compact(logp: np.ndarray, targets: np.ndarray, top_k: int = DEFAULT_TOP_K) -> RefRows:
    """Compact reference rows from full log-probabilities [n, vocab]: full rows for small vocabularies, else top-k."""
    logp = np.asarray(logp)
    targets = np.asarray(targets, dtype=np.int32)
    if logp.ndim != 2 or logp.shape[0] != targets.shape[0]:
        raise ValueError(f"logp {logp.shape} and targets {targets.shape} do not match")
    vocab = logp.shape[1]
    if vocab <= FULL_ROWS_MAX_VOCAB or top_k >= vocab:
        return RefRows(logp.astype(np.float32), targets)
    part = np.argpartition(-logp, top_k - 1, axis=1)[:, :top_k]
    vals = np.take_along_axis(logp, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1).astype(np.int32)
    top = np.take_along_axis(vals, order, axis=1)
    return RefRows(top.astype(np.float32), targets, idx, log1mexp_sum(top).astype(np.float32))


def kl_rows(ref_logp: np.ndarray, cand_logp: np.ndarray) -> np.ndarray:
    """KL(P || Q) in nats per row from full log-probability rows of both ([n, vocab])."""
    lp = np.asarray(ref_logp, dtype=np.float64)
    return (np.exp(lp) * (lp - np.asarray(cand_logp, dtype=np.float64))).sum(axis=-1)


def mean_kl(ref_logits: np.ndarray, cand_logits: np.ndarray) -> float:
    """Mean KL divergence of softmax(cand) from softmax(ref) over positions, nats (full logit rows [n, vocab])."""
    return float(kl_rows(log_softmax(ref_logits), log_softmax(cand_logits)).mean())


def kl_per_position(ref: RefRows, cand_logp: np.ndarray) -> np.ndarray:
    """KL(reference || candidate) in nats at each position (cand_logp: full candidate log-probs [n, vocab])."""
    q = np.asarray(cand_logp, dtype=np.float64)
    if q.shape[0] != len(ref):
        raise ValueError(f"{q.shape[0]} candidate rows for {len(ref)} reference rows")
    if ref.full:
        kl = kl_rows(ref.logp, q)
    else:
        lp = ref.logp.astype(np.float64)
        p = np.exp(lp)
        lq = np.take_along_axis(q, ref.idx.astype(np.int64), axis=1)
        kl = (p * (lp - lq)).sum(axis=1)
        rest_p = ref.rest.astype(np.float64)
        rest_q = log1mexp_sum(lq)
        kl += np.exp(rest_p) * (rest_p - rest_q)
    return np.maximum(kl, 0.0)  # rounding can make an identical row's KL a hair below zero


def target_nll(logp: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of each target token (logp: [n, vocab])."""
    t = np.asarray(targets, dtype=np.int64)
    return -np.take_along_axis(np.asarray(logp, dtype=np.float64), t[:, None], axis=1)[:, 0]


def ref_nll(ref: RefRows) -> np.ndarray:
    """The reference's own NLL of the targets: exact for full rows; from the top-k where the target is in them
    (else NaN, so the caller keeps the reference's NLL from the pass that made it)."""
    if ref.full:
        return target_nll(ref.logp, ref.targets)
    hit = ref.idx == ref.targets[:, None]
    out = np.full(len(ref), np.nan)
    rows = hit.any(axis=1)
    out[rows] = -ref.logp[hit].astype(np.float64)
    return out


def perplexity(nll: Sequence[float] | np.ndarray) -> float:
    """exp(mean NLL); NaN for no tokens."""
    a = np.asarray(nll, dtype=np.float64)
    return float(math.exp(a.mean())) if a.size else math.nan


def perplexity_error(nll: Sequence[float] | np.ndarray) -> float:
    """Standard error of the perplexity estimate (delta method, as llama.cpp's perplexity tool reports it)."""
    a = np.asarray(nll, dtype=np.float64)
    if a.size < 2:
        return math.nan
    return float(math.exp(a.mean()) * a.std(ddof=1) / math.sqrt(a.size))


def top1_agreement(ref: RefRows, cand_logp: np.ndarray) -> float:
    """Fraction of positions where the candidate's most likely token is the reference's."""
    if len(ref) == 0:
        return math.nan
    return float((np.asarray(cand_logp).argmax(axis=1) == ref.top1).mean())


def knee(sizes: Sequence[float], losses: Sequence[float]) -> int | None:
    """Index of the knee of a size/quality-loss curve: the point farthest below the chord from the smallest to the
    largest entry, on axes normalised to [0, 1] (Kneedle). Past it, extra bits buy little. None for fewer than
    three points or when no point lies below the chord."""
    n = len(sizes)
    if n != len(losses):
        raise ValueError("sizes and losses differ in length")
    if n < 3:
        return None
    order = sorted(range(n), key=lambda i: sizes[i])
    x = np.array([sizes[i] for i in order], dtype=np.float64)
    y = np.array([losses[i] for i in order], dtype=np.float64)
    if not np.all(np.isfinite(y)) or x[-1] == x[0]:
        return None
    xs = (x - x[0]) / (x[-1] - x[0])
    span = y.max() - y.min()
    if span <= 0:
        return None
    ys = (y - y.min()) / span
    chord = ys[0] + (ys[-1] - ys[0]) * xs
    below = chord - ys
    below[0] = below[-1] = 0.0
    j = int(np.argmax(below))
    return order[j] if below[j] > 1e-9 else None
