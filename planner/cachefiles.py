"""The planner's keyed cache files (`<kind>-<16 hex key>.json` in the user cache directory): written atomically, and
the same kind's older files under other keys removed, so that upgrades and edited catalogs do not pile up stale copies.
The most recent KEEP_OTHERS of them stay: two planner installs (two virtual environments, a checkout beside a release)
sharing one cache would otherwise evict each other's file on every run and recompute it each time (the quality fit:
~0.3 s)."""

from __future__ import annotations

import re
from pathlib import Path

from planner.yamlio import atomic_write_text

# <kind>-<planner.cache.checksum: crc32 + adler32, 16 lowercase hex digits>.json
_KEYED = re.compile(r"(?P<kind>.+)-[0-9a-f]{16}\.json")
KEEP_OTHERS = 2  # assumed: files of a kind kept besides the current one (the most recently written)


def write_keyed(path: Path, text: str) -> None:
    """Write one keyed cache file atomically, then remove the stale ones of its kind (prune_stale)."""
    atomic_write_text(path, text, durable=False)
    prune_stale(path)


def prune_stale(current: Path) -> list[Path]:
    """Remove the files beside `current` named like it (same kind, another 16-hex key, `.json`) but the KEEP_OTHERS
    most recently written: only names this module's pattern gives, never another file. Returns what was removed; a
    file that cannot be removed is left."""
    m = _KEYED.fullmatch(current.name)
    return [] if m is None else _remove_kind(current.parent, m["kind"], keep=current.name, others=KEEP_OTHERS)


def prune_kind(directory: Path, kind: str) -> list[Path]:
    """Remove every `<kind>-<16 hex>.json` in `directory`: a kind the planner no longer writes (the catalog cache's
    names before each directory had a kind of its own, `hwdb-<key>.json`). Returns what was removed."""
    return _remove_kind(directory, kind, keep=None, others=0)


def _remove_kind(directory: Path, kind: str, keep: str | None, others: int) -> list[Path]:
    """Remove `kind`'s keyed files in `directory` except `keep` and the `others` most recently written."""
    found: list[tuple[float, Path]] = []
    try:
        for p in directory.iterdir():
            m = _KEYED.fullmatch(p.name)
            if p.name == keep or m is None or m["kind"] != kind or p.is_symlink() or not p.is_file():
                continue
            found.append((p.stat().st_mtime, p))
    except OSError:
        return []  # the directory or an entry went away while listing: caches are best effort
    removed = []
    for _, p in sorted(found, key=lambda t: t[0], reverse=True)[others:]:
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass  # another process's, read-only, or already gone
    return removed
