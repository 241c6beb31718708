"""Hugging Face config.json -> ModelSpec, and pre-quantized checkpoint detection.

Each supported `architectures` class is one row of a table: its GGUF architecture name, the transformers
config-class defaults that real config.json files omit, and the few structural traits that differ between
families. Feature readers (MoE, MLA, sliding window) are plain functions the rows point at.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from planner.errors import InvalidInputError, preview
from planner.models.inventory import count_active_params, count_params
from planner.models.readers.common import build_spec, layer_pattern_period, make_id, show, validated
from planner.models.spec import MLASpec, ModelSpec, MoESpec

_MISSING: Any = object()
_INT_CAP = 1 << 40  # beyond any real dimension; ModelSpec's own bounds are checked after


class _Cfg:
    """Typed reads from one config.json object; every problem names the file and the field."""

    def __init__(self, data: Mapping[str, Any], source: str, prefix: str = ""):
        self.data, self.source, self.prefix = data, source, prefix

    def error(self, key: str, expected: str) -> InvalidInputError:
        return InvalidInputError(f"{self.source}: {self.prefix}{key}: expected {expected}")

    def raw(self, key: str) -> Any:
        return self.data.get(key)

    def _as_int(self, key: str, value: Any, expected: str, minimum: int) -> int:
        # Integral floats (4096.0) occur in hand-edited configs; anything else is a type error.
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= _INT_CAP:
            raise self.error(key, expected)
        return value

    def pos_int(self, key: str, default: Any = _MISSING) -> int:
        """A required positive integer (or `default` when absent or null)."""
        value = self.data.get(key)
        if value is None:
            if default is _MISSING:
                raise self.error(key, "a positive integer")
            return default
        return self._as_int(key, value, "a positive integer", 1)

    def opt_pos_int(self, key: str) -> int | None:
        """A positive integer, or None when absent or null."""
        return self.pos_int(key, None)

    def nonneg_int(self, key: str, default: int = 0) -> int:
        """A non-negative integer (default when absent or null)."""
        value = self.data.get(key)
        return default if value is None else self._as_int(key, value, "a non-negative integer", 0)

    def flag(self, key: str, default: bool) -> bool:
        """A boolean (default when absent or null)."""
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, "true or false")
        return value

    def text(self, key: str) -> str | None:
        """A string, or None when absent or null."""
        value = self.data.get(key)
        if value is not None and not isinstance(value, str):
            raise self.error(key, "a string")
        return value


# --- feature readers ---------------------------------------------------------------------------------------


def _no_moe(c: _Cfg) -> MoESpec | None:
    return None


def _moe_mixtral(c: _Cfg) -> MoESpec | None:
    """Mixtral: num_local_experts experts of intermediate_size, no shared expert."""
    return validated(c.source, MoESpec, dict(
        num_experts=c.pos_int("num_local_experts"),
        experts_per_token=c.pos_int("num_experts_per_tok"),
        expert_intermediate_size=c.pos_int("intermediate_size"),
    ))


def _moe_qwen(c: _Cfg) -> MoESpec | None:
    """Qwen2-MoE / Qwen3-MoE: moe_intermediate_size experts; Qwen2-MoE adds one gated shared expert."""
    if c.pos_int("decoder_sparse_step", 1) != 1:
        raise c.error("decoder_sparse_step", "1 (experts in every layer); other layouts are not supported")
    first_dense = _leading_prefix(c, "mlp_only_layers")
    shared = c.nonneg_int("shared_expert_intermediate_size")
    return validated(c.source, MoESpec, dict(
        # transformers 5 saves Qwen MoE configs with num_local_experts (its attribute_map alias of num_experts)
        num_experts=c.pos_int("num_experts", None) or c.pos_int("num_local_experts"),
        experts_per_token=c.pos_int("num_experts_per_tok"),
        expert_intermediate_size=c.pos_int("moe_intermediate_size"),
        num_shared_experts=1 if shared else 0,
        shared_expert_intermediate_size=shared or None,
        shared_expert_gate=bool(shared),
        first_dense_layers=first_dense,
    ))


def _leading_prefix(c: _Cfg, key: str) -> int:
    """mlp_only_layers must be [] or 0..k-1 (dense leading layers); return k."""
    value = c.raw(key)
    if value is None or value == []:
        return 0
    if not isinstance(value, list) or value != list(range(len(value))):
        raise c.error(key, "[] or the leading layers 0..k-1; other dense-layer layouts are not supported")
    return len(value)


def _moe_deepseek(c: _Cfg) -> MoESpec | None:
    """DeepSeek-V2/V3: routed + shared experts after first_k_dense_replace dense layers."""
    if c.raw("n_routed_experts") is None:
        return None
    if c.pos_int("moe_layer_freq", 1) != 1:
        raise c.error("moe_layer_freq", "1 (experts in every layer after the dense ones); other layouts are not supported")
    return validated(c.source, MoESpec, dict(
        num_experts=c.pos_int("n_routed_experts"),
        experts_per_token=c.pos_int("num_experts_per_tok"),
        expert_intermediate_size=c.pos_int("moe_intermediate_size"),
        num_shared_experts=c.nonneg_int("n_shared_experts"),
        first_dense_layers=c.nonneg_int("first_k_dense_replace"),
        # V3's aux-loss-free routing adds a per-expert bias (e_score_correction_bias).
        score_correction_bias=c.text("topk_method") == "noaux_tc",
    ))


def _moe_gptoss(c: _Cfg) -> MoESpec | None:
    """gpt-oss: experts with biases and a router with a bias."""
    k = c.pos_int("experts_per_token", None) or c.pos_int("num_experts_per_tok")
    return validated(c.source, MoESpec, dict(
        num_experts=c.pos_int("num_local_experts"),
        experts_per_token=k,
        expert_intermediate_size=c.pos_int("intermediate_size"),
        router_bias=True,
        expert_bias=True,
    ))


def _no_mla(c: _Cfg) -> MLASpec | None:
    return None


def _mla_deepseek(c: _Cfg) -> MLASpec | None:
    """DeepSeek latent attention ranks (q_lora_rank null: full query projection, as in V2-Lite)."""
    return validated(c.source, MLASpec, dict(
        q_lora_rank=c.opt_pos_int("q_lora_rank"),
        kv_lora_rank=c.pos_int("kv_lora_rank"),
        qk_nope_head_dim=c.pos_int("qk_nope_head_dim"),
        qk_rope_head_dim=c.pos_int("qk_rope_head_dim"),
        v_head_dim=c.pos_int("v_head_dim"),
    ))


_LAYER_TYPES = {"sliding_attention": True, "full_attention": False}


def _window(c: _Cfg, arch: "_Arch", n_layers: int, max_context: int, notes: list[str]) -> tuple[int | None, int | None]:
    """(sliding_window, global_every) from sliding_window plus layer_types / sliding_window_pattern."""
    if arch.window_flag is not None and not c.flag(arch.window_flag, False):
        if c.raw("sliding_window") is not None:
            notes.append(f"{arch.window_flag} is false: sliding_window ignored, every layer attends globally")
        return None, None
    window = c.opt_pos_int("sliding_window")
    if window is None or window >= max_context:
        return None, None
    if arch.window_flag is not None:
        # Qwen: the first max_window_layers layers attend globally, the rest use the window. Only the all-windowed
        # case maps onto ModelSpec; otherwise count every layer as global (an upper bound on the KV cache).
        full = c.nonneg_int("max_window_layers", 0)
        if full >= n_layers:
            return None, None
        if full > 0:
            notes.append(f"max_window_layers={full}: the {n_layers - full} windowed layers are counted as global")
            return None, None
    period: int | None
    layer_types = c.raw("layer_types")
    if layer_types is not None:
        if (
            not isinstance(layer_types, list)
            or len(layer_types) != n_layers
            or any(not isinstance(t, str) or t not in _LAYER_TYPES for t in layer_types)
        ):
            raise c.error("layer_types", f"a list of {n_layers} 'sliding_attention' / 'full_attention' entries")
        period = layer_pattern_period([_LAYER_TYPES[t] for t in layer_types], notes, f"{c.prefix}layer_types")
    else:
        period = c.opt_pos_int("sliding_window_pattern")
    if period == 1:  # every layer global: the window never applies
        return None, None
    return window, period


# --- the architecture table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Arch:
    """How one transformers `architectures` class maps onto ModelSpec."""

    gguf: str  # GGUF architecture name (llama.cpp's convert_hf_to_gguf.py)
    family: str
    # transformers config-class defaults for fields real config.json files leave out
    defaults: Mapping[str, Any] = field(default_factory=dict)
    qkv_bias_only: bool = False  # q/k/v biases always, no o_proj bias (Qwen2); else read attention_bias
    qk_norm: bool | str = False  # True, or the config key that switches it on
    qk_norm_per_head: bool = False  # q/k norm weights are (heads, head_dim) (Command R+)
    post_norms: bool = False
    parallel_block: bool = False
    norm: str = "rmsnorm"
    fused: bool = False  # fused qkv and gate_up (Phi-3)
    sinks: bool = False
    ffn_norm_name: str = "ffn_norm"  # GGUF name of the pre-MLP norm (gpt-oss: post_attention_norm)
    text_config: bool = False  # the language model's fields live under text_config (multimodal wrappers)
    window_flag: str | None = None  # config key that must be true for sliding_window to apply (Qwen)
    moe: Callable[[_Cfg], MoESpec | None] = _no_moe
    mla: Callable[[_Cfg], MLASpec | None] = _no_mla


_GEMMA3_TEXT_DEFAULTS = {
    # Gemma3TextConfig defaults: the 4B/12B/27B checkpoints' text_config lists only what differs from these.
    "vocab_size": 262208, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
    "max_position_embeddings": 131072, "sliding_window": 4096, "sliding_window_pattern": 6,
    "tie_word_embeddings": True,
}

ARCHITECTURES: dict[str, _Arch] = {
    "LlamaForCausalLM": _Arch("llama", "Llama"),
    "MistralForCausalLM": _Arch("llama", "Mistral"),
    "Mistral3ForConditionalGeneration": _Arch("llama", "Mistral", text_config=True),
    "MixtralForCausalLM": _Arch("llama", "Mixtral", moe=_moe_mixtral),
    "Qwen2ForCausalLM": _Arch("qwen2", "Qwen2", qkv_bias_only=True, window_flag="use_sliding_window"),
    "Qwen2MoeForCausalLM": _Arch("qwen2moe", "Qwen2 MoE", qkv_bias_only=True, window_flag="use_sliding_window", moe=_moe_qwen),
    "Qwen3ForCausalLM": _Arch("qwen3", "Qwen3", qk_norm=True, window_flag="use_sliding_window"),
    "Qwen3MoeForCausalLM": _Arch("qwen3moe", "Qwen3 MoE", qk_norm=True, window_flag="use_sliding_window", moe=_moe_qwen),
    "Gemma2ForCausalLM": _Arch(
        "gemma2", "Gemma 2", post_norms=True,
        defaults={"tie_word_embeddings": True, "head_dim": 256, "sliding_window": 4096, "sliding_window_pattern": 2},
    ),
    "Gemma3ForCausalLM": _Arch("gemma3", "Gemma 3", qk_norm=True, post_norms=True, defaults=_GEMMA3_TEXT_DEFAULTS),
    "Gemma3ForConditionalGeneration": _Arch(
        "gemma3", "Gemma 3", qk_norm=True, post_norms=True, text_config=True, defaults=_GEMMA3_TEXT_DEFAULTS
    ),
    "Phi3ForCausalLM": _Arch("phi3", "Phi-3", fused=True),
    "DeepseekV2ForCausalLM": _Arch("deepseek2", "DeepSeek-V2", moe=_moe_deepseek, mla=_mla_deepseek),
    "DeepseekV3ForCausalLM": _Arch("deepseek2", "DeepSeek-V3", moe=_moe_deepseek, mla=_mla_deepseek),
    "GptOssForCausalLM": _Arch(
        "gpt-oss", "gpt-oss", sinks=True, moe=_moe_gptoss, ffn_norm_name="post_attention_norm",
        defaults={"sliding_window_pattern": 2},
    ),
    "CohereForCausalLM": _Arch(
        "command-r", "Command R", qk_norm="use_qk_norm", qk_norm_per_head=True, parallel_block=True, norm="layernorm",
        defaults={"tie_word_embeddings": True},
    ),
    "Cohere2ForCausalLM": _Arch(
        "cohere2", "Command R7B", parallel_block=True, norm="layernorm",
        defaults={"tie_word_embeddings": True, "sliding_window_pattern": 4},
    ),
}

# config.json files without an `architectures` list still name their model_type.
_BY_MODEL_TYPE = {
    "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "mixtral": "MixtralForCausalLM",
    "qwen2": "Qwen2ForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM", "qwen3": "Qwen3ForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM", "gemma2": "Gemma2ForCausalLM", "gemma3_text": "Gemma3ForCausalLM",
    "gemma3": "Gemma3ForConditionalGeneration", "phi3": "Phi3ForCausalLM", "deepseek_v2": "DeepseekV2ForCausalLM",
    "deepseek_v3": "DeepseekV3ForCausalLM", "gpt_oss": "GptOssForCausalLM", "cohere": "CohereForCausalLM",
    "cohere2": "Cohere2ForCausalLM", "mistral3": "Mistral3ForConditionalGeneration",
}

_DTYPES = {"bfloat16": "bfloat16", "float16": "float16", "half": "float16", "float32": "float32", "float": "float32"}


def supported_architectures() -> list[str]:
    """The transformers `architectures` classes spec_from_hf_config understands."""
    return sorted(ARCHITECTURES)


def _pick_architecture(config: Mapping[str, Any], source: str) -> tuple[str, _Arch]:
    archs = config.get("architectures")
    names = [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else []
    for a in names:
        if a in ARCHITECTURES:
            return a, ARCHITECTURES[a]
    model_type = config.get("model_type")
    if archs is None and isinstance(model_type, str) and model_type in _BY_MODEL_TYPE:
        a = _BY_MODEL_TYPE[model_type]
        return a, ARCHITECTURES[a]
    found = f"found {preview(names, 120)}" if names else "found none"
    raise InvalidInputError(
        f"{source}: architectures: expected one of {', '.join(supported_architectures())}; {found}"
    )


def _text_config(config: Mapping[str, Any], arch: _Arch, source: str) -> _Cfg:
    """The language model's fields: text_config for multimodal wrappers, with the arch defaults underneath."""
    if not arch.text_config:
        return _Cfg({**arch.defaults, **config}, source)
    text = config.get("text_config")
    if not isinstance(text, Mapping):
        raise InvalidInputError(f"{source}: text_config: expected an object with the language model's fields")
    # dtype and tying are often only stated at the top level of a multimodal config.
    inherited = {k: config[k] for k in ("torch_dtype", "dtype", "tie_word_embeddings") if k in config}
    return _Cfg({**arch.defaults, **inherited, **text}, source, "text_config.")


