"""Streaming safetensors writer: every tensor's dtype and shape are declared first, the header is written once,
and data arrives in pieces at byte offsets inside each tensor (so row chunks of several tensors can interleave).

The layout is the safetensors spec: 8-byte little-endian header length, a JSON header padded with spaces to a
multiple of 8, then the tensors back to back in header order.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from planner.models.readers.safetensors_header import DTYPE_BITS

# numpy dtype of each safetensors dtype we write (F8_E4M3 travels as its uint8 bit patterns).
NUMPY_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "I32": "<i4", "U32": "<u4", "U8": "u1", "F8_E4M3": "u1", "I64": "<i8"}


@dataclass(frozen=True)
class TensorSpec:
    """One output tensor: name, safetensors dtype, shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor."""
        return math.prod(self.shape) * DTYPE_BITS[self.dtype] // 8


class SafetensorsWriter:
    """Write one .safetensors file whose tensors are all declared up front."""

    def __init__(self, fh: BinaryIO, tensors: Sequence[TensorSpec], metadata: dict[str, str] | None = None):
        names = [t.name for t in tensors]
        if len(set(names)) != len(names):
            raise ValueError("duplicate tensor names in a safetensors file")
        self.fh = fh
        self.specs = {t.name: t for t in tensors}
        header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
        self.offsets: dict[str, int] = {}
        off = 0
        for t in tensors:
            header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [off, off + t.nbytes]}
            self.offsets[t.name] = off
            off += t.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)
        self.data_start = 8 + len(raw)
        self.size = self.data_start + off
        self.written = {n: 0 for n in names}
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(self.size)  # reserve the whole file; tensors are written in place

    def write(self, name: str, data: np.ndarray | bytes, start: int = 0) -> None:
        """Write bytes of tensor `name` beginning `start` bytes into it."""
        spec = self.specs[name]
        raw = memoryview(data if isinstance(data, bytes) else np.ascontiguousarray(data)).cast("B")
        if start + len(raw) > spec.nbytes:
            raise AssertionError(f"{name}: writing bytes {start}..{start + len(raw)} of a {spec.nbytes}-byte tensor")
        self.fh.seek(self.data_start + self.offsets[name] + start)
        self.fh.write(raw)
        self.written[name] += len(raw)

    def finish(self) -> int:
        """Check every tensor was written in full; returns the file size."""
        for name, n in self.written.items():
            if n != self.specs[name].nbytes:
                raise AssertionError(f"{name}: {n} of {self.specs[name].nbytes} bytes were written")
        return self.size
