"""Hugging Face tensor names -> our GGUF names, so real checkpoints line up with tensor_inventory().

Only names with a clear GGUF counterpart are renamed; anything else (vision towers, MTP heads, packed
quantization blocks) keeps its original name. Per-expert 2-D tensors (experts.7.up_proj) are stacked into one
3-D tensor (E, rows, row_length) as llama.cpp's converter does, when every expert is there with one shape.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from planner.models.inventory import TensorInfo
from planner.models.readers.common import tensor_info
from planner.models.readers.safetensors_header import RawTensor
from planner.models.spec import ModelSpec

# Wrappers around the decoder: multimodal models nest it under language_model.
_PREFIXES = ("model.language_model.", "language_model.model.", "language_model.", "model.")

_TOP = {"embed_tokens": "token_embd", "norm": "output_norm", "lm_head": "output"}

# Module path inside a decoder layer -> GGUF role.
_LAYER: dict[str, str] = {
    "input_layernorm": "attn_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.qkv_proj": "attn_qkv",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "self_attn.q_a_proj": "attn_q_a",
    "self_attn.q_a_layernorm": "attn_q_a_norm",
    "self_attn.q_b_proj": "attn_q_b",
    "self_attn.kv_a_proj_with_mqa": "attn_kv_a_mqa",
    "self_attn.kv_a_layernorm": "attn_kv_a_norm",
    "self_attn.kv_b_proj": "attn_kv_b",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "mlp.gate_up_proj": "ffn_up",  # Phi-3's fused gate+up is ffn_up in GGUF
    "block_sparse_moe.gate": "ffn_gate_inp",
    "mlp.gate": "ffn_gate_inp",
    "mlp.router": "ffn_gate_inp",
    "mlp.shared_expert.gate_proj": "ffn_gate_shexp",
    "mlp.shared_expert.up_proj": "ffn_up_shexp",
    "mlp.shared_expert.down_proj": "ffn_down_shexp",
    "mlp.shared_experts.gate_proj": "ffn_gate_shexp",
    "mlp.shared_experts.up_proj": "ffn_up_shexp",
    "mlp.shared_experts.down_proj": "ffn_down_shexp",
    "mlp.shared_expert_gate": "ffn_gate_inp_shexp",
}
# Whole parameter names whose GGUF name has a different suffix.
_PARAM: dict[str, tuple[str, str]] = {
    "self_attn.sinks": ("attn_sinks", "weight"),
    "mlp.gate.e_score_correction_bias": ("exp_probs_b", "bias"),
}
_EXPERT_ROLE = {
    "w1": "ffn_gate_exps", "w3": "ffn_up_exps", "w2": "ffn_down_exps",
    "gate_proj": "ffn_gate_exps", "up_proj": "ffn_up_exps", "down_proj": "ffn_down_exps",
}
_LAYER_RE = re.compile(r"^layers\.(\d+)\.(.+)$", re.ASCII)
_EXPERT_RE = re.compile(r"^(?:block_sparse_moe|mlp)\.experts\.(\d+)\.(w1|w2|w3|gate_proj|up_proj|down_proj)\.(\w+)$", re.ASCII)


@dataclass(frozen=True)
class _Mapped:
    name: str
    layer: int | None
    expert: int | None = None  # set for one expert's slice, to be stacked


def gguf_name(hf_name: str, ffn_norm_name: str = "ffn_norm") -> str | None:
    """The GGUF name for one HF tensor name, or None when there is no clear counterpart."""
    m = _map(hf_name, ffn_norm_name)
    return m.name if m is not None and m.expert is None else None


def gguf_slot(hf_name: str, post_attention_layernorm: str = "ffn_norm") -> tuple[str, int | None] | None:
    """The GGUF name of one HF tensor and, for one routed expert's 2-D slice, its expert index (stacked in GGUF)."""
    m = _map(hf_name, post_attention_layernorm)
    return None if m is None else (m.name, m.expert)


def _map(hf_name: str, post_attention_layernorm: str) -> _Mapped | None:
    rest = hf_name
    for p in _PREFIXES:
        if rest.startswith(p):
            rest = rest[len(p):]
            break
    if "." not in rest:
        return None
    module, param = rest.rsplit(".", 1)
    if module in _TOP:
        return _Mapped(f"{_TOP[module]}.{param}", None)
    lm = _LAYER_RE.match(rest)
    if lm is None:
        return None
    layer, tail = int(lm.group(1)), lm.group(2)
    if tail in _PARAM:
        role, suffix = _PARAM[tail]
        return _Mapped(f"blk.{layer}.{role}.{suffix}", layer)
    em = _EXPERT_RE.match(tail)
    if em is not None:
        return _Mapped(f"blk.{layer}.{_EXPERT_ROLE[em.group(2)]}.{em.group(3)}", layer, int(em.group(1)))
    if "." not in tail:
        return None
    module, param = tail.rsplit(".", 1)
    if module == "post_attention_layernorm":
        role = post_attention_layernorm
    elif module in _LAYER:
        role = _LAYER[module]
    else:
        return None
    return _Mapped(f"blk.{layer}.{role}.{param}", layer)


def map_hf_tensors(raw: Sequence[RawTensor], spec: ModelSpec) -> tuple[list[TensorInfo], dict[str, str]]:
    """Rename HF tensors to GGUF names and stack per-expert slices; return tensors and name -> stored dtype."""
    # HF's post_attention_layernorm is the pre-MLP norm in Llama-style models (ffn_norm; gpt-oss keeps the name
    # post_attention_norm); Gemma 2/3 norm after attention there and have a separate pre_feedforward_layernorm.
    post_attn = "post_attention_norm" if spec.post_norms else spec.ffn_norm_name
    slots: list[TensorInfo | str] = []  # a TensorInfo, or the key of an expert group stacked at the end
    groups: dict[str, dict[int, RawTensor]] = {}
    group_layer: dict[str, int | None] = {}
    taken: set[str] = set()
    dtypes: dict[str, str] = {}
    for t in raw:
        m = _map(t.name, post_attn)
        if m is not None and m.expert is not None:
            if m.name not in groups:
                groups[m.name] = {}
                group_layer[m.name] = m.layer
                slots.append(m.name)
            groups[m.name][m.expert] = t
            continue
        name = m.name if m is not None and m.name not in taken else t.name
        taken.add(name)
        slots.append(tensor_info(name, t.shape, m.layer if name != t.name else None))
        dtypes[name] = t.dtype

    out: list[TensorInfo] = []
    for slot in slots:
        if isinstance(slot, TensorInfo):
            out.append(slot)
            continue
        parts = groups[slot]
        first = parts[min(parts)]
        stackable = (
            sorted(parts) == list(range(len(parts)))
            and slot not in taken
            and all(p.shape == first.shape and p.dtype == first.dtype for p in parts.values())
        )
        if stackable:
            taken.add(slot)
            out.append(tensor_info(slot, (len(parts), *first.shape), group_layer[slot]))
            dtypes[slot] = first.dtype
        else:  # gaps or mixed shapes: keep the experts as they are
            for i in sorted(parts):
                p = parts[i]
                out.append(tensor_info(p.name, p.shape, None))
                dtypes[p.name] = p.dtype
    return out, dtypes
