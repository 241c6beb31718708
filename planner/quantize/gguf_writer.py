"""GGUF v3 writer (streaming: header and tensor table first, then each tensor's bytes in table order) and the
metadata a llama.cpp loader needs for Llama-family models converted from a Hugging Face config.json.

Our own writer rather than gguf.GGUFWriter: it writes to an open file we fsync and rename, takes tensor data in
row chunks, and checks every tensor's byte count against the formats table before anything is written.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from gguf import GGML_QUANT_VERSION, GGUFValueType, Keys, LlamaFileType

from planner.formats import GGMLType
from planner.models.spec import ModelSpec

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
ALIGNMENT = 32

_SCALAR_FMT = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H", GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i", GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q", GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}


@dataclass(frozen=True)
class KV:
    """One metadata entry: key, GGUF value type, value (for arrays: the element type in `elem`)."""

    key: str
    vtype: GGUFValueType
    value: Any
    elem: GGUFValueType | None = None


def kv_str(key: str, value: str) -> KV:
    """A string entry."""
    return KV(key, GGUFValueType.STRING, value)


def kv_u32(key: str, value: int) -> KV:
    """An unsigned 32-bit entry."""
    return KV(key, GGUFValueType.UINT32, int(value))


def kv_i32(key: str, value: int) -> KV:
    """An int32 entry."""
    return KV(key, GGUFValueType.INT32, value)


def kv_f32(key: str, value: float) -> KV:
    """A float32 entry."""
    return KV(key, GGUFValueType.FLOAT32, float(value))


def kv_bool(key: str, value: bool) -> KV:
    """A boolean entry."""
    return KV(key, GGUFValueType.BOOL, bool(value))


def kv_array(key: str, elem: GGUFValueType, values: Sequence[Any]) -> KV:
    """An array entry of one element type."""
    return KV(key, GGUFValueType.ARRAY, list(values), elem)


def kv_from_header(key: str, type_name: str, value: Any) -> KV | None:
    """Rebuild an entry read by planner.models.readers.gguf_header ('UINT32', 'ARRAY[STRING]'); None for nested arrays."""
    if type_name.startswith("ARRAY["):
        inner = type_name[6:-1]
        if inner.startswith("ARRAY") or inner == "?":
            return None
        return KV(key, GGUFValueType.ARRAY, list(value), GGUFValueType[inner])
    return KV(key, GGUFValueType[type_name], value)


def _string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _value(vtype: GGUFValueType, value: Any, elem: GGUFValueType | None = None) -> bytes:
    if vtype == GGUFValueType.STRING:
        return _string(value)
    if vtype == GGUFValueType.ARRAY:
        assert elem is not None
        head = struct.pack("<IQ", int(elem), len(value))
        if elem == GGUFValueType.STRING:  # vocabularies: one pack per item, no function call per item
            pack = struct.Struct("<Q").pack
            parts = [head]
            for v in value:
                raw = v.encode("utf-8")
                parts.append(pack(len(raw)))
                parts.append(raw)
            return b"".join(parts)
        if elem == GGUFValueType.ARRAY:
            raise ValueError("nested GGUF arrays are not written")
        fmt = _SCALAR_FMT[elem]
        return head + struct.pack(f"<{len(value)}{fmt[1]}", *value)
    return struct.pack(_SCALAR_FMT[vtype], value)


@dataclass(frozen=True)
class PlannedTensor:
    """A tensor to be written: GGUF name, shape in (rows, row_length) order, ggml type and its byte count."""

    name: str
    shape: tuple[int, ...]
    type: GGMLType
    nbytes: int


def _pad(n: int, align: int = ALIGNMENT) -> int:
    return -n % align


class GGUFWriter:
    """Write one GGUF file: `write_header()`, then `write(data)` chunks tensor by tensor in table order, then `finish()`."""

    def __init__(self, fh: BinaryIO, metadata: Sequence[KV], tensors: Sequence[PlannedTensor]):
        keys = [kv.key for kv in metadata]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate GGUF metadata keys")
        self.fh = fh
        self.metadata = list(metadata)
        self.tensors = list(tensors)
        self.offsets: list[int] = []
        off = 0
        for t in self.tensors:
            self.offsets.append(off)
            off += t.nbytes + _pad(t.nbytes)
        self.data_bytes = off
        self._index = 0  # tensor being written
        self._written = 0  # bytes of it so far
        self.header_bytes = 0

    def write_header(self) -> int:
        """Write magic, counts, metadata, tensor table and padding; returns where the data section starts."""
        parts = [GGUF_MAGIC, struct.pack("<IQQ", GGUF_VERSION, len(self.tensors), len(self.metadata))]
        for kv in self.metadata:
            parts.append(_string(kv.key) + struct.pack("<I", int(kv.vtype)) + _value(kv.vtype, kv.value, kv.elem))
        for t, off in zip(self.tensors, self.offsets):
            dims = tuple(reversed(t.shape))  # ggml order: row length (ne0) first
            parts.append(_string(t.name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, t.type.type_id, off))
        head = b"".join(parts)
        head += b"\0" * _pad(len(head))
        self.fh.write(head)
        self.header_bytes = len(head)
        self._skip_empty()
        return self.header_bytes

    def _skip_empty(self) -> None:
        while self._index < len(self.tensors) and self.tensors[self._index].nbytes == 0:
            self._index += 1

    @property
    def current(self) -> PlannedTensor:
        """The tensor the next write() belongs to."""
        return self.tensors[self._index]

    def write(self, data: np.ndarray | bytes) -> None:
        """Append bytes of the current tensor; a tensor's padding is written when its last byte is."""
        raw = memoryview(data if isinstance(data, bytes) else np.ascontiguousarray(data)).cast("B")
        t = self.tensors[self._index]
        if self._written + len(raw) > t.nbytes:
            raise AssertionError(f"{t.name}: {self._written + len(raw)} bytes written, the formats table says {t.nbytes}")
        self.fh.write(raw)
        self._written += len(raw)
        if self._written == t.nbytes:
            self.fh.write(b"\0" * _pad(t.nbytes))
            self._index += 1
            self._written = 0
            self._skip_empty()

    def finish(self) -> int:
        """Check every tensor was written in full; returns the file size."""
        if self._index != len(self.tensors):
            t = self.tensors[self._index]
            raise AssertionError(f"{t.name}: only {self._written} of {t.nbytes} bytes were written")
        return self.header_bytes + self.data_bytes


