"""A model as the cost model sees it: its tensor inventory, and its bytes in each format (FormatLayout), cached.

ModelCost is what every cost function takes: the layouts (per format: stored bytes, bytes per layer, bytes one token
reads), the KV cache profile per layer and a memo for small derived values, all computed once per model. Layouts are
also kept on disk between runs (the user cache), keyed by the planner version and the exact tensor inventory.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from planner import __version__
from planner.cache import checksum
from planner.cost.memory import DEQUANT_BYTES, gguf_header_bytes, kv_bytes_per_value, kv_layer_profile, kv_values_held
from planner.formats import GGMLType, GroupQuant, ShapeError, WeightFormat
from planner.models.inventory import TensorInfo, active_fraction, count_params, tensor_inventory
from planner.paths import user_cache_dir
from planner.cache import fingerprint
from planner.cachefiles import write_keyed

if TYPE_CHECKING:
    from planner.models.spec import ModelSpec


def mix_bits(mean_noise: float) -> float:
    """The equal-noise bits of a mix of tensors at different bits per weight: -log4 of the weights' mean 4^-bits. A
    tensor rounded to b bits per weight adds noise power in proportion to 4^-b (a uniform grid's step halves per bit,
    the law behind quality.GROUPED_SLOPE), so a mix loses like a uniform quantization at these bits, not at its mean
    bits: one tensor at 1.6 bits among others at 4.5 sets the noise (Qwen2.5-0.5B's IQ1_S, whose 896-wide tensors
    fall back to IQ4_NL, loses 98 %: mean 3.7 bits, equal-noise 2.5)."""
    return -math.log(mean_noise, 4)


@dataclass
class FormatLayout:
    """A model's tensors in one format: stored bytes in total and per layer (call fmt.assignments for per tensor)."""

    stored_bytes: int
    header_bytes: int
    layer_bytes: list[int]  # resident bytes per block
    layer_active_bytes: list[float]  # bytes one token reads per block
    embed_bytes: int
    head_bytes: int  # output projection + final norm (or tied embedding read as the head)
    head_active_bytes: float
    ggml_types: set[str]
    # What the quality model reads (planner.cost.quality.linear_bits), gathered in the same pass over the tensors:
    # bits per quantized block-linear weight, the group size most of them use, the head's bits, the head's
    # parameters as a share of the quantized linear parameters, and the mix's equal-noise bits (mix_bits).
    linear_bits: float = 16.0
    linear_group: int = 0
    head_bits: float = 16.0
    head_share: float = 0.0
    linear_mix_bits: float = 16.0
    # quantized block-linear weights per ggml type (GGUF formats): the quality model credits each type's own leaner
    # scales (quality.scale_credit: IQ4_XS beside its IQ4_NL fallbacks), so a mix of types is rated tensor by tensor
    linear_types: dict[str, int] = field(default_factory=dict)
    block_elems: int = 0  # weights of every block matrix, quantized or not (the mxfp4 formats leave some in 16-bit)
    sum_layers: int = field(init=False)
    sum_active: float = field(init=False)

    cum_layers: list[int] = field(init=False)
    cum_active: list[float] = field(init=False)

    def __post_init__(self) -> None:
        # Prefix sums: bytes of layers [a, b) are cum[b] - cum[a], so placements and offload splits are O(1).
        self.cum_layers = [0]
        for b in self.layer_bytes:
            self.cum_layers.append(self.cum_layers[-1] + b)
        self.cum_active = [0.0]
        for b in self.layer_active_bytes:
            self.cum_active.append(self.cum_active[-1] + b)
        self.sum_layers = self.cum_layers[-1]
        self.sum_active = self.cum_active[-1]

    @property
    def file_size_bytes(self) -> int:
        """On-disk size (GGUF: tensor data plus metadata)."""
        return self.stored_bytes + self.header_bytes


# Bump when FormatLayout's fields or their meaning change: layouts on disk written under another version are ignored.
LAYOUT_SCHEMA = 5


@lru_cache(maxsize=1)
def _formats_checksum() -> str:
    """Checksum of planner/formats.py's source (part of the layout cache key)."""
    import planner.formats

    return checksum(Path(planner.formats.__file__).read_bytes())


