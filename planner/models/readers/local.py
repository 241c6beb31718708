"""A model read from a local path: a model directory, config.json, a .safetensors file or a .gguf file (headers only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from planner.errors import InvalidInputError
from planner.models.readers.common import CONFIG_NAME, ModelSource, layer_of, tensor_info
from planner.models.readers.gguf_header import gguf_quantization, read_gguf_model, spec_from_gguf
from planner.models.readers.hf_config import quantization_from_config, spec_from_hf_config
from planner.models.readers.hf_names import map_hf_tensors
from planner.models.readers.safetensors_header import (
    INDEX_NAME,
    read_safetensors_dir,
    read_safetensors_files,
    read_safetensors_index,
)
from planner.yamlio import load_json
from planner.paths import list_dir, path_kind, user_path


def load_model_source(path: Path) -> ModelSource:
    """Read a model directory, config.json, .safetensors file or .gguf file (headers only)."""
    path = user_path(path)
    kind = path_kind(path)  # a parent directory the user may not enter is a clear error here
    if kind is None:
        raise InvalidInputError(f"{path}: no such file or directory")
    if kind == "dir":
        list_dir(path)  # an unreadable directory is one clear line before any file in it is looked at
        return _load_dir(path)
    suffix = path.suffix.lower()
    if suffix == ".gguf":
        return _load_gguf(path)
    if suffix == ".safetensors":
        return _load_safetensors_file(path)
    if suffix == ".json":
        if path.name == INDEX_NAME:
            return _load_dir(path.parent)
        return _load_config_only(path)
    raise InvalidInputError(f"{path}: expected a model directory, config.json, .safetensors or .gguf file")


def _read_config(path: Path) -> dict[str, Any]:
    config = load_json(path, "config.json")
    if not isinstance(config, dict):
        raise InvalidInputError(f"{path}: expected a JSON object at the top level")
    return config


def _load_config_only(path: Path) -> ModelSource:
    config = _read_config(path)
    spec = spec_from_hf_config(config, str(path))
    return ModelSource(spec, None, {}, None, quantization_from_config(config, str(path)), f"config.json {path}")


def _load_dir(directory: Path) -> ModelSource:
    """config.json + safetensors first; else a single GGUF (or split set); else config.json alone."""
    config_path = directory / CONFIG_NAME
    has_config = config_path.is_file()
    if has_config and ((directory / INDEX_NAME).is_file() or any(directory.glob("*.safetensors"))):
        config = _read_config(config_path)
        spec = spec_from_hf_config(config, str(config_path))
        raw, files = read_safetensors_dir(directory)
        tensors, dtypes = map_hf_tensors(raw, spec)
        quant = quantization_from_config(config, str(config_path))
        what = f"{len(files)} safetensors shards" if len(files) > 1 else files[0].name
        return ModelSource(spec, tensors, dtypes, _size(files), quant, f"{what} + config.json in {directory}")
    ggufs = sorted(directory.glob("*.gguf"))
    firsts = [g for g in ggufs if "-of-" not in g.name or "-00001-of-" in g.name]
    if len(firsts) == 1:
        return _load_gguf(firsts[0])
    if firsts:
        names = ", ".join(g.name for g in firsts[:6])
        raise InvalidInputError(f"{directory}: several GGUF files ({names}); name the one to use")
    if has_config:
        return _load_config_only(config_path)
    raise InvalidInputError(f"{directory}: expected a config.json (with optional .safetensors) or a .gguf file")


def _load_safetensors_file(path: Path) -> ModelSource:
    config_path = path.parent / CONFIG_NAME
    if not config_path.is_file():
        raise InvalidInputError(f"{path}: a .safetensors file needs the model's config.json beside it ({config_path} is missing)")
    index_path = path.parent / INDEX_NAME
    if index_path.is_file() and path.name in read_safetensors_index(index_path).values():
        return _load_dir(path.parent)  # one shard of a sharded model stands for the whole model
    config = _read_config(config_path)
    spec = spec_from_hf_config(config, str(config_path))
    raw = read_safetensors_files([path])
    tensors, dtypes = map_hf_tensors(raw, spec)
    quant = quantization_from_config(config, str(config_path))
    return ModelSource(spec, tensors, dtypes, _size([path]), quant, f"{path.name} + config.json in {path.parent}")


def _load_gguf(path: Path) -> ModelSource:
    header = read_gguf_model(path)
    spec = spec_from_gguf(header, path)
    tensors = [tensor_info(t.name, t.shape, layer_of(t.name)) for t in header.tensors]
    dtypes = {t.name: t.type_name for t in header.tensors}
    files = [Path(p) for p in header.split_files] or [path]
    what = f"GGUF file {path.name}" if len(files) == 1 else f"GGUF split files {files[0].name} (+{len(files) - 1})"
    return ModelSource(spec, tensors, dtypes, _size(files), gguf_quantization(header), what)


def _size(files: list[Path]) -> int:
    return sum(f.stat().st_size for f in files)
