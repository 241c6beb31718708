"""safetensors header reader: the 8-byte length and the JSON header only, never the tensor data, never pickle.

Validation follows the safetensors library's own rules: the header fits the file and is at most 100 MB, every
dtype is known, dtype x shape equals the tensor's byte span, and the spans tile the data section exactly
(contiguous, non-overlapping, ending at the end of the file).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

from planner.errors import InvalidInputError, preview
from planner.models.readers.common import show
from planner.yamlio import json_value_error, load_json

INDEX_NAME = "model.safetensors.index.json"
MAX_HEADER_BYTES = 100_000_000  # the safetensors library refuses larger headers too
_U64 = 2**64  # safetensors stores shapes and offsets as u64 (its Rust reader's usize); larger ones are corrupt
MAX_DIMS = 8

# Bits per element of every safetensors dtype (sub-byte types pack several values per byte).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


@dataclass(frozen=True)
class RawTensor:
    """One tensor as a safetensors header states it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    n_bytes: int
    file: str  # the file it lives in (a shard's name for sharded models)
    data_offsets: tuple[int, int]  # from the start of the data section

    @property
    def n_elements(self) -> int:
        """Number of values."""
        return prod(self.shape)


def read_safetensors_header(path: Path | str) -> list[RawTensor]:
    """Read one .safetensors file's header and check it against the file size (the data is never read)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise InvalidInputError(f"{path}: header length: file truncated, expected an 8-byte header length, found {len(prefix)} bytes")
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER_BYTES:
                raise InvalidInputError(f"{path}: header length: expected at most {MAX_HEADER_BYTES} bytes, found {n} (corrupt or not a safetensors file)")
            if 8 + n > size:
                raise InvalidInputError(f"{path}: header length: {n} bytes runs past the end of the {size}-byte file (truncated or not a safetensors file)")
            header = fh.read(n)
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: no such safetensors file") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path}: is a directory, expected a .safetensors file") from None
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read ({exc.strerror})") from None
    if len(header) < n:
        raise InvalidInputError(f"{path}: header: file truncated, expected {n} bytes, found {len(header)}")
    return parse_safetensors_header(header, str(path), size - 8 - n, file=path.name)


def parse_safetensors_header(header: bytes, source: str, data_size: int | None, file: str = "") -> list[RawTensor]:
    """Validate a safetensors JSON header; data_size is the byte length after the header (None: unknown)."""
    try:
        doc = json.loads(header.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidInputError(f"{source}: header: expected UTF-8 JSON") from None
    except RecursionError:
        raise InvalidInputError(f"{source}: header: expected a JSON object (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError; so is an over-long integer
        raise InvalidInputError(f"{source}: header: expected a JSON object ({json_value_error(exc)})") from None
    if not isinstance(doc, dict):
        raise InvalidInputError(f"{source}: header: expected a JSON object mapping tensor names to dtype/shape/data_offsets")
    meta = doc.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise InvalidInputError(f"{source}: __metadata__: expected an object of strings")
    tensors = [_tensor(name, entry, source, file) for name, entry in doc.items()]
    end = 0
    for t in sorted(tensors, key=lambda t: t.data_offsets):
        begin, stop = t.data_offsets
        if begin != end:
            raise InvalidInputError(
                f"{source}: {show(t.name)}.data_offsets: expected the tensor to start at {end} (contiguous, non-overlapping data), found {begin}"
            )
        end = stop
    if data_size is not None and end != data_size:
        what = "file truncated" if end > data_size else "trailing bytes"
        raise InvalidInputError(f"{source}: data_offsets: {what}, tensors span {end} bytes but the data section has {data_size}")
    return tensors


def _tensor(key: str, entry: Any, source: str, file: str) -> RawTensor:
    """Validate one header entry {dtype, shape, data_offsets}."""
    if not key:
        raise InvalidInputError(f"{source}: header: expected non-empty tensor names")
    name = show(key)  # for messages only
    if not isinstance(entry, dict):
        raise InvalidInputError(f"{source}: {name}: expected an object with dtype, shape and data_offsets")
    dtype = entry.get("dtype")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise InvalidInputError(f"{source}: {name}.dtype: expected one of {', '.join(DTYPE_BITS)}, found {preview(dtype, 40)}")
    shape = entry.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMS
        or any(isinstance(d, bool) or not isinstance(d, int) or not 0 <= d < _U64 for d in shape)
    ):
        raise InvalidInputError(f"{source}: {name}.shape: expected a list of at most {MAX_DIMS} non-negative integers "
                                "below 2^64")
    offsets = entry.get("data_offsets")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or any(isinstance(o, bool) or not isinstance(o, int) or not 0 <= o < _U64 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise InvalidInputError(f"{source}: {name}.data_offsets: expected [begin, end] with 0 <= begin <= end < 2^64")
    bits = prod(shape) * DTYPE_BITS[dtype]
    n_bytes = offsets[1] - offsets[0]
    if bits % 8 or bits // 8 != n_bytes:
        raise InvalidInputError(
            f"{source}: {name}.data_offsets: expected {bits / 8:g} bytes for {dtype} {list(shape)}, found {n_bytes}"
        )
    return RawTensor(key, dtype, tuple(shape), n_bytes, file, (offsets[0], offsets[1]))


def read_safetensors_index(path: Path | str) -> dict[str, str]:
    """Read model.safetensors.index.json: tensor name -> shard file name (shards must sit beside the index)."""
    path = Path(path)
    doc = load_json(path, "safetensors index")
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise InvalidInputError(f"{path}: weight_map: expected an object mapping tensor names to shard files")
    for name, shard in weight_map.items():
        # A shard name is a plain file name: never let an index point outside its directory.
        if not isinstance(shard, str) or not shard.endswith(".safetensors") or "/" in shard or "\\" in shard or shard.startswith("."):
            raise InvalidInputError(f"{path}: weight_map.{show(name)}: expected a .safetensors file name beside the index, found {preview(shard)}")
    return weight_map


def read_safetensors_files(files: list[Path], index: dict[str, str] | None = None, index_path: Path | None = None) -> list[RawTensor]:
    """Read several shards' headers; with an index, check every tensor it lists is in the shard it names."""
    tensors: list[RawTensor] = []
    seen: dict[str, str] = {}
    for f in files:
        for t in read_safetensors_header(f):
            if t.name in seen:
                raise InvalidInputError(f"{f}: {show(t.name)}: expected each tensor in one shard, also in {seen[t.name]}")
            seen[t.name] = f.name
            tensors.append(t)
    if index is not None:
        for name, shard in index.items():
            if seen.get(name) != shard:
                where = f"found in {seen[name]}" if name in seen else "not in any shard"
                raise InvalidInputError(f"{index_path}: weight_map.{show(name)}: expected the tensor in {show(shard)}, {where}")
    return tensors


def read_safetensors_dir(directory: Path) -> tuple[list[RawTensor], list[Path]]:
    """All tensors of a model directory (index.json shards, or every *.safetensors file) and the files read."""
    index_path = directory / INDEX_NAME
    if index_path.is_file():
        index = read_safetensors_index(index_path)
        files = [directory / s for s in dict.fromkeys(index.values())]
        for f in files:
            if not f.is_file():
                raise InvalidInputError(f"{index_path}: weight_map: shard {show(f.name)} is missing from {directory}")
        return read_safetensors_files(files, index, index_path), files
    files = sorted(directory.glob("*.safetensors"))
    return read_safetensors_files(files), files
