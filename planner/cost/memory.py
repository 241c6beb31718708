"""Memory: KV cache per layer (GQA, MLA latent, sliding windows, quantized KV), compute buffers and activations,
runtime overheads per device, GGUF headers, and the bytes of weights a runtime dequantizes on load.

Weights per format come from the formats table (planner.formats: each tensor's bytes in its encoding); ModelCost
(planner.cost.model) sums them per layer. Where the devices' memory goes is planner.cost.placement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from planner.errors import PlannerError, close_matches
from planner.formats import GGML_TYPES
from planner.plan import GIB

if TYPE_CHECKING:
    from planner.models.spec import ModelSpec
    from planner.plan import Target
    from planner.runtimes import Runtime

# Bytes per weight of a quantized tensor a runtime dequantizes on load (support mode 'dequantized').
DEQUANT_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4}
# Assumed: Metal command buffers and library, per device.
METAL_OVERHEAD_BYTES = int(0.1 * GIB)
# Assumed: activations of a runtime placing whole layers that is not llama.cpp (no measured compute buffer).
LAYER_ENGINE_ACTIVATION_BYTES = int(0.3 * GIB)

# Bytes per cached value for each KV dtype a runtime offers; ggml block types derive from their block layouts.
_KV_FLOAT_BYTES = {"f32": 4.0, "fp32": 4.0, "f16": 2.0, "fp16": 2.0, "bf16": 2.0, "auto": 2.0, "fp8": 1.0, "fp8_e4m3": 1.0,
                   "fp8_e5m2": 1.0, "fp8_e4m3fn": 1.0, "int8": 1.0, "q8": 1.0 + 2 / 32, "q6": 0.75 + 2 / 32, "q4": 0.5 + 2 / 32}


def kv_bytes_per_value(kv_dtype: str) -> float:
    """Bytes per cached K or V value in `kv_dtype` (q8_0/q4_0 from their ggml block layouts)."""
    key = kv_dtype.lower()
    if key in _KV_FLOAT_BYTES:
        return _KV_FLOAT_BYTES[key]
    t = GGML_TYPES.get(key.upper())
    if t is not None:
        return t.layout.bytes_per_block / t.layout.block_weights
    raise PlannerError(f"unknown KV cache dtype '{kv_dtype}'" + _hint(kv_dtype))


def _hint(name: str) -> str:
    c = close_matches(name, list(_KV_FLOAT_BYTES) + ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"])
    return f"; did you mean: {', '.join(c)}?" if c else ""


def kv_values_per_token(model: ModelSpec, layer: int, mla_aware: bool = True) -> int:
    """Cached values per token in one layer: 2 x kv_heads x head_dim, or the MLA latent + rope key."""
    if model.mla is not None:
        a = model.mla
        if mla_aware:
            return a.kv_lora_rank + a.qk_rope_head_dim
        return model.num_heads * (a.qk_nope_head_dim + a.qk_rope_head_dim + a.v_head_dim)
    return 2 * model.num_kv_heads * model.dim_head


def kv_layer_profile(model: ModelSpec, mla_aware: bool = True, swa_aware: bool = True,
                     kv_heads_divisor: int = 1) -> list[tuple[int, int | None]]:
    """Per layer: cached values per token, and the most tokens it holds (its sliding window) or None.

    Sliding-window layers hold at most `sliding_window` tokens when the runtime keeps a separate SWA cache;
    `kv_heads_divisor` splits the heads across tensor-parallel GPUs (never below one head per GPU).
    """
    out = []
    for i in range(model.num_layers):
        values = kv_values_per_token(model, i, mla_aware)
        if kv_heads_divisor > 1 and model.mla is None:
            values = 2 * max(1, -(-model.num_kv_heads // kv_heads_divisor)) * model.dim_head
        windowed = swa_aware and model.sliding_window and not model.is_global_layer(i)
        out.append((values, model.sliding_window if windowed else None))
    return out


def kv_values_held(profile: list[tuple[int, int | None]], tokens: int, layers: range | None = None) -> int:
    """Cached values of one sequence of `tokens` over `layers` of a kv_layer_profile."""
    total = 0
    for i in layers if layers is not None else range(len(profile)):
        values, cap = profile[i]
        total += values * (tokens if cap is None or tokens < cap else cap)
    return total


def kv_cache_bytes(model: ModelSpec, context: int, kv_dtype: str, sequences: int = 1, *, layers: range | None = None,
                   mla_aware: bool = True, swa_aware: bool = True, kv_heads_divisor: int = 1) -> int:
    """KV cache bytes for `sequences` sequences of `context` tokens over `layers` (all by default)."""
    profile = kv_layer_profile(model, mla_aware, swa_aware, kv_heads_divisor)
    return int(kv_values_held(profile, context, layers) * kv_bytes_per_value(kv_dtype) * sequences)


def llamacpp_compute_buffer_bytes(model: ModelSpec, context: int, ubatch: int = 512) -> int:
    """llama.cpp's GPU compute buffer: f32 activations of one micro-batch (logits row per token, the widest MLP,
    attention heads); flash attention keeps the score matrix out of it. Close to the logged 'CUDA0 compute buffer'."""
    ub = min(ubatch, max(context, 1))
    width = model.intermediate_size
    if model.moe is not None:
        width = max(width if model.moe.first_dense_layers else 0, model.moe.expert_intermediate_size * model.moe.experts_per_token)
    per_token = model.vocab_size + 2 * width + 4 * model.hidden_size + model.num_heads * model.dim_head * 2
    return int(ub * per_token * 4)


def engine_activation_bytes(model: ModelSpec, batched_tokens: int = 8192, max_seqs: int = 256) -> int:
    """Peak activations of a batching server's profiling run (vLLM-style: max_num_batched_tokens of bf16
    activations through the widest layer, plus fp32 logits for max_num_seqs)."""
    width = model.intermediate_size
    if model.moe is not None:
        width = max(width, model.moe.expert_intermediate_size * model.moe.experts_per_token)
    act = batched_tokens * 2 * (4 * model.hidden_size + 3 * width)
    logits = max_seqs * model.vocab_size * 4
    return int(act + logits)


def gguf_header_bytes(model: ModelSpec, n_tensors: int) -> int:
    """Approximate GGUF metadata size: tokenizer arrays dominate (token strings, types, scores, BPE merges),
    plus one tensor-info record per tensor. Large BPE vocabularies (Llama 3, Qwen) ship merges (~2 per token);
    SentencePiece vocabularies ship scores instead."""
    # SentencePiece vocabularies (Llama 1/2, Mistral, Phi-3: 32k; Gemma) store scores; byte-level BPE ones
    # (Llama 3, Qwen, SmolLM2's 49k, DeepSeek) store merges.
    bpe = model.vocab_size > 40000 and not model.architecture.startswith("gemma")
    per_token = 8 + 7 + 4 + (2 * (8 + 11) if bpe else 4)  # string len + text, token_type, merges or score
    return int(model.vocab_size * per_token + n_tensors * 72 + 16 * 1024)


def runtime_overhead_bytes(runtime: Runtime, target: Target) -> int:
    """Per-device runtime overhead: CUDA/HIP context and CUDA-graph pools (the runtimes table's figures)."""
    backend = target.device.backend
    if backend == "cpu":
        return 0
    if backend in ("cuda", "rocm"):
        return int((runtime.cuda_context_gib + runtime.cuda_graph_gib) * GIB)
    if target.device.backend == "metal":
        return METAL_OVERHEAD_BYTES
    return 0
