"""Model resolution: what the user named (a path, a profile id/alias/size, a Hugging Face repo id) -> the model as
read, and the format(s) a pre-quantized checkpoint is stored in. Shared by the CLI, the TUI and `planner check`.

The local readers (planner.models.readers) and the Hub (planner.models.hub) sit below this module and know nothing of
each other: here a name is decided to be a path, a profile or a repo id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.errors import InvalidInputError, NotFoundError
from planner.formats import GGML_TYPES, stored_gguf_format
from planner.models.inventory import TensorInfo, tensor_inventory
from planner.models.profiles import ModelRegistry
from planner.paths import path_exists, user_path

if TYPE_CHECKING:
    from planner.formats import WeightFormat
    from planner.models.readers.common import ModelSource
    from planner.models.spec import ModelSpec

_PATH_SUFFIXES = (".gguf", ".safetensors", ".json")


@dataclass(frozen=True)
class ResolvedModel:
    """A model as the planner plans it: its spec, the tensors to plan by, and the format(s) it is stored in."""

    spec: ModelSpec
    tensors: list[TensorInfo]  # real tensors as read; [] plans by the spec's own inventory
    # the formats of a pre-quantized checkpoint: catalog ids, or as-stored GGUF formats (not in the registry: they
    # travel as objects); [] for float weights or a profile
    stored_formats: list[str | WeightFormat]
    origin: str | None = None  # what was read ("GGUF file x.gguf"); None for a bundled profile


def resolve_model(name: str, registry: ModelRegistry, online: bool | None = None) -> ModelSource:
    """An existing path is read from disk; else a profile (id, alias, repo, size); else a Hugging Face repo id from the
    local HF cache, the planner's cache or, with `online` (or PLANNER_ONLINE=1), the Hub (planner.models.hub)."""
    path = user_path(name)
    if path_exists(path):
        from planner.models.readers import load_model_source  # lazy: the readers import numpy, gguf and pydantic

        return load_model_source(path)
    from planner.models.hub import parse_repo_ref  # lazy: the Hub code (and the readers) only for repo ids

    ref = parse_repo_ref(name)
    if ref is None and (name.lower().endswith(_PATH_SUFFIXES) or name.startswith(("./", "../", "/", "~"))):
        raise InvalidInputError(f"{name}: no such file or directory")
    try:
        spec = registry.get(name)
    except NotFoundError as exc:
        if ref is None:
            raise
        from planner.models.hub import resolve_repo  # lazy: as above

        return resolve_repo(name, online=online, candidates=exc.candidates).source
    from planner.models.readers.common import ModelSource  # lazy: importing it loads every reader (numpy, gguf)

    return ModelSource(spec=spec, tensors=None, origin=f"profile {spec.id}")


def resolve(name: str, registry: ModelRegistry, *, online: bool | None = None) -> ResolvedModel:
    """Resolve a --model argument to the model to plan, as `planner recommend/estimate/bench/models show` do.

    Order: an existing path; a bundled profile (id, alias, size); a Hugging Face repo id from the local HF cache, the
    planner's cache of earlier Hub reads, or the Hub itself with `online`. A pre-quantized checkpoint (AWQ, GPTQ,
    a GGUF quant) carries the format(s) it is stored in.
    """
    if path_exists(Path(name)):
        # lazy: only a path or a repo id needs the file readers (they import numpy/gguf, which cost start-up time)
        from planner.models.hub import gguf_label, planner_format

        src = resolve_model(name, registry)
        fmt = planner_format(src.quantization, gguf_label(Path(name).name) if name.lower().endswith(".gguf") else None)
        if (src.quantization or {}).get("method") == "gguf":
            # plan the file by its own tensor table, not by the mix rules of its file type
            tensor_bytes = sum(_ggml_bytes(t, src.tensor_dtypes) for t in src.tensors or [])
            header = src.file_bytes - tensor_bytes if src.file_bytes and src.file_bytes > tensor_bytes else None
            stored = stored_gguf_format(fmt, dict(src.tensor_dtypes or {}), Path(name).name, header)
            fmt = stored if stored is not None else fmt
        return ResolvedModel(src.spec, planned_tensors(src), [fmt] if fmt else [], src.origin)
    try:
        return ResolvedModel(registry.get(name), [], [])
    except NotFoundError as exc:
        from planner.models.hub import is_repo_ref, resolve_repo  # lazy: as above

        if not is_repo_ref(name):
            raise
        hub = resolve_repo(name, online=online, candidates=exc.candidates)
        tensors = planned_tensors(hub.source)
        return ResolvedModel(hub.source.spec, tensors, _stored_hub_formats(hub, tensors or tensor_inventory(hub.source.spec)),
                             hub.source.origin)


def planned_tensors(src: ModelSource) -> list[TensorInfo]:
    """The tensors to plan by: GGUF and float tensors as read; [] (the spec's own inventory) for packed checkpoints
    (GPTQ qweight, AWQ, MLX, bitsandbytes, FP8 scales), whose stored shapes are not the weights' shapes."""
    quant = src.quantization or {}
    return list(src.tensors) if src.tensors and (not quant or quant.get("method") == "gguf") else []


def _stored_hub_formats(hub: Any, tensors: list[TensorInfo]) -> list[str | WeightFormat]:
    """The formats of a Hub checkpoint (ids, or WeightFormat objects); each read GGUF quant becomes an exact
    as-stored format (its tensor table and its real file size), so every quant in the repo is compared by its real
    bytes."""
    out = []
    for v in hub.variants:
        if not v.header_read:
            continue
        tensor_bytes = sum(_ggml_bytes(t, v.tensor_dtypes) for t in tensors)
        header = v.file_bytes - tensor_bytes if v.file_bytes and tensor_bytes and v.file_bytes > tensor_bytes else None
        fmt = stored_gguf_format(v.label, dict(v.tensor_dtypes), f"{hub.repo}:{v.label}", header) if tensors else None
        out.append(fmt if fmt is not None else v.planner_format)
    # one per id, in first-seen order; a repeated id keeps its last format, as the registry once did
    return list({getattr(f, "id", f): f for f in out if f}.values()) or hub.formats_in_repo


def _ggml_bytes(t: TensorInfo, dtypes: dict[str, str] | None) -> int:
    """Bytes of a read GGUF tensor in its stored type (0 when the type is unknown)."""
    typ = GGML_TYPES.get(str((dtypes or {}).get(t.name, "")).upper())
    return typ.nbytes(t.shape) if typ is not None else 0
