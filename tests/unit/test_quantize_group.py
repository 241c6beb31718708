"""Group quantizers for GPU checkpoints: round trips with SQNR floors, packing layouts, byte counts equal to the
formats table's GroupQuant.nbytes, and the FP8 E4M3 codec checked exhaustively against its definition."""

from __future__ import annotations

import numpy as np
import pytest

from planner.formats import GroupQuant, get_format
from planner.models.inventory import TensorInfo
from planner.quantize import group_quant as gq
from planner.quantize.primitives import sqnr_db


@pytest.fixture(scope="module")
def w() -> np.ndarray:
    return np.random.default_rng(5).standard_normal((96, 512), dtype=np.float32) * 0.02


def _enc(fmt: str, shape=(96, 512)) -> GroupQuant:
    """The GroupQuant the format assigns to a block linear of this shape."""
    from planner.models.profiles import load_registry

    spec = load_registry().get("llama-3.1-8b")
    t = TensorInfo("blk.0.attn_q.weight", shape, "attn_q", 0)
    enc = get_format(fmt).assignments(spec, [t])[0].encoding
    assert isinstance(enc, GroupQuant)
    return enc


@pytest.mark.parametrize("bits,floor", [(4, 17), (8, 40)])
@pytest.mark.parametrize("group", [128, 32, None])
def test_group_quantize_roundtrip(w, bits, floor, group):
    q, s, z = gq.group_quantize(w, bits, group)
    g = group or w.shape[1]
    assert q.shape == w.shape and q.dtype == np.uint8 and int(q.max()) < 2**bits
    assert s.shape == z.shape == (w.shape[0], w.shape[1] // g)
    assert np.array_equal(s, s.astype(np.float16).astype(np.float32))  # fp16-representable
    assert sqnr_db(w, gq.group_dequantize(q, s, z, group)) > (floor if group else floor - 3)


def test_group_quantize_asymmetric_and_zero_groups():
    x = np.zeros((8, 128), dtype=np.float32)
    x[:4] = np.linspace(0, 1, 128, dtype=np.float32)
    q, s, z = gq.group_quantize(x, 4, 64, symmetric=False)
    y = gq.group_dequantize(q, s, z, 64)
    assert np.isfinite(y).all() and not y[4:].any()
    assert sqnr_db(x[:4], y[:4]) > 25
    with pytest.raises(ValueError, match="multiple of the group"):
        gq.group_quantize(np.zeros((2, 100), dtype=np.float32), 4, 128)


@pytest.mark.parametrize("bits,fmt", [(4, "gptq-int4"), (8, "gptq-int8")])
def test_gptq_pack_layout_and_bytes(w, bits, fmt):
    q, s, z = gq.group_quantize(w, bits, 128)
    p = gq.pack_gptq(q, s, z, bits, 128)
    out, n = w.shape
    per = 32 // bits
    assert p["qweight"].shape == (n // per, out) and p["qweight"].dtype == np.int32
    assert p["qzeros"].shape == (n // 128, out // per) and p["scales"].shape == (n // 128, out)
    assert p["scales"].dtype == np.float16 and list(p["g_idx"][[0, 127, 128, n - 1]]) == [0, 0, 1, n // 128 - 1]
    # symmetric zero point 2**(bits-1), stored minus one (AutoGPTQ v1): 0x77777777 / 0x7f7f7f7f
    assert np.all(p["qzeros"].view(np.uint32) == (0x77777777 if bits == 4 else 0x7F7F7F7F))
    # value j of a qweight word is input row 8i + j (4-bit) at bits 4j
    assert (p["qweight"].view(np.uint32)[0, 0] >> (bits * 1)) & (2**bits - 1) == q[0, 1]
    q2, s2, z2 = gq.unpack_gptq(p["qweight"], p["qzeros"], p["scales"], bits)
    assert np.array_equal(q2, q) and np.array_equal(z2, z) and np.array_equal(s2, s)
    assert sum(a.nbytes for a in p.values()) == _enc(fmt).nbytes(w.shape)


def test_nf4_and_double_quant(w):
    assert np.all(np.diff(gq.NF4_LEVELS) > 0) and gq.NF4_LEVELS[7] == 0 and gq.NF4_LEVELS[[0, -1]].tolist() == [-1, 1]
    packed, absmax = gq.nf4_quantize(w)
    assert packed.shape == (w.size // 2,) and absmax.shape == (w.size // 64,)
    y = gq.nf4_dequantize(packed, absmax).reshape(w.shape)
    assert sqnr_db(w, y) > 18
    # first value of a pair in the high nibble, as bitsandbytes packs it
    assert gq.NF4_LEVELS[packed[0] >> 4] * absmax[0] == pytest.approx(y.reshape(-1)[0])
    codes, nested, offset = gq.double_quantize(absmax)
    assert codes.dtype == np.uint8 and nested.shape == (-(-absmax.size // 256),)
    back = gq.double_dequantize(codes, nested, offset)
    assert np.max(np.abs(back - absmax)) < 0.01 * absmax.max()
    assert sqnr_db(w, gq.nf4_dequantize(packed, back).reshape(w.shape)) > 18
    assert packed.nbytes + codes.nbytes == _enc("nf4").nbytes(w.shape)


def test_e4m3_codec_exhaustive():
    codes = np.arange(256, dtype=np.uint8)
    vals = gq.e4m3_decode(codes)
    assert np.isnan(vals[0x7F]) and np.isnan(vals[0xFF])
    assert vals[0x7E] == 448 and vals[0x08] == 2.0**-6 and vals[0x01] == 2.0**-9 and vals[0x80] == 0
    finite = vals[np.isfinite(vals)]
    # every representable value encodes to itself
    assert np.array_equal(gq.e4m3_decode(gq.e4m3_encode(finite)), finite)
    y = np.random.default_rng(6).standard_normal(20000).astype(np.float32) * np.exp2(
        np.random.default_rng(7).integers(-14, 10, 20000)).astype(np.float32)
    got = gq.e4m3_decode(gq.e4m3_encode(y))
    clipped = np.clip(y, -448, 448)
    nearest = np.abs(finite[None, :] - clipped[:, None]).min(axis=1)
    assert np.all(np.abs(got - clipped) <= nearest)  # round to nearest
    assert np.isfinite(got).all()


def test_fp8_per_channel_and_per_tensor(w):
    codes, scale = gq.fp8_quantize(w)
    assert codes.shape == w.shape and scale.shape == (w.shape[0], 1) and scale.dtype == np.float32
    assert sqnr_db(w, gq.fp8_dequantize(codes, scale)) > 28
    assert codes.nbytes + scale.nbytes == _enc("fp8").nbytes(w.shape)
    codes_t, scale_t = gq.fp8_quantize(w, per_channel=False)
    assert scale_t.shape == (1,) and sqnr_db(w, gq.fp8_dequantize(codes_t, scale_t)) > 25
    assert codes_t.nbytes + scale_t.nbytes == _enc("fp8-pertensor").nbytes(w.shape)
    z, zs = gq.fp8_quantize(np.zeros((2, 16), dtype=np.float32))
    assert not gq.fp8_dequantize(z, zs).any()


@pytest.mark.parametrize("bits,floor", [(4, 18), (8, 42)])
def test_mlx_roundtrip_and_bytes(w, bits, floor):
    packed, scales, biases = gq.mlx_quantize(w, bits)
    assert packed.dtype == np.uint32 and packed.shape == (w.shape[0], w.shape[1] * bits // 32)
    assert scales.dtype == biases.dtype == np.float16 and scales.shape == (w.shape[0], w.shape[1] // 64)
    assert sqnr_db(w, gq.mlx_dequantize(packed, scales, biases, bits)) > floor
    assert packed.nbytes + scales.nbytes + biases.nbytes == _enc(f"mlx-{bits}bit").nbytes(w.shape)
    c = np.full((1, 64), 0.3, dtype=np.float32)
    assert np.allclose(gq.mlx_dequantize(*gq.mlx_quantize(c, bits), bits), 0.3, atol=1e-3)
