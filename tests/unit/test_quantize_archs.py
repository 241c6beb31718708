"""`planner quantize` on Mixtral, Qwen3-MoE, Gemma 2, Gemma 3 (text and multimodal checkpoints) and Phi-3: tiny
random transformers models are converted to GGUF, loaded by llama.cpp (in planner.native's child process) and
must give transformers' logits on the same token ids, with llama.cpp's tensor names, the per-tensor types the cost
model predicts (planner.formats' gguf_mix, one source of truth) and the metadata llama.cpp's converter writes.

Bounds (KL divergence of llama.cpp's next-token distribution from transformers', mean over 32 positions), with
what these models measured on this machine (llama-cpp-python 0.3.36, transformers 5.25): F16 1e-6 (measured at
most 7e-8; a converter without Gemma's norm + 1 is off by 1.6 in the logits), Q8_0 1e-3 (at most 1.2e-4), Q4_K_M
2e-2 (at most 2.5e-3). The logits of random models are flat (std about 0.3), so KL is the measure, not top-1.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from planner.measure.quality.metrics import mean_kl

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from planner.cli import main  # noqa: E402
from planner.formats import get_format  # noqa: E402
from planner.models.inventory import tensor_inventory  # noqa: E402
from planner.models.readers import load_model_source, read_gguf_model  # noqa: E402
from planner.quantize.pipeline import quantize_model  # noqa: E402
from quantize_models import make_arch_model  # noqa: E402

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
TOKENS = list(range(3, 35))  # 32 positions: past the sliding window (8), so Gemma's local layers are exercised
KLD_BOUND = {"f16": 1e-6, "q8_0": 1e-3, "q4_k_m": 2e-2, "mxfp4_moe": 5e-3}
# kind -> (formats, experts). Mixtral gets 8 experts: llama.cpp's mix rules treat 8-expert models specially
# (attn_v/attn_k Q8_0, attn_output Q5_K under Q4_K_M), and the test checks those types too.
CASES = {
    "qwen3moe": (("f16", "q8_0", "q4_k_m", "mxfp4_moe"), 4),
    "mixtral": (("f16", "q8_0", "q4_k_m", "mxfp4_moe"), 8),
    "gemma2": (("f16", "q8_0"), 0),
    "gemma3": (("f16", "q8_0", "q4_k_m"), 0),
    "gemma3-mm": (("f16",), 0),
    "phi3": (("f16", "q8_0"), 0),
}
# GGUF keys and the values the tiny configs give (llama.cpp's converter writes them; its loader reads them).
EXPECTED_KEYS = {
    "qwen3moe": {"qwen3moe.expert_count": 4, "qwen3moe.expert_used_count": 2, "qwen3moe.expert_feed_forward_length": 256},
    "mixtral": {"llama.expert_count": 8, "llama.expert_used_count": 2, "llama.feed_forward_length": 256},
    "gemma2": {"gemma2.attention.sliding_window": 8, "gemma2.attn_logit_softcapping": 50.0,
               "gemma2.final_logit_softcapping": 30.0, "gemma2.attention.key_length": 64},
    "gemma3": {"gemma3.attention.sliding_window": 8, "gemma3.rope.freq_base": 1e6, "gemma3.rope.freq_base_swa": 1e4,
               "gemma3.attention.key_length": 64},
    "gemma3-mm": {"gemma3.attention.sliding_window": 8, "gemma3.rope.freq_base": 1e6},
    "phi3": {"phi3.attention.sliding_window": 0, "phi3.rope.scaling.original_context_length": 4096,
             "phi3.rope.dimension_count": 64},
}


def _llama_logits(paths: list[Path]) -> list[np.ndarray]:
    from native_jobs import JOB

    from planner.native import Worker

    with Worker(JOB) as w:
        _, out = w.call("logits", {"paths": [str(p) for p in paths]}, [np.asarray(TOKENS, dtype=np.int32)],
                        doing="running llama.cpp")
    return out


def _gguf_tensor(path: Path, name: str) -> np.ndarray:
    from gguf import GGUFReader

    t = next(t for t in GGUFReader(path).tensors if t.name == name)
    return np.asarray(t.data, dtype=np.float32).reshape(tuple(reversed([int(d) for d in t.shape])))


@pytest.mark.real_runtime
@pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python not installed (pip install '.[dev]')")
@pytest.mark.parametrize("kind", list(CASES))
def test_converted_model_matches_transformers_in_llama_cpp(tmp_path, kind):
    formats, experts = CASES[kind]
    # Not named after the architecture: llama.cpp sets Phi-3 token attributes by model name and expects Phi-3's
    # SentencePiece tokens ('</s>', '<unk>'), which the tiny byte-level test vocabulary does not have.
    src = tmp_path / "tiny"
    model = make_arch_model(src, kind, experts=experts or 4)
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([TOKENS])).logits[0].numpy()
    spec = load_model_source(src).spec
    inventory = tensor_inventory(spec)
    outs = []
    for fmt in formats:
        out = tmp_path / f"{fmt}.gguf"
        result = quantize_model(src, fmt, out)
        header = read_gguf_model(out)
        # llama.cpp's names and the cost model's per-tensor types, tensor by tensor
        want = {a.tensor.name: a.encoding.name for a in get_format(fmt).assignments(spec, inventory)}
        got = {t.name: t.type_name for t in header.tensors}
        assert got == want
        for key, value in EXPECTED_KEYS[kind].items():
            assert header.metadata[key] == pytest.approx(value), key
        if kind == "gemma3-mm":
            assert not any("vision" in t.name or "mm_" in t.name for t in header.tensors)
            assert any("vision-tower" in w for w in result.warnings)
        else:
            assert not result.warnings
        outs.append(out)

    f16 = outs[0]
    from safetensors.numpy import load_file

    stored = load_file(src / "model.safetensors")  # the checkpoint as saved (one tensor per expert)
    if kind.startswith("gemma"):  # llama.cpp's converter stores Gemma's norms as 1 + weight
        # (the multimodal checkpoint nests the decoder: language_model.model. or model.language_model.)
        norm = next(k for k in stored if k.endswith("layers.1.post_feedforward_layernorm.weight") and "vision" not in k)
        assert np.array_equal(_gguf_tensor(f16, "blk.1.post_ffw_norm.weight"), stored[norm] + 1)
    if experts:  # experts stacked in index order: ffn_down_exps[e] is expert e's down projection
        down = _gguf_tensor(f16, "blk.1.ffn_down_exps.weight")
        mod = "block_sparse_moe.experts.{}.w2" if kind == "mixtral" else "mlp.experts.{}.down_proj"
        assert down.shape[0] == experts
        for e in range(experts):
            np.testing.assert_allclose(down[e], stored[f"model.layers.1.{mod.format(e)}.weight"], atol=1e-3)

    logits = _llama_logits(outs)
    for fmt, got in zip(formats, logits):
        kld = mean_kl(ref, got)
        assert kld <= KLD_BOUND[fmt], (fmt, kld)
    assert np.abs(logits[0] - ref).max() <= 0.01  # F16: transformers' float32 logits up to half-precision weights


@pytest.mark.real_runtime
@pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python not installed (pip install '.[dev]')")
def test_phi3_longrope_factors_and_attention_factor(tmp_path):
    """Phi-3's LongRoPE: rope_factors_long/short tensors and rope.scaling.attn_factor. transformers picks the short
    factors for a sequence within original_max_position_embeddings (256) and the long ones past it; llama.cpp picks
    by its context size, so each is compared with a context on the same side of 256."""
    import math

    src = tmp_path / "tiny"
    model = make_arch_model(src, "phi3-longrope")
    out = tmp_path / "f16.gguf"
    quantize_model(src, "f16", out)
    header = read_gguf_model(out)
    assert header.metadata["phi3.rope.scaling.attn_factor"] == pytest.approx(math.sqrt(1 + math.log(1024 / 256) / math.log(256)))
    assert header.metadata["phi3.rope.scaling.original_context_length"] == 256
    scaling = model.config.rope_parameters if getattr(model.config, "rope_parameters", None) else model.config.rope_scaling
    np.testing.assert_array_equal(_gguf_tensor(out, "rope_factors_long.weight"), np.float32(scaling["long_factor"]))
    np.testing.assert_array_equal(_gguf_tensor(out, "rope_factors_short.weight"), np.float32(scaling["short_factor"]))

    from native_jobs import JOB

    from planner.native import Worker

    rng = np.random.default_rng(1)
    with Worker(JOB) as w:
        for n, ctx in ((32, 256), (300, 512)):  # short factors, then long ones
            toks = rng.integers(3, 500, n).astype(np.int32)
            with torch.no_grad():
                ref = model(input_ids=torch.tensor([toks.tolist()])).logits[0].numpy()
            _, (got,) = w.call("logits", {"paths": [str(out)], "ctx": ctx}, [toks], doing="running llama.cpp")
            assert np.abs(got - ref).max() <= 0.01, (n, ctx)  # measured 0.001; the other factor set gives 0.05


@pytest.mark.real_runtime
@pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python not installed (pip install '.[dev]')")
@pytest.mark.parametrize("kind", ["mixtral", "qwen3moe", "gemma2", "gemma3", "phi3"])
def test_per_tensor_types_are_llama_quantizes(tmp_path, kind):
    """The cost model's mix rules (which planner quantize follows) give each tensor the type llama.cpp's own
    quantizer gives it, from the same F16 GGUF; Mixtral with 8 experts gets llama.cpp's 8-expert rules. MXFP4_MOE's
    expert tensors are also the same bytes."""
    from gguf import GGUFReader, LlamaFileType
    from native_jobs import JOB

    from planner.native import Worker

    src = tmp_path / "tiny"
    make_arch_model(src, kind, experts=8 if kind == "mixtral" else 4)
    f16 = tmp_path / "f16.gguf"
    quantize_model(src, "f16", f16)
    with Worker(JOB) as w:
        for ftype in ("Q4_K_M", "Q3_K_M", "MXFP4_MOE"):
            theirs_path, ours_path = tmp_path / f"llama-{ftype}.gguf", tmp_path / f"ours-{ftype}.gguf"
            info, _ = w.call("llama_quantize", {"src": str(f16), "dst": str(theirs_path),
                                                "ftype": int(LlamaFileType[f"MOSTLY_{ftype}"])}, [], doing="llama-quantize")
            assert info["rc"] == 0
            quantize_model(f16, ftype, ours_path)
            theirs = {t.name: t for t in GGUFReader(theirs_path).tensors}
            ours = {t.name: t for t in GGUFReader(ours_path).tensors}
            assert {n: t.tensor_type.name for n, t in ours.items()} == \
                {n: t.tensor_type.name for n, t in theirs.items()}, ftype
            mx = [n for n, t in ours.items() if t.tensor_type.name == "MXFP4"]
            # MXFP4: the experts of a MoE model (3-D), Q8_0 for every other matrix; on a dense model none at all
            assert bool(mx) == (ftype == "MXFP4_MOE" and kind in ("mixtral", "qwen3moe")), ftype
            if ftype == "MXFP4_MOE":  # neither MXFP4 nor Q8_0 searches a scale: every tensor is llama-quantize's bytes
                for n, t in ours.items():
                    assert np.array_equal(np.asarray(t.data), np.asarray(theirs[n].data)), n


@pytest.fixture(scope="module")
def gemma2(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("archs") / "gemma2"
    make_arch_model(d, "gemma2")
    return d


def test_gguf_only_architectures_refuse_safetensors_formats(gemma2, tmp_path, capsys):
    code = main(["quantize", str(gemma2), "-f", "gptq-int4", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and "Gemma2ForCausalLM" in err and "GGUF" in err
    assert not (tmp_path / "out").exists()


def test_gguf_source_of_a_new_architecture_requantizes_exactly(gemma2, tmp_path, capsys):
    from gguf import GGUFReader

    f16 = tmp_path / "a.gguf"
    quantize_model(gemma2, "f16", f16)
    again = tmp_path / "b.gguf"
    quantize_model(f16, "f16", again)  # no second + 1 on the norms, nothing lost
    a = {t.name: t.data.tobytes() for t in GGUFReader(f16).tensors}
    b = {t.name: t.data.tobytes() for t in GGUFReader(again).tensors}
    assert a == b
    code = main(["quantize", str(f16), "-f", "nf4", "-o", str(tmp_path / "st")])
    assert code == 1 and "GGUF only" in capsys.readouterr().err


def test_unsupported_architecture_names_it_and_the_supported_list(gemma2, tmp_path, capsys):
    import json

    d = tmp_path / "other"
    d.mkdir()
    for f in gemma2.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    config = json.loads((d / "config.json").read_text())
    config["architectures"] = ["GPTNeoXForCausalLM"]
    (d / "config.json").write_text(json.dumps(config))
    code = main(["quantize", str(d), "-f", "q8_0", "-o", str(tmp_path / "o.gguf")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "GPTNeoXForCausalLM" in err and "Qwen3MoeForCausalLM" in err and "Phi3ForCausalLM" in err


def test_a_missing_expert_is_one_clear_line(tmp_path, capsys):
    from safetensors.numpy import load_file, save_file

    d = tmp_path / "moe"
    make_arch_model(d, "mixtral")
    weights = load_file(d / "model.safetensors")
    del weights["model.layers.1.block_sparse_moe.experts.2.w1.weight"]
    save_file(weights, d / "model.safetensors", metadata={"format": "pt"})
    capsys.readouterr()  # transformers' save progress
    code = main(["quantize", str(d), "-f", "q8_0", "-o", str(tmp_path / "o.gguf")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "ffn_gate_exps" in err and "[2]" in err
    assert not (tmp_path / "o.gguf").exists()


# ---- config.json fields the converter reads for these architectures, fuzzed

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from planner.errors import InvalidInputError  # noqa: E402
from planner.models.readers import spec_from_hf_config  # noqa: E402
from planner.quantize.gguf_writer import GGUFWriter, arch_metadata, longrope_factors  # noqa: E402

_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=8)
_ROPE = st.fixed_dictionaries({}, optional={
    "rope_type": st.sampled_from(["default", "linear", "yarn", "longrope", "su", "llama3", "dynamic"]) | _JSON,
    "rope_theta": _JSON, "factor": _JSON, "original_max_position_embeddings": _JSON,
    "long_factor": st.lists(st.floats(), max_size=40) | _JSON, "short_factor": st.lists(st.floats(), max_size=40) | _JSON,
    "partial_rotary_factor": _JSON})
_FIELDS = st.fixed_dictionaries({}, optional={
    "rope_theta": _JSON, "rope_scaling": _ROPE | _JSON, "rope_parameters": _ROPE | st.fixed_dictionaries(
        {"full_attention": _ROPE, "sliding_attention": _ROPE}) | _JSON, "rope_local_base_freq": _JSON,
    "original_max_position_embeddings": _JSON, "sliding_window": _JSON, "final_logit_softcapping": _JSON,
    "attn_logit_softcapping": _JSON, "query_pre_attn_scalar": _JSON, "norm_topk_prob": _JSON,
    "partial_rotary_factor": _JSON, "rms_norm_eps": _JSON})
_BASE = {
    "Phi3ForCausalLM": {"model_type": "phi3", "intermediate_size": 512},
    "Gemma3ForCausalLM": {"model_type": "gemma3_text", "intermediate_size": 512, "head_dim": 64},
    "Qwen3MoeForCausalLM": {"model_type": "qwen3_moe", "intermediate_size": 512, "moe_intermediate_size": 256,
                            "num_experts": 4, "num_experts_per_tok": 2},
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cls=st.sampled_from(sorted(_BASE)), fields=_FIELDS)
def test_architecture_metadata_from_any_config_is_written_or_one_clear_error(cls, fields):
    """Whatever these fields hold, the keys are written (and pack into a GGUF header) or the error names the field."""
    config = {"architectures": [cls], "vocab_size": 512, "hidden_size": 256, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
              **_BASE[cls], **fields}
    try:
        spec = spec_from_hf_config(config, "config.json")
    except InvalidInputError:
        return  # the model reader's own checks (fuzzed in test_readers_fuzz)
    arch = {"Phi3ForCausalLM": "phi3", "Gemma3ForCausalLM": "gemma3", "Qwen3MoeForCausalLM": "qwen3moe"}[cls]
    try:
        kvs, warnings = arch_metadata(arch, spec, config)
        if spec.rope_factors == "long_short":
            longrope_factors("config.json", config, spec.dim_head)
    except InvalidInputError as exc:
        assert str(exc).startswith("config.json") and "\n" not in str(exc)
        return
    import io

    GGUFWriter(io.BytesIO(), kvs, []).write_header()  # every value fits its GGUF type
    assert all(isinstance(w, str) for w in warnings)


def _write_mixtral(d: Path, experts: dict[int, dict[str, tuple[int, ...]]], n_experts: int) -> None:
    """A 1-layer Mixtral checkpoint (hidden 32, MLP 64) whose expert slices are `experts` (index -> w1/w2/w3 shapes)."""
    import json

    from planner.quantize.safetensors_writer import SafetensorsWriter, TensorSpec

    h, f, v = 32, 64, 64
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,),
                                          "lm_head.weight": (v, h)}
    p = "model.layers.0."
    shapes.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                   p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (h // 2, h),
                   p + "self_attn.v_proj.weight": (h // 2, h), p + "self_attn.o_proj.weight": (h, h),
                   p + "block_sparse_moe.gate.weight": (n_experts, h)})
    for e, ws in experts.items():
        for w, shape in ws.items():
            shapes[f"{p}block_sparse_moe.experts.{e}.{w}.weight"] = shape
    d.mkdir(parents=True)
    specs = [TensorSpec(n, "F16", s) for n, s in shapes.items()]
    with (d / "model.safetensors").open("wb+") as fh:
        writer = SafetensorsWriter(fh, specs)
        for s in specs:
            writer.write(s.name, np.zeros(s.shape, dtype=np.float16))
        writer.finish()
    (d / "config.json").write_text(json.dumps({
        "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": h, "intermediate_size": f,
        "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": v,
        "num_local_experts": n_experts, "num_experts_per_tok": 2, "max_position_embeddings": 128}))


_GOOD = {"w1": (64, 32), "w3": (64, 32), "w2": (32, 64)}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(n=st.integers(2, 4), drop=st.sets(st.integers(0, 3), max_size=2),
       bad=st.dictionaries(st.integers(0, 3), st.sampled_from(["w1", "w2", "w3"]), max_size=1),
       extra=st.sets(st.integers(4, 9), max_size=1))
def test_expert_slices_stack_or_fail_in_one_line(tmp_path_factory, n, drop, bad, extra):
    """Experts missing, extra or of another shape: one InvalidInputError line; a complete set stacks to (E, rows, cols)."""
    from planner.quantize.sources import open_source

    experts = {e: dict(_GOOD) for e in (set(range(n)) - drop) | extra}
    for e, w in bad.items():
        if e in experts:
            experts[e][w] = (48, 32) if w != "w2" else (32, 48)
    d = tmp_path_factory.mktemp("moe") / "m"
    _write_mixtral(d, experts, n)
    try:
        src = open_source(d)
    except InvalidInputError as exc:
        assert "\n" not in str(exc) and str(d) in str(exc)
        return
    stacked = {t.info.name: t.info.shape for t in src.tensors if t.parts}
    assert stacked == {"blk.0.ffn_gate_exps.weight": (n, 64, 32), "blk.0.ffn_up_exps.weight": (n, 64, 32),
                       "blk.0.ffn_down_exps.weight": (n, 32, 64)}
    assert set(experts) == set(range(n)) and all(experts[e] == _GOOD for e in experts)
