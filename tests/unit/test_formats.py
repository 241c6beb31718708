"""Formats: block layouts against gguf-py, llama.cpp mix rules, shape fallbacks, and sizes of real GGUF files."""

from __future__ import annotations

import numpy as np
import pytest
import gguf

from planner.formats import FORMATS, GGML_TYPES, ShapeError, format_bytes, get_format, gguf_mix, ggml_type
from planner.models.inventory import TensorInfo, tensor_inventory
from planner.models.spec import ModelSpec


def tiny(**kw) -> ModelSpec:
    base = dict(id="tiny", name="tiny", family="t", architecture="llama", vocab_size=512, hidden_size=256, num_layers=8,
                num_heads=4, num_kv_heads=1, intermediate_size=512, max_context=2048, params_published=1,
                params_source="test")
    base.update(kw)
    return ModelSpec(**base)


def test_block_layouts_match_gguf_py_constants():
    for t in GGML_TYPES.values():
        qt = gguf.GGMLQuantizationType[t.name]
        block, nbytes = gguf.GGML_QUANT_SIZES[qt]
        assert (t.layout.block_weights, t.layout.bytes_per_block) == (block, nbytes), t.name
        assert t.type_id == qt.value


def test_bits_per_weight_are_derived():
    assert ggml_type("Q4_K").bits_per_weight == 4.5
    assert ggml_type("Q6_K").bits_per_weight == 6.5625
    assert ggml_type("IQ4_XS").bits_per_weight == 4.25
    assert ggml_type("q8_0").bits_per_weight == 8.5


@pytest.mark.parametrize("name", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "F16", "BF16"])
def test_tensor_bytes_equal_gguf_py_quantized_bytes(name):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 256)).astype(np.float32)
    q = gguf.quants.quantize(w, gguf.GGMLQuantizationType[name])
    assert q.nbytes == ggml_type(name).nbytes(w.shape)


def test_shape_the_block_cannot_hold_is_refused():
    with pytest.raises(ShapeError):
        ggml_type("Q4_K").nbytes((10, 576))


def test_q4_k_m_mix_on_a_32_layer_model():
    m = tiny(num_layers=32)
    a = {x.tensor.name: x.encoding.name for x in gguf_mix("Q4_K_M", m, tensor_inventory(m))}
    v6 = [i for i in range(32) if a[f"blk.{i}.attn_v.weight"] == "Q6_K"]
    assert v6 == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]  # use_more_bits
    assert [i for i in range(32) if a[f"blk.{i}.ffn_down.weight"] == "Q6_K"] == v6
    assert a["output.weight"] == "Q6_K" and a["token_embd.weight"] == "Q4_K"
    assert a["blk.5.attn_q.weight"] == "Q4_K" and a["blk.0.attn_norm.weight"] == "F32"


def test_tied_embeddings_are_quantized_like_the_output():
    m = tiny(tie_word_embeddings=True)
    a = {x.tensor.name: x.encoding.name for x in gguf_mix("Q4_K_M", m, tensor_inventory(m))}
    assert a["token_embd.weight"] == "Q6_K"


def test_70b_and_eight_expert_modifiers():
    m = tiny(num_layers=80)
    a = {x.tensor.name: x.encoding.name for x in gguf_mix("Q4_K_M", m, tensor_inventory(m))}
    assert a["blk.11.attn_v.weight"] == "Q5_K"  # 70B: Q4_K attn_v becomes Q5_K
    from planner.models.spec import MoESpec

    moe = tiny(moe=MoESpec(num_experts=8, experts_per_token=2, expert_intermediate_size=512))
    a = {x.tensor.name: x.encoding.name for x in gguf_mix("Q4_K_M", moe, tensor_inventory(moe))}
    assert a["blk.3.attn_k.weight"] == "Q8_0" and a["blk.3.attn_v.weight"] == "Q8_0"
    assert a["blk.3.attn_output.weight"] == "Q5_K"
    assert a["blk.3.ffn_gate_inp.weight"] == "F32"  # routers are never quantized


def test_fallback_when_rows_are_not_multiples_of_256():
    m = tiny(hidden_size=576, num_heads=9, num_kv_heads=3, intermediate_size=1536, tie_word_embeddings=True)
    a = {x.tensor.name: x.encoding.name for x in gguf_mix("Q4_K_M", m, tensor_inventory(m))}
    assert a["blk.2.attn_q.weight"] == "Q5_0"  # Q4_K -> Q5_0 (576 % 256 != 0)
    assert a["token_embd.weight"] == "Q8_0"  # output-like tensor goes straight to Q8_0
    assert a["blk.0.ffn_down.weight"] == "Q6_K"  # row 1536 is a multiple of 256


