"""Calibration forward pass, GPTQ and AWQ: against transformers' own model, against round to nearest, and the
written checkpoints' layouts and configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from planner.measure.quality.dequant import _Checkpoint, dequantize_gptq, write_dequantized  # noqa: E402
from planner.quantize.awq import awq_fake_quant, awq_grid, pack_awq, search_scales, unpack_awq  # noqa: E402
from planner.quantize.calib import LayerRunner, calibration_tokens, collect_activation_stats  # noqa: E402
from planner.quantize.config import AWQConfig, GPTQConfig  # noqa: E402
from planner.quantize.group_quant import group_dequantize, group_quantize, pack_gptq  # noqa: E402
from planner.quantize.gptq import gptq_quantize  # noqa: E402
from planner.quantize.pipeline import quantize_model  # noqa: E402
from planner.quantize.sources import open_source  # noqa: E402
from quantize_models import make_hf_model  # noqa: E402

SAMPLE = (Path(__file__).resolve().parents[2] / "planner" / "data" / "eval_sample.txt").read_text()
CALIB = SAMPLE[:3000]  # ~3000 byte-level tokens with the test tokenizer: a few sequences, seconds per run


def _tiny(path: Path, **kw) -> Path:
    make_hf_model(path, hidden=256, intermediate=512, layers=2, heads=4, kv_heads=2, vocab=512, dtype="F32", **kw)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _tiny(tmp_path_factory.mktemp("calib") / "llama")


def _our_logits(model_dir: Path, tokens: np.ndarray) -> torch.Tensor:
    from planner.quantize.calib import _rms_norm

    src = open_source(model_dir)
    try:
        r = LayerRunner(src, tokens)
        for _ in range(r.n_layers):
            r.step()
        head = r.by_name.get("lm_head.weight") or r.by_name["model.embed_tokens.weight"]
        w = torch.from_numpy(src.read_rows(head, 0, head.n_rows, "hf"))
        norm = torch.from_numpy(src.read_rows(r.by_name["model.norm.weight"], 0, 1, "hf").reshape(-1))
        return _rms_norm(r.hidden, norm, r.cfg.eps) @ w.T
    finally:
        src.close()


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Qwen2ForCausalLM"])
def test_forward_matches_transformers(tmp_path, arch):
    """Our block-by-block forward gives transformers' logits (Llama; Qwen2 with q/k/v biases), GQA and RoPE included."""
    transformers = pytest.importorskip("transformers")
    d = _tiny(tmp_path / arch, architecture=arch)
    tokens = calibration_tokens(d, SAMPLE[:1500], seq_len=64)
    assert tokens.shape[1] == 64 and tokens.shape[0] >= 4
    ours = _our_logits(d, tokens)
    model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(tokens)).logits
    assert torch.allclose(ours, ref, atol=1e-4 * float(ref.abs().max()), rtol=0), float((ours - ref).abs().max())


def test_activation_stats_match_transformers_hooks(tiny):
    """collect_activation_stats gives, per linear, the mean of x^2 per input channel that transformers' modules see."""
    transformers = pytest.importorskip("transformers")
    stats = collect_activation_stats(tiny, CALIB, seq_len=128)
    gguf = collect_activation_stats(tiny, [CALIB], names="gguf", seq_len=128)
    assert set(gguf) >= {"blk.0.ffn_down.weight", "blk.1.attn_q.weight"}
    assert len(stats) == 2 * 7 and all(v.ndim == 1 for v in stats.values())
    assert stats["model.layers.0.mlp.down_proj.weight"].shape == (512,)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    seen: dict[str, np.ndarray] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, inp, n=n: seen.__setitem__(
        n + ".weight", inp[0].double().pow(2).reshape(-1, inp[0].shape[-1]).mean(0).numpy()))
        for n, m in model.named_modules() if n.startswith("model.layers.") and isinstance(m, torch.nn.Linear)]
    tokens = calibration_tokens(tiny, CALIB, seq_len=128)
    with torch.no_grad():
        model(torch.from_numpy(tokens))
    for h in hooks:
        h.remove()
    assert set(seen) == set(stats)
    for name, v in stats.items():
        np.testing.assert_allclose(v, seen[name], rtol=1e-3, err_msg=name)
    np.testing.assert_allclose(gguf["blk.1.ffn_down.weight"], stats["model.layers.1.mlp.down_proj.weight"])