def quantization_from_config(config: Mapping[str, Any], source: str) -> dict[str, Any] | None:
    """Describe a pre-quantized checkpoint (GPTQ, AWQ, bitsandbytes, FP8, compressed-tensors, MXFP4, MLX), or None."""
    qc = config.get("quantization_config")
    if qc is None and isinstance(config.get("text_config"), Mapping):
        qc = config["text_config"].get("quantization_config")
    if qc is None:
        mlx = config.get("quantization")  # mlx-lm writes {"group_size": 64, "bits": 4}
        if isinstance(mlx, Mapping):
            return {"method": "mlx", "bits": _int_or_none(mlx.get("bits")), "group_size": _int_or_none(mlx.get("group_size")),
                    "source": f"{source}: quantization", "config": dict(mlx)}
        return None
    if not isinstance(qc, Mapping):
        raise InvalidInputError(f"{source}: quantization_config: expected an object")
    method = qc.get("quant_method")
    if not isinstance(method, str):
        # Old bitsandbytes configs carry only the load_in_* flags.
        method = "bitsandbytes" if qc.get("load_in_4bit") or qc.get("load_in_8bit") else "unknown"
    method = method.lower().replace("_", "-")
    bits = _int_or_none(qc.get("bits"))
    group = _int_or_none(qc.get("group_size") if "group_size" in qc else qc.get("q_group_size"))
    out: dict[str, Any] = {"method": method, "bits": bits, "group_size": group}
    if method == "bitsandbytes":
        out["bits"] = 4 if qc.get("load_in_4bit") else 8 if qc.get("load_in_8bit") else bits
        if isinstance(qc.get("bnb_4bit_quant_type"), str):
            out["quant_type"] = qc["bnb_4bit_quant_type"]
    elif method == "fp8":
        out["bits"] = 8
        block = qc.get("weight_block_size")
        if isinstance(block, list):
            out["block_size"] = block
    elif method == "mxfp4":
        out["bits"], out["group_size"] = 4, 32
    elif method == "compressed-tensors":
        groups = qc.get("config_groups")
        first = next(iter(groups.values()), None) if isinstance(groups, Mapping) and groups else None
        weights = first.get("weights") if isinstance(first, Mapping) else None
        if isinstance(weights, Mapping):
            out["bits"] = _int_or_none(weights.get("num_bits"))
            out["group_size"] = _int_or_none(weights.get("group_size"))
            if isinstance(weights.get("type"), str):
                out["quant_type"] = weights["type"]
        if isinstance(qc.get("format"), str):
            out["format"] = qc["format"]
    out["source"] = f"{source}: quantization_config"
    out["config"] = dict(qc)
    return out


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _native_dtype(c: _Cfg, quant: Mapping[str, Any] | None) -> str:
    if quant is not None and quant.get("method") == "mxfp4":
        return "mxfp4"
    if quant is not None and quant.get("method") == "fp8":
        return "float8_e4m3"
    name = c.raw("torch_dtype") or c.raw("dtype")
    return _DTYPES.get(name, "bfloat16") if isinstance(name, str) else "bfloat16"


