"""The matmuls one token runs through a model, from its tensor inventory: shapes and how many times each runs.

Runtimes fuse the attention projections (q, k, v -> one QKV GEMM) and the gated MLP's gate and up projections, so
the bench times them fused. Routed experts are timed per expert and counted k times per MoE layer (the active
count); the router, shared experts and MLA's low-rank projections are timed as they are. Per-head 3-D weights
(MLA's attn_k_b / attn_v_b) are timed as one (heads x rows, cols) matrix: the same bytes and FLOPs. The token
embedding is a row lookup, not a matmul; a tied embedding is also the output head and is timed as `lm_head`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import dataclass

if TYPE_CHECKING:
    from planner.models.inventory import TensorInfo
    from planner.models.spec import ModelSpec


@dataclass(frozen=True)
class MatmulShape:
    """One distinct matmul: weights (n out, k in), run `count` times per token over the whole model."""

    name: str
    n: int
    k: int
    count: int

    @property
    def params(self) -> int:
        """Weights in one instance."""
        return self.n * self.k


_FUSE = {"attn_q": "attn_qkv", "attn_k": "attn_qkv", "attn_v": "attn_qkv",
         "ffn_gate": "ffn_gate_up", "ffn_up": "ffn_gate_up",
         "ffn_gate_shexp": "ffn_gate_up_shexp", "ffn_up_shexp": "ffn_gate_up_shexp",
         "ffn_gate_exps": "ffn_gate_up_exps", "ffn_up_exps": "ffn_gate_up_exps"}


def model_shapes(spec: ModelSpec, tensors: list[TensorInfo] | None = None) -> list[MatmulShape]:
    """Distinct matmul shapes of one token's forward pass with their counts, in model order."""
    from planner.models.inventory import tensor_inventory

    tensors = tensors if tensors is not None else tensor_inventory(spec)
    active = spec.moe.experts_per_token if spec.moe is not None else 1
    counts: dict[tuple[str, int, int], int] = {}

    def add(name: str, n: int, k: int, times: int) -> None:
        counts[(name, n, k)] = counts.get((name, n, k), 0) + times

    by_layer: dict[int, list[TensorInfo]] = {}
    for t in tensors:
        if not t.is_matrix:
            continue
        if t.layer is None:
            if t.name == "output.weight":
                add("lm_head", t.shape[0], t.shape[1], 1)
            elif t.name == "token_embd.weight" and spec.tie_word_embeddings:
                add("lm_head", t.shape[0], t.shape[1], 1)
            continue
        by_layer.setdefault(t.layer, []).append(t)
    for layer in sorted(by_layer):
        fused: dict[tuple[str, int], int] = {}  # (fused name, k) -> rows
        for t in by_layer[layer]:
            expert = t.role.endswith("_exps")
            if expert:
                n, k = t.shape[1], t.shape[2]  # one expert's (rows, cols)
            elif len(t.shape) == 3:
                n, k = t.shape[0] * t.shape[1], t.shape[2]
            else:
                n, k = t.shape
            target = _FUSE.get(t.role)
            if target is not None and (target != "attn_qkv" or k == spec.hidden_size):
                fused[(target, k)] = fused.get((target, k), 0) + n
                continue
            add(t.role, n, k, active if expert else 1)
        for (name, k), n in fused.items():
            add(name, n, k, active if name.endswith("_exps") else 1)
    order = {"attn_qkv": 0, "attn_output": 2, "ffn_gate_inp": 3, "ffn_gate_up": 4, "ffn_down": 5,
             "ffn_gate_up_exps": 6, "ffn_down_exps": 7, "ffn_gate_up_shexp": 8, "ffn_down_shexp": 9, "lm_head": 99}
    return [MatmulShape(name, n, k, c) for (name, n, k), c in
            sorted(counts.items(), key=lambda kv: (order.get(kv[0][0], 1), kv[0][0], kv[0][1], kv[0][2]))]


def weights_per_token(shapes: list[MatmulShape]) -> int:
    """Weights one token multiplies through (the cost model's matmul_params_active)."""
    return sum(s.params * s.count for s in shapes)
