"""What was read from a repo (HubModel), and its cache file: user_cache_dir()/hub/<org>--<name>--<revision>.json.

An entry is written only after a read from the Hub succeeded completely, atomically, so a failed or interrupted read
leaves nothing behind; a second call for the same repo and revision is answered from it without the network.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.models.hub.repo import GGUFVariant, gguf_source, pick_variant
from planner.models.inventory import TensorInfo
from planner.models.readers.common import ModelSource
from planner.models.spec import ModelSpec
from planner.paths import user_cache_dir
from planner.yamlio import atomic_write_text

CACHE_VERSION = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class HubModel:
    """A model resolved from a repo id: what was read, from where, and which planner format it is stored in."""

    repo: str
    revision: str  # as asked ('main', a tag or a commit)
    sha: str | None  # the commit read (None when unknown)
    where: str  # "hf-cache" (local HF cache), "hub" (just read), "hub-cache" (planner's cache of an earlier read)
    location: str  # snapshot directory, repo URL or cache file
    kind: str  # "safetensors", "gguf" or "config"
    source: ModelSource
    planner_format: str | None  # the planner format the checkpoint is stored in (None: not pre-quantized)
    variants: tuple[GGUFVariant, ...] = ()  # every quant of a GGUF repo
    selected: str | None = None  # the quant the source describes
    files: dict[str, int | None] = field(default_factory=dict)  # repo files and sizes
    notes: tuple[str, ...] = ()
    requests: int = 0  # HTTP requests this resolution sent (HEADs, redirects and retries included)
    bytes_read: int = 0  # bytes those requests returned

    @property
    def formats_in_repo(self) -> list[str]:
        """Planner formats of the stored checkpoint(s): every read quant of a GGUF repo, else the one format."""
        if self.variants:
            return list(dict.fromkeys(v.planner_format for v in self.variants if v.planner_format and v.header_read))
        return [self.planner_format] if self.planner_format else []


def cache_path(repo: str, revision: str) -> Path:
    """The cache file of repo@revision."""
    org, name = repo.split("/", 1)
    return user_cache_dir() / "hub" / f"{_UNSAFE.sub('_', org)}--{_UNSAFE.sub('_', name)}--{_UNSAFE.sub('_', revision)}.json"


def save(model: HubModel, endpoint: str, previous: dict[str, Any] | None = None) -> Path:
    """Write the entry for a Hub read (quants read earlier for the same commit are kept)."""
    src = model.source
    variants = []
    old = {v["label"]: v for v in (previous or {}).get("variants", [])} if previous and previous.get("sha") == model.sha else {}
    for v in model.variants:
        if v.header_read:
            variants.append(_variant_json(v))
        elif v.label in old and old[v.label].get("tensor_dtypes") is not None:
            variants.append(old[v.label])
        else:
            variants.append(_variant_json(v))
    entry = {
        "cache_version": CACHE_VERSION,
        "repo": model.repo, "revision": model.revision, "sha": model.sha, "endpoint": endpoint,
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kind": model.kind, "planner_format": model.planner_format, "selected": model.selected,
        "spec": src.spec.model_dump(mode="json"),
        "tensors": [[t.name, list(t.shape), t.role, t.layer] for t in src.tensors] if src.tensors is not None else None,
        "tensor_dtypes": src.tensor_dtypes if not model.variants else None,  # GGUF: per quant, below
        "file_bytes": src.file_bytes, "quantization": src.quantization, "origin": src.origin,
        "variants": variants, "files": model.files, "notes": list(model.notes),
    }
    path = cache_path(model.repo, model.revision)
    atomic_write_text(path, json.dumps(entry, separators=(",", ":")))
    return path


def _variant_json(v: GGUFVariant) -> dict[str, Any]:
    return {"label": v.label, "files": list(v.files), "file_bytes": v.file_bytes, "planner_format": v.planner_format,
            "file_type": v.file_type, "tensor_types": v.tensor_types, "tensor_dtypes": v.tensor_dtypes,
            "spec": v.spec.model_dump(mode="json") if v.spec is not None else None}


def load_entry(repo: str, revision: str, endpoint: str) -> dict[str, Any] | None:
    """The raw cache entry, or None when absent, unreadable, from another endpoint or an older format."""
    path = cache_path(repo, revision)
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None  # a damaged entry is re-read rather than trusted
    if not isinstance(entry, dict) or entry.get("cache_version") != CACHE_VERSION or entry.get("endpoint") != endpoint:
        return None
    if entry.get("repo") != repo or entry.get("revision") != revision:
        return None
    return entry


def from_entry(entry: dict[str, Any], quant: str | None, path: Path) -> HubModel | None:
    """The HubModel an entry describes, for `quant` (None: the quant read by default); None when the entry lacks
    what is asked (a quant whose header was not read) or does not decode."""
    try:
        repo, revision = entry["repo"], entry["revision"]
        tensors = None if entry["tensors"] is None else [TensorInfo(n, tuple(s), r, l) for n, s, r, l in entry["tensors"]]
        files = {str(k): v for k, v in entry["files"].items()}
        where = f"planner cache {path}"
        if entry["variants"]:
            variants = tuple(_variant_from(v) for v in entry["variants"])
            chosen = pick_variant(variants, quant if quant is not None else entry["selected"])
            if not chosen.header_read or tensors is None:
                return None
            src = gguf_source(chosen, tensors, repo, revision, where, len(variants), f"{repo}/{chosen.files[0]}")
            fmt, selected = chosen.planner_format, chosen.label
        else:
            if quant is not None:
                return None
            spec = ModelSpec.model_validate(entry["spec"])
            origin = str(entry["origin"]).rsplit(" (", 1)[0] + f" ({where})"
            src = ModelSource(spec, tensors, dict(entry["tensor_dtypes"] or {}), entry["file_bytes"], entry["quantization"], origin)
            variants, fmt, selected = (), entry["planner_format"], None
        return HubModel(repo, revision, entry["sha"], "hub-cache", str(path), entry["kind"], src, fmt, variants, selected,
                        files, tuple(entry["notes"]))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None  # written by us, so a mismatch means an edited or older file: read the Hub again


def _variant_from(d: dict[str, Any]) -> GGUFVariant:
    spec = ModelSpec.model_validate(d["spec"]) if d.get("spec") is not None else None
    return GGUFVariant(d["label"], tuple(d["files"]), d["file_bytes"], d["planner_format"], d["file_type"],
                       d["tensor_types"], d["tensor_dtypes"], spec)
