"""ModelSpec: everything needed to list every weight tensor of a transformer with its exact shape."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from planner.models.model import ModelMethods

_ID_RE = r"^[a-z0-9][a-z0-9._-]*$"


class MoESpec(BaseModel):
    """Mixture-of-experts feed-forward layers."""

    model_config = ConfigDict(extra="forbid", frozen=True, from_attributes=True)

    num_experts: int = Field(ge=2, le=1024, description="Routed experts per MoE layer.")
    experts_per_token: int = Field(ge=1, le=64, description="Routed experts active per token (top-k).")
    expert_intermediate_size: int = Field(gt=0, le=131072, description="Hidden width of one routed expert's MLP.")
    num_shared_experts: int = Field(default=0, ge=0, le=16, description="Always-active shared experts.")
    shared_expert_intermediate_size: int | None = Field(
        default=None, gt=0, le=131072, description="Width of one shared expert (defaults to expert_intermediate_size)."
    )
    shared_expert_gate: bool = Field(default=False, description="A sigmoid gate on the shared expert (Qwen2-MoE).")
    first_dense_layers: int = Field(default=0, ge=0, le=512, description="Leading layers with a dense MLP (intermediate_size) instead of experts.")
    router_bias: bool = Field(default=False, description="The router has a bias (gpt-oss).")
    expert_bias: bool = Field(default=False, description="Expert projections have biases (gpt-oss).")
    score_correction_bias: bool = Field(default=False, description="Per-expert routing bias (DeepSeek-V3 e_score_correction_bias).")

    @model_validator(mode="after")
    def _k_le_e(self) -> "MoESpec":
        if self.experts_per_token > self.num_experts:
            raise ValueError("experts_per_token cannot exceed num_experts")
        return self


class MLASpec(BaseModel):
    """Multi-head latent attention (DeepSeek-V2/V3): low-rank compressed K/V."""

    model_config = ConfigDict(extra="forbid", frozen=True, from_attributes=True)

    q_lora_rank: int | None = Field(default=None, gt=0, le=65536, description="Rank of the query compression (None: full q projection).")
    kv_lora_rank: int = Field(gt=0, le=65536, description="Rank of the shared KV latent (what the KV cache stores).")
    qk_nope_head_dim: int = Field(gt=0, le=1024, description="Per-head query/key dims without RoPE.")
    qk_rope_head_dim: int = Field(gt=0, le=1024, description="Per-head query/key dims with RoPE (the key part is shared).")
    v_head_dim: int = Field(gt=0, le=1024, description="Per-head value dims.")
    split_kv_b: bool = Field(
        default=False,
        description="kv_b stored per head as attn_k_b (heads, kv_lora_rank, qk_nope_head_dim) and attn_v_b "
        "(heads, v_head_dim, kv_lora_rank), as llama.cpp converts MLA models since 2025; False: one attn_kv_b matrix.",
    )


class ModelSpec(ModelMethods, BaseModel):
    """One model architecture with its exact shapes and its published parameter count."""

    model_config = ConfigDict(extra="forbid", frozen=True, from_attributes=True)

    id: str = Field(pattern=_ID_RE, description="Stable lower-case id, e.g. 'llama-3.1-70b'.")
    name: str = Field(min_length=1, description="Display name.")
    family: str = Field(min_length=1, description="Model family, e.g. 'Llama 3.1'.")
    architecture: str = Field(min_length=1, description="GGUF architecture name (llama, qwen2, gemma2, deepseek2, gpt-oss, ...).")
    hf_repo: str | None = Field(default=None, description="Hugging Face repo id of the reference checkpoint.")
    aliases: list[str] = Field(default_factory=list, description="Other names, incl. other HF repo ids with the same shapes.")
    reference_for_size: str | None = Field(
        default=None, pattern=r"^\d+(\.\d+)?[bB]$", description="Bare size this profile answers for, e.g. '70B' (one profile per size)."
    )
    vocab_size: int = Field(gt=0, le=2_000_000, description="Embedding rows (padded vocabulary).")
    hidden_size: int = Field(gt=0, le=65536, description="Model width.")
    num_layers: int = Field(gt=0, le=1024, description="Transformer blocks.")
    num_heads: int = Field(gt=0, le=1024, description="Query heads.")
    num_kv_heads: int = Field(gt=0, le=1024, description="Key/value heads (GQA); equal to num_heads for MHA.")
    head_dim: int | None = Field(default=None, gt=0, le=1024, description="Per-head dim (default hidden_size / num_heads).")
    intermediate_size: int = Field(gt=0, le=262144, description="Dense MLP hidden width.")
    mlp_gated: bool = Field(default=True, description="Gated MLP (SwiGLU/GeGLU: gate, up, down) rather than up/down.")
    tie_word_embeddings: bool = Field(default=False, description="Output projection shares the token embedding.")
    attention_bias: bool = Field(default=False, description="q/k/v projections have biases (Qwen2).")
    attention_output_bias: bool = Field(default=False, description="The attention output projection has a bias.")
    mlp_bias: bool = Field(default=False, description="MLP projections have biases.")
    norm: Literal["rmsnorm", "layernorm"] = Field(default="rmsnorm", description="Normalisation kind (layernorm has a bias).")
    norm_bias: bool = Field(default=False, description="Norms carry a bias vector.")
    qk_norm: bool = Field(default=False, description="Per-head RMSNorm on q and k (Qwen3, Gemma 3).")
    qk_norm_per_head: bool = Field(
        default=False,
        description="With qk_norm: one weight row per head, shapes (heads, head_dim) and (kv_heads, head_dim) (Command R+); "
        "False: one (head_dim,) vector shared by all heads.",
    )
    post_norms: bool = Field(default=False, description="Extra post-attention and post-MLP norms per layer (Gemma 2/3).")
    ffn_norm_name: Literal["ffn_norm", "post_attention_norm"] = Field(
        default="ffn_norm", description="GGUF name of the norm in front of the MLP (gpt-oss calls it post_attention_norm)."
    )
    parallel_block: bool = Field(default=False, description="Attention and MLP read the same normed input (one norm per layer; Command R).")
    fused_qkv: bool = Field(default=False, description="q, k, v stored as one tensor (Phi-3).")
    fused_gate_up: bool = Field(default=False, description="gate and up stored as one tensor (Phi-3).")
    attention_sinks: bool = Field(default=False, description="Learned per-head attention sink logits (gpt-oss).")
    sliding_window: int | None = Field(default=None, gt=0, le=10_000_000, description="Local attention window in tokens.")
    global_every: int | None = Field(
        default=None, ge=1, le=1024,
        description="With sliding_window: every Nth layer (1-based) attends globally; None means every layer is windowed.",
    )
    rope_factors: Literal["none", "freqs", "long_short"] = Field(
        default="none",
        description="Precomputed RoPE factors llama.cpp stores, each (head_dim/2,): 'freqs' = rope_freqs (Llama 3.1+ "
        "'llama3' scaling); 'long_short' = rope_factors_long and rope_factors_short (Phi-3 LongRoPE). "
        "Computed buffers, not parameters: listed in the inventory, skipped by count_params.",
    )
    max_context: int = Field(gt=0, le=100_000_000, description="Maximum context length in tokens.")
    native_dtype: Literal["float32", "float16", "bfloat16", "float8_e4m3", "mxfp4"] = Field(
        default="bfloat16", description="dtype of the released weights."
    )
    native_dtype_source: str | None = Field(
        default=None, min_length=1,
        description="Where the released precision is stated (model card / config URL); needed for a quantized release.",
    )
    moe: MoESpec | None = Field(default=None, description="Mixture-of-experts settings.")
    mla: MLASpec | None = Field(default=None, description="Multi-head latent attention settings.")
    extra_params: int = Field(
        default=0, ge=0, description="Parameters outside the text decoder (vision/audio tower, MTP head) included in the published count."
    )
    params_published: int = Field(gt=0, description="Published total parameter count.")
    active_params_published: int | None = Field(default=None, gt=0, description="Published active parameters per token (MoE).")
    params_source: str = Field(min_length=1, description="Where the shapes and the published count come from (URL).")
    notes: str | None = Field(default=None, description="Caveats.")

    @model_validator(mode="after")
    def _cross_field(self) -> "ModelSpec":
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        if self.global_every is not None and self.sliding_window is None:
            raise ValueError("global_every needs sliding_window")
        if self.head_dim is None and self.mla is None and self.hidden_size % self.num_heads:
            raise ValueError("hidden_size is not a multiple of num_heads; give head_dim")
        if self.moe is not None and self.moe.first_dense_layers > self.num_layers:
            raise ValueError("moe.first_dense_layers exceeds num_layers")
        if self.qk_norm_per_head and not self.qk_norm:
            raise ValueError("qk_norm_per_head needs qk_norm")
        if self.ffn_norm_name == "post_attention_norm" and (self.post_norms or self.parallel_block):
            raise ValueError("ffn_norm_name 'post_attention_norm' clashes with post_norms / parallel_block")
        return self


class ProfileFile(BaseModel):
    """One YAML file of profiles/: a model family."""

    model_config = ConfigDict(extra="forbid", frozen=True, from_attributes=True)

    family: str = Field(min_length=1, description="Family name.")
    description: str | None = Field(default=None, description="What the file covers.")
    models: list[ModelSpec] = Field(min_length=1, description="The models of this family.")
