"""A cache of validated catalog data as plain JSON, so the hot path neither re-validates unchanged YAML nor
imports pydantic: cached entries come back as Records with the schema's attributes and methods.

`Record` is a plain, frozen attribute bag: the hot path (`planner recommend --device ...`) must not pay pydantic's
import and schema-build cost (~0.15 s), so catalog and profile entries that were validated when the cache was written
come back as Records. They expose the same attributes and methods (through the *Methods mixins) as the pydantic
schema classes.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from planner import __version__
from planner.paths import path_kind, user_cache_dir

_PACKAGE = Path(__file__).resolve().parent
# A change to a schema module invalidates every cache built with the old schema.
_SCHEMA_SOURCES = (_PACKAGE / "hardware" / "schema.py", _PACKAGE / "models" / "spec.py", _PACKAGE / "cache.py")


class Record:
    """An immutable bag of fields with the small part of pydantic's API the planner uses."""

    _nested: dict[str, type["Record"]] = {}

    def __init__(self, **fields: Any) -> None:
        for name, value in fields.items():
            sub = self._nested.get(name)
            if sub is not None and isinstance(value, dict):
                value = sub(**value)
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.__dict__ == other.__dict__  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash(self.model_dump_json())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(self, 'id', '')})"

    def model_dump(self, mode: str | None = None) -> dict:
        """Fields as plain data (nested records too)."""
        return {k: plain(v, mode) for k, v in self.__dict__.items()}

    def model_dump_json(self) -> str:
        """Fields as JSON."""
        return json.dumps(self.model_dump(), sort_keys=True)

    def model_copy(self, update: dict | None = None) -> "Record":
        """A copy with some fields replaced (not re-validated, like pydantic's)."""
        return type(self)(**{**self.__dict__, **(update or {})})


def plain(value: Any, mode: str | None = None) -> Any:
    """`value` as plain data: a record or pydantic model by its model_dump (`mode` as pydantic's), lists, tuples and
    dicts item by item; the one dumper of Records, probe sections and the probe's output records."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode=mode) if mode else value.model_dump()
    if isinstance(value, (list, tuple)):
        return [plain(x, mode) for x in value]
    if isinstance(value, dict):
        return {k: plain(x, mode) for k, x in value.items()}
    return value


def fingerprint(obj: Any) -> str:
    """A stable JSON text of a pydantic model or a Record (for cache keys)."""
    return json.dumps(obj.model_dump(mode="json"), sort_keys=True)


def _files_fingerprint(directory: Path) -> str:
    """Hash of the planner version, schema sources and the paths, sizes and mtimes of the YAML files."""
    return _stat_key([*_SCHEMA_SOURCES, *_yaml_files(directory)])


def schema_key() -> str:
    """A key that changes with the planner version and its schema sources (sizes and mtimes): for caches of validated
    records that are not tied to catalog files."""
    return _stat_key(list(_SCHEMA_SOURCES))


def _stat_key(files: list[Path]) -> str:
    """Checksum of the planner version and each file's path, size and mtime (a missing file is left out)."""
    parts = [__version__]
    for f in files:
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


# The bundled catalog and profiles, validated, as shipped in the package (benchmarks/build_validated.py writes them):
# the first run after an install reads these instead of importing pydantic and validating every YAML file (~0.2 s).
SHIPPED_DIR = _PACKAGE / "data" / "validated"


def _yaml_files(directory: Path) -> list[Path]:
    directory = Path(directory)
    return [directory] if directory.is_file() else sorted(directory.glob("*.y*ml"))


def content_key(directory: Path) -> str:
    """Checksum of the planner version, the schema sources and the YAML files' names and bytes (not their paths or
    mtimes, which an install changes): what a shipped validated copy must match to stand for the files."""
    parts = [__version__.encode()]
    for f in _SCHEMA_SOURCES:
        parts.append(f.read_bytes())
    for f in _yaml_files(directory):
        parts += [f.name.encode(), f.read_bytes()]
    return checksum(b"\0".join(parts))


def shipped_text(directory: Path, items: list[Any]) -> str:
    """The shipped file for validated `items` of `directory`: its content key and the items as JSON rows."""
    return json.dumps({"key": content_key(directory), "rows": [i.model_dump(mode="json") for i in items]},
                      indent=0, sort_keys=True) + "\n"


def _shipped_rows(kind: str, directory: Path) -> list[dict] | None:
    """The shipped validated rows of `kind` when they were made from exactly these files, else None."""
    try:
        doc = json.loads((SHIPPED_DIR / f"{kind}.json").read_text(encoding="utf-8"))
        return doc["rows"] if doc["key"] == content_key(directory) else None
    except (OSError, ValueError, TypeError, KeyError):
        return None  # not shipped (a source checkout without it), unreadable, or another version's


def cached_validated(kind: str, directory: Path, record: type[Record], build: Callable[[], list[Any]]) -> list[Any]:
    """Return `build()`'s validated models, or Records from a JSON cache keyed on the files' fingerprint (on a miss,
    from the shipped validated copy when the files are the bundled ones, byte for byte)."""
    # path_kind raises the clear 'cannot read' error for a directory the user may not enter
    if path_kind(Path(directory)) is None:
        return build()  # build() raises the clear 'no such directory' error
    # one cache kind per directory (its path's key in the name): the bundled catalog and a user's catalog directory,
    # loaded in the same run, must not replace each other's file (planner.cachefiles prunes a kind's older keys)
    where = checksum(str(Path(directory).resolve()).encode())[:8]
    cache_file = user_cache_dir() / f"{kind}-{where}-{_files_fingerprint(directory)}.json"
    use_cache = os.environ.get("PLANNER_NO_CACHE") != "1"
    if use_cache and cache_file.is_file():
        try:
            rows = json.loads(cache_file.read_text(encoding="utf-8"))
            return [record(**row) for row in rows]
        except (OSError, ValueError, TypeError):
            pass  # a corrupt cache is rebuilt below
    shipped = _shipped_rows(kind, directory) if use_cache else None
    if shipped is not None:
        items: list[Any] = [record(**row) for row in shipped]
        rows_text = json.dumps(shipped)
    else:
        items = build()
        rows_text = json.dumps([i.model_dump(mode="json") for i in items])
    try:
        from planner.cachefiles import prune_kind, write_keyed  # lazy: only a cache miss writes; a warm recommend skips it

        write_keyed(cache_file, rows_text)
        prune_kind(cache_file.parent, kind)  # the names used before one kind per directory: '<kind>-<key>.json'
    except OSError:
        pass  # a read-only home must not stop planning
    return items