# RoPE scalings for which llama.cpp stores precomputed factor tensors (see ModelSpec.rope_factors).
_ROPE_FACTORS = {"llama3": "freqs", "longrope": "long_short", "su": "long_short"}


def _rope_factors(c: _Cfg) -> str:
    scaling = c.raw("rope_scaling")
    if not isinstance(scaling, Mapping):  # transformers 5 saves RoPE settings as rope_parameters
        scaling = c.raw("rope_parameters")
    if not isinstance(scaling, Mapping):
        return "none"
    kind = scaling.get("rope_type", scaling.get("type"))
    return _ROPE_FACTORS.get(kind, "none") if isinstance(kind, str) else "none"


_HF_CACHE_RE = re.compile(r"^models--(?P<org>[^/]+?)--(?P<name>.+)$")


def _names_from_source(source: str) -> tuple[str, str | None]:
    """(display name, HF repo id) from where the config lives; HF cache snapshots give 'org/name'."""
    p = PurePath(source)
    directory = p.parent if p.suffix == ".json" else p
    parts = directory.parts
    if len(parts) >= 3 and parts[-2] == "snapshots":
        m = _HF_CACHE_RE.match(parts[-3])
        if m:
            return m.group("name"), f"{m.group('org')}/{m.group('name')}"
    return (directory.name or "local model"), None


