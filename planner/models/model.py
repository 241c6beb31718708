"""Model behaviour shared by the pydantic schema (ModelSpec) and cached records (ModelRecord)."""

from __future__ import annotations

from planner.cache import Record


class ModelMethods:
    """Derived values of a model; needs the ModelSpec fields."""

    @property
    def dim_head(self) -> int:
        """Per-head dimension."""
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def gqa_ratio(self) -> int:
        """Query heads per KV head."""
        return self.num_heads // self.num_kv_heads

    def architecture_notes(self) -> str:
        """'MoE 8/128, SWA 4096, GQA 4:1': the one wording `planner models` and the TUI use (GQA as query heads per
        KV head; left out under MLA, whose KV cache is a latent, not heads)."""
        out = []
        if self.moe is not None:
            out.append(f"MoE {self.moe.experts_per_token}/{self.moe.num_experts}")
        if self.mla is not None:
            out.append("MLA")
        if self.sliding_window:
            out.append(f"SWA {self.sliding_window}")
        if self.gqa_ratio > 1 and self.mla is None:
            out.append(f"GQA {self.gqa_ratio}:1")
        return ", ".join(out)

    def is_moe_layer(self, layer: int) -> bool:
        """Whether block `layer` has routed experts."""
        return self.moe is not None and layer >= self.moe.first_dense_layers

    def is_global_layer(self, layer: int) -> bool:
        """Whether block `layer` attends over the whole context (not a sliding window)."""
        if self.sliding_window is None:
            return True
        if self.global_every is None:
            return False
        return (layer + 1) % self.global_every == 0


class MoERecord(Record):
    """Cached form of MoESpec."""


class MLARecord(Record):
    """Cached form of MLASpec."""


class ModelRecord(Record, ModelMethods):
    """Cached form of ModelSpec (validated when the cache was written)."""

    _nested = {"moe": MoERecord, "mla": MLARecord}
