"""What the config.json, safetensors and GGUF readers share: the ModelSource they return, and small helpers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from planner.errors import InvalidInputError, show  # noqa: F401 - show is re-exported for the readers
from planner.models.inventory import TensorInfo
from planner.models.spec import ModelSpec

CONFIG_NAME = "config.json"
_ID_BAD = re.compile(r"[^a-z0-9._-]+")


@dataclass(frozen=True)
class ModelSource:
    """A model as read from where the user pointed: its spec and, for weight files, the real tensors."""

    spec: ModelSpec
    tensors: list[TensorInfo] | None  # real tensors in GGUF naming (None: shapes only from the spec)
    tensor_dtypes: dict[str, str] = field(default_factory=dict)  # stored dtype (BF16) or ggml type (Q4_K) per tensor
    file_bytes: int | None = None  # on-disk bytes of the weight files
    quantization: dict[str, Any] | None = None  # pre-quantized checkpoint description (method, bits, group_size, ...)
    origin: str = ""  # what was read, for messages: "GGUF file x.gguf", "profile llama-3.1-8b"


def build_spec(kwargs: dict[str, Any], source: str) -> ModelSpec:
    """Validate ModelSpec fields read from a file; a violated bound is one InvalidInputError line."""
    try:
        return ModelSpec(**kwargs)
    except ValidationError as exc:
        parts = []
        for err in exc.errors()[:3]:
            loc = ".".join(str(p) for p in err.get("loc", ())) or "model"
            parts.append(f"{loc}: {err.get('msg', 'invalid')}")
        raise InvalidInputError(f"{source}: {'; '.join(parts)}") from None


def validated(source: str, model: Any, kwargs: dict[str, Any]) -> Any:
    """Build a pydantic model from file values; the first violated bound is one InvalidInputError line."""
    try:
        return model(**kwargs)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ())) or model.__name__
        raise InvalidInputError(f"{source}: {model.__name__}.{loc}: {err.get('msg', 'invalid')}") from None


def layer_pattern_period(sliding: list[bool], notes: list[str], what: str) -> int | None:
    """Per-layer sliding flags -> ModelSpec.global_every: None if all slide, 1 if none do; irregular ones noted."""
    n_full = sliding.count(False)
    if n_full == 0:
        return None
    # With a period p the first global layer is p-1, so p is fixed by it and checked in one pass.
    period = sliding.index(False) + 1
    if all(s == bool((i + 1) % period) for i, s in enumerate(sliding)):
        return period
    period = max(1, round(len(sliding) / n_full))
    notes.append(f"{what}: irregular local/global layer pattern approximated as every {period}th layer global")
    return period


def make_id(stem: str, fallback: str) -> str:
    """A ModelSpec id from a file or directory name."""
    ident = _ID_BAD.sub("-", stem.lower()).strip("-._")
    return ident or f"{_ID_BAD.sub('-', fallback.lower()).strip('-._') or 'model'}-local"


def tensor_info(name: str, shape: tuple[int, ...], layer: int | None) -> TensorInfo:
    """A TensorInfo whose role is derived as tensor_inventory() derives it ('blk.3.attn_q.weight' -> 'attn_q')."""
    base = name.rsplit(".", 1)[0]
    role = base.split(".", 2)[2] if base.startswith("blk.") and base.count(".") >= 2 else base
    return TensorInfo(name, shape, role, layer)


def layer_of(name: str) -> int | None:
    """The block index of a GGUF tensor name ('blk.12.ffn_up.weight' -> 12), else None."""
    parts = name.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "blk" and parts[1].isascii() and parts[1].isdigit() else None
