"""GGUF encoders: every type round-trips through gguf-py's dequantizer with its SQNR floor, writes exactly the bytes
the formats table says, keeps all-zero / constant / extreme blocks finite, and the legacy types match gguf-py bit
for bit."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from gguf.quants import dequantize, quantize

from planner.formats import ggml_type
from planner.quantize import primitives as P
from planner.quantize.primitives import ENCODERS, encode, sqnr_db

# SQNR floors on N(0, 1) data (dB); what our encoders reach is 2-4 dB above each.
SQNR_FLOOR = {
    "F16": 60, "BF16": 45, "Q8_0": 35, "Q6_K": 28, "Q5_1": 24, "Q5_0": 24, "Q5_K": 24, "Q4_1": 18, "Q4_0": 18,
    "Q4_K": 18, "Q3_K": 12, "Q2_K": 6, "IQ4_NL": 19, "IQ4_XS": 19, "MXFP4": 17,
}
LOSSY = [t for t in ENCODERS if t != "F32"]


@pytest.fixture(scope="module")
def gaussian() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((48, 1024), dtype=np.float32)


def _roundtrip(name: str, x: np.ndarray, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    q = encode(name, x, threads=threads)
    return q, dequantize(q, QT[name]).reshape(x.shape)


@pytest.mark.parametrize("name", LOSSY)
def test_roundtrip_sqnr_and_bytes(name, gaussian):
    q, y = _roundtrip(name, gaussian)
    assert q.dtype == np.uint8
    assert q.nbytes == ggml_type(name).nbytes(gaussian.shape)
    assert q.shape == (gaussian.shape[0], ggml_type(name).nbytes((gaussian.shape[1],)))
    assert sqnr_db(gaussian, y) > SQNR_FLOOR[name]


def test_sqnr_ordering_follows_bits(gaussian):
    db = {n: sqnr_db(gaussian, _roundtrip(n, gaussian)[1]) for n in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0")}
    order = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0"]
    assert [db[n] for n in order] == sorted(db.values())
    # roughly 6 dB per bit for the k-quants
    assert 4 < db["Q5_K"] - db["Q4_K"] < 8 and 4 < db["Q6_K"] - db["Q5_K"] < 8


@pytest.mark.parametrize("name", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "BF16"])
def test_legacy_types_match_gguf_py_bytes(name, gaussian):
    ours = encode(name, gaussian, threads=1)
    ref = np.asarray(quantize(gaussian, QT[name])).view(np.uint8).reshape(ours.shape)
    # Only exact .5 ties may round differently (ggml and planner round Q8_0 halves away from zero, gguf-py to even).
    assert np.mean(ours == ref) > 0.9999


@pytest.mark.parametrize("name", LOSSY)
@pytest.mark.parametrize("kind", ["zeros", "constant", "negative-constant", "one-spike", "tiny", "huge", "sparse"])
def test_edge_blocks_stay_finite(name, kind):
    rng = np.random.default_rng(2)
    x = np.zeros((4, 512), dtype=np.float32)
    if kind == "constant":
        x[:] = 0.75
    elif kind == "negative-constant":
        x[:] = -3.0
    elif kind == "one-spike":
        x[:, 7] = 5.0
    elif kind == "tiny":
        x = rng.standard_normal(x.shape).astype(np.float32) * 1e-4  # below ~1e-5, fp16 scales underflow to 0 (as in ggml)
    elif kind == "huge":
        x = rng.standard_normal(x.shape).astype(np.float32) * 1e3
    elif kind == "sparse":
        x[rng.random(x.shape) < 0.05] = 1.0
    q, y = _roundtrip(name, x)
    assert np.isfinite(y).all()
    if kind == "zeros":
        assert not y.any()
    if kind in ("constant", "negative-constant"):
        assert np.allclose(y, x, rtol=0.02, atol=1e-3), (name, float(np.abs(y - x).max()))
    if kind in ("tiny", "huge", "sparse", "one-spike") and name != "Q2_K":
        assert sqnr_db(x, y) > 5


def test_threads_give_identical_bytes(gaussian):
    big = np.tile(gaussian, (8, 1))
    for name in ("Q4_K", "Q8_0", "Q6_K"):
        assert np.array_equal(encode(name, big, threads=1), encode(name, big, threads=3))


@pytest.mark.parametrize("name", ["Q4_K", "Q8_0"])
def test_preconditions(name):
    with pytest.raises(ValueError, match="multiple of the block"):
        encode(name, np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(ValueError, match="2-D rows"):
        P.quantize_q8_0(np.zeros(64, dtype=np.float32))
    with pytest.raises(ValueError, match="no encoder"):
        encode("IQ2_XXS", np.zeros((1, 256), dtype=np.float32))


def test_k_quant_row_of_one_superblock_and_odd_row_counts():
    x = np.random.default_rng(3).standard_normal((7, 256), dtype=np.float32)
    for name in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"):
        q, y = _roundtrip(name, x)
        assert q.shape == (7, ggml_type(name).layout.bytes_per_block)
        assert sqnr_db(x, y) > SQNR_FLOOR[name]


def test_float_conversions():
    x = np.array([[0.0, 1.0, -2.5, 1e-8, 65504.0, 1e6, -1e6, 3.14159]], dtype=np.float32)
    h = P.quantize_f16(x).view("<f2")
    assert h[0, 5] == 65504 and h[0, 6] == -65504  # saturated, not inf
    assert np.isfinite(h).all()
    bits = P.to_bf16_bits(np.array([1.0, 1.00390625, 1.01171875, np.nan], dtype=np.float32))
    assert list(bits[:3]) == [0x3F80, 0x3F80, 0x3F82]  # ties to even
    assert np.isnan(P.from_bf16_bits(bits[3:]))[0]


def test_fit_affine_and_symmetric_beat_plain_minmax(gaussian):
    sub = gaussian[:8].reshape(-1, 32)
    w = np.ones_like(sub)
    d, m = P.fit_affine(sub, w, 15, -1.0, 0.1, 20)
    assert (d > 0).all() and (m >= 0).all()
    q = np.clip(np.rint((sub + m[:, None]) / d[:, None]), 0, 15)
    err_fit = np.sum((d[:, None] * q - m[:, None] - sub) ** 2)
    lo, hi = np.minimum(sub.min(1), 0), sub.max(1)
    d0 = (hi - lo) / 15
    q0 = np.clip(np.rint((sub - lo[:, None]) / d0[:, None]), 0, 15)
    err_plain = np.sum((d0[:, None] * q0 + lo[:, None] - sub) ** 2)
    assert err_fit < err_plain
    ds = P.fit_symmetric(sub, sub * sub, 4, 6, 0.1)
    assert np.isfinite(ds).all() and (ds != 0).all()


def test_sqnr_db():
    x = np.ones(10)
    assert sqnr_db(x, x) == math.inf
    assert sqnr_db(np.zeros(3), np.ones(3)) == -math.inf
    assert abs(sqnr_db(x, x * 1.1) - 20) < 1e-9


# OCP MX v1.0 E2M1 magnitudes; MXFP4's scale is 2**(floor(log2 amax) - 2) for the block's largest magnitude amax
E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def _mxfp4_by_definition(x: np.ndarray) -> np.ndarray:
    """MXFP4 values of rows x, one 32-block at a time in float64: each value to the nearest level of its block's
    grid, a tie to the smaller magnitude (as llama.cpp's best_index_mxfp4 keeps the first of equal errors)."""
    out = np.empty(x.shape)
    for i, block in enumerate(x.reshape(-1, 32).astype(np.float64)):
        amax = np.abs(block).max()
        scale = 2.0 ** (math.frexp(amax)[1] - 1 - 2) if amax > 0 else 2.0 ** -127
        levels = np.concatenate([E2M1, -E2M1[1:]]) * scale  # +0 before every other level
        err = np.abs(levels[None, :] - block[:, None])
        pick = np.argmin(np.where(err == err.min(axis=1, keepdims=True), np.abs(levels), np.inf), axis=1)
        out.reshape(-1, 32)[i] = levels[pick]
    return out


def test_mxfp4_is_the_nearest_level_of_the_ocp_grid():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 256)).astype(np.float32) * np.float32(0.03)
    x[0, :32] = np.arange(32, dtype=np.float32) * np.float32(0.25)  # every level and every midpoint of one grid
    x[1, :32] = -x[0, :32]
    x[2, :32] = np.float32(7.0)  # amax 7 -> scale 1: clipped to 6, the OCP scale rule's known saturation
    x[3, :32] = 0.0
    q, y = _roundtrip("MXFP4", x)
    assert q.shape == (6, 256 // 32 * 17)
    assert np.array_equal(y.astype(np.float64), _mxfp4_by_definition(x))
    assert y[2, 0] == 6.0 and not y[3, :32].any()
    assert q[0, 0] == 2 - 2 + 127  # the E8M0 byte of block 0: floor(log2 7.75) - 2, biased by 127


@pytest.mark.real_runtime
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed (pip install '.[dev]')")
def test_mxfp4_bytes_are_llama_cpps():
    """The same bytes as ggml's own MXFP4 quantizer (run in a child process), over scales from 1e-30 to 1e3."""
    from native_jobs import JOB

    from planner.native import Worker

    rng = np.random.default_rng(5)
    rows = [rng.standard_normal((16, 512)).astype(np.float32) * np.float32(s) for s in (1e-30, 1e-4, 0.02, 1.0, 1e3)]
    x = np.concatenate(rows)
    x[0, :4] = [0.0, -0.0, 1e-38, -1e-38]
    x[1, :] = 0.0
    x[2, :64] = np.arange(64, dtype=np.float32) * np.float32(0.125)  # midpoints: ties
    # a block maximum a few float32 steps below a power of two: ggml's log2f rounds up to the next exponent there
    for i, k in enumerate(range(-100, 101, 25)):  # 9 rows, 8 blocks each 1..8 steps below 2**k
        x[3 + i] = 0.0
        v = np.float32(2.0 ** k)
        for j in range(8):
            v = np.nextafter(v, np.float32(0))
            x[3 + i, 32 * j:32 * j + 2] = [v, -v / np.float32(3)]
    with Worker(JOB) as w:
        _, (theirs,) = w.call("ggml_quantize", {"type": int(QT.MXFP4)}, [x], doing="ggml_quantize_chunk")
    ours = encode("MXFP4", x, threads=2)
    assert theirs.shape == ours.shape
    assert np.array_equal(ours, theirs)
