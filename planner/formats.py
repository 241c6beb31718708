"""Every weight format as data: block layouts (bits per weight derived from their parts), file-level mixes,
and one function that gives the bytes of a tensor in a format.

Sources: ggml block structs in ggml/src/ggml-common.h and gguf-py GGML_QUANT_SIZES (ggml-org/llama.cpp);
per-tensor mix rules from src/llama-quant.cpp (llama_tensor_get_type_impl, tensor_type_fallback);
GPTQ/AWQ tensor layouts from AutoGPTQ / AutoAWQ checkpoints; bitsandbytes NF4 from its Params4bit;
MLX from mlx.nn.quantize (group 64, fp16 scale and bias).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType

from planner.errors import NotFoundError, PlannerError, close_matches, normalize_name
from planner.models.inventory import TensorInfo

if TYPE_CHECKING:
    from planner.models.spec import ModelSpec

QK_K = 256  # super-block size of k-quants and i-quants (ggml-common.h)


class ShapeError(PlannerError):
    """A tensor's row length is not a multiple of the format's block size."""


# ---------------------------------------------------------------------------------------------- block layouts


@dataclass(frozen=True)
class BlockLayout:
    """One quantization block: how many weights it holds and the bits of each of its parts."""

    block_weights: int
    parts: tuple[tuple[str, int], ...]  # (part, bits) in the order of the C struct
    block_bits: int = field(init=False)
    bytes_per_block: int = field(init=False)

    def __post_init__(self) -> None:
        # Derived once: the bits of a block are the sum of its parts; ggml blocks are whole bytes.
        bits = sum(b for _, b in self.parts)
        if bits % 8:
            raise ValueError(f"block layout {self.parts} is not a whole number of bytes")
        object.__setattr__(self, "block_bits", bits)
        object.__setattr__(self, "bytes_per_block", bits // 8)

    @property
    def bits_per_weight(self) -> float:
        """Bits per weight, derived from the layout."""
        return self.block_bits / self.block_weights


@dataclass(frozen=True)
class GGMLType:
    """A ggml tensor type (the unit a GGUF tensor is stored in)."""

    name: str
    type_id: int
    layout: BlockLayout
    quantized: bool = True

    @property
    def bits_per_weight(self) -> float:
        """Bits per weight derived from the block layout."""
        return self.layout.bits_per_weight

    def nbytes(self, shape: Sequence[int]) -> int:
        """Bytes of a tensor of this type; refuses a row length the block cannot hold."""
        row = shape[-1]
        bw = self.layout.block_weights
        if row % bw:
            raise ShapeError(f"row length {row} is not a multiple of {self.name}'s block of {bw} weights")
        rows = math.prod(shape[:-1]) if len(shape) > 1 else 1
        return rows * (row // bw) * self.layout.bytes_per_block


def _scalar(bits: int) -> BlockLayout:
    return BlockLayout(1, (("value", bits),))


def _k(*parts: tuple[str, int]) -> BlockLayout:
    return BlockLayout(QK_K, parts)


def _q32(*parts: tuple[str, int]) -> BlockLayout:
    return BlockLayout(32, parts)


# Block structs from ggml-common.h: (field, bits). fp16 scales are 16 bits; packed quants are n_weights x bits.
_TYPES: list[GGMLType] = [
    GGMLType("F32", 0, _scalar(32), quantized=False),
    GGMLType("F16", 1, _scalar(16), quantized=False),
    GGMLType("Q4_0", 2, _q32(("d:fp16", 16), ("qs:32x4bit", 32 * 4))),
    GGMLType("Q4_1", 3, _q32(("d:fp16", 16), ("m:fp16", 16), ("qs:32x4bit", 32 * 4))),
    GGMLType("Q5_0", 6, _q32(("d:fp16", 16), ("qh:32x1bit", 32), ("qs:32x4bit", 32 * 4))),
    GGMLType("Q5_1", 7, _q32(("d:fp16", 16), ("m:fp16", 16), ("qh:32x1bit", 32), ("qs:32x4bit", 32 * 4))),
    GGMLType("Q8_0", 8, _q32(("d:fp16", 16), ("qs:32x8bit", 32 * 8))),
    GGMLType("Q8_1", 9, _q32(("d:fp32", 32), ("s:fp32", 32), ("qs:32x8bit", 32 * 8))),
    GGMLType("Q2_K", 10, _k(("scales:16x(4+4)bit", 16 * 8), ("qs:256x2bit", QK_K * 2), ("d:fp16", 16), ("dmin:fp16", 16))),
    GGMLType("Q3_K", 11, _k(("hmask:256x1bit", QK_K), ("qs:256x2bit", QK_K * 2), ("scales:16x6bit", 16 * 6), ("d:fp16", 16))),
    GGMLType("Q4_K", 12, _k(("d:fp16", 16), ("dmin:fp16", 16), ("scales:8x(6+6)bit", 8 * 12), ("qs:256x4bit", QK_K * 4))),
    GGMLType("Q5_K", 13, _k(("d:fp16", 16), ("dmin:fp16", 16), ("scales:8x(6+6)bit", 8 * 12), ("qh:256x1bit", QK_K), ("qs:256x4bit", QK_K * 4))),
    GGMLType("Q6_K", 14, _k(("ql:256x4bit", QK_K * 4), ("qh:256x2bit", QK_K * 2), ("scales:16x8bit", 16 * 8), ("d:fp16", 16))),
    GGMLType("Q8_K", 15, _k(("d:fp32", 32), ("qs:256x8bit", QK_K * 8), ("bsums:16xint16", 16 * 16))),
    GGMLType("IQ2_XXS", 16, _k(("d:fp16", 16), ("qs:32xuint16", QK_K // 8 * 16))),
    GGMLType("IQ2_XS", 17, _k(("d:fp16", 16), ("qs:32xuint16", QK_K // 8 * 16), ("scales:8xuint8", QK_K // 32 * 8))),
    GGMLType("IQ3_XXS", 18, _k(("d:fp16", 16), ("qs:96xuint8", 3 * QK_K // 8 * 8))),
    GGMLType("IQ1_S", 19, _k(("d:fp16", 16), ("qs:32xuint8", QK_K // 8 * 8), ("qh:8xuint16", QK_K // 32 * 16))),
    GGMLType("IQ4_NL", 20, _q32(("d:fp16", 16), ("qs:32x4bit", 32 * 4))),
    GGMLType("IQ3_S", 21, _k(("d:fp16", 16), ("qs:64xuint8", QK_K // 4 * 8), ("qh:8xuint8", QK_K // 32 * 8), ("signs:32xuint8", QK_K // 8 * 8), ("scales:4xuint8", QK_K // 64 * 8))),
    GGMLType("IQ2_S", 22, _k(("d:fp16", 16), ("qs:64xuint8", QK_K // 4 * 8), ("qh:8xuint8", QK_K // 32 * 8), ("scales:8xuint8", QK_K // 32 * 8))),
    GGMLType("IQ4_XS", 23, _k(("d:fp16", 16), ("scales_h:uint16", 16), ("scales_l:4xuint8", QK_K // 64 * 8), ("qs:256x4bit", QK_K * 4))),
    GGMLType("I8", 24, _scalar(8), quantized=False),
    GGMLType("I16", 25, _scalar(16), quantized=False),
    GGMLType("I32", 26, _scalar(32), quantized=False),
    GGMLType("I64", 27, _scalar(64), quantized=False),
    GGMLType("F64", 28, _scalar(64), quantized=False),
    GGMLType("IQ1_M", 29, _k(("qs:32xuint8", QK_K // 8 * 8), ("qh:16xuint8", QK_K // 16 * 8), ("scales:8xuint8", QK_K // 32 * 8))),
    GGMLType("BF16", 30, _scalar(16), quantized=False),
    GGMLType("TQ1_0", 34, _k(("qs:48xuint8", (QK_K - 4 * QK_K // 64) // 5 * 8), ("qh:4xuint8", QK_K // 64 * 8), ("d:fp16", 16))),
    GGMLType("TQ2_0", 35, _k(("qs:64xuint8", QK_K // 4 * 8), ("d:fp16", 16))),
    GGMLType("MXFP4", 39, _q32(("e:e8m0", 8), ("qs:32x4bit", 32 * 4))),
    GGMLType("NVFP4", 40, BlockLayout(64, (("scales:4xue4m3", 4 * 8), ("qs:64x4bit", 64 * 4)))),
    GGMLType("Q1_0", 41, BlockLayout(128, (("d:fp16", 16), ("qs:128x1bit", 128)))),
]
GGML_TYPES: dict[str, GGMLType] = {t.name: t for t in _TYPES}
GGML_TYPES_BY_ID: dict[int, GGMLType] = {t.type_id: t for t in _TYPES}


def ggml_type(name: str) -> GGMLType:
    """Look up a ggml tensor type by name (case-insensitive)."""
    t = GGML_TYPES.get(name.upper())
    if t is None:
        raise NotFoundError("ggml type", name, close_matches(name, GGML_TYPES))
    return t


# ---------------------------------------------------------------------------------------------- other encodings


@dataclass(frozen=True)
class GroupQuant:
    """Group-wise integer or float quantization along the input dim, as GPU checkpoints store it.

    Bytes = packed weights + per-group scales (and zeros / biases) + per-input-row index, per the real tensors:
    GPTQ: qweight int32 [in/8*bits, out], qzeros int32 [in/g, out*bits/32], scales fp16 [in/g, out], g_idx int32 [in].
    """

    name: str
    weight_bits: int
    group_size: int | None  # None: one scale per output row (per-channel)
    scale_bits: int = 16
    zero_bits: int = 0  # packed zero point per group and column
    bias_bits: int = 0  # MLX stores a bias (min) per group
    per_input_row_bits: int = 0  # GPTQ g_idx
    per_tensor_bits: int = 0  # a global scale (FP8 per-tensor, NVFP4)
    row_multiple: int = 1  # packing constraint on the row length
    out_multiple: int = 1  # packing constraint on the output dimension (GPTQ qzeros pack 32/bits columns per int32)

    def nbytes(self, shape: Sequence[int]) -> int:
        """Bytes of one stored tensor (shape (…, out, in)); refuses shapes the packing cannot hold."""
        row = shape[-1]
        need = self.group_size or self.row_multiple
        if row % max(need, self.row_multiple):
            raise ShapeError(f"row length {row} is not a multiple of {self.name}'s group of {need}")
        if len(shape) >= 2 and shape[-2] % self.out_multiple:
            raise ShapeError(f"{shape[-2]} output rows are not a multiple of {self.out_multiple} ({self.name} packing)")
        outer = math.prod(shape[:-1])
        groups_per_row = row // self.group_size if self.group_size else 1
        bits = outer * row * self.weight_bits
        bits += outer * groups_per_row * (self.scale_bits + self.zero_bits + self.bias_bits)
        stacks = shape[0] if len(shape) == 3 else 1
        bits += stacks * row * self.per_input_row_bits + stacks * self.per_tensor_bits
        return math.ceil(bits / 8)

    @property
    def bits_per_weight(self) -> float:
        """Nominal bits per weight for a 4096-wide row (the group overhead included)."""
        return self.nbytes((4096, 4096)) * 8 / 4096**2


@dataclass(frozen=True)
class FloatType:
    """Unquantized storage: fp32, fp16, bf16, fp8 without scales, int8 tables."""

    name: str
    bits: int

    def nbytes(self, shape: Sequence[int]) -> int:
        """Bytes of a dense tensor."""
        return math.prod(shape) * self.bits // 8

    @property
    def bits_per_weight(self) -> float:
        """Bits per weight."""
        return float(self.bits)


Encoding = GGMLType | GroupQuant | FloatType
FP32, FP16, BF16_ENC = FloatType("fp32", 32), FloatType("fp16", 16), FloatType("bf16", 16)


# ---------------------------------------------------------------------------------------------- formats


@dataclass(frozen=True)
class Assignment:
    """One tensor and the encoding a format stores it in."""

    tensor: TensorInfo
    encoding: Encoding

    @property
    def nbytes(self) -> int:
        """Stored bytes of this tensor."""
        return _nbytes(self.encoding, self.tensor.shape)


@lru_cache(maxsize=65536)
def _nbytes(encoding: "Encoding", shape: tuple[int, ...]) -> int:
    """Bytes of `shape` in `encoding`, memoized: the blocks of a model repeat the same few shapes."""
    return encoding.nbytes(shape)


@dataclass(frozen=True)
class WeightFormat:
    """A deployable weight format: how every tensor of a model is stored, and what kernels run it."""

    id: str
    family: str  # 'float', 'gguf', 'gptq', 'awq', 'bnb', 'fp8', 'w8a8', 'exl2', 'mlx', 'mxfp4', 'nvfp4'
    description: str
    compute: str  # dtype of the matmul kernels: 'fp32','fp16','bf16','fp8','int8','int4','fp4'
    assign: Callable[[ModelSpec, Sequence[TensorInfo]], list[Assignment]] = field(repr=False, compare=False)
    aliases: tuple[str, ...] = ()
    weight_bits_nominal: float = 16.0  # for display and ordering before a model is known
    needs_imatrix: bool = False
    source: str = ""
    header_bytes: int | None = None  # a read file's real metadata size (else estimated from the tokenizer)
    imatrix: bool = False  # a GGUF made with an importance matrix (the '-imat' variants, made at run time)

    def assignments(self, model: ModelSpec, tensors: Sequence[TensorInfo]) -> list[Assignment]:
        """Which encoding each tensor is stored in."""
        return self.assign(model, tensors)


# ---- GGUF file types (llama.cpp `llama-quantize` names) and their per-tensor mixes


_FTYPE_DEFAULT = {
    "F32": "F32", "F16": "F16", "BF16": "BF16", "Q8_0": "Q8_0", "Q4_0": "Q4_0", "Q4_1": "Q4_1", "Q5_0": "Q5_0",
    "Q5_1": "Q5_1", "Q2_K": "Q2_K", "Q2_K_S": "Q2_K", "Q3_K_S": "Q3_K", "Q3_K_M": "Q3_K", "Q3_K_L": "Q3_K",
    "Q4_K_S": "Q4_K", "Q4_K_M": "Q4_K", "Q5_K_S": "Q5_K", "Q5_K_M": "Q5_K", "Q6_K": "Q6_K", "IQ2_XXS": "IQ2_XXS",
    "IQ2_XS": "IQ2_XS", "IQ2_S": "IQ2_XS", "IQ2_M": "IQ2_S", "IQ3_XXS": "IQ3_XXS", "IQ3_XS": "IQ3_S",
    "IQ3_S": "IQ3_S", "IQ3_M": "IQ3_S", "IQ1_S": "IQ1_S", "IQ1_M": "IQ1_M", "IQ4_NL": "IQ4_NL", "IQ4_XS": "IQ4_XS",
    "TQ1_0": "TQ1_0", "TQ2_0": "TQ2_0", "MXFP4_MOE": "MXFP4",
}
# File types whose main tensors need an importance matrix (llama-quant.cpp tensor_requires_imatrix).
_NEEDS_IMATRIX = {"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ1_S", "IQ1_M", "IQ3_XXS", "Q2_K_S"}
# File types whose published files are, in practice, made with an importance matrix (bartowski, unsloth, mradermacher
# 'i1' repos); the imatrix changes the mix for IQ4_XS/IQ4_NL (no Q5_K ffn_down in the first layers).
_IMATRIX_BY_DEFAULT = _NEEDS_IMATRIX | {"IQ4_XS", "IQ4_NL", "IQ3_XS", "IQ3_S", "IQ3_M"}
_IQ_LOW = {"IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"}
_FALLBACK = {
    "IQ1_S": "IQ4_NL", "IQ1_M": "IQ4_NL", "IQ2_XXS": "IQ4_NL", "IQ2_XS": "IQ4_NL", "IQ2_S": "IQ4_NL",
    "IQ3_XXS": "IQ4_NL", "IQ3_S": "IQ4_NL", "IQ4_XS": "IQ4_NL", "Q2_K": "Q4_0", "Q3_K": "Q4_0", "TQ1_0": "Q4_0",
    "TQ2_0": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0",
}


@lru_cache(maxsize=65536)
def _category(name: str) -> str:
    """llama.cpp's tensor category from the GGUF name (substring rules of tensor_get_category)."""
    if name == "output.weight":
        return "output"
    if name == "token_embd.weight":
        return "token_embd"
    for key, cat in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"), ("attn_v.weight", "attn_v"),
                     ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                     ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if key in name:
            return cat
    return "other"