# ---------------------------------------------------------------------------------------------- metadata


def file_type_id(ftype: str) -> int:
    """llama.cpp's general.file_type number for a file type name ('Q4_K_M' -> 15)."""
    if ftype == "F32":
        return int(LlamaFileType.ALL_F32)
    return int(LlamaFileType[f"MOSTLY_{ftype}"])


def general_metadata(arch: str, name: str, ftype: str) -> list[KV]:
    """general.* keys: architecture first (llama.cpp reads it before anything else), name, file type, quant version."""
    return [
        kv_str(Keys.General.ARCHITECTURE, arch),
        kv_str(Keys.General.TYPE, "model"),
        kv_str(Keys.General.NAME, name),
        kv_u32(Keys.General.FILE_TYPE, file_type_id(ftype)),
        kv_u32(Keys.General.QUANTIZATION_VERSION, GGML_QUANT_VERSION),
    ]


_F32_MAX = float(np.finfo(np.float32).max)


def _f(config: dict[str, Any], key: str, default: float) -> float:
    """A config number written as a GGUF float32 (default when absent or not a number; an error when out of range)."""
    v = config.get(key)
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return default
    if not (math.isfinite(v) and abs(v) <= _F32_MAX):
        from planner.errors import InvalidInputError

        raise InvalidInputError(f"config.json: {key}: expected a finite number within float32's range, got {v!r}")
    return float(v)


def _u32(value: Any) -> int | None:
    """value when it is an integer that a GGUF uint32 holds, else None (the key is then not written)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 32 else None


def rope_config(config: dict[str, Any], attention: str = "full_attention") -> tuple[float, dict[str, Any] | None]:
    """RoPE base and scaling dict (None: no scaling) from a config.json in either spelling: transformers 4's
    rope_theta + rope_scaling, or transformers 5's rope_parameters (Gemma 3: one entry per attention type)."""
    params = config.get("rope_parameters")
    if isinstance(params, dict):
        if isinstance(params.get(attention), dict):
            params = params[attention]
        theta = _f(params, "rope_theta", _f(config, "rope_theta", 10000.0))
        kind = params.get("rope_type", params.get("type"))
        return theta, (params if kind not in (None, "default") else None)
    scaling = config.get("rope_scaling")
    return _f(config, "rope_theta", 10000.0), (scaling if isinstance(scaling, dict) else None)


