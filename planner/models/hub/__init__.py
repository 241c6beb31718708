"""Any Hugging Face model by repo id: bundled profile -> local HF cache -> planner cache -> the Hub (only on request).

`resolve_repo("ORG/NAME[@REVISION][:QUANT]")` looks in the local Hugging Face cache first (offline, found with
huggingface_hub's cache functions), then in the planner's cache of earlier Hub reads, and reaches the Hub only when online reads were asked for
(`--online` or PLANNER_ONLINE=1), never silently. What is read from the Hub is small: the repo listing, config.json,
the safetensors index and each shard's header, or each GGUF file's header and tensor table, all by range requests.
HF_HUB_OFFLINE=1 keeps the Hub out even with --online.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from planner.errors import NotFoundError, PlannerError
from planner.models.hub.hfcache import find_snapshot, hf_hub_cache_dir
from planner.models.hub.http import DEFAULT_ENDPOINT, HubClient, HubError, HubSettings, hub_offline
from planner.models.hub.mapping import gguf_label, planner_format
from planner.models.hub.repo import GGUFVariant, HubFiles, IncompleteSnapshot, LocalFiles, read_repo
from planner.models.hub.store import HubModel, cache_path, from_entry, load_entry, save

__all__ = [
    "DEFAULT_ENDPOINT", "GGUFVariant", "HubError", "HubModel", "HubSettings", "NotAvailableOffline", "RepoRef",
    "cache_path", "gguf_label", "hf_hub_cache_dir", "is_repo_ref", "online_requested", "parse_repo_ref",
    "planner_format", "resolve_repo",
]

# ORG/NAME as the Hub allows them, an optional @REVISION (branch, tag or commit) and an optional :QUANT for GGUF repos.
_REF_RE = re.compile(
    r"^(?P<org>[A-Za-z0-9][A-Za-z0-9_.-]{0,95})/(?P<name>[A-Za-z0-9_.][A-Za-z0-9_.-]{0,95})"
    r"(?:@(?P<rev>[A-Za-z0-9_.][A-Za-z0-9_./-]{0,199}))?(?::(?P<quant>[A-Za-z0-9_.][A-Za-z0-9_./-]{0,199}))?$"
)
_MAX_LISTING_BYTES = 64 << 20


class NotAvailableOffline(NotFoundError):
    """The repo is neither in the local HF cache nor in the planner's cache, and online reads were not asked for."""

    def __init__(self, message: str, name: str = "", candidates: Sequence[str] = ()):
        # A NotFoundError (callers that catch unknown models catch this too) with its own message.
        self.kind, self.name, self.candidates = "model", name, list(candidates)
        PlannerError.__init__(self, message)


@dataclass(frozen=True)
class RepoRef:
    """A parsed 'ORG/NAME[@REVISION][:QUANT]'."""

    repo: str
    revision: str = "main"
    quant: str | None = None


def parse_repo_ref(ref: str) -> RepoRef | None:
    """Split a repo reference; None when `ref` is not one (a profile id, a size, a path)."""
    m = _REF_RE.match(ref.strip())
    if m is None or "--" in m.group("name") or ".." in ref or m.group("name").endswith((".json", ".gguf", ".safetensors")):
        return None
    return RepoRef(f"{m.group('org')}/{m.group('name')}", m.group("rev") or "main", m.group("quant"))


def is_repo_ref(ref: str) -> bool:
    """Whether `ref` looks like a Hugging Face repo id (optionally with @revision and :quant)."""
    return parse_repo_ref(ref) is not None