def test_every_file_type_sizes_a_real_model(registry):
    m = registry.get("llama-3.1-8b")
    ts = tensor_inventory(m)
    sizes = {f: format_bytes(FORMATS[f], m, ts) for f in ("Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16")}
    assert sorted(sizes, key=sizes.get) == ["Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16"]
    # llama.cpp tools/quantize/README.md lists 4.8944 bpw for Llama-3.1-8B Q4_K_M.
    n = sum(t.n_elements for t in ts)
    assert abs(sizes["Q4_K_M"] * 8 / n - 4.8944) < 0.001


@pytest.mark.parametrize("name,expected", [("q4_k_m", "Q4_K_M"), ("GPTQ-INT4", "gptq-int4"), ("awq", "awq-int4"),
                                           ("bnb-nf4", "nf4"), ("MLX-4bit", "mlx-4bit"), ("float16", "fp16")])
def test_format_names(name, expected):
    assert get_format(name).id == expected


def test_exl2_at_any_bpw_and_unknown_format():
    assert get_format("exl2-4.65bpw").weight_bits_nominal == 4.65
    from planner.errors import NotFoundError

    with pytest.raises(NotFoundError) as e:
        get_format("Q4_K_X")
    assert any(c.startswith("Q4_K") for c in e.value.candidates)


def test_gguf_file_written_by_gguf_py_has_the_predicted_tensor_bytes(tmp_path):
    """Write a GGUF with the types our Q8_0 mix picks, using gguf-py's own quantizer, and compare sizes."""
    m = tiny()
    ts = tensor_inventory(m)
    mix = gguf_mix("Q8_0", m, ts)
    rng = np.random.default_rng(1)
    path = tmp_path / "tiny-q8_0.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    for a in mix:
        data = rng.standard_normal(a.tensor.shape).astype(np.float32)
        qt = gguf.GGMLQuantizationType[a.encoding.name]
        q = gguf.quants.quantize(data, qt) if a.encoding.name not in ("F32",) else data
        w.add_tensor(a.tensor.name, q, raw_dtype=qt if a.encoding.name != "F32" else None)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    reader = gguf.GGUFReader(str(path))
    on_disk = {t.name: int(t.n_bytes) for t in reader.tensors}
    predicted = {a.tensor.name: a.nbytes for a in mix}
    assert on_disk == predicted
    assert format_bytes(FORMATS["Q8_0"], m, ts) == sum(on_disk.values())


def test_group_quant_bytes_follow_the_checkpoint_layout():
    enc = next(a.encoding for a in FORMATS["gptq-int4"].assignments(tiny(), tensor_inventory(tiny())) if a.tensor.name == "blk.0.attn_q.weight")
    # qweight 256x256x4 bit + scales (2 groups x 256 x fp16) + qzeros (2 x 256 x 4 bit) + g_idx (256 x int32)
    assert enc.nbytes((256, 256)) == 256 * 256 // 2 + 2 * 256 * 2 + 2 * 256 // 2 + 256 * 4


def test_2023_q2_k_mix_is_mostly_q3_k():
    m = tiny()
    new = {x.tensor.name: x.encoding.name for x in gguf_mix("Q2_K", m, tensor_inventory(m))}
    old = {x.tensor.name: x.encoding.name for x in gguf_mix("Q2_K", m, tensor_inventory(m), revision="2023")}
    assert new["blk.1.ffn_gate.weight"] == "Q2_K" and old["blk.1.ffn_gate.weight"] == "Q3_K"
    assert old["blk.1.attn_q.weight"] == "Q2_K" and old["output.weight"] == "Q6_K"
    size = lambda mix: sum(ggml_type(t).nbytes(dict((a.name, a.shape) for a in tensor_inventory(m))[n]) for n, t in mix.items())
    assert size(old) > size(new)


def test_the_registry_is_read_only_and_a_stored_format_stays_out_of_it():
    from planner.formats import stored_gguf_format

    with pytest.raises(TypeError):
        FORMATS["mine"] = FORMATS["Q8_0"]  # type: ignore[index]
    fmt = stored_gguf_format("Q8_0", {"blk.0.attn_q.weight": "Q8_0"}, "x.gguf")
    assert fmt is not None and fmt.id == "Q8_0-as-stored" and fmt.id not in FORMATS