def arch_metadata(arch: str, spec: ModelSpec, config: dict[str, Any]) -> tuple[list[KV], list[str]]:
    """'{arch}.*' hyper-parameters from config.json (as llama.cpp's converter writes them) and warnings.

    `config` is the decoder's config (Gemma 3's text_config for its multimodal checkpoints)."""
    warnings: list[str] = []
    k = Keys.LLM
    a = Keys.Attention
    r = Keys.Rope
    theta, scaling = rope_config(config)
    out = [
        kv_u32(k.VOCAB_SIZE.format(arch=arch), spec.vocab_size),
        kv_u32(k.CONTEXT_LENGTH.format(arch=arch), spec.max_context),
        kv_u32(k.EMBEDDING_LENGTH.format(arch=arch), spec.hidden_size),
        kv_u32(k.BLOCK_COUNT.format(arch=arch), spec.num_layers),
        kv_u32(k.FEED_FORWARD_LENGTH.format(arch=arch), spec.intermediate_size),
        kv_u32(a.HEAD_COUNT.format(arch=arch), spec.num_heads),
        kv_u32(a.HEAD_COUNT_KV.format(arch=arch), spec.num_kv_heads),
        kv_f32(a.LAYERNORM_RMS_EPS.format(arch=arch), _f(config, "rms_norm_eps", 1e-5)),
        kv_f32(r.FREQ_BASE.format(arch=arch), theta),
        kv_u32(r.DIMENSION_COUNT.format(arch=arch), _rope_dims(arch, spec, config)),
    ]
    if spec.head_dim is not None or arch in ("gemma2", "gemma3"):  # not hidden / heads: llama.cpp must be told
        out += [kv_u32(a.KEY_LENGTH.format(arch=arch), spec.dim_head), kv_u32(a.VALUE_LENGTH.format(arch=arch), spec.dim_head)]
    if isinstance(scaling, dict):
        kind = scaling.get("rope_type", scaling.get("type"))
        factor = _f(scaling, "factor", 0.0)
        if kind == "linear" and factor > 0:
            out += [kv_str(r.SCALING_TYPE.format(arch=arch), "linear"), kv_f32(r.SCALING_FACTOR.format(arch=arch), factor)]
        elif kind == "yarn" and factor > 0 and arch in ("qwen2", "qwen3", "qwen3moe"):
            # conversion/qwen.py (Qwen2Model / Qwen2MoeModel.set_gguf_parameters): type, factor, original context
            out += [kv_str(r.SCALING_TYPE.format(arch=arch), "yarn"), kv_f32(r.SCALING_FACTOR.format(arch=arch), factor)]
            if (orig := _u32(scaling.get("original_max_position_embeddings"))) is not None:
                out.append(kv_u32(r.SCALING_ORIG_CTX_LEN.format(arch=arch), orig))
        elif kind == "llama3":
            pass  # carried by the rope_freqs.weight tensor
        elif kind in ("longrope", "su") and arch == "phi3":
            pass  # carried by the rope_factors_long/short tensors and the keys below
        else:
            warnings.append(f"rope_scaling type {kind!r} is not written to the GGUF; long-context behaviour may differ")
    extra, w = _family_metadata(arch, spec, config)
    return out + extra, warnings + w


def _rope_dims(arch: str, spec: ModelSpec, config: dict[str, Any]) -> int:
    """Rotated dimensions per head: Phi-3 rotates partial_rotary_factor of them (conversion/phi.py)."""
    if arch == "phi3":
        params = config.get("rope_parameters")  # transformers 5 moves partial_rotary_factor there
        frac = _f(params if isinstance(params, dict) else {}, "partial_rotary_factor", _f(config, "partial_rotary_factor", 1.0))
        if not 0.0 < frac <= 1.0:
            from planner.errors import InvalidInputError

            raise InvalidInputError(f"config.json: partial_rotary_factor: expected a fraction of the head dimension in "
                                    f"(0, 1], got {frac!r}")
        return int(frac * spec.hidden_size) // spec.num_heads
    return spec.dim_head


