"""A cache of validated catalog data as plain JSON, so the hot path skips re-validating unchanged YAML."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from planner.paths import user_cache_dir
from planner.yamlio import atomic_write_text

T = TypeVar("T")


def _fingerprint(directory: Path) -> str:
    """Hash of the paths, sizes and mtimes of the YAML files in a directory (or of one file)."""
    directory = Path(directory)
    files = [directory] if directory.is_file() else sorted(directory.glob("*.y*ml"))
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def cached_validated(kind: str, directory: Path, model: type[T], build: Callable[[], list[T]]) -> list[T]:
    """Return `build()`'s validated models, from a JSON cache keyed on the files' fingerprint when valid."""
    import os

    if not Path(directory).exists():
        return build()  # build() raises the clear 'no such directory' error
    key = _fingerprint(directory)
    cache_file = user_cache_dir() / f"{kind}-{key}.json"
    if os.environ.get("PLANNER_NO_CACHE") != "1" and cache_file.is_file():
        try:
            rows = json.loads(cache_file.read_text(encoding="utf-8"))
            # Data validated when the cache was written; construct without re-validating.
            return [_construct(model, row) for row in rows]
        except (OSError, ValueError, TypeError, KeyError):
            pass  # a corrupt cache is rebuilt below
    items = build()
    try:
        atomic_write_text(cache_file, json.dumps([i.model_dump(mode="json") for i in items]))  # type: ignore[attr-defined]
    except OSError:
        pass  # a read-only home must not stop planning
    return items


def _construct(model, row: dict):  # type: ignore[no-untyped-def]
    """Rebuild a pydantic model (and its nested models) from trusted cached data without validation."""
    fields = model.model_fields
    values = {}
    for name, value in row.items():
        if name not in fields:
            raise KeyError(name)
        ann = fields[name].annotation
        sub = _nested_model(ann)
        if sub is not None and isinstance(value, dict):
            value = _construct(sub, value)
        values[name] = value
    return model.model_construct(**values)


def _nested_model(annotation):  # type: ignore[no-untyped-def]
    """The BaseModel class inside an annotation like `X | None`, if any."""
    from pydantic import BaseModel
    import typing

    candidates = typing.get_args(annotation) or (annotation,)
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
    return None
