"""The local Hugging Face cache, read directly with pathlib (no huggingface_hub needed, never online).

Layout (huggingface_hub's): HUB_CACHE/models--ORG--NAME/refs/<revision> holds a commit hash, and
HUB_CACHE/models--ORG--NAME/snapshots/<commit>/ holds the files (symlinks into blobs/).
"""

from __future__ import annotations

import os
from pathlib import Path

from planner.paths import user_path


def hf_hub_cache_dir() -> Path:
    """The hub cache directory: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub (XDG aware)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):  # the second is the older name, still honoured
        if os.environ.get(var):
            return user_path(os.environ[var])
    if os.environ.get("HF_HOME"):
        return user_path(os.environ["HF_HOME"]) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def repo_cache_dir(repo: str, root: Path | None = None) -> Path | None:
    """models--ORG--NAME for a repo id, matched exactly, else case-insensitively (Hub ids ignore case)."""
    root = hf_hub_cache_dir() if root is None else root
    want = "models--" + repo.replace("/", "--")
    exact = root / want
    if exact.is_dir():
        return exact
    if not root.is_dir():
        return None
    try:
        for child in root.iterdir():
            if child.name.lower() == want.lower() and child.is_dir():
                return child
    except OSError:
        return None
    return None


def find_snapshot(repo: str, revision: str = "main", root: Path | None = None) -> tuple[Path | None, str]:
    """The snapshot directory for repo@revision and a note on how it was picked ('' when by ref or commit)."""
    d = repo_cache_dir(repo, root)
    if d is None:
        return None, ""
    snaps = d / "snapshots"
    if not snaps.is_dir():
        return None, ""
    ref = d / "refs" / revision
    if ref.is_file():
        try:
            commit = ref.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            commit = ""
        if commit and "/" not in commit and (snaps / commit).is_dir():
            return snaps / commit, ""
    if "/" not in revision and (snaps / revision).is_dir():  # a commit hash named directly
        return snaps / revision, ""
    if revision != "main" or ref.is_file():
        return None, ""
    # No refs/main (files copied in by hand, or an older client): one snapshot is unambiguous, else the newest.
    candidates = [p for p in snaps.iterdir() if p.is_dir() and any(p.iterdir())]
    if not candidates:
        return None, ""
    if len(candidates) == 1:
        return candidates[0], ""
    newest = max(candidates, key=lambda p: p.stat().st_mtime)
    return newest, f"no refs/main in the HF cache; used the newest of {len(candidates)} snapshots ({newest.name})"
