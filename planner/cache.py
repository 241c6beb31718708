"""A cache of validated catalog data as plain JSON, so the hot path neither re-validates unchanged YAML nor
imports pydantic: cached entries come back as Records with the schema's attributes and methods."""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from planner.paths import user_cache_dir
from planner.records import Record

_PACKAGE = Path(__file__).resolve().parent
# A change to a schema module invalidates every cache built with the old schema.
_SCHEMA_SOURCES = (_PACKAGE / "hardware" / "schema.py", _PACKAGE / "models" / "spec.py", _PACKAGE / "cache.py")


def _fingerprint(directory: Path) -> str:
    """Hash of the planner version, schema sources and the paths, sizes and mtimes of the YAML files."""
    from planner import __version__

    directory = Path(directory)
    files = [directory] if directory.is_file() else sorted(directory.glob("*.y*ml"))
    parts = [__version__]
    for f in (*_SCHEMA_SOURCES, *files):
        try:
            st = f.stat()
        except OSError:
            continue
        parts.append(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}")
    return checksum("\n".join(parts).encode())


def checksum(material: bytes) -> str:
    """A 64-bit key for cache file names: change detection, not security. Two zlib checksums rather than hashlib,
    whose OpenSSL import costs more than the rest of a cache lookup on every `planner recommend`."""
    return f"{zlib.crc32(material):08x}{zlib.adler32(material):08x}"


def cached_validated(kind: str, directory: Path, record: type[Record], build: Callable[[], list[Any]]) -> list[Any]:
    """Return `build()`'s validated models, or Records from a JSON cache keyed on the files' fingerprint."""
    from planner.paths import path_kind  # raises the clear 'cannot read' error for a directory the user may not enter

    if path_kind(Path(directory)) is None:
        return build()  # build() raises the clear 'no such directory' error
    cache_file = user_cache_dir() / f"{kind}-{_fingerprint(directory)}.json"
    if os.environ.get("PLANNER_NO_CACHE") != "1" and cache_file.is_file():
        try:
            rows = json.loads(cache_file.read_text(encoding="utf-8"))
            return [record(**row) for row in rows]
        except (OSError, ValueError, TypeError):
            pass  # a corrupt cache is rebuilt below
    items = build()
    try:
        from planner.yamlio import atomic_write_text

        atomic_write_text(cache_file, json.dumps([i.model_dump(mode="json") for i in items]))
    except OSError:
        pass  # a read-only home must not stop planning
    return items