def _family_metadata(arch: str, spec: ModelSpec, config: dict[str, Any]) -> tuple[list[KV], list[str]]:
    """The keys llama.cpp reads for mixture-of-experts, Gemma 2/3 and Phi-3 models, as its converter writes them
    (ggml-org/llama.cpp@2bbcf7f conversion/base.py TextModel.set_gguf_parameters, conversion/qwen.py,
    conversion/gemma.py, conversion/phi.py)."""
    k, a, r = Keys.LLM, Keys.Attention, Keys.Rope
    out: list[KV] = []
    warnings: list[str] = []
    if spec.moe is not None:
        out += [kv_u32(k.EXPERT_COUNT.format(arch=arch), spec.moe.num_experts),
                kv_u32(k.EXPERT_USED_COUNT.format(arch=arch), spec.moe.experts_per_token)]
        if arch == "qwen3moe":  # the experts' width; feed_forward_length stays the (unused) dense width
            out.append(kv_u32(k.EXPERT_FEED_FORWARD_LENGTH.format(arch=arch), spec.moe.expert_intermediate_size))
            if config.get("norm_topk_prob") is False:
                # llama.cpp's qwen3moe graph always renormalises the top-k routing weights (src/models/qwen3moe.cpp:
                # build_moe_ffn(..., LLM_FFN_SILU, norm_w = true, ...))
                warnings.append("norm_topk_prob is false: llama.cpp's qwen3moe renormalises the chosen experts' "
                                "weights, so its outputs differ from transformers'")
    if arch == "gemma2":
        out += [kv_f32(k.ATTN_LOGIT_SOFTCAPPING.format(arch=arch), _f(config, "attn_logit_softcapping", 50.0)),
                kv_f32(k.FINAL_LOGIT_SOFTCAPPING.format(arch=arch), _f(config, "final_logit_softcapping", 30.0))]
    if arch == "gemma3":
        if config.get("final_logit_softcapping") is not None:
            out.append(kv_f32(k.FINAL_LOGIT_SOFTCAPPING.format(arch=arch), _f(config, "final_logit_softcapping", 0.0)))
        swa_theta, _ = rope_config(config, "sliding_attention")
        params = config.get("rope_parameters")
        if isinstance(params, dict) and isinstance(params.get("sliding_attention"), dict):
            out.append(kv_f32(r.FREQ_BASE_SWA.format(arch=arch), swa_theta))
        elif config.get("rope_local_base_freq") is not None:  # transformers 4 spelling
            out.append(kv_f32(r.FREQ_BASE_SWA.format(arch=arch), _f(config, "rope_local_base_freq", 10000.0)))
    if arch in ("gemma2", "gemma3"):
        if spec.sliding_window is not None:
            out.append(kv_u32(a.SLIDING_WINDOW.format(arch=arch), spec.sliding_window))
        scalar = config.get("query_pre_attn_scalar")
        # llama.cpp scales queries by 1/sqrt(head_dim), or 1/sqrt(hidden/heads) for the 27B (llama-model.cpp);
        # a model trained with another query_pre_attn_scalar is not what llama.cpp computes
        if isinstance(scalar, (int, float)) and scalar not in (spec.dim_head, spec.hidden_size // spec.num_heads):
            warnings.append(f"query_pre_attn_scalar {scalar} is neither head_dim ({spec.dim_head}) nor hidden/heads: "
                            "llama.cpp scales queries by 1/sqrt(head_dim), so its outputs differ from transformers'")
    if arch == "phi3":
        _, scaling = rope_config(config)
        orig = _u32(config.get("original_max_position_embeddings"))
        if orig is not None:
            out.append(kv_u32(r.SCALING_ORIG_CTX_LEN.format(arch=arch), orig))
        # 0 tells Phi-3 (no sliding window) from Phi-4-mini-style checkpoints (conversion/phi.py)
        out.append(kv_u32(a.SLIDING_WINDOW.format(arch=arch), _u32(config.get("sliding_window")) or 0))
        kind = scaling.get("rope_type", scaling.get("type")) if scaling else None
        if kind in ("longrope", "su", "yarn") and orig is not None and orig > 1:
            scale = spec.max_context / orig
            if kind == "yarn":
                attn = 0.1 * math.log(scale) + 1.0 if scale > 1 else 1.0
            else:  # LongRoPE's attention factor (Phi-3 paper, appendix; conversion/phi.py)
                attn = math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1 else 1.0
            out.append(kv_f32(r.SCALING_ATTN_FACTOR.format(arch=arch), attn))
    return out, warnings


def longrope_factors(source: Any, config: dict[str, Any], head_dim: int) -> dict[str, np.ndarray]:
    """Phi-3 LongRoPE's rope_factors_long and rope_factors_short tensors, (head_dim / 2,) float32 each."""
    from planner.errors import InvalidInputError

    _, scaling = rope_config(config)
    out = {}
    for key, field in (("rope_factors_long", "long_factor"), ("rope_factors_short", "short_factor")):
        values = (scaling or {}).get(field)
        if not isinstance(values, list) or len(values) != head_dim // 2 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise InvalidInputError(f"{source}: rope_scaling.{field}: expected {head_dim // 2} finite numbers (head_dim / 2)")
        out[key] = np.asarray(values, dtype=np.float32)
    return out


def llama3_rope_factors(config: dict[str, Any], head_dim: int) -> np.ndarray:
    """The rope_freqs tensor llama.cpp uses for 'llama3' RoPE scaling: a divisor per frequency, (head_dim / 2,) float32.

    Meta's published rule: long wavelengths are slowed by `factor`, short ones kept, and those between blend smoothly.
    """
    base, rs = rope_config(config)
    assert rs is not None
    factor = float(rs.get("factor", 8.0))
    low = float(rs.get("low_freq_factor", 1.0))
    high = float(rs.get("high_freq_factor", 4.0))
    old_ctx = float(rs.get("original_max_position_embeddings", 8192))
    out = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * base ** (i / head_dim)
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)
