"""Any Hugging Face model by repo id: bundled profile -> local HF cache -> planner cache -> the Hub (only on request).

`resolve_repo("ORG/NAME[@REVISION][:QUANT]")` looks in the local Hugging Face cache first (offline, found with
huggingface_hub's cache functions), then in the planner's cache of earlier Hub reads, and reaches the Hub only when online reads were asked for
(`--online` or PLANNER_ONLINE=1), never silently. What is read from the Hub is small: the repo listing, config.json,
the safetensors index and each shard's header (huggingface_hub's get_safetensors_metadata), or each GGUF file's header
and tensor table (HfFileSystem range reads).
HF_HUB_OFFLINE=1 keeps the Hub out even with --online.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from planner.errors import NotFoundError, PlannerError
from planner.models.hub.hfcache import find_snapshot, hf_hub_cache_dir
from planner.models.hub.http import (DEFAULT_ENDPOINT, HubClient, HubError, HubSettings, counting_requests, hub_offline,
                                     range_reads_only)
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
    how = (f"{offline_var} is set, so the Hub is not read; unset it" if offline_var else
           "pass --online (or set PLANNER_ONLINE=1)")
    snapshot, picked = find_snapshot(repo, revision)
    local, partial = None, None
    if snapshot is not None:
        try:
            got = read_repo(LocalFiles(snapshot), repo, revision, quant)
        except IncompleteSnapshot as exc:
            partial = str(exc)  # e.g. the index json get_safetensors_metadata stored, or a download cut short
        else:
            local = HubModel(repo, revision, snapshot.name, "hf-cache", str(snapshot), got.kind, got.source, got.planner_format,
                             got.variants, got.selected, got.files, (*([picked] if picked else []), *got.notes))
    if local is not None and local.kind != "config":
        return local  # weights' headers on disk
    settings = settings or HubSettings.from_env()
    entry = load_entry(repo, revision, settings.endpoint)
    cached = from_entry(entry, quant, cache_path(repo, revision)) if entry is not None else None
    # An earlier complete Hub read beats a partial snapshot, and a config.json-only one of the same commit.
    if cached is not None and (local is None or cached.sha == local.sha):
        return cached
    if local is not None and not online:
        return local  # config.json alone is what there is offline
    if not online:
        if partial is not None:
            raise NotAvailableOffline(f"{repo}: the local HF cache has only part of it ({partial}); {how} to read it "
                                      "from the Hub")
        where = f"quant {quant} was not read yet" if entry is not None else \
            f"not in the local Hugging Face cache ({hf_hub_cache_dir()})"
        hint = f"; bundled profiles with similar names: {', '.join(candidates)}" if candidates else ""
        not_profile = "not a bundled profile and " if candidates is not None else ""
        raise NotAvailableOffline(f"{ref}: {not_profile}{where}; {how} to read its config and headers from "
                                  f"{settings.endpoint} (never the weights){hint}", ref, candidates or ())
    notes = ([f"local HF cache incomplete ({partial}); read from the Hub instead"] if partial is not None else
             ["local HF cache has config.json only; read the weights' headers from the Hub"] if local is not None else [])
    return _from_hub(repo, revision, quant, settings, entry, notes)


def _from_hub(repo: str, revision: str, quant: str | None, settings: HubSettings, previous: dict | None,
              notes: list[str]) -> HubModel:
    client = HubClient(settings, repo)
    with counting_requests() as sent, range_reads_only():
        info = client.call(f"{repo}: repo listing", lambda: client.api.model_info(
            repo, revision=revision, files_metadata=True, timeout=settings.timeout_s))
        sha, listing = _listing(info, repo)
        files = HubFiles(client, sha, listing, revision)
        got = read_repo(files, repo, revision, quant)
    model = HubModel(repo, revision, sha, "hub", client.page, got.kind, got.source, got.planner_format, got.variants,
                     got.selected, got.files, (*notes, *got.notes), len(sent), files.bytes_read)
    save(model, settings.endpoint, previous)  # only a complete read gets here: errors above leave no entry
    return model


def _listing(info: Any, repo: str) -> tuple[str, dict[str, int | None]]:
    """(commit, file -> size) from huggingface_hub's ModelInfo (files_metadata=True gives the sizes)."""
    if not isinstance(info.sha, str) or not re.fullmatch(r"[0-9a-fA-F]{7,64}", info.sha):
        raise HubError(f"{repo}: repo listing: expected 'sha' (a commit hash), found {info.sha!r:.80}")
    return info.sha, {s.rfilename: s.size for s in info.siblings or []}