def online_requested(flag: bool | None = None) -> bool:
    """--online, else PLANNER_ONLINE=1 (or true/yes/on)."""
    if flag:
        return True
    return os.environ.get("PLANNER_ONLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_repo(ref: str, *, online: bool | None = None, settings: HubSettings | None = None,
                 candidates: Sequence[str] | None = None) -> HubModel:
    """Resolve a repo reference: local HF cache, then the planner cache, then (online only) the Hub; `candidates`
    (close profile names; None: the profiles were not consulted) go into the message when it is not available offline."""
    parsed = parse_repo_ref(ref)
    if parsed is None:
        raise PlannerError(f"'{ref}' is not a Hugging Face repo id (expected ORG/NAME, optionally @REVISION and :QUANT)")
    repo, revision, quant = parsed.repo, parsed.revision, parsed.quant
    offline_var = hub_offline()
    online = online_requested(online) and offline_var is None
    notes: list[str] = []
    snapshot, how = find_snapshot(repo, revision)
    if snapshot is not None:
        files = LocalFiles(snapshot)
        try:
            got = read_repo(files, repo, revision, quant)
        except IncompleteSnapshot as exc:
            if not online:
                raise NotAvailableOffline(f"{repo}: the local HF cache has only part of it ({exc}); pass --online "
                                          "(or set PLANNER_ONLINE=1) to read it from the Hub") from None
            notes.append(f"local HF cache incomplete ({exc}); read from the Hub instead")
        else:
            return HubModel(repo, revision, snapshot.name, "hf-cache", str(snapshot), got.kind, got.source, got.planner_format,
                            got.variants, got.selected, got.files, (*([how] if how else []), *got.notes))
    settings = settings or HubSettings.from_env()
    entry = load_entry(repo, revision, settings.endpoint)
    if entry is not None:
        cached = from_entry(entry, quant, cache_path(repo, revision))
        if cached is not None:
            return cached
    if not online:
        where = f"not in the local Hugging Face cache ({hf_hub_cache_dir()})"
        if entry is not None:
            where = f"quant {quant} was not read yet"
        hint = f"; bundled profiles with similar names: {', '.join(candidates)}" if candidates else ""
        not_profile = "not a bundled profile and " if candidates is not None else ""
        how = (f"{offline_var} is set, so the Hub is not read; unset it" if offline_var else
               "pass --online (or set PLANNER_ONLINE=1)")
        raise NotAvailableOffline(f"{ref}: {not_profile}{where}; {how} to read its config and headers from "
                                  f"{settings.endpoint} (never the weights){hint}", ref, candidates or ())
    return _from_hub(repo, revision, quant, settings, entry, notes)


def _from_hub(repo: str, revision: str, quant: str | None, settings: HubSettings, previous: dict | None,
              notes: list[str]) -> HubModel:
    client = HubClient(settings, repo)
    info = client.get_json(client.api_url(revision), f"{repo}: repo listing", _MAX_LISTING_BYTES)
    sha, listing = _listing(info, repo)
    files = HubFiles(client, sha, listing)
    got = read_repo(files, repo, revision, quant)
    model = HubModel(repo, revision, sha, "hub", client.page, got.kind, got.source, got.planner_format, got.variants,
                     got.selected, got.files, (*notes, *got.notes), client.requests, files.bytes_read)
    save(model, settings.endpoint, previous)  # only a complete read gets here: errors above leave no entry
    return model


def _listing(info: object, repo: str) -> tuple[str, dict[str, int | None]]:
    """(commit, file -> size) from the Hub's model-info answer (/api/models/ORG/NAME/revision/REV?blobs=true)."""
    if not isinstance(info, dict):
        raise HubError(f"{repo}: repo listing: expected a JSON object")
    sha = info.get("sha")
    siblings = info.get("siblings")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-fA-F]{7,64}", sha) or not isinstance(siblings, list):
        raise HubError(f"{repo}: repo listing: expected 'sha' (a commit hash) and 'siblings' (the files)")
    listing: dict[str, int | None] = {}
    for s in siblings:
        name = s.get("rfilename") if isinstance(s, dict) else None
        if not isinstance(name, str) or not name or name.startswith("/") or ".." in name.split("/"):
            raise HubError(f"{repo}: repo listing: expected relative file names in 'siblings'")
        size = s.get("size")
        lfs = s.get("lfs")
        if not isinstance(size, int) and isinstance(lfs, dict):
            size = lfs.get("size")
        listing[name] = size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None
    return sha, listing