def _correlated(n_in: int, n_tok: int = 4096, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs with correlated channels and a few large ones (as LLM activations have), and their Hessian."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(n_in, n_in, generator=g) / n_in**0.5 + torch.eye(n_in)
    x = torch.randn(n_tok, n_in, generator=g) @ mix
    x[:, :4] *= 8
    return x, 2 * x.T @ x / n_tok


def _out_err(w: torch.Tensor, approx: np.ndarray, h: torch.Tensor) -> float:
    e = torch.from_numpy(approx).float() - w
    return float(((e @ h) * e).sum())


def test_gptq_with_a_diagonal_hessian_is_round_to_nearest():
    """With uncorrelated inputs there is no error to feed back: GPTQ's codes are exactly round to nearest."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(64, 256, generator=g) * 0.02
    h = torch.diag(torch.rand(256, generator=g) + 0.5)
    for sym in (True, False):
        r = gptq_quantize(w, h, 4, 128, sym=sym, act_order=False)
        q, s, z = group_quantize(w.numpy(), 4, 128, symmetric=sym)
        np.testing.assert_array_equal(r.q, q)
        np.testing.assert_array_equal(r.scales, s)
        np.testing.assert_array_equal(r.zeros, z)


@pytest.mark.parametrize("bits,group,sym,act_order", [(4, 128, True, True), (4, 128, False, False), (4, None, True, True),
                                                      (8, 128, True, False), (4, 32, True, True)])
def test_gptq_output_error_well_below_rtn(bits, group, sym, act_order):
    """GPTQ's point: a lower error of the layer's outputs on the calibration inputs than round to nearest."""
    x, h = _correlated(256)
    w = torch.randn(96, 256, generator=torch.Generator().manual_seed(2)) * 0.02
    r = gptq_quantize(w, h, bits, group, sym=sym, act_order=act_order)
    q, s, z = group_quantize(w.numpy(), bits, group, symmetric=sym)
    rtn = _out_err(w, group_dequantize(q, s, z, group), h)
    ours = _out_err(w, r.dequantize(), h)
    assert ours < 0.75 * rtn, (ours, rtn)
    maxq = (1 << bits) - 1
    assert r.q.max() <= maxq and r.zeros.max() <= maxq


def test_gptq_weight_given_late_or_as_array_gives_the_same_codes():
    """A weight handed over by a function (read after the inverse Hessian, permuted in place) is quantized exactly
    as the same weight passed as an array, and a passed array is left as it was."""
    x, h = _correlated(256)
    w = torch.randn(300, 256, generator=torch.Generator().manual_seed(3)) * 0.02
    w[:, 5] = 0  # a dead-looking column does not matter here; the act order comes from h
    before = w.clone()
    direct = gptq_quantize(w, h.clone(), 4, 128, act_order=True)
    torch.testing.assert_close(w, before, rtol=0, atol=0)
    late = gptq_quantize(lambda: w.clone(), h.clone(), 4, 128, act_order=True)
    for a, b in ((direct.q, late.q), (direct.scales, late.scales), (direct.zeros, late.zeros), (direct.g_idx, late.g_idx)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="input columns"):
        gptq_quantize(lambda: w[:, :128].clone(), h.clone(), 4, 128)


def test_gptq_act_order_groups_and_packing():
    """Act-order groups: each group holds g columns chosen by the Hessian; g_idx survives the GPTQ layout."""
    _, h = _correlated(256, seed=3)
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(4)) * 0.02
    r = gptq_quantize(w, h, 4, 128, act_order=True)
    assert sorted(np.bincount(r.g_idx).tolist()) == [128, 128]
    assert not np.array_equal(r.g_idx, np.arange(256) // 128)  # the order follows the Hessian, not the index
    first = np.argsort(-np.diag(h.numpy()))[:128]  # the most active columns are quantized first, in group 0
    assert (r.g_idx[first] == 0).all()
    packed = pack_gptq(r.q, r.scales, r.zeros, 4, 128, g_idx=r.g_idx)

    class _Ck:
        def get(self, name: str) -> np.ndarray:
            return packed[name.rsplit(".", 1)[1]]

    got = dequantize_gptq(_Ck(), "layer", GPTQConfig(4, 128, desc_act=True))  # type: ignore[arg-type]
    np.testing.assert_array_equal(got, r.dequantize())


def test_awq_packing_round_trip_and_search():
    """AutoAWQ's interleaved GEMM packing round-trips; the scale search never does worse than plain rounding and
    helps when a few input channels carry large activations."""
    x, h = _correlated(256, seed=5)
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(6)) * 0.02
    q, s, z = awq_grid(w, 4, 128)
    packed = pack_awq(q.to(torch.uint8).numpy(), s.numpy(), z.to(torch.uint8).numpy())
    assert packed["qweight"].shape == (256, 8) and packed["qzeros"].shape == (2, 8) and packed["scales"].shape == (2, 64)
    np.testing.assert_allclose(unpack_awq(packed["qweight"], packed["qzeros"], packed["scales"]),
                               awq_fake_quant(w, 4, 128).numpy(), rtol=0, atol=1e-7)
    scales, ratio, rel = search_scales([w], x.abs().mean(0).numpy(), h, 4, 128)
    assert rel < 0.9 and 0 < ratio < 1, (rel, ratio)
    assert scales.shape == (256,) and bool((scales[:4] > scales[4:].median()).all())  # the loud channels scaled up


def test_awq_clip_search_lowers_the_group_output_error():
    """AutoAWQ's clip search: with a few outlier weights per group, shrinking the range lowers the output error of
    the group's inputs (scored exactly as e^T H_g e); the bounds stay within [absmax / 2, absmax]; a Hessian whose
    blocks are of inputs divided by s equals the block of the scaled inputs' X^T X."""
    from planner.quantize.awq import apply_clip, group_blocks, search_clip

    x, h = _correlated(256, seed=7)
    gen = torch.Generator().manual_seed(8)
    w = torch.randn(64, 256, generator=gen) * 0.02
    w[torch.arange(64), torch.randint(0, 256, (64,), generator=gen)] *= 12  # one outlier a row stretches the grid
    blocks = group_blocks(h, 128)
    max_val, ratio = search_clip(w, blocks, 4, 128, rows=24)  # rows not dividing 64: the last slice is short
    absmax = w.abs().reshape(64, 2, 128).amax(dim=2)
    assert bool((max_val <= absmax).all()) and bool((max_val >= 0.5 * absmax - 1e-7).all())
    assert bool((max_val < absmax).any()) and ratio < 0.95, ratio

    def err(approx):
        return _out_err(w, approx.numpy(), h)  # the full output error, cross-group terms included

    assert err(awq_fake_quant(apply_clip(w, max_val, 128), 4, 128)) < err(awq_fake_quant(w, 4, 128))
    s = torch.rand(256, generator=gen) + 0.5
    xs = x / s
    np.testing.assert_allclose(group_blocks(h, 128, s).numpy(), group_blocks(2 * xs.T @ xs / x.shape[0], 128).numpy(),
                               rtol=1e-4, atol=1e-6)


def test_pipeline_gptq_rtn_awq_checkpoints(tiny, tmp_path):
    """The written checkpoints: GPTQ calibrated with act-order and an honest config; RTN says it is RTN; AWQ in
    AutoAWQ's layout with its scales folded into the norms (the effective weights stay close to the source's)."""
    out = {}
    for fmt in ("gptq-int4", "rtn-int4", "awq-int4"):
        res = quantize_model(tiny, fmt, tmp_path / fmt, calib=CALIB)
        assert res.tensor_bytes == res.predicted_tensor_bytes
        out[fmt] = json.loads((tmp_path / fmt / "config.json").read_text())["quantization_config"]
    g, r, a = out["gptq-int4"], out["rtn-int4"], out["awq-int4"]
    assert g["quant_method"] == "gptq" and g["desc_act"] is True and g["meta"]["method"] == "gptq" and g["damp_percent"] == 0.1
    assert r["quant_method"] == "gptq" and r["meta"]["method"] == "rtn" and "damp_percent" not in r and not r["desc_act"]
    assert a == {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm",
                 "modules_to_not_convert": None}
    ck = _Checkpoint(tmp_path / "gptq-int4")
    assert not np.array_equal(ck.get("model.layers.0.mlp.down_proj.g_idx"), np.arange(512) // 128)
    # AWQ: norm' * dequant(Q(W s)) must approximate norm * W (a wrong fold would be off by the scales, tens of %)
    src = {}
    for d in (tiny, tmp_path / "awq-int4"):
        plain = tmp_path / f"plain-{d.name}"
        if d == tiny:
            plain = d
        else:
            write_dequantized(d, AWQConfig(), plain)
        c = _Checkpoint(plain)
        src[d.name] = {n: c.floats(n) for n in ("model.layers.1.input_layernorm.weight", "model.layers.1.self_attn.q_proj.weight",
                                               "model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.down_proj.weight")}
    o, n = src[tiny.name], src["awq-int4"]
    assert not np.allclose(o["model.layers.1.input_layernorm.weight"], n["model.layers.1.input_layernorm.weight"])
    eff_o = o["model.layers.1.self_attn.q_proj.weight"] * o["model.layers.1.input_layernorm.weight"][None, :]
    eff_n = n["model.layers.1.self_attn.q_proj.weight"] * n["model.layers.1.input_layernorm.weight"][None, :]
    assert np.linalg.norm(eff_n - eff_o) < 0.15 * np.linalg.norm(eff_o)
    # down_proj's scales went into up_proj's rows: up' (rows / s) and down' (columns * s) keep down(up(.)) close
    prod_o = o["model.layers.1.mlp.down_proj.weight"] @ o["model.layers.1.mlp.up_proj.weight"]
    prod_n = n["model.layers.1.mlp.down_proj.weight"] @ n["model.layers.1.mlp.up_proj.weight"]
    assert np.linalg.norm(prod_n - prod_o) < 0.2 * np.linalg.norm(prod_o)


def test_gptq_model_outputs_closer_than_rtn(tiny, tmp_path):
    """On the calibration text, the GPTQ model's logits are closer to the float model's than the RTN model's."""
    tokens = calibration_tokens(tiny, CALIB, seq_len=128)
    ref = _our_logits(tiny, tokens)
    err = {}
    for fmt in ("gptq-int4", "rtn-int4"):
        quantize_model(tiny, fmt, tmp_path / fmt, calib=CALIB)
        write_dequantized(tmp_path / fmt, GPTQConfig(4, 128), tmp_path / f"{fmt}-plain")
        err[fmt] = float((_our_logits(tmp_path / f"{fmt}-plain", tokens) - ref).pow(2).mean())
    assert err["gptq-int4"] < 0.8 * err["rtn-int4"], err


def test_calibration_needs_a_tokenizer_and_text(tmp_path):
    from planner.errors import InvalidInputError

    d = _tiny(tmp_path / "m", tokenizer=False)
    with pytest.raises(InvalidInputError, match="tokenizer.json"):
        quantize_model(d, "gptq-int4", tmp_path / "o", calib=CALIB)
    d2 = _tiny(tmp_path / "m2")
    with pytest.raises(InvalidInputError, match="calibration text"):
        quantize_model(d2, "awq-int4", tmp_path / "o2", calib="hi")
    assert not (tmp_path / "o").exists() and not (tmp_path / "o2").exists()
