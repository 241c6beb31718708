"""The tensor inventory: every weight tensor of a model with its exact shape, named as in GGUF files.

Shapes are (rows, row_length) like PyTorch's (out_features, in_features); expert tensors are
(n_expert, rows, row_length). The row length (last dim) is ggml's ne[0], which block quantization runs along.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import dataclass
from math import prod

if TYPE_CHECKING:
    from planner.models.spec import ModelSpec



@dataclass(frozen=True)
class TensorInfo:
    """One tensor: GGUF name, shape, role (name without 'blk.N.' and suffix) and block index."""

    name: str
    shape: tuple[int, ...]
    role: str
    layer: int | None = None

    @property
    def n_elements(self) -> int:
        """Number of values in the tensor."""
        return prod(self.shape)

    @property
    def row_length(self) -> int:
        """Length of one row (ggml ne[0]), the axis block formats quantize along."""
        return self.shape[-1]

    @property
    def is_matrix(self) -> bool:
        """2-D or 3-D weights; 1-D norms, biases and sinks are never quantized."""
        return len(self.shape) >= 2 and self.name.endswith(".weight")

    @property
    def n_experts(self) -> int:
        """Experts stacked in the tensor (1 for ordinary tensors and per-head 3-D tensors like attn_k_b)."""
        return self.shape[0] if len(self.shape) == 3 and self.role.endswith("_exps") else 1

    @property
    def is_parameter(self) -> bool:
        """False for buffers llama.cpp precomputes (RoPE factors); they are in the file but not in parameter counts."""
        return self.role not in _COMPUTED_ROLES


_COMPUTED_ROLES = frozenset({"rope_freqs", "rope_factors_long", "rope_factors_short"})


def tensor_inventory(m: ModelSpec) -> list[TensorInfo]:
    """List every tensor of the text model in GGUF naming and order."""
    out: list[TensorInfo] = []

    def add(name: str, shape: tuple[int, ...], layer: int | None = None) -> None:
        base = name.rsplit(".", 1)[0]
        role = base.split(".", 2)[2] if base.startswith("blk.") else base
        out.append(TensorInfo(name, shape, role, layer))

    h = m.hidden_size
    if m.rope_factors == "freqs":
        add("rope_freqs.weight", (m.dim_head // 2,))
    elif m.rope_factors == "long_short":
        add("rope_factors_long.weight", (m.dim_head // 2,))
        add("rope_factors_short.weight", (m.dim_head // 2,))
    add("token_embd.weight", (m.vocab_size, h))
    for i in range(m.num_layers):
        _add_block(m, i, lambda name, shape, i=i: add(f"blk.{i}.{name}", shape, i))
    add("output_norm.weight", (h,))
    if m.norm_bias:
        add("output_norm.bias", (h,))
    if not m.tie_word_embeddings:
        add("output.weight", (m.vocab_size, h))
    return out


def _add_block(m: ModelSpec, i: int, add) -> None:  # type: ignore[no-untyped-def]
    """Add the tensors of transformer block i."""
    h = m.hidden_size
    hd = m.dim_head

    def norm(name: str, width: int = h) -> None:
        add(f"{name}.weight", (width,))
        if m.norm_bias:
            add(f"{name}.bias", (width,))

    def linear(name: str, rows: int, cols: int, bias: bool) -> None:
        add(f"{name}.weight", (rows, cols))
        if bias:
            add(f"{name}.bias", (rows,))

    norm("attn_norm")
    if m.mla is not None:
        a = m.mla
        q_width = m.num_heads * (a.qk_nope_head_dim + a.qk_rope_head_dim)
        if a.q_lora_rank is None:
            linear("attn_q", q_width, h, False)
        else:
            linear("attn_q_a", a.q_lora_rank, h, False)
            add("attn_q_a_norm.weight", (a.q_lora_rank,))
            linear("attn_q_b", q_width, a.q_lora_rank, False)
        linear("attn_kv_a_mqa", a.kv_lora_rank + a.qk_rope_head_dim, h, False)
        add("attn_kv_a_norm.weight", (a.kv_lora_rank,))
        if a.split_kv_b:
            add("attn_k_b.weight", (m.num_heads, a.kv_lora_rank, a.qk_nope_head_dim))
            add("attn_v_b.weight", (m.num_heads, a.v_head_dim, a.kv_lora_rank))
        else:
            linear("attn_kv_b", m.num_heads * (a.qk_nope_head_dim + a.v_head_dim), a.kv_lora_rank, False)
        linear("attn_output", h, m.num_heads * a.v_head_dim, m.attention_output_bias)
    else:
        q, kv = m.num_heads * hd, m.num_kv_heads * hd
        if m.fused_qkv:
            linear("attn_qkv", q + 2 * kv, h, m.attention_bias)
        else:
            linear("attn_q", q, h, m.attention_bias)
            linear("attn_k", kv, h, m.attention_bias)
            linear("attn_v", kv, h, m.attention_bias)
        if m.qk_norm and m.qk_norm_per_head:
            add("attn_q_norm.weight", (m.num_heads, hd))
            add("attn_k_norm.weight", (m.num_kv_heads, hd))
        elif m.qk_norm:
            add("attn_q_norm.weight", (hd,))
            add("attn_k_norm.weight", (hd,))
        linear("attn_output", h, q, m.attention_output_bias)
    if m.attention_sinks:
        add("attn_sinks.weight", (m.num_heads,))
    if m.post_norms:
        norm("post_attention_norm")
    if not m.parallel_block:
        norm(m.ffn_norm_name)
    if m.is_moe_layer(i):
        _add_moe(m, add)
    else:
        _add_mlp(m, add, "", m.intermediate_size)
    if m.post_norms:
        norm("post_ffw_norm")


def _add_mlp(m: ModelSpec, add, suffix: str, width: int) -> None:  # type: ignore[no-untyped-def]
    """A dense MLP (or a shared expert when suffix is '_shexp')."""
    h = m.hidden_size

    def linear(name: str, rows: int, cols: int) -> None:
        add(f"{name}{suffix}.weight", (rows, cols))
        if m.mlp_bias:
            add(f"{name}{suffix}.bias", (rows,))

    if m.mlp_gated and m.fused_gate_up:
        linear("ffn_up", 2 * width, h)
    elif m.mlp_gated:
        linear("ffn_gate", width, h)
        linear("ffn_up", width, h)
    else:
        linear("ffn_up", width, h)
    linear("ffn_down", h, width)


def _add_moe(m: ModelSpec, add) -> None:  # type: ignore[no-untyped-def]
    """Router, stacked routed experts and shared experts of one MoE layer."""
    assert m.moe is not None
    e, h, w = m.moe.num_experts, m.hidden_size, m.moe.expert_intermediate_size
    add("ffn_gate_inp.weight", (e, h))
    if m.moe.router_bias:
        add("ffn_gate_inp.bias", (e,))
    if m.moe.score_correction_bias:
        add("exp_probs_b.bias", (e,))
    names = ("ffn_gate_exps", "ffn_up_exps") if m.mlp_gated else ("ffn_up_exps",)
    for name in names:
        add(f"{name}.weight", (e, w, h))
        if m.moe.expert_bias:
            add(f"{name}.bias", (e, w))
    add("ffn_down_exps.weight", (e, h, w))
    if m.moe.expert_bias:
        add("ffn_down_exps.bias", (e, h))
    if m.moe.num_shared_experts:
        width = (m.moe.shared_expert_intermediate_size or w) * m.moe.num_shared_experts
        _add_mlp(m, add, "_shexp", width)
        if m.moe.shared_expert_gate:
            add("ffn_gate_inp_shexp.weight", (1, h))


def count_params(m: ModelSpec, tensors: list[TensorInfo] | None = None) -> int:
    """Total parameters: the text model's tensors (not RoPE buffers) plus any published extra (vision tower, MTP head)."""
    tensors = tensors if tensors is not None else tensor_inventory(m)
    return sum(t.n_elements for t in tensors if t.is_parameter) + m.extra_params


def active_fraction(m: ModelSpec, t: TensorInfo) -> float:
    """Fraction of a tensor's values one token reads at decode (k/E for routed experts, else 1)."""
    if m.moe is not None and t.role.endswith("_exps"):
        return m.moe.experts_per_token / m.moe.num_experts
    return 1.0


def count_active_params(m: ModelSpec, tensors: list[TensorInfo] | None = None) -> int:
    """Parameters used per token (routed experts counted k/E); the embedding table counts, as in published figures."""
    tensors = tensors if tensors is not None else tensor_inventory(m)
    return int(sum(t.n_elements * active_fraction(m, t) for t in tensors if t.is_parameter))
