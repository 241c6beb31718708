"""`planner eval` on weight-only GPU formats: the F32 GGUF that llama.cpp runs holds exactly the weights each
format's own runtime would dequantize (reference math written here from the formats' documented layouts, read
with safetensors/torch, not with the planner's inverses), the flow stores them under their format ids with an
honest method, and on SmolLM2-135M in real llama.cpp NF4 loses more than Q8_0."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from planner.measure import reports
from planner.outputs import MARKER
from planner.measure.quality import core
from planner.measure.quality.text import load_dataset
from quantize_models import make_hf_model

HAVE_TORCH = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("safetensors") is not None

# bitsandbytes' NF4 code book (bitsandbytes.functional, get_4bit_type("nf4"); QLoRA, Dettmers et al. 2023, App. E)
BNB_NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
           -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
           0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
           0.7229568362236023, 1.0]

# tensors whose rows llama.cpp stores in the HF order (q/k rows are permuted for RoPE in the GGUF)
PLAIN = {"model.layers.0.self_attn.v_proj.weight": "blk.0.attn_v.weight",
         "model.layers.0.self_attn.o_proj.weight": "blk.0.attn_output.weight",
         "model.layers.0.mlp.gate_proj.weight": "blk.0.ffn_gate.weight",
         "model.layers.0.mlp.down_proj.weight": "blk.0.ffn_down.weight",
         "lm_head.weight": "output.weight"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("wo") / "hf"
    make_hf_model(d, vocab=300, hidden=256, intermediate=512, layers=1)
    return d


def _ref_gptq(t, p, bits):
    """AutoGPTQ v1: qweight (in*bits/32, out) packs inputs along dim 0, low bits first; qzeros (G, out*bits/32)
    packs outputs, stored minus one; w[o, i] = scales[g_idx[i], o] * (q[i, o] - (z[g_idx[i], o] + 1))."""
    import torch

    per, mask = 32 // bits, (1 << bits) - 1
    qw = t[f"{p}.qweight"].to(torch.int64) & 0xFFFFFFFF
    shifts = torch.arange(per) * bits
    q = ((qw[:, None, :] >> shifts[None, :, None]) & mask).reshape(-1, qw.shape[1])  # (in, out)
    qz = t[f"{p}.qzeros"].to(torch.int64) & 0xFFFFFFFF
    z = ((qz[:, :, None] >> shifts[None, None, :]) & mask).reshape(qz.shape[0], -1) + 1  # (G, out)
    g = t[f"{p}.g_idx"].to(torch.int64)
    s = t[f"{p}.scales"].to(torch.float32)
    return (s[g] * (q - z[g]).to(torch.float32)).T


def _ref_nf4(t, name):
    """bitsandbytes NF4: the weight flattened row-major, two codes a byte (first in the high nibble), one absmax per
    block; with double quantization absmax = nested_quant_map[code] * nested_absmax[block of 256] + offset."""
    import torch

    state = json.loads(bytes(t[f"{name}.quant_state.bitsandbytes__nf4"].tolist()))
    assert state["quant_type"] == "nf4"
    assert t[f"{name}.quant_map"].tolist() == pytest.approx(BNB_NF4, abs=0)
    packed = t[name].reshape(-1).to(torch.int64)
    codes = torch.stack([packed >> 4, packed & 15], dim=1).reshape(-1)
    absmax = t[f"{name}.absmax"]
    if "nested_blocksize" in state:
        nb = state["nested_blocksize"]
        nested = t[f"{name}.nested_absmax"].repeat_interleave(nb)[:absmax.numel()]
        absmax = t[f"{name}.nested_quant_map"][absmax.to(torch.int64)] * nested + float(state["nested_offset"])
    vals = torch.tensor(BNB_NF4, dtype=torch.float32)[codes].reshape(-1, state["blocksize"]) * absmax[:, None]
    return vals.reshape(state["shape"])


def _ref_fp8(t, p):
    """compressed-tensors FP8: float8_e4m3fn weight times its float32 weight_scale (per row or per tensor)."""
    import torch

    w = t[f"{p}.weight"]
    assert w.dtype == torch.float8_e4m3fn
    return w.to(torch.float32) * t[f"{p}.weight_scale"].to(torch.float32)


def _ref_mlx(t, p, bits, group):
    """MLX affine: uint32 words hold 32/bits values along the row, lowest bits first; w = scale * q + bias."""
    import torch

    per, mask = 32 // bits, (1 << bits) - 1
    words = t[f"{p}.weight"].to(torch.int64) & 0xFFFFFFFF
    q = ((words[:, :, None] >> (torch.arange(per) * bits)[None, None, :]) & mask).reshape(words.shape[0], -1)
    s = t[f"{p}.scales"].to(torch.float32).repeat_interleave(group, dim=1)
    b = t[f"{p}.biases"].to(torch.float32).repeat_interleave(group, dim=1)
    return s * q.to(torch.float32) + b


@pytest.mark.real_runtime
@pytest.mark.skipif(not HAVE_TORCH, reason="torch and safetensors are not installed")
@pytest.mark.parametrize("fmt", ["gptq-int4", "gptq-int8", "rtn-int4", "nf4", "nf4-nodq", "fp8", "fp8-pertensor",
                                 "mlx-4bit", "mlx-8bit"])
def test_f32_gguf_holds_what_the_runtime_dequantizes(tiny, tmp_path, fmt):
    import torch
    from gguf import GGUFReader
    from safetensors.torch import load_file

    from planner.quantize.pipeline import quantize_model

    # the checkpoint planner quantize writes (deterministic: the same bytes eval dequantized)
    ckpt = tmp_path / "ckpt"
    quantize_model(tiny, fmt, ckpt)
    t = load_file(str(ckpt / "model.safetensors"))
    path, summary = core.quantized(tiny, fmt, cache=tmp_path / "cache")
    assert summary["file_bytes"] == sum(f.stat().st_size for f in ckpt.iterdir() if f.name != MARKER)
    quantized = 0
    g = {x.name: x for x in GGUFReader(path).tensors}
    for hf, gname in PLAIN.items():
        p = hf[: -len(".weight")]
        if hf in t and t[hf].is_floating_point() and t[hf].dtype != torch.float8_e4m3fn:  # kept 16-bit by the format
            ref = t[hf].to(torch.float32)
        elif fmt.startswith(("gptq", "rtn")):
            ref = _ref_gptq(t, p, int(fmt.split("-int")[1][0]))
        elif fmt.startswith("nf4"):
            ref = _ref_nf4(t, hf)
        elif fmt.startswith("fp8"):
            ref = _ref_fp8(t, p)
        else:
            ref = _ref_mlx(t, p, int(fmt[4]), 64)
        got = g[gname]
        assert got.tensor_type.name == "F32"
        arr = np.asarray(got.data).reshape(ref.shape)
        np.testing.assert_array_equal(arr, ref.numpy(), err_msg=f"{fmt} {hf}")
        quantized += hf not in t or t[hf].dtype in (torch.uint8, torch.uint32, torch.float8_e4m3fn)
    assert quantized >= 4  # the linear layers were quantized, not passed through


class _Fake:
    """A fake runtime whose logits get noisier as the format loses more (no llama.cpp)."""

    n_vocab = 300
    bos = 1
    NOISE = {"F16": 0.0, "Q8_0": 0.02, "nf4": 0.3, "gptq-int4": 0.25, "awq-int4": 0.25}

    def __init__(self, path, ctx):
        self.fmt = Path(path).stem
        self.table = np.random.default_rng(0).standard_normal((300, 300)) * 3

    def tokenize(self, text):
        return [b % 300 for b in text.encode()]

    def logits(self, tokens):
        base = self.table[np.asarray(tokens)]
        rng = np.random.default_rng(sum(map(ord, self.fmt)))
        return (base + rng.standard_normal(base.shape) * self.NOISE[self.fmt] * 3).astype(np.float32)

    def close(self):
        pass


@pytest.mark.real_runtime
@pytest.mark.skipif(not HAVE_TORCH, reason="torch and safetensors are not installed")
def test_weight_only_formats_in_the_eval_flow(tiny, tmp_path):
    rep = core.evaluate(tiny, ["Q8_0", "nf4", "gptq-int4"], load_dataset("sample"), ctx=64, max_chunks=2,
                        open_model=_Fake, cache=tmp_path)
    by = {r.format: r for r in rep.results}
    assert set(by) == {"F16", "Q8_0", "nf4", "gptq-int4"}
    assert "GPTQ" in by["gptq-int4"].method and "calibrated" in by["gptq-int4"].method
    assert "NF4" in by["nf4"].method and by["Q8_0"].method == "" and by["F16"].method == ""
    # size and bits are the format's own checkpoint, not the F32 file llama.cpp ran
    assert by["nf4"].file_bytes < Path(by["nf4"].file).stat().st_size / 4
    assert 4 < by["nf4"].bits_per_weight < by["Q8_0"].bits_per_weight
    # no checkpoint or dequantized directory is left in the cache
    assert sorted(p.name for p in Path(by["nf4"].file).parent.iterdir()) == sorted(
        f"{f}.{e}" for f in ("F16", "Q8_0", "nf4", "gptq-int4") for e in ("gguf", "json"))
    saved = core.save_report(rep, tmp_path / "eval")
    measured = reports.measured_quality(reports.load_reports(tmp_path / "eval"))
    assert set(measured) == {"Q8_0", "nf4", "gptq-int4"}  # matched to plans by format id
    assert measured["nf4"]["kld"] > measured["Q8_0"]["kld"]
    assert measured["gptq-int4"]["basis"] == "measured"  # the basis names how; the note says what ran
    assert "calibrated" in measured["gptq-int4"]["note"] and "dequantized" in measured["nf4"]["note"]
    assert {x["format"]: x["method"] for x in json.loads(saved.read_text())["results"]}["nf4"] == by["nf4"].method


class _FakeCalib(_Fake):
    """_Fake for cache files named after a user calibration text ('gptq-int4-calib-<sha>')."""

    def __init__(self, path, ctx):
        super().__init__(path, ctx)
        self.fmt = self.fmt.split("-calib-")[0]


@pytest.mark.real_runtime
@pytest.mark.skipif(not HAVE_TORCH, reason="torch and safetensors are not installed")
def test_eval_calibrates_gptq_and_awq_on_the_users_text(tiny, tmp_path, capsys):
    """--calib: GPTQ/AWQ are quantized on the user's text (other weights than with the bundled text), beside the
    bundled text's files in the cache, and the stored record names the text; a GGUF-only run refuses it (exit 2)."""
    from planner.cli import main
    from planner.measure.reports import text_sha256

    mine = "The tide came in over the flats, and the gulls rose crying from the shingle. " * 40
    text = load_dataset("sample")
    default = core.evaluate(tiny, ["gptq-int4", "Q8_0"], text, ctx=64, max_chunks=1, open_model=_FakeCalib, cache=tmp_path)
    rep = core.evaluate(tiny, ["gptq-int4", "awq-int4", "Q8_0"], text, ctx=64, max_chunks=1, open_model=_FakeCalib,
                        cache=tmp_path, calib=("mine.txt", mine))
    d, r = {x.format: x for x in default.results}, {x.format: x for x in rep.results}
    assert d["gptq-int4"].calibration.startswith("bundled ") and d["Q8_0"].calibration == ""
    label = f"mine.txt, sha256 {text_sha256(mine)[:12]}"
    assert r["gptq-int4"].calibration == label and r["awq-int4"].calibration == label and r["Q8_0"].calibration == ""
    assert Path(r["gptq-int4"].file).name == f"gptq-int4-calib-{text_sha256(mine)[:12]}.gguf"
    assert Path(d["gptq-int4"].file).is_file()  # the bundled text's file is kept
    assert Path(r["gptq-int4"].file).read_bytes() != Path(d["gptq-int4"].file).read_bytes()  # other weights
    assert Path(r["Q8_0"].file) == Path(d["Q8_0"].file)  # GGUF types do not calibrate: the same file
    saved = core.save_report(rep, tmp_path / "eval")
    stored = {x["format"]: x for x in json.loads(saved.read_text())["results"]}
    assert stored["awq-int4"]["calibration"] == label
    again = core.evaluate(tiny, ["gptq-int4"], text, ctx=64, max_chunks=1, open_model=_FakeCalib, cache=tmp_path,
                          calib=("mine.txt", mine))  # cached: the same file, not rebuilt
    again_gptq = next(x for x in again.results if x.format == "gptq-int4")
    assert Path(again_gptq.file).stat().st_mtime_ns == Path(r["gptq-int4"].file).stat().st_mtime_ns
    calib_file = tmp_path / "mine.txt"
    calib_file.write_text(mine)
    assert main(["eval", str(tiny), "--formats", "Q8_0", "--calib", str(calib_file), "--no-save"]) == 2
    err = capsys.readouterr().err
    assert "--calib" in err and "gptq-int4" in err and len(err.strip().splitlines()) == 1, err
    assert main(["eval", str(tiny), "--formats", "gptq-int4", "--calib", str(tmp_path / "none.txt"), "--no-save"]) == 2
    err = capsys.readouterr().err
    assert "none.txt" in err and len(err.strip().splitlines()) == 1, err


def test_cli_refuses_unmeasurable_formats(tiny, capsys):
    from planner.cli import main

    for fmt, why in (("w8a8-int8", "activations"), ("nvfp4", "cannot write it"), ("exl2-4.0bpw", "cannot write it"),
                     ("bogus", "unknown format")):
        assert main(["eval", str(tiny), "--formats", f"Q8_0,{fmt}", "--no-save"]) == 2, fmt
        err = capsys.readouterr().err
        assert why in err and len(err.strip().splitlines()) == 1, err