def spec_from_hf_config(config: dict, source: str) -> ModelSpec:
    """Map a Hugging Face config.json (as a dict) to a ModelSpec; `source` names the file in errors and provenance."""
    if not isinstance(config, Mapping):
        raise InvalidInputError(f"{source}: expected a JSON object at the top level")
    arch_name, arch = _pick_architecture(config, source)
    c = _text_config(config, arch, source)
    notes = [f"shapes from {arch_name} config.json; parameter count computed from them (not a published figure)"]

    hidden = c.pos_int("hidden_size")
    n_layers = c.pos_int("num_hidden_layers")
    n_heads = c.pos_int("num_attention_heads")
    n_kv = c.pos_int("num_key_value_heads", n_heads)
    max_context = c.pos_int("max_position_embeddings")
    mla = arch.mla(c)
    moe = arch.moe(c)
    head_dim = None if mla is not None else c.opt_pos_int("head_dim")
    if head_dim is not None and head_dim * n_heads == hidden:
        head_dim = None  # the default; keeps specs from config and from profiles alike
    if mla is None and head_dim is None and hidden % n_heads:
        raise c.error("head_dim", f"a head size, since hidden_size {hidden} is not a multiple of num_attention_heads {n_heads}")
    if n_heads % n_kv:
        raise c.error("num_key_value_heads", f"a divisor of num_attention_heads ({n_heads}), found {n_kv}")
    attn_bias = arch.qkv_bias_only or c.flag("attention_bias", False)
    qk_norm = c.flag(arch.qk_norm, False) if isinstance(arch.qk_norm, str) else arch.qk_norm
    window, global_every = _window(c, arch, n_layers, max_context, notes)
    if arch.text_config:
        notes.append("text decoder only: the vision tower is not counted")
    quant = quantization_from_config(config, source)
    name, hf_repo = _names_from_source(source)

    kwargs: dict[str, Any] = dict(
        id=make_id(name, arch.gguf),
        name=name,
        family=arch.family,
        architecture=arch.gguf,
        hf_repo=hf_repo,
        vocab_size=c.pos_int("vocab_size"),
        hidden_size=hidden,
        num_layers=n_layers,
        num_heads=n_heads,
        num_kv_heads=n_kv,
        head_dim=head_dim,
        intermediate_size=c.pos_int("intermediate_size"),
        tie_word_embeddings=c.flag("tie_word_embeddings", False),
        attention_bias=attn_bias,
        attention_output_bias=attn_bias and not arch.qkv_bias_only,
        mlp_bias=c.flag("mlp_bias", False),
        norm=arch.norm,
        qk_norm=qk_norm,
        qk_norm_per_head=qk_norm and arch.qk_norm_per_head,
        post_norms=arch.post_norms,
        ffn_norm_name=arch.ffn_norm_name,
        parallel_block=arch.parallel_block,
        fused_qkv=arch.fused,
        fused_gate_up=arch.fused,
        attention_sinks=arch.sinks,
        sliding_window=window,
        global_every=global_every,
        rope_factors=_rope_factors(c),
        max_context=max_context,
        native_dtype=_native_dtype(c, quant),
        native_dtype_source=quant["source"] if quant and quant.get("method") in ("fp8", "mxfp4") else None,
        moe=moe,
        mla=mla,
        params_published=1,  # replaced below by the count from the shapes
        params_source=source,
        notes="; ".join(notes),
    )
    spec = build_spec(kwargs, source)
    total = count_params(spec)
    update: dict[str, Any] = {"params_published": total}
    if moe is not None:
        update["active_params_published"] = count_active_params(spec)
    return build_spec({**kwargs, **update}, source)
