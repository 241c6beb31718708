"""Which planner format a pre-quantized checkpoint is stored in: quantization_config / GGUF file type -> format id."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from planner.formats import FORMATS

# A quant label inside a GGUF file name: 'Llama-3.3-70B-Instruct-Q4_K_M.gguf', 'model.IQ4_XS.gguf', 'UD-Q4_K_XL'.
_GGUF_LABEL = re.compile(r"(?:^|[-_.])((?:UD-)?(?:I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32|MXFP4(?:_MOE)?))(?=$|[-.])", re.I)
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})$")


def gguf_label(file_name: str) -> str:
    """The quant label of a GGUF file from its name ('x-Q4_K_M-00001-of-00002.gguf' -> 'Q4_K_M'), else its stem."""
    stem = file_name.rsplit("/", 1)[-1]
    stem = stem[:-5] if stem.lower().endswith(".gguf") else stem
    stem = _SPLIT.sub("", stem)
    hits = [m.group(1) for m in _GGUF_LABEL.finditer(stem)]
    return max(hits, key=len).upper() if hits else stem


def _gguf_format(name: str | None) -> str | None:
    if not name:
        return None
    name = {"ALL_F32": "F32"}.get(name.upper(), name.upper())
    fmt = FORMATS.get(name)
    return fmt.id if fmt is not None and fmt.family == "gguf" else None


def planner_format(quant: Mapping[str, Any] | None, label: str | None = None) -> str | None:
    """The planner format id a checkpoint is stored in (None: not pre-quantized, or no planner format matches)."""
    if not quant:
        return None
    method = quant.get("method")
    bits = quant.get("bits")
    group = quant.get("group_size")
    if method == "gguf":
        # The label wins where it names a finer variant (Q4_K_L: Q4_K_M with Q8_0 embeddings), else general.file_type.
        return _gguf_format(label) or _gguf_format(quant.get("file_type"))
    if method == "awq":
        return "awq-int4" if bits == 4 else None
    if method == "gptq":
        return _gptq(bits, group)
    if method == "bitsandbytes":
        return "nf4" if bits == 4 else "bnb-int8" if bits == 8 else None
    if method in ("fp8", "fbgemm-fp8"):
        return "fp8"
    if method == "mxfp4":
        return "mxfp4"
    if method == "mlx":
        return f"mlx-{bits}bit" if bits in (4, 8) else None
    if method == "compressed-tensors":
        return _compressed_tensors(quant)
    if method == "modelopt":
        algo = str((quant.get("config") or {}).get("quant_algo", "")).upper()
        return "nvfp4" if "NVFP4" in algo else "fp8" if "FP8" in algo else None
    return None


def _gptq(bits: Any, group: Any) -> str | None:
    if bits not in (4, 8):
        return None
    if group in (None, -1, 0):
        return f"gptq-int{bits}-perchannel"
    if bits == 4 and group == 32:
        return "gptq-int4-g32"
    return f"gptq-int{bits}"  # group 128 and the less common sizes share the g128 layout closely enough


def _compressed_tensors(quant: Mapping[str, Any]) -> str | None:
    """llm-compressor schemes: FP8 / W8A8 / W8A16 / W4A16 (GPTQ-like packing) / NVFP4."""
    bits, kind, group = quant.get("bits"), quant.get("quant_type"), quant.get("group_size")
    fmt = str(quant.get("format") or "")
    groups = (quant.get("config") or {}).get("config_groups")
    first = next(iter(groups.values()), None) if isinstance(groups, Mapping) and groups else None
    acts = first.get("input_activations") if isinstance(first, Mapping) else None
    if kind == "float" and bits == 8:
        return "fp8"
    if kind == "float" and bits == 4 or "nvfp4" in fmt:
        return "nvfp4"
    if kind == "int" and bits == 8:
        return "w8a8-int8" if acts else "int8"
    if kind == "int" and bits == 4:
        return _gptq(4, group)
    return None
