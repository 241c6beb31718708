"""The planner's keyed cache files (`<kind>-<16 hex key>.json` in the user cache directory): written atomically, and
the same kind's files under other keys removed, so that upgrades and edited catalogs do not pile up stale copies."""

from __future__ import annotations

import re
from pathlib import Path

from planner.yamlio import atomic_write_text

# <kind>-<planner.cache.checksum: crc32 + adler32, 16 lowercase hex digits>.json
_KEYED = re.compile(r"(?P<kind>.+)-[0-9a-f]{16}\.json")


def write_keyed(path: Path, text: str) -> None:
    """Write one keyed cache file atomically, then remove the stale ones of its kind (prune_stale)."""
    atomic_write_text(path, text, durable=False)
    prune_stale(path)


def prune_stale(current: Path) -> list[Path]:
    """Remove the files beside `current` named like it (same kind, another 16-hex key, `.json`): only names this
    module's pattern gives, never another file. Returns what was removed; a file that cannot be removed is left."""
    m = _KEYED.fullmatch(current.name)
    return [] if m is None else _remove_kind(current.parent, m["kind"], keep=current.name)


def prune_kind(directory: Path, kind: str) -> list[Path]:
    """Remove every `<kind>-<16 hex>.json` in `directory`: a kind the planner no longer writes (the catalog cache's
    names before each directory had a kind of its own, `hwdb-<key>.json`). Returns what was removed."""
    return _remove_kind(directory, kind, keep=None)


def _remove_kind(directory: Path, kind: str, keep: str | None) -> list[Path]:
    removed = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return []
    for p in entries:
        other = _KEYED.fullmatch(p.name)
        if p.name == keep or other is None or other["kind"] != kind:
            continue
        try:
            if p.is_file() and not p.is_symlink():
                p.unlink()
                removed.append(p)
        except OSError:
            pass  # another process's, read-only, or already gone: caches are best effort
    return removed