def _allows_quantization(t: TensorInfo) -> bool:
    """llama.cpp quantizes only 2-D/3-D '*weight' tensors that are not norms or MoE routers."""
    return len(t.shape) >= 2 and _quantizable_name(t.name)


@lru_cache(maxsize=65536)
def _quantizable_name(n: str) -> bool:
    return n.endswith("weight") and "_norm.weight" not in n and "ffn_gate_inp.weight" not in n


def _is_70b(model: ModelSpec) -> bool:
    """llama.cpp's LLM_TYPE_70B: 80-layer Llama-architecture models (Llama 2/3 70B, Qwen2 72B)."""
    return model.num_layers == 80 and model.architecture in ("llama", "qwen2")


def _use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's use_more_bits: the first and last eighth of layers, and every third one between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def gguf_mix(ftype: str, model: ModelSpec, tensors: Sequence[TensorInfo], *, imatrix: bool | None = None,
             embed_output_type: str | None = None, source_type: str = "BF16", revision: str = "current") -> list[Assignment]:
    """The ggml type llama-quantize gives each tensor for file type `ftype` (llama-quant.cpp rules).

    `embed_output_type` forces token_embd and output (bartowski's _L variants use Q8_0);
    `source_type` is the type of the converted GGUF the quantizer reads (unquantized tensors keep it);
    `revision="2023"` uses the Q2_K mix of llama.cpp builds from PR #2707 (Aug 2023) to early 2024, which many
    published 2023 GGUFs carry: every matrix Q3_K except attn_q/attn_k (Q2_K) and the output (Q6_K).
    """
    if revision == "2023" and ftype == "Q2_K":
        return _q2_k_2023(model, tensors, source_type)
    default = _FTYPE_DEFAULT[ftype]
    if imatrix is None:
        imatrix = ftype in _IMATRIX_BY_DEFAULT
    n_expert = model.moe.num_experts if model.moe else 0
    gqa = model.gqa_ratio
    n_layer = model.num_layers
    facts = _mix_facts(tensors)
    tied, n_attn_v = facts.tied, facts.n_attn_v
    default_quantized = GGML_TYPES[default].quantized
    i_attn_v = 0
    counters = {"ffn_down": 0, "ffn_gate": 0, "ffn_up": 0}
    types: dict[str, str] = {}
    for t, cat, kept in facts.order:
        if kept:  # not quantized by llama.cpp: the type it keeps
            types[t.name] = kept if kept == "F32" else source_type
            continue
        if embed_output_type and cat in ("token_embd", "output"):
            types[t.name] = embed_output_type
            continue
        if not default_quantized:
            types[t.name] = default
            continue
        new = default
        if cat == "output" or (tied and cat == "token_embd"):
            if ftype == "MXFP4_MOE" or t.row_length % GGML_TYPES[default].layout.block_weights:
                new = "Q8_0"
            elif ftype in _IQ_LOW or ftype == "IQ3_XXS":
                new = "Q5_K"
            elif new != "Q8_0":
                new = "Q6_K"
        elif ftype == "MXFP4_MOE":
            new = "MXFP4" if len(t.shape) == 3 else "Q8_0"
        elif cat == "token_embd":
            if ftype in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"):
                new = "Q2_K"
            elif ftype in ("IQ2_S", "IQ2_M", "IQ3_XXS"):
                new = "IQ3_S"
            elif ftype in ("TQ1_0", "TQ2_0"):
                new = "Q4_K"
        elif ftype in _IQ_LOW:
            if cat == "attn_v":
                if gqa >= 4 or n_expert >= 4:
                    new = "Q4_K"
                else:
                    new = "IQ3_S" if ftype in ("IQ2_S", "IQ2_M") else "Q2_K"
                i_attn_v += 1
            elif n_expert == 8 and cat == "attn_k":
                new = "Q4_K"
            elif cat == "ffn_down":
                if counters["ffn_down"] < n_layer // 8:
                    new = "IQ3_S" if ftype in ("IQ2_S", "IQ2_M") else "Q2_K"
                counters["ffn_down"] += 1
            elif cat == "attn_output":
                if n_expert == 8:
                    new = "Q5_K"
                elif ftype in ("IQ1_S", "IQ1_M"):
                    new = "IQ2_XXS"
                elif ftype in ("IQ2_S", "IQ2_M"):
                    new = "IQ3_S"
        elif cat == "attn_v":
            new = _attn_v_type(ftype, new, i_attn_v, n_attn_v, gqa, imatrix)
            if _is_70b(model) and new in ("Q3_K", "Q4_K"):
                new = "Q5_K"
            if n_expert == 8:
                new = "Q8_0"
            i_attn_v += 1
        elif cat == "attn_k":
            if n_expert == 8:
                new = "Q8_0"
            elif ftype == "IQ3_XS":
                new = "IQ3_XXS"
            elif ftype == "IQ3_XXS":
                new = "IQ2_S"
        elif cat == "attn_q":
            if ftype == "IQ3_XS":
                new = "IQ3_XXS"
            elif ftype == "IQ3_XXS":
                new = "IQ2_S"
        elif cat == "ffn_down":
            i = t.layer if (n_expert > 1 and t.layer is not None) else counters["ffn_down"]
            new = _ffn_down_type(ftype, new, i, n_layer, n_expert, imatrix)
            counters["ffn_down"] += 1
        elif cat == "attn_output":
            if n_expert == 8:
                if ftype in ("Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ3_S", "IQ3_M", "IQ4_XS"):
                    new = "Q5_K"
            else:
                new = {"Q2_K": "Q3_K", "IQ3_XXS": "IQ3_S", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K", "IQ3_M": "Q4_K"}.get(ftype, new)
        elif cat in ("ffn_gate", "ffn_up"):
            i = t.layer if (n_expert > 1 and t.layer is not None) else counters[cat]
            if ftype == "IQ3_XS" and n_layer // 8 <= i < 7 * n_layer // 8:
                new = "IQ3_XXS"
            counters[cat] += 1
        types[t.name] = _fallback(new, t)
    return [Assignment(t, GGML_TYPES[types[t.name]]) for t in tensors]


@dataclass(frozen=True)
class _MixFacts:
    """What gguf_mix reads of a tensor list whatever the file type: llama.cpp's tensor order with each tensor's
    category and, for a tensor it never quantizes, the type it keeps ('F32', or 'source' for the converted type)."""

    tensors: tuple[TensorInfo, ...]
    order: tuple[tuple[TensorInfo, str, str], ...]
    tied: bool
    n_attn_v: int


_MIX_FACTS: dict[int, _MixFacts] = {}


def _mix_facts(tensors: Sequence[TensorInfo]) -> _MixFacts:
    """_MixFacts of `tensors`, remembered: a ranking asks for ten file types of the same tensor list in a row."""
    got = _MIX_FACTS.get(id(tensors))
    # the same elements, not only the same list object: a list may be refilled, or its id reused after it is freed
    if got is not None and len(got.tensors) == len(tensors) and all(map(operator.is_, got.tensors, tensors)):
        return got
    # llama.cpp sorts tensors by block index, then by name, before counting attn_v-like tensors.
    order = sorted(tensors, key=lambda t: (-1 if t.layer is None else t.layer, t.name))
    rows = []
    for t in order:
        kept = ""
        if not _allows_quantization(t):
            kept = "F32" if len(t.shape) < 2 or "_norm" in t.name or "ffn_gate_inp" in t.name else "source"
        rows.append((t, _category(t.name), kept))
    got = _MixFacts(tuple(tensors), tuple(rows), not any(t.name == "output.weight" for t in tensors),
                    sum(1 for t in order if _category(t.name) == "attn_v"))
    if len(_MIX_FACTS) >= 16:  # a few models at a time; memory stays bounded over a long sweep
        _MIX_FACTS.clear()
    _MIX_FACTS[id(tensors)] = got
    return got


def _q2_k_2023(model: ModelSpec, tensors: Sequence[TensorInfo], source_type: str) -> list[Assignment]:
    """Q2_K as llama.cpp built it between PR #2707 (Aug 2023) and the 2024 rework."""
    out = []
    for t in tensors:
        if not _allows_quantization(t):
            name = "F32" if len(t.shape) < 2 or "_norm" in t.name or "ffn_gate_inp" in t.name else source_type
        elif t.name == "output.weight":
            name = "Q6_K"
        elif _category(t.name) in ("attn_q", "attn_k"):
            name = "Q2_K"
        elif _category(t.name) == "attn_v" and _is_70b(model):
            name = "Q5_K"
        else:
            name = "Q3_K"
        out.append(Assignment(t, GGML_TYPES[_fallback(name, t)]))
    return out


def _attn_v_type(ftype: str, new: str, i: int, n: int, gqa: int, imatrix: bool) -> str:
    """attn_v-like tensors (attn_v, attn_qkv, attn_kv_b) in the non-IQ2 file types."""
    if ftype == "Q2_K":
        return "Q4_K" if gqa >= 4 else "Q3_K"
    if ftype == "Q2_K_S" and gqa >= 4:
        return "Q4_K"
    if ftype == "IQ3_XXS":
        return "Q4_K" if gqa >= 4 else ("IQ3_S" if not imatrix else "IQ3_XXS")
    if ftype in ("IQ3_XS", "IQ3_S") and gqa >= 4:
        return "Q4_K"
    if ftype == "IQ3_M":
        return "Q4_K"
    if ftype == "Q3_K_M":
        return "Q5_K" if i < 2 else "Q4_K"
    if ftype == "Q3_K_L":
        return "Q5_K"
    if ftype in ("IQ4_NL", "IQ4_XS") and gqa >= 4:
        return "Q5_K"
    if ftype in ("Q4_K_M", "Q5_K_M") and _use_more_bits(i, n):
        return "Q6_K"
    if ftype == "Q4_K_S" and i < 4:
        return "Q5_K"
    return new


def _ffn_down_type(ftype: str, new: str, i: int, n: int, n_expert: int, imatrix: bool) -> str:
    """ffn_down tensors (dense, shared and routed experts) in the non-IQ2 file types."""
    if ftype == "Q2_K":
        return "Q3_K"
    if ftype == "Q2_K_S":
        return "Q4_K" if i < n // 8 else new
    if ftype == "IQ3_XXS" and not imatrix:
        return "Q4_K" if i < n // 8 else "Q3_K"
    if ftype == "Q3_K_M":
        return "Q5_K" if i < n // 16 else "Q4_K"
    if ftype == "IQ3_M" and (i < n // 8 or (n_expert == 8 and _use_more_bits(i, n))):
        return "Q4_K"
    if ftype == "Q3_K_L":
        return "Q5_K"
    if ftype == "Q4_K_M":
        return "Q6_K" if _use_more_bits(i, n) else new
    if i < n // 8 and ftype in ("IQ4_NL", "IQ4_XS") and not imatrix:
        return "Q5_K"
    if ftype == "Q5_K_M" and _use_more_bits(i, n):
        return "Q6_K"
    if ftype == "Q4_K_S" and i < n // 8:
        return "Q5_K"
    if ftype in ("Q4_0", "Q5_0") and imatrix and i < n // 8:
        return "Q4_1" if ftype == "Q4_0" else "Q5_1"
    return new


def _fallback(name: str, t: TensorInfo) -> str:
    """llama.cpp's tensor_type_fallback: a compatible type when the row length does not fit the block."""
    got = _fallback_for_row(name, t.shape[-1])
    if not got:
        raise ShapeError(f"{t.name}: row length {t.row_length} does not fit {name} and llama.cpp has no fallback")
    return got


@lru_cache(maxsize=4096)
def _fallback_for_row(name: str, row_length: int) -> str:
    """_fallback's answer for a row length ('' when llama.cpp has none); memoized, as a model has few row lengths."""
    if row_length % GGML_TYPES[name].layout.block_weights == 0:
        return name
    alt = _FALLBACK.get(name)
    if alt is None:
        return ""
    return alt if row_length % GGML_TYPES[alt].layout.block_weights == 0 else "F16"


# ---- GPU-runtime formats: which tensors they quantize


def _block_linear(t: TensorInfo) -> bool:
    """Linear weights inside transformer blocks (what GPTQ/AWQ/bnb/FP8 quantize); not routers or norms."""
    return t.layer is not None and t.is_matrix and "ffn_gate_inp" not in t.name


def _assign_by(quant: Encoding, keep: Encoding, *, include_embed: bool = False, include_output: bool = False,
               output: Encoding | None = None, fallback_keep: bool = True) -> Callable[[ModelSpec, Sequence[TensorInfo]], list[Assignment]]:
    """Build an assigner: block linears in `quant`, the rest in `keep` (embeddings/output optionally quantized)."""

    def assign(model: ModelSpec, tensors: Sequence[TensorInfo]) -> list[Assignment]:
        out = []
        packs: dict[tuple[int, tuple[int, ...]], bool] = {}  # (id of encoding, shape) -> it packs: shapes repeat
        for t in tensors:
            enc: Encoding = keep
            if _block_linear(t) or (include_embed and t.name == "token_embd.weight") or (
                include_output and t.name == "output.weight"
            ):
                enc = quant
            if t.name == "output.weight" and output is not None:
                enc = output
            if len(t.shape) < 2:
                enc = keep
            if enc is not keep and isinstance(enc, (GGMLType, GroupQuant)):
                key = (id(enc), t.shape)
                ok = packs.get(key)
                if ok is None:
                    try:
                        enc.nbytes(t.shape)
                        ok = True
                    except ShapeError:
                        if not fallback_keep:
                            raise
                        ok = False
                    packs[key] = ok
                if not ok:
                    enc = keep  # loaders leave layers they cannot pack in 16-bit
            out.append(Assignment(t, enc))
        return out

    return assign


def _all(enc: Encoding, norms: Encoding = FP32) -> Callable[[ModelSpec, Sequence[TensorInfo]], list[Assignment]]:
    """Every matrix in `enc` (a float checkpoint)."""

    def assign(model: ModelSpec, tensors: Sequence[TensorInfo]) -> list[Assignment]:
        return [Assignment(t, enc if len(t.shape) >= 2 else norms) for t in tensors]

    return assign


def _exl2(bpw: float, head_bits: int = 6) -> Callable[[ModelSpec, Sequence[TensorInfo]], list[Assignment]]:
    """EXL2: block linears average `bpw` bits (scales included), lm_head at head_bits, embeddings fp16."""
    def assign(model: ModelSpec, tensors: Sequence[TensorInfo]) -> list[Assignment]:
        out = []
        for t in tensors:
            if _block_linear(t):
                out.append(Assignment(t, _ExactBits(f"exl2-{bpw:g}bpw", bpw)))
            elif t.name == "output.weight":
                out.append(Assignment(t, _ExactBits(f"exl2-head-{head_bits}bit", head_bits + 32 / 128)))
            else:
                out.append(Assignment(t, FP16))
        return out

    return assign


@dataclass(frozen=True)
class _ExactBits:
    """An encoding known only by its average bits per weight (EXL2's measured mixes)."""

    name: str
    bits: float

    def nbytes(self, shape: Sequence[int]) -> int:
        return math.ceil(math.prod(shape) * self.bits / 8)

    @property
    def bits_per_weight(self) -> float:
        return self.bits


# bartowski's variants: the base file type with Q8_0 token embedding and output tensors.
EMBED_OUTPUT_Q8_VARIANTS = {"Q6_K_L": "Q6_K", "Q5_K_L": "Q5_K_M", "Q4_K_L": "Q4_K_M", "Q3_K_XL": "Q3_K_L", "Q2_K_L": "Q2_K"}


IMATRIX_SUFFIX = "-imat"


def gguf_base_type(format_id: str) -> str:
    """The llama.cpp file type a GGUF format is built on (Q5_K_L -> Q5_K_M, Q4_K_M-imat -> Q4_K_M)."""
    format_id = format_id.removesuffix(IMATRIX_SUFFIX)
    return EMBED_OUTPUT_Q8_VARIANTS.get(format_id, format_id)


def imatrix_format(fmt: WeightFormat) -> WeightFormat:
    """The same GGUF file type made with an importance matrix ('Q4_K_M' -> 'Q4_K_M-imat'): the per-tensor mix
    llama-quantize picks when given --imatrix, and the quality family of imatrix quants. Made at run time (like
    exl2_format), so `recommend` does not rank it beside the plain type."""
    if fmt.family != "gguf" or fmt.id in ("F32", "F16", "BF16"):
        raise PlannerError(f"{fmt.id} is not a quantized GGUF file type; an importance matrix applies only to those")
    if fmt.imatrix:
        return fmt
    base = gguf_base_type(fmt.id)
    eo = "Q8_0" if fmt.id in EMBED_OUTPUT_Q8_VARIANTS else None
    return WeightFormat(
        f"{fmt.id}{IMATRIX_SUFFIX}", "gguf", f"{fmt.description}; importance-matrix quantized", fmt.compute,
        lambda m, ts, f=base, e=eo: gguf_mix(f, m, ts, imatrix=True, embed_output_type=e),
        (f"{fmt.id}-imatrix", f"i1-{fmt.id}"), fmt.weight_bits_nominal, needs_imatrix=True,
        source="llama.cpp src/llama-quant.cpp llama_tensor_get_type_impl (with an imatrix)", imatrix=True)


NO_IMATRIX_SUFFIX = "-noimat"


def no_imatrix_format(fmt: WeightFormat) -> WeightFormat:
    """The mix llama-quantize picks for `fmt` when given no importance matrix ('IQ4_XS' -> 'IQ4_XS-noimat').

    The plain IQ4_XS/IQ4_NL/IQ3 entries describe the files people download, which are made with an imatrix; without
    one llama.cpp stores the first eighth of ffn_down (and IQ3_XXS's attn_v) in bigger types. `planner quantize`
    writes this variant when no --imatrix is given, so its file has llama.cpp's own per-tensor types. Other formats
    come back unchanged (their mix does not depend on an imatrix unless asked)."""
    base = gguf_base_type(fmt.id)
    if fmt.family != "gguf" or fmt.imatrix or base not in _IMATRIX_BY_DEFAULT:
        return fmt
    eo = "Q8_0" if fmt.id in EMBED_OUTPUT_Q8_VARIANTS else None
    return WeightFormat(
        f"{fmt.id}{NO_IMATRIX_SUFFIX}", "gguf", f"{fmt.description}; made without an importance matrix", fmt.compute,
        lambda m, ts, f=base, e=eo: gguf_mix(f, m, ts, imatrix=False, embed_output_type=e), (), fmt.weight_bits_nominal,
        needs_imatrix=fmt.needs_imatrix, source="llama.cpp src/llama-quant.cpp llama_tensor_get_type_impl (no imatrix)")


def lattice_iquant(type_name: str) -> bool:
    """True for an i-quant that rounds groups of weights to lattice codebook points (IQ1-IQ3; IQ4_NL/XS are scalar)."""
    t = type_name.upper()
    return t.startswith("IQ") and not t.startswith("IQ4")


def gguf_main_type(fmt: WeightFormat) -> str | None:
    """The ggml type most tensors of a GGUF file type are stored in (Q4_K_M -> Q4_K), or None for other formats."""
    if fmt.family != "gguf":
        return None
    return _FTYPE_DEFAULT.get(gguf_base_type(fmt.id))


def _gguf_format(ftype: str, desc: str, *, embed_output: str | None = None) -> WeightFormat:
    default = GGML_TYPES[_FTYPE_DEFAULT[ftype]]
    fid = ftype
    compute = {"F16": "fp16", "BF16": "bf16", "F32": "fp32"}.get(ftype, "int8" if default.bits_per_weight >= 8 else "int4")
    return WeightFormat(
        id=fid,
        family="gguf",
        description=desc,
        compute=compute,
        assign=lambda m, ts, f=ftype, eo=embed_output: gguf_mix(f, m, ts, embed_output_type=eo),
        aliases=(f"gguf-{fid}", f"{fid}.gguf"),
        weight_bits_nominal=default.bits_per_weight,
        needs_imatrix=ftype in _NEEDS_IMATRIX,
        source="llama.cpp src/llama-quant.cpp llama_tensor_get_type_impl",
    )


_GGUF_DESCRIPTIONS = {
    "F32": "GGUF 32-bit float", "F16": "GGUF 16-bit float", "BF16": "GGUF bfloat16",
    "Q8_0": "GGUF 8-bit, nearly lossless", "Q6_K": "GGUF 6-bit k-quant", "Q5_K_M": "GGUF 5-bit k-quant, more bits in sensitive layers",
    "Q5_K_S": "GGUF 5-bit k-quant", "Q5_1": "GGUF legacy 5-bit with min", "Q5_0": "GGUF legacy 5-bit",
    "Q4_K_M": "GGUF 4-bit k-quant, more bits in sensitive layers (the usual default)", "Q4_K_S": "GGUF 4-bit k-quant",
    "Q4_1": "GGUF legacy 4-bit with min", "Q4_0": "GGUF legacy 4-bit (fast on ARM/CPU repacking)",
    "IQ4_XS": "GGUF 4.25-bit i-quant", "IQ4_NL": "GGUF 4.5-bit non-linear i-quant",
    "Q3_K_L": "GGUF 3-bit k-quant, large", "Q3_K_M": "GGUF 3-bit k-quant, medium", "Q3_K_S": "GGUF 3-bit k-quant, small",
    "IQ3_M": "GGUF 3-bit i-quant, medium", "IQ3_S": "GGUF 3.4-bit i-quant", "IQ3_XS": "GGUF 3.3-bit i-quant",
    "IQ3_XXS": "GGUF 3.06-bit i-quant (imatrix)", "Q2_K": "GGUF 2-bit k-quant", "Q2_K_S": "GGUF 2-bit k-quant, small (imatrix)",
    "IQ2_M": "GGUF 2.7-bit i-quant (imatrix)", "IQ2_S": "GGUF 2.5-bit i-quant (imatrix)", "IQ2_XS": "GGUF 2.3-bit i-quant (imatrix)",
    "IQ2_XXS": "GGUF 2.06-bit i-quant (imatrix)", "IQ1_M": "GGUF 1.75-bit i-quant (imatrix)", "IQ1_S": "GGUF 1.56-bit i-quant (imatrix)",
    "TQ1_0": "GGUF ternary 1.69-bit (for ternary models)", "TQ2_0": "GGUF ternary 2.06-bit (for ternary models)",
    "MXFP4_MOE": "GGUF MXFP4 experts, Q8_0 elsewhere (gpt-oss)",
}


def _build_formats() -> list[WeightFormat]:
    fmts = [_gguf_format(ft, desc) for ft, desc in _GGUF_DESCRIPTIONS.items()]
    for fid, base in EMBED_OUTPUT_Q8_VARIANTS.items():
        f = _gguf_format(base, f"{_GGUF_DESCRIPTIONS[base]}; Q8_0 embeddings and output (bartowski {fid})", embed_output="Q8_0")
        fmts.append(WeightFormat(fid, f.family, f.description, f.compute, f.assign, (f"gguf-{fid}",), f.weight_bits_nominal,
                                 f.needs_imatrix, "bartowski model cards: '_L/_XL use Q8_0 for embed and output weights'"))
    gptq = {
        (4, 128): GroupQuant("gptq-int4-g128", 4, 128, zero_bits=4, per_input_row_bits=32, row_multiple=8, out_multiple=8),
        (4, 32): GroupQuant("gptq-int4-g32", 4, 32, zero_bits=4, per_input_row_bits=32, row_multiple=8, out_multiple=8),
        (4, None): GroupQuant("gptq-int4-perchannel", 4, None, zero_bits=4, per_input_row_bits=32, row_multiple=8,
                              out_multiple=8),
        (8, 128): GroupQuant("gptq-int8-g128", 8, 128, zero_bits=8, per_input_row_bits=32, row_multiple=4, out_multiple=4),
        (8, None): GroupQuant("gptq-int8-perchannel", 8, None, zero_bits=8, per_input_row_bits=32, row_multiple=4,
                              out_multiple=4),
    }
    for (bits, g), enc in gptq.items():
        gname = f"g{g}" if g else "perchannel"
        fid = f"gptq-int{bits}" if g == 128 else f"gptq-int{bits}-{gname}"
        fmts.append(WeightFormat(fid, "gptq", f"GPTQ {bits}-bit, group {g or 'per-channel'}, fp16 scales (act-order g_idx)",
                                 f"int{bits}", _assign_by(enc, FP16), (f"gptq-{bits}bit-{gname}", f"gptq{bits}") if g == 128 else (),
                                 enc.bits_per_weight, source="AutoGPTQ checkpoint layout (qweight/qzeros/scales/g_idx)"))
    for (bits, g), enc in gptq.items():  # the same layout made by round to nearest: loaders read it as GPTQ
        gname = f"g{g}" if g else "perchannel"
        fid = f"rtn-int{bits}" if g == 128 else f"rtn-int{bits}-{gname}"
        fmts.append(WeightFormat(fid, "rtn", f"Round-to-nearest {bits}-bit, group {g or 'per-channel'}, in GPTQ's layout "
                                 "(no calibration)", f"int{bits}", _assign_by(enc, FP16), (), enc.bits_per_weight,
                                 source="AutoGPTQ checkpoint layout (qweight/qzeros/scales/g_idx)"))
    awq = GroupQuant("awq-int4-g128", 4, 128, zero_bits=4, row_multiple=8, out_multiple=8)
    fmts.append(WeightFormat("awq-int4", "awq", "AWQ 4-bit, group 128, fp16 scales and zeros", "int4", _assign_by(awq, FP16),
                             ("awq", "awq-4bit", "int4", "w4a16"), awq.bits_per_weight, source="AutoAWQ GEMM checkpoint layout"))
    # bitsandbytes NF4: 4-bit codes, fp32 absmax per 64 (double quant: 8-bit absmax + fp32 per 256 blocks).
    nf4_dq = GroupQuant("bnb-nf4-dq", 4, 64, scale_bits=8, per_tensor_bits=0)
    nf4 = GroupQuant("bnb-nf4", 4, 64, scale_bits=32)
    fmts.append(WeightFormat("nf4", "bnb", "bitsandbytes NF4, block 64, double quantization", "int4", _assign_by(nf4_dq, BF16_ENC),
                             ("bnb-nf4", "bnb-4bit", "qlora"), nf4_dq.bits_per_weight + 32 / (64 * 256), source="bitsandbytes Params4bit"))
    fmts.append(WeightFormat("nf4-nodq", "bnb", "bitsandbytes NF4, block 64, fp32 absmax", "int4", _assign_by(nf4, BF16_ENC),
                             ("bnb-nf4-nodq",), nf4.bits_per_weight, source="bitsandbytes Params4bit"))
    int8_llm = GroupQuant("bnb-int8", 8, None, scale_bits=32)
    fmts.append(WeightFormat("bnb-int8", "bnb", "bitsandbytes LLM.int8() (int8 weights, fp32 row scales, fp16 outliers)", "int8",
                             _assign_by(int8_llm, FP16), ("llm.int8", "bnb-8bit"), int8_llm.bits_per_weight, source="bitsandbytes Int8Params"))
    fp8c = GroupQuant("fp8-e4m3-perchannel", 8, None, scale_bits=32)
    fp8t = GroupQuant("fp8-e4m3-pertensor", 8, None, scale_bits=0, per_tensor_bits=32)
    fmts.append(WeightFormat("fp8", "fp8", "FP8 E4M3 weights with per-channel fp32 scales (vLLM compressed-tensors / llm-compressor)",
                             "fp8", _assign_by(fp8c, BF16_ENC), ("fp8-e4m3", "fp8-dynamic", "w8a8-fp8"), fp8c.bits_per_weight,
                             source="vLLM FP8 W8A8 docs; compressed-tensors weight_scale per channel"))
    fmts.append(WeightFormat("fp8-pertensor", "fp8", "FP8 E4M3 weights with one fp32 scale per tensor", "fp8",
                             _assign_by(fp8t, BF16_ENC), ("fp8-e4m3-pertensor",), 8.0, source="vLLM FP8 docs"))
    w8a8 = GroupQuant("w8a8-int8", 8, None, scale_bits=32)
    fmts.append(WeightFormat("w8a8-int8", "w8a8", "SmoothQuant W8A8 INT8 (int8 weights, per-channel scales, int8 activations)",
                             "int8", _assign_by(w8a8, BF16_ENC), ("smoothquant", "w8a8", "int8-w8a8"), w8a8.bits_per_weight,
                             source="SmoothQuant (Xiao et al. 2023); vLLM INT8 W8A8 docs"))
    int8wo = GroupQuant("int8-weight-only", 8, None, scale_bits=16)
    fmts.append(WeightFormat("int8", "w8a16", "INT8 weight-only, per-channel fp16 scales (W8A16)", "int8",
                             _assign_by(int8wo, BF16_ENC), ("w8a16", "int8-weight-only"), int8wo.bits_per_weight,
                             source="torchao int8_weight_only / TensorRT-LLM W8A16"))
    for bits in (4, 8):
        mlx = GroupQuant(f"mlx-{bits}bit", bits, 64, scale_bits=16, bias_bits=16)
        fmts.append(WeightFormat(f"mlx-{bits}bit", "mlx", f"MLX {bits}-bit, group 64, fp16 scale and bias (embeddings and head too)",
                                 f"int{bits}", _assign_by(mlx, BF16_ENC, include_embed=True, include_output=True),
                                 (f"mlx-{bits}", f"mlx{bits}", f"mlx-q{bits}"), mlx.bits_per_weight, source="mlx.nn.quantize defaults"))
    mx = GGML_TYPES["MXFP4"]
    fmts.append(WeightFormat("mxfp4", "mxfp4", "MXFP4 (OCP microscaling: E2M1 + E8M0 scale per 32) on MoE experts (dense models: every block linear), bf16 elsewhere",
                             "fp4", _mxfp4_experts, ("mxfp4-moe",), mx.bits_per_weight, source="OCP MX spec v1.0; gpt-oss checkpoints"))
    nv = GroupQuant("nvfp4", 4, 16, scale_bits=8, per_tensor_bits=32)
    fmts.append(WeightFormat("nvfp4", "nvfp4", "NVFP4 (E2M1 + FP8 E4M3 scale per 16, fp32 tensor scale)", "fp4",
                             _assign_by(nv, BF16_ENC), ("fp4",), nv.bits_per_weight, source="NVIDIA NVFP4 (TensorRT Model Optimizer)"))
    for name, enc in (("fp32", FP32), ("fp16", FP16), ("bf16", BF16_ENC)):
        fmts.append(WeightFormat(name, "float", f"{name.upper()} checkpoint (no quantization)", name, _all(enc),
                                 (name.replace("fp", "float"), {"fp32": "f32-hf", "fp16": "half", "bf16": "bfloat16"}[name]),
                                 enc.bits_per_weight, source="dense storage"))
    return fmts


def _mxfp4_experts(model: ModelSpec, tensors: Sequence[TensorInfo]) -> list[Assignment]:
    """MXFP4 from its block layout (32 E2M1 values + one E8M0 scale): on a MoE model the routed-expert weights, as
    gpt-oss ships them; on a dense model every block linear, as dense MXFP4 checkpoints quantize them (AMD Quark
    'w_mxfp4_a_mxfp4', llm-compressor MXFP4 scheme); everything else bf16. A row that is not a multiple of 32 stays
    bf16 (no block can hold it)."""
    mx = GGML_TYPES["MXFP4"]
    has_experts = any(t.role.endswith("_exps") and t.is_matrix for t in tensors)

    def quantized(t: TensorInfo) -> bool:
        if not t.is_matrix or t.row_length % mx.layout.block_weights:
            return False
        return t.role.endswith("_exps") if has_experts else _block_linear(t)

    return [Assignment(t, mx if quantized(t) else (BF16_ENC if len(t.shape) >= 2 else FP32)) for t in tensors]


# Read-only after import: a format made at run time (exl2_format, stored_gguf_format) is passed along as an object.
FORMATS: Mapping[str, WeightFormat] = MappingProxyType({f.id: f for f in _build_formats()})
_EXL2_RE = re.compile(r"^exl2[-_]?(\d+(?:\.\d+)?)(?:bpw)?$", re.I)


def exl2_format(bpw: float, head_bits: int = 6) -> WeightFormat:
    """An EXL2 format at any average bits per weight (2.0-8.0)."""
    if not 2.0 <= bpw <= 8.0:
        raise PlannerError(f"EXL2 bits per weight must be between 2.0 and 8.0, got {bpw:g}")
    return WeightFormat(f"exl2-{bpw:g}bpw", "exl2", f"EXL2 {bpw:g} bits per weight (ExLlamaV2), {head_bits}-bit head",
                        "int4" if bpw <= 5 else "int8", _exl2(bpw, head_bits), (), bpw,
                        source="turboderp/exllamav2 convert.py (-b, -hb 6 default)")


def get_format(name: str) -> WeightFormat:
    """Resolve a format by id or alias, case-insensitive: 'Q4_K_M', 'q4_k_m', 'gptq-int4', 'exl2-4.0bpw'."""
    if name in FORMATS:
        return FORMATS[name]
    key = normalize_name(name)
    for f in FORMATS.values():
        if key == normalize_name(f.id) or key in (normalize_name(a) for a in f.aliases):
            return f
    m = _EXL2_RE.match(name.strip())
    if m:
        return exl2_format(float(m.group(1)))
    low = name.strip().lower()
    for suffix in (IMATRIX_SUFFIX, "-imatrix"):
        if low.endswith(suffix) and len(low) > len(suffix):
            base = get_format(name.strip()[: -len(suffix)])
            if base.family == "gguf" and base.id not in ("F32", "F16", "BF16"):
                return imatrix_format(base)
    if low.startswith("i1-") and len(low) > 3:
        base = get_format(name.strip()[3:])
        if base.family == "gguf" and base.id not in ("F32", "F16", "BF16"):
            return imatrix_format(base)
    choices = list(FORMATS) + ["exl2-4.0bpw", "Q4_K_M-imat"]
    raise NotFoundError("format", name, close_matches(name, choices))


def format_bytes(fmt: WeightFormat, model: ModelSpec, tensors: Sequence[TensorInfo]) -> int:
    """Total stored bytes of a model's tensors in a format."""
    return sum(a.nbytes for a in fmt.assignments(model, tensors))


def stored_gguf_format(label: str | None, tensor_types: dict[str, str], origin: str,
                       header_bytes: int | None = None) -> WeightFormat | None:
    """A format that is a GGUF file exactly as stored: each tensor in the ggml type the file holds it in, so a
    read file is planned by its real bytes rather than by the mix rules (None if a type is not a ggml type). The
    format is not registered: callers pass the object along (get_format does not know its id)."""
    if not tensor_types or any(t.upper() not in GGML_TYPES for t in tensor_types.values()):
        return None
    types = {name: GGML_TYPES[t.upper()] for name, t in tensor_types.items()}
    base = FORMATS.get(label or "")
    fid = f"{label or 'gguf'}-as-stored"

    def assign(model: ModelSpec, tensors: Sequence[TensorInfo]) -> list[Assignment]:
        return [Assignment(t, types.get(t.name, FP32 if len(t.shape) < 2 else GGML_TYPES["F16"])) for t in tensors]

    fmt = WeightFormat(fid, "gguf", f"{label or 'GGUF'} exactly as stored in {origin}", base.compute if base else "int4",
                       assign, (), base.weight_bits_nominal if base else 4.5, False, "the file's own tensor table",
                       header_bytes)
    return fmt