@dataclass
class ModelCost:
    """A model's tensor inventory with per-format layouts computed once and cached."""

    spec: ModelSpec
    tensors: list[TensorInfo] = field(default_factory=list)
    layouts: dict[str, FormatLayout | ShapeError] = field(default_factory=dict)
    _kv: dict[tuple, list] = field(default_factory=dict)
    _disk: dict | None = None
    _dirty: bool = False
    _kv_sum: dict = field(default_factory=dict)
    _attn: dict = field(default_factory=dict)
    _memo: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.tensors:
            self.tensors = tensor_inventory(self.spec)

    @cached_property
    def params(self) -> int:
        """Total parameters (published extras included)."""
        return count_params(self.spec, self.tensors)

    def kv_profile(self, mla_aware: bool) -> list[tuple[int, int | None]]:
        """Per layer: cached values per token and the token cap (sliding window) or None."""
        key = ("kv", mla_aware)
        if key not in self._kv:
            self._kv[key] = kv_layer_profile(self.spec, mla_aware)
        return self._kv[key]

    def kv_bytes(self, tokens: int, kv_dtype: str, sequences: int = 1, layers: range | None = None,
                 mla_aware: bool = True) -> float:
        """KV cache bytes of `sequences` x `tokens` over `layers` (fast path of cost.memory.kv_cache_bytes)."""
        key = (tokens, kv_dtype, mla_aware, layers.start, layers.stop) if layers is not None else (tokens, kv_dtype, mla_aware)
        got = self._kv_sum.get(key)
        if got is None:
            got = self._kv_sum[key] = self._kv_sum_uncached(tokens, kv_dtype, layers, mla_aware)
        return got * sequences

    def attn_flops_per_token(self, prompt: int) -> float:
        """Attention FLOPs per prompt token (QK^T and AV over half the prompt on average, windows capped)."""
        got = self._attn.get(prompt)
        if got is None:
            m = self.spec
            heads_dim = m.num_heads * (m.mla.qk_nope_head_dim + m.mla.qk_rope_head_dim if m.mla else m.dim_head)
            got = 0.0
            for i in range(m.num_layers):
                span = prompt / 2
                if m.sliding_window and not m.is_global_layer(i):
                    span = min(span, m.sliding_window)
                got += 4 * heads_dim * span
            self._attn[prompt] = got
        return got

    def _kv_sum_uncached(self, tokens: int, kv_dtype: str, layers: range | None, mla_aware: bool) -> float:
        return kv_values_held(self.kv_profile(mla_aware), tokens, layers) * kv_bytes_per_value(kv_dtype)

    def kv_per_layer(self, tokens: int, kv_dtype: str, sequences: int, mla_aware: bool) -> list[int]:
        """KV cache bytes of each layer for `sequences` x `tokens` (memoized: every runtime asks the same)."""
        key = ("per", tokens, kv_dtype, sequences, mla_aware)
        if key not in self._kv:
            per_value = kv_bytes_per_value(kv_dtype) * sequences
            self._kv[key] = [int(v * (tokens if cap is None or tokens < cap else cap) * per_value)
                             for v, cap in self.kv_profile(mla_aware)]
        return self._kv[key]

    def kv_prefix(self, tokens: int, kv_dtype: str, sequences: int, mla_aware: bool) -> list[int]:
        """Prefix sums of kv_per_layer (index i: layers [0, i))."""
        key = ("cum", tokens, kv_dtype, sequences, mla_aware)
        if key not in self._kv:
            cum = [0]
            for b in self.kv_per_layer(tokens, kv_dtype, sequences, mla_aware):
                cum.append(cum[-1] + b)
            self._kv[key] = cum
        return self._kv[key]

    def memo(self, key: tuple, compute):  # type: ignore[no-untyped-def]
        """Per-model memo for small derived values (compute buffers, speed rates, quality, sharded KV)."""
        got = self._memo.get(key)
        if got is None:
            got = self._memo[key] = compute()
        return got

    @cached_property
    def matmul_params_active(self) -> float:
        """Parameters a token multiplies through (no embedding lookup; routed experts k/E)."""
        return sum(t.n_elements * active_fraction(self.spec, t) for t in self.tensors
                   if t.is_matrix and t.name != "token_embd.weight") + (
            self.spec.vocab_size * self.spec.hidden_size if self.spec.tie_word_embeddings else 0)

    def layout(self, fmt: WeightFormat, dequant_to: str | None = None) -> FormatLayout:
        """The model's bytes in `fmt` (or with quantized tensors dequantized to `dequant_to`); raises ShapeError."""
        key = f"{fmt.id}|{dequant_to}" + (f"|h{fmt.header_bytes}" if fmt.header_bytes is not None else "")
        if key not in self.layouts:
            cached = self._disk_cache().get(key)
            if cached is not None:
                self.layouts[key] = ShapeError(cached["error"]) if "error" in cached else FormatLayout(
                    **{**cached, "ggml_types": set(cached["ggml_types"])})
            else:
                try:
                    self.layouts[key] = self._build(fmt, dequant_to)
                except ShapeError as exc:
                    self.layouts[key] = exc
                got = self.layouts[key]
                self._disk[key] = {"error": str(got)} if isinstance(got, ShapeError) else {
                    **{k: v for k, v in got.__dict__.items() if k != "ggml_types" and not k.startswith(("sum_", "cum_"))},
                    "ggml_types": sorted(got.ggml_types)}
                self._dirty = True
        got = self.layouts[key]
        if isinstance(got, ShapeError):
            raise got
        return got

    def _cache_file(self) -> Path:
        """Per-model file of computed layouts, keyed by the planner version and the exact tensor inventory."""
        # the formats' rules are part of the key: a change to planner/formats.py (a block layout, a mix rule) must not
        # be answered from layouts an older version computed under the same release number
        material = "\n".join([__version__, f"layout-schema-{LAYOUT_SCHEMA}", _formats_checksum(), fingerprint(self.spec),
                               *(f"{t.name}{t.shape}" for t in self.tensors)])
        return user_cache_dir() / f"layouts-{self.spec.id}-{checksum(material.encode())}.json"

    def _disk_cache(self) -> dict:
        """Layouts computed by earlier runs (sizes only; recomputing 700 tensors x 40 formats costs ~0.2 s)."""
        if self._disk is None:
            self._disk = {}
            if os.environ.get("PLANNER_NO_CACHE") != "1":
                try:
                    self._disk = json.loads(self._cache_file().read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    self._disk = {}
        return self._disk

    def flush(self) -> None:
        """Write newly computed layouts to the user cache (atomic; a read-only home is not an error)."""
        if not self._dirty or os.environ.get("PLANNER_NO_CACHE") == "1":
            return
        try:
            write_keyed(self._cache_file(), json.dumps(self._disk))
        except OSError:
            pass
        self._dirty = False

    @cached_property
    def _facts(self) -> list[tuple[TensorInfo, bool, int, float, int]]:
        """Per tensor, in inventory order: (tensor, is a matrix, values, share one token reads, where it sits: 0 a
        block, 1 the token embedding, 2 the head or another tensor outside the blocks); every format's layout reads
        these, so they are computed once per model, not once per format."""
        return [self._fact(t) for t in self.tensors]

    def _fact(self, t: TensorInfo) -> tuple[TensorInfo, bool, int, float, int]:
        where = 0 if t.layer is not None else (1 if t.name == "token_embd.weight" else 2)
        return t, t.is_matrix, t.n_elements, active_fraction(self.spec, t), where

    def _build(self, fmt: WeightFormat, dequant_to: str | None) -> FormatLayout:
        m = self.spec
        assignments = fmt.assignments(m, self.tensors)
        layer_bytes = [0] * m.num_layers
        layer_active = [0.0] * m.num_layers
        embed = head = 0
        head_active = 0.0
        stored = 0
        types: set[str] = set()
        dequant_bytes = DEQUANT_BYTES[dequant_to] if dequant_to else 0
        tied = m.tie_word_embeddings
        # quality inputs (see FormatLayout): summed in tensor order, as planner.cost.quality always did
        q_bits = q_elems = 0
        q_noise = 0.0  # sum over quantized block-linear weights of 4^-bits (mix_bits)
        q_types: dict[str, int] = {}
        block_elems = 0
        groups: dict[int, int] = {}
        head_bits, head_elems = 16.0, 0
        facts = self._facts
        same_order = len(facts) == len(assignments)
        # the encodings stay alive in `assignments` while these live, so their ids are theirs
        sizes: dict[tuple[int, tuple[int, ...]], int] = {}  # (id of encoding, shape) -> bytes: blocks repeat shapes
        kinds: dict[int, tuple[str, bool, int | None]] = {}  # id of encoding -> (ggml name or '', dequantized, group)
        for i, a in enumerate(assignments):
            t, enc = a.tensor, a.encoding
            f = facts[i] if same_order and facts[i][0] is t else self._fact(t)  # else: an assigner that reorders
            matrix, n_el, where = f[1], f[2], f[4]
            kind = kinds.get(id(enc))
            if kind is None:
                is_ggml = isinstance(enc, GGMLType)
                kind = kinds[id(enc)] = (enc.name if is_ggml else "", bool(dequant_bytes and is_ggml and enc.quantized),
                                         (enc.group_size or 0) if isinstance(enc, GroupQuant) else None)
            skey = (id(enc), t.shape)
            nbytes = sizes.get(skey)
            if nbytes is None:
                nbytes = sizes[skey] = a.nbytes
            stored += nbytes
            if matrix and kind[0]:
                types.add(kind[0])
            resident = n_el * dequant_bytes if kind[1] else nbytes
            if where == 0:
                layer_bytes[t.layer] += resident
                layer_active[t.layer] += resident * f[3]
            elif where == 1:
                embed += resident
                if tied:  # the tied matrix is also the output head, read every token
                    head_active += resident
            else:
                head += resident
                head_active += resident
            if not matrix:
                continue
            if where:
                if where == 2 or tied:
                    head_bits, head_elems = nbytes * 8 / n_el, n_el
                continue
            block_elems += n_el
            if nbytes * 8 < 15 * n_el:  # below 16 bits per weight: some quantization
                q_bits += nbytes * 8
                q_elems += n_el
                q_noise += n_el * 4.0 ** (-nbytes * 8 / n_el)
                if kind[0]:
                    q_types[kind[0]] = q_types.get(kind[0], 0) + n_el
                if kind[2] is not None:
                    groups[kind[2]] = groups.get(kind[2], 0) + n_el
        header = 0
        if fmt.family == "gguf":
            header = fmt.header_bytes if fmt.header_bytes is not None else gguf_header_bytes(m, len(self.tensors))
        if q_elems:
            bits, group, share = q_bits / q_elems, (max(groups, key=groups.get) if groups else 0), head_elems / q_elems
            mix = mix_bits(q_noise / q_elems)
        else:
            bits, group, share, mix = 16.0, 0, 0.0, 16.0
        return FormatLayout(stored, header, layer_bytes, layer_active, embed, head, head_active, types,
                            bits, group, head_bits, share, mix, q_types, block_elems)
