"""The local Hugging Face cache, looked up with huggingface_hub (try_to_load_from_cache, scan_cache_dir); never online."""

from __future__ import annotations

from pathlib import Path


def hf_hub_cache_dir() -> Path:
    """The hub cache directory, as huggingface_hub resolved it (HF_HUB_CACHE, HF_HOME/hub, ...): the one it writes to."""
    from huggingface_hub import constants  # lazy: the cache path only

    return Path(constants.HF_HUB_CACHE)


def find_snapshot(repo: str, revision: str = "main") -> tuple[Path | None, str]:
    """The snapshot directory for repo@revision and a note on how it was picked ('' when by ref or commit)."""
    from huggingface_hub import try_to_load_from_cache

    root = hf_hub_cache_dir()
    if not root.is_dir():
        return None, ""
    # Fast path: refs/<revision> (or a commit) -> snapshots/<commit>/config.json, without scanning the whole cache.
    try:
        hit = try_to_load_from_cache(repo, "config.json", cache_dir=root, revision=revision)
    except ValueError:  # a revision or repo id the library refuses: not in the cache
        hit = None
    if isinstance(hit, str):
        return Path(hit).parent, ""
    return _scan(repo, revision, root)


def _scan(repo: str, revision: str, root: Path) -> tuple[Path | None, str]:
    """GGUF-only repos (no config.json), repo ids in another case, and snapshots without refs: scan_cache_dir."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(root)
    except (CacheNotFound, OSError, ValueError):
        return None, ""
    found = [r for r in info.repos if r.repo_type == "model" and r.repo_id.lower() == repo.lower()]
    if not found:
        return None, ""
    cached = next((r for r in found if r.repo_id == repo), found[0])  # Hub ids ignore case; an exact match first
    revs = [r for r in cached.revisions if _nonempty(r.snapshot_path)]
    for r in revs:
        if revision in r.refs or r.commit_hash == revision:
            return r.snapshot_path, ""
    # No refs/main (files copied in by hand, or an older client): one snapshot is unambiguous, else the newest;
    # a snapshot that another branch or tag points at is that one's, not main's.
    revs = [r for r in revs if not r.refs]
    if revision != "main" or any("main" in r.refs for r in cached.revisions) or not revs:
        return None, ""
    if len(revs) == 1:
        return revs[0].snapshot_path, ""
    newest = max(revs, key=lambda r: r.last_modified)
    return newest.snapshot_path, (f"no refs/main in the HF cache; used the newest of {len(revs)} snapshots "
                                  f"({newest.commit_hash})")


def _nonempty(path: Path) -> bool:
    try:
        return any(path.iterdir())
    except OSError:
        return False
