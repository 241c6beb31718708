"""Read a model repo's config, safetensors headers or GGUF headers from a file source: a local HF cache snapshot
or the Hub. One code path for both, so the offline and online results agree.

Never reads tensor data: safetensors shard headers come from the planner's reader on disk and from huggingface_hub's
get_safetensors_metadata on the Hub (range reads of each shard's first 100 kB); GGUF files give their metadata and
tensor table, read (through HfFileSystem on the Hub) up to where the tensor table ends.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from planner.errors import InvalidInputError, NotFoundError, preview
from planner.models.hub.http import HubClient, HubError
from planner.models.hub.mapping import gguf_label, planner_format
from planner.models.inventory import TensorInfo
from planner.models.readers.common import CONFIG_NAME, ModelSource, layer_of, make_id, show, tensor_info
from planner.models.readers.gguf_header import GGUFHeader, GGUFTensor, gguf_quantization, parse_gguf_header, spec_from_gguf
from planner.models.readers.hf_config import quantization_from_config, spec_from_hf_config
from planner.models.readers.hf_names import map_hf_tensors
from planner.models.readers.safetensors_header import (
    INDEX_NAME,
    RawTensor,
    parse_safetensors_header,
    read_safetensors_header,
)
from planner.models.spec import ModelSpec

MAX_JSON_BYTES = 64 << 20  # config.json, the index and the repo listing are far smaller
MAX_GGUF_HEADER_BYTES = 256 << 20  # metadata + tensor table; real ones are a few MB (token lists)
FIRST_CHUNK = 16 << 10  # GGUF header reads start small (a tiny file is not fetched whole) and double
MAX_CHUNK = 8 << 20
LIBRARY_FIRST_READ = 100_001  # huggingface_hub's parse_safetensors_file_metadata asks for bytes 0-100000 first
_SPLIT_RE = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.I)
_ST_SPLIT_RE = re.compile(r"^(?P<stem>.*)-\d{5}-of-(?P<count>\d{5})\.safetensors$")


# shard -> (its tensors, its file bytes), and the index's weight map (tensor -> shard) when there is one
Headers = tuple[dict[str, tuple[list[RawTensor], int]], dict[str, str] | None]


class IncompleteSnapshot(Exception):
    """A local snapshot lacks files the read needs (only some files were downloaded); the caller may go online."""


class LocalFiles:
    """A snapshot directory of the local HF cache (files are symlinks into blobs/; broken ones are skipped)."""

    where = "hf-cache"  # HubFiles: "hub"; both have location (where, in messages), sizes, source, read_small,
    # safetensors (shard -> tensors and bytes, and the weight map) and stream (GGUF headers)

    def __init__(self, root: Path):
        self.root = root
        self.location = str(root)

    def sizes(self) -> dict[str, int | None]:
        """Files present in the snapshot with their sizes."""
        out: dict[str, int | None] = {}
        for p in sorted(self.root.rglob("*")):
            try:
                if p.is_file():
                    out[p.relative_to(self.root).as_posix()] = p.stat().st_size
            except OSError:
                continue  # a dangling symlink: the blob was never downloaded
        return out

    def source(self, name: str) -> str:
        """The file's path."""
        return str(self.root / name)

    def read_small(self, name: str, limit: int) -> bytes:
        """Read a small file whole."""
        path = self.root / name
        try:
            if path.stat().st_size > limit:
                raise InvalidInputError(f"{path}: larger than the {limit}-byte limit for this file")
            return path.read_bytes()
        except OSError as exc:
            raise InvalidInputError(f"{path}: cannot read ({exc.strerror or exc})") from None

    def safetensors(self, listing: dict[str, int | None]) -> Headers | None:
        """The planner's own header reader on each shard (it checks the header length against the file size)."""
        shards, index = _shard_names(self, listing)
        if not shards:
            return None
        return {s: (read_safetensors_header(self.root / s), listing.get(s) or 0) for s in shards}, index

    def stream(self, name: str, size: int | None) -> BinaryIO:
        """Open the file."""
        path = self.root / name
        try:
            return path.open("rb")
        except OSError as exc:
            raise InvalidInputError(f"{path}: cannot read ({exc.strerror or exc})") from None


class HubFiles:
    """One repo at a commit on the Hub; bytes read counted in `bytes_read`. Headers are read at the commit; config.json and
    the index under the revision's name, so the HF cache gets refs/<revision> as transformers would leave it."""

    where = "hub"

    def __init__(self, client: HubClient, sha: str, listing: dict[str, int | None], revision: str):
        self.client = client
        self.sha, self.revision = sha, revision
        self.listing = listing
        self.location = client.page
        self.bytes_read = 0
        self._fs = None

    def sizes(self) -> dict[str, int | None]:
        """The repo listing."""
        return dict(self.listing)

    def source(self, name: str) -> str:
        """'org/name/file' (the revision is in the origin line)."""
        return f"{self.client.repo}/{name}"

    def read_small(self, name: str, limit: int) -> bytes:
        """GET a small file."""
        size = self.listing.get(name)
        if size is not None and size > limit:
            raise HubError(f"{self.client.repo}: {name}: {size} bytes is more than the {limit}-byte limit for this file")
        what = f"{self.client.repo}: {name}"
        # Into the HF cache, as transformers would fetch it: metadata, never weights.
        path = Path(self.client.call(what, lambda: self.client.api.hf_hub_download(
            self.client.repo, name, revision=self.revision, etag_timeout=self.client.settings.timeout_s)))
        if path.parent.name != self.sha:  # snapshots/<commit>/name: the revision moved since the listing
            raise HubError(f"{what}: {self.revision} moved from {self.sha[:12]} to {path.parent.name[:12]} during the read; "
                           "run again")
        body = path.read_bytes()
        self.bytes_read += len(body)
        return body

    def safetensors(self, listing: dict[str, int | None]) -> Headers | None:
        """Shard headers through huggingface_hub's get_safetensors_metadata (model.safetensors or the index and its
        shards; it also writes the index into the HF cache, as transformers does), or, for other top-level
        .safetensors files, its parse_safetensors_file_metadata; checked by the planner's header rules."""
        from huggingface_hub.errors import NotASafetensorsRepoError, SafetensorsParsingError
        from huggingface_hub.utils import disable_progress_bars

        repo, api, call, timeout = self.client.repo, self.client.api, self.client.call, self.client.settings.timeout_s
        top = sorted(n for n in listing if n.endswith(".safetensors") and "/" not in n)
        if INDEX_NAME not in listing and not top:
            return None
        what = f"{repo}: safetensors headers"
        try:
            with disable_progress_bars():  # its per-shard progress bar would land in the middle of our output
                if INDEX_NAME in listing or "model.safetensors" in listing:
                    meta = call(what, lambda: api.get_safetensors_metadata(repo, revision=self.revision, timeout=timeout))
                    by_file, index = meta.files_metadata, meta.weight_map if meta.sharded else None
                    self.bytes_read += (listing.get(INDEX_NAME) or 0) if meta.sharded else 0  # its index download
                else:
                    by_file = {n: call(f"{repo}: {n}", lambda n=n: api.parse_safetensors_file_metadata(
                        repo, n, revision=self.sha, timeout=timeout)) for n in top}
                    index = None
                return {name: self._checked(name, m) for name, m in sorted(by_file.items())}, index
        except NotASafetensorsRepoError:
            # The listing names the file, so the library's existence check (a HEAD) was answered 401 or 404.
            raise self.client.refused(what, INDEX_NAME if INDEX_NAME in listing else "model.safetensors") from None
        except SafetensorsParsingError as exc:
            raise InvalidInputError(f"{what}: {' '.join(str(exc).split())[:300]}") from None
        except (ValueError, TypeError, AttributeError, KeyError, RecursionError) as exc:
            # The library's parser assumes a JSON object of objects; anything else breaks inside it.
            raise InvalidInputError(f"{what}: expected a JSON object mapping tensor names to dtype/shape/data_offsets "
                                    f"({type(exc).__name__}: {preview(str(exc), 80)})") from None

    def _checked(self, name: str, meta: Any) -> tuple[list[RawTensor], int]:
        """The library's parse of one shard, put through the planner's header rules (dtypes, shapes, contiguous
        offsets). The library drops the header length, so truncation is checked against the listed size as
        8 + the header's compact JSON + the tensors' span <= the file size. safetensors writes compact JSON padded with
        spaces to a multiple of 8 (safetensors src/tensor.rs, prepare()), so a shard cut short by more than 7 bytes
        fails; trailing bytes, or a header padded wider by another writer, cannot be told apart."""
        doc: dict[str, Any] = {k: {"dtype": t.dtype, "shape": t.shape, "data_offsets": list(t.data_offsets)}
                               for k, t in meta.tensors.items()}
        if meta.metadata:
            doc["__metadata__"] = meta.metadata
        header = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
        src, size = self.source(name), self.listing.get(name)
        tensors = parse_safetensors_header(header, src, None, file=name)
        if not tensors:  # what a header length running past a short file reads as (the library reads what is there)
            raise InvalidInputError(f"{src}: header: no tensors (truncated, or not a weights file)")
        end = max((t.data_offsets[1] for t in tensors), default=0)
        if size is not None and 8 + len(header) + end > size:
            raise InvalidInputError(f"{src}: data_offsets: file truncated, tensors span {end} bytes but the {size}-byte "
                                    f"file leaves at most {size - 8 - len(header)} after the header")
        full = size if size is not None else 8 + len(header) + end
        # What the library's reads fetched: the first 100 kB, then the rest of a longer header.
        self.bytes_read += min(full, LIBRARY_FIRST_READ) + max(0, 8 + len(header) - LIBRARY_FIRST_READ)
        return tensors, full

    def stream(self, name: str, size: int | None) -> BinaryIO:
        """A file-like object over range requests (huggingface_hub's HfFileSystem, pinned to the commit)."""
        return _RangeStream(self, name, size)  # type: ignore[return-value]

    def filesystem(self):  # type: ignore[no-untyped-def]
        """One HfFileSystem for this read (not fsspec's shared instance: its listing cache would outlive the read)."""
        if self._fs is None:
            from huggingface_hub import HfFileSystem  # lazy: the Hub path only

            s = self.client.settings
            self._fs = HfFileSystem(endpoint=s.endpoint, token=s.token or False, skip_instance_cache=True)
        return self._fs


class _RangeStream:
    """A GGUF header through HfFileSystem at the pinned commit, uncached (cache_type "none": each read is one range
    request), in chunks that double from 16 KiB to 8 MiB, stopping at a cap so a corrupt header cannot pull in the data."""

    def __init__(self, files: HubFiles, name: str, size: int | None):
        self.files, self.name = files, name
        self.what, self.chunk = f"{files.client.repo}: {name}", FIRST_CHUNK
        with files.client.errors(self.what):
            self.fh = files.filesystem().open(f"{files.client.repo}@{files.sha}/{name}", "rb", cache_type="none", size=size)

    def read(self, n: int) -> bytes:
        n, self.chunk = min(n, self.chunk), min(self.chunk * 2, MAX_CHUNK)  # the parser takes short reads
        if self.fh.loc + n > MAX_GGUF_HEADER_BYTES:
            raise InvalidInputError(f"{self.files.source(self.name)}: GGUF header: larger than {MAX_GGUF_HEADER_BYTES >> 20} MiB "
                                    "(corrupt, or not a model file); not reading further")
        with self.files.client.errors(self.what):
            data = self.fh.read(n)
        if len(data) > n:  # HfFileSystem does not check for 206: more than asked means Range was ignored
            raise HubError(f"{self.what}: the server ignores HTTP range requests, so the GGUF header cannot be read "
                           "without the whole file")
        self.files.bytes_read += len(data)
        return data

    def __enter__(self) -> _RangeStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()


RepoFiles = LocalFiles | HubFiles  # one repo revision: a local snapshot or the Hub, read the same way


# --- results ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GGUFVariant:
    """One quant in a GGUF repo: its file(s), bytes, and (once its header was read) what it holds."""

    label: str  # from the file name: 'Q4_K_M', 'UD-Q4_K_XL', or the stem
    files: tuple[str, ...]  # split parts in order
    file_bytes: int | None
    planner_format: str | None
    file_type: str | None = None  # general.file_type (None until the header is read)
    tensor_types: dict[str, int] | None = None  # ggml type -> tensors (None until the header is read)
    tensor_dtypes: dict[str, str] | None = field(default=None, repr=False, compare=False)  # tensor -> ggml type
    spec: ModelSpec | None = field(default=None, repr=False, compare=False)  # from this quant's own metadata

    @property
    def header_read(self) -> bool:
        """Whether the header and tensor table were read."""
        return self.tensor_dtypes is not None


@dataclass(frozen=True)
class RepoRead:
    """What was read from a repo: the model source and, for GGUF repos, every quant."""

    kind: str  # "safetensors", "gguf" or "config"
    source: ModelSource
    planner_format: str | None
    variants: tuple[GGUFVariant, ...] = ()
    selected: str | None = None  # label of the variant the source describes
    files: dict[str, int | None] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


# --- reading ----------------------------------------------------------------------------------------------------


def read_repo(files: RepoFiles, repo: str, revision: str, quant: str | None = None) -> RepoRead:
    """Read a repo's model description from `files`; `quant` picks one GGUF quant (label or file name)."""
    listing = files.sizes()
    has_config = CONFIG_NAME in listing
    headers = files.safetensors(listing) if has_config and quant is None else None
    ggufs = _gguf_groups(listing)
    if headers:
        return _read_safetensors(files, repo, revision, listing, *headers)
    if ggufs:
        return read_gguf_variants(files, repo, revision, listing, ggufs, quant)
    if quant is not None:
        if files.where == "hf-cache":
            raise IncompleteSnapshot(f"{files.location}: GGUF quant {quant} asked for, no .gguf file in this snapshot")
        raise NotFoundError("GGUF quant", quant)
    if has_config:
        return _read_config_only(files, repo, revision, listing)
    if files.where == "hf-cache":
        raise IncompleteSnapshot(f"{files.location}: no config.json or .gguf file in this snapshot")
    raise InvalidInputError(f"{repo}: no config.json and no .gguf file in the repo, so there is no model description to read")


def _json(files: RepoFiles, name: str) -> Any:
    body = files.read_small(name, MAX_JSON_BYTES)
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidInputError(f"{files.source(name)}: expected UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{files.source(name)}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidInputError(f"{files.source(name)}: invalid JSON ({str(exc)[:100]})") from None


def _config(files: RepoFiles) -> dict[str, Any]:
    config = _json(files, CONFIG_NAME)
    if not isinstance(config, dict):
        raise InvalidInputError(f"{files.source(CONFIG_NAME)}: expected a JSON object at the top level")
    return config


def _spec_from_config(files: RepoFiles, repo: str, config: dict[str, Any]):  # type: ignore[no-untyped-def]
    # Hub sources are named 'org/name/config.json' so the spec id comes from the repo name, as for cache paths.
    spec = spec_from_hf_config(config, files.source(CONFIG_NAME))
    return spec.model_copy(update={"hf_repo": repo})


def _shard_names(files: RepoFiles, listing: dict[str, int | None]) -> tuple[list[str] | None, dict[str, str] | None]:
    """The safetensors shards (the index's, else model.safetensors, else top-level files) and the index's weight map."""
    if INDEX_NAME in listing:
        doc = _json(files, INDEX_NAME)
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise InvalidInputError(f"{files.source(INDEX_NAME)}: weight_map: expected an object mapping tensor names to shard files")
        for name, shard in weight_map.items():
            # A shard is a plain file name beside the index: never a path that leaves the repo.
            if not isinstance(shard, str) or not shard.endswith(".safetensors") or "/" in shard or "\\" in shard or shard.startswith("."):
                raise InvalidInputError(f"{files.source(INDEX_NAME)}: weight_map.{show(name)}: expected a .safetensors file name "
                                        f"beside the index, found {preview(shard)}")
        names = list(dict.fromkeys(weight_map.values()))
        missing = [s for s in names if s not in listing]
        if missing:
            msg = f"{files.source(INDEX_NAME)}: weight_map: shard {show(missing[0])} is missing" + (
                f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            if files.where == "hf-cache":
                raise IncompleteSnapshot(msg + " from the local HF cache snapshot")
            raise InvalidInputError(msg + " from the repo")
        return names, weight_map
    if "model.safetensors" in listing:
        return ["model.safetensors"], None
    top = sorted(n for n in listing if n.endswith(".safetensors") and "/" not in n)
    # Without the index, NAME-00001-of-00003.safetensors still says how many shards make the model.
    want = {f"{m['stem']}-{i:05d}-of-{m['count']}.safetensors" for n in top if (m := _ST_SPLIT_RE.match(n))
            for i in range(1, int(m["count"]) + 1)}
    if missing := sorted(want - set(top)):
        raise IncompleteSnapshot(f"{files.source(missing[0])}: shard missing from the local HF cache snapshot (no index)")
    return top or None, None


def _read_safetensors(
    files: RepoFiles, repo: str, revision: str, listing: dict[str, int | None],
    headers: dict[str, tuple[list[RawTensor], int]], index: dict[str, str] | None,
) -> RepoRead:
    config = _config(files)
    spec = _spec_from_config(files, repo, config)
    raw: list[RawTensor] = []
    seen: dict[str, str] = {}
    total = 0
    shards = list(headers)
    for shard, (tensors, size) in headers.items():
        total += size
        for t in tensors:
            if t.name in seen:
                raise InvalidInputError(f"{files.source(shard)}: {show(t.name)}: expected each tensor in one shard, also in {seen[t.name]}")
            seen[t.name] = shard
        raw.extend(tensors)
    if index is not None:
        for name, shard in index.items():
            if seen.get(name) != shard:
                where = f"found in {seen[name]}" if name in seen else "not in any shard"
                raise InvalidInputError(f"{files.source(INDEX_NAME)}: weight_map.{show(name)}: expected the tensor in {show(shard)}, {where}")
    tensors, dtypes = map_hf_tensors(raw, spec)
    quant = quantization_from_config(config, files.source(CONFIG_NAME))
    what = f"{len(shards)} safetensors shard headers" if len(shards) > 1 else f"{shards[0]} header"
    origin = f"{what} + config.json of {repo}@{revision} ({_where(files)})"
    src = ModelSource(spec, tensors, dtypes, total, quant, origin)
    return RepoRead("safetensors", src, planner_format(quant), files=listing)


def _read_config_only(files: RepoFiles, repo: str, revision: str, listing: dict[str, int | None]) -> RepoRead:
    config = _config(files)
    spec = _spec_from_config(files, repo, config)
    quant = quantization_from_config(config, files.source(CONFIG_NAME))
    src = ModelSource(spec, None, {}, None, quant, f"config.json of {repo}@{revision} ({_where(files)})")
    note = "no safetensors weights found: shapes from config.json alone (the weights' own dtypes are not known)"
    return RepoRead("config", src, planner_format(quant), files=listing, notes=(note,))


def _where(files: RepoFiles) -> str:
    return f"local HF cache {files.location}" if files.where == "hf-cache" else f"read from {files.location}"


# --- GGUF repos -------------------------------------------------------------------------------------------------


def _gguf_groups(listing: dict[str, int | None]) -> dict[str, list[str]]:
    """GGUF files grouped into quants (split parts together, in order); vision projectors (mmproj) left out."""
    groups: dict[str, list[str]] = {}
    for name in sorted(listing):
        base = name.rsplit("/", 1)[-1]
        if not base.lower().endswith(".gguf") or "mmproj" in base.lower():
            continue
        m = _SPLIT_RE.match(name)
        key = f"{m.group('stem')}|{m.group('count')}" if m else name
        groups.setdefault(key, []).append(name)
    return groups


def _variants(groups: dict[str, list[str]], listing: dict[str, int | None]) -> list[GGUFVariant]:
    """One stub per quant (label from the file name, unique within the repo), largest first."""
    out = []
    for parts in groups.values():
        sizes = [listing.get(p) for p in parts]
        total = None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)
        label = gguf_label(parts[0])
        out.append(GGUFVariant(label, tuple(parts), total, planner_format({"method": "gguf"}, label)))
    labels = [v.label for v in out]
    # Two files with one label (e.g. two models in one repo): fall back to the file stem, which is unique.
    out = [v if labels.count(v.label) == 1 else replace(v, label=_SPLIT_STEM.sub("", v.files[0].rsplit("/", 1)[-1][:-5]))
           for v in out]
    return sorted(out, key=lambda v: (-(v.file_bytes or 0), v.label))


_SPLIT_STEM = re.compile(r"-\d{5}-of-\d{5}$")


def pick_variant(variants: list[GGUFVariant] | tuple[GGUFVariant, ...], quant: str | None) -> GGUFVariant:
    """The quant asked for (label or file name, any case); without one, Q4_K_M if read, else the first read."""
    if quant is None:
        read = [v for v in variants if v.header_read] or list(variants)
        return next((v for v in read if v.planner_format == "Q4_K_M"), read[0])
    q = quant.lower()
    for v in variants:
        if v.label.lower() == q or any(q in (p.lower(), p.rsplit("/", 1)[-1].lower()) for p in v.files):
            return v
    raise NotFoundError("GGUF quant", quant, [v.label for v in variants])


def with_header(v: GGUFVariant, header: GGUFHeader, source: str, repo: str) -> GGUFVariant:
    """A variant completed from its (joined) header: what it holds and the ModelSpec its metadata gives."""
    q = gguf_quantization(header)
    # The id comes from the repo name, as for config.json repos (a split part's file stem would make a poor id).
    spec = spec_from_gguf(header, source).model_copy(update={"hf_repo": repo, "id": make_id(repo.split("/", 1)[1], "gguf")})
    return replace(v, file_bytes=header.file_size or v.file_bytes, planner_format=planner_format(q, v.label),
                   file_type=q["file_type"], tensor_types=q["tensor_types"],
                   tensor_dtypes={t.name: t.type_name for t in header.tensors}, spec=spec)


def gguf_source(v: GGUFVariant, tensors: list[TensorInfo], repo: str, revision: str, where: str, n_variants: int,
                first_file_source: str) -> ModelSource:
    """The ModelSource of one read quant: its spec, the repo's tensor shapes, its ggml types and file bytes."""
    if v.spec is None or v.tensor_dtypes is None:
        raise ValueError(f"GGUF quant {v.label}: its header was not read")  # callers pick read variants only
    n = len(v.files)
    what = f"GGUF {v.label} header + tensor table" + (f" ({n} split files)" if n > 1 else "")
    others = f"; {n_variants} quants in the repo" if n_variants > 1 else ""
    quantization = {"method": "gguf", "file_type": v.file_type, "tensor_types": dict(v.tensor_types or {}),
                    "source": f"{first_file_source}: general.file_type"}
    return ModelSource(v.spec, list(tensors), dict(v.tensor_dtypes), v.file_bytes, quantization,
                       f"{what} of {repo}@{revision} ({where}){others}")


def read_gguf_variants(
    files: RepoFiles, repo: str, revision: str, listing: dict[str, int | None], groups: dict[str, list[str]], quant: str | None,
) -> RepoRead:
    """Read the header and tensor table of every quant in the repo (or only the one asked for)."""
    variants = _variants(groups, listing)
    try:
        chosen = pick_variant(variants, quant)
    except NotFoundError:
        if files.where == "hf-cache":  # people download one quant: the others may well be on the Hub
            raise IncompleteSnapshot(f"{files.location}: GGUF quant {quant} is not in this snapshot (it has "
                                     f"{', '.join(v.label for v in variants)})") from None
        raise
    notes: list[str] = []
    headers: dict[str, GGUFHeader] = {}
    for v in [chosen] if quant is not None else variants:
        try:
            headers[v.label] = _read_gguf_parts(files, list(v.files), listing)
        except IncompleteSnapshot as exc:
            if quant is not None:
                raise
            notes.append(f"{v.label} left out: {exc}")
    if not headers:
        raise IncompleteSnapshot("; ".join(notes) or f"{files.location}: no complete GGUF file in this snapshot")
    # Locally, a quant whose parts are not all downloaded is left out; on the Hub every listed quant is shown.
    variants = [with_header(v, headers[v.label], files.source(v.files[0]), repo) if v.label in headers else v
                for v in variants if v.label in headers or quant is not None or files.where == "hub"]
    chosen = pick_variant(variants, quant)
    # Every quant of a repo has the same tensors (only their types differ): the shapes are kept once.
    tensors = [tensor_info(t.name, t.shape, layer_of(t.name)) for t in headers[chosen.label].tensors]
    src = gguf_source(chosen, tensors, repo, revision, _where(files), len(variants), files.source(chosen.files[0]))
    return RepoRead("gguf", src, chosen.planner_format, tuple(variants), chosen.label, listing, tuple(notes))


def _read_gguf_parts(files: RepoFiles, parts: list[str], listing: dict[str, int | None]) -> GGUFHeader:
    """Read one GGUF quant: each split part's header, joined into one tensor table."""
    m = _SPLIT_RE.match(parts[0])
    if m is not None:
        count = int(m.group("count"))
        want = [f"{m.group('stem')}-{i:05d}-of-{m.group('count')}.gguf" for i in range(1, count + 1)]
        missing = [w for w in want if w not in listing]
        if missing:
            msg = f"{files.source(missing[0])}: split GGUF part {want.index(missing[0]) + 1} of {count} is missing"
            if files.where == "hf-cache":
                raise IncompleteSnapshot(msg + " from the local HF cache snapshot")
            raise InvalidInputError(msg + " from the repo")
        parts = want
    headers = []
    for p in parts:
        with files.stream(p, listing.get(p)) as fh:
            headers.append(parse_gguf_header(fh, files.source(p), listing.get(p)))
    first = headers[0]
    count = first.metadata.get("split.count")
    if len(parts) == 1:
        if isinstance(count, int) and count > 1:
            raise InvalidInputError(f"{files.source(parts[0])}: split.count: file is one of {count} parts but its name does not "
                                    f"follow NAME-00001-of-{count:05d}.gguf, so the other parts cannot be found")
        return first
    if count != len(parts):
        raise InvalidInputError(f"{files.source(parts[0])}: split.count: expected {len(parts)} (the parts in the repo), found {preview(count, 20)}")
    tensors: list[GGUFTensor] = []
    for i, h in enumerate(headers):
        tensors.extend(GGUFTensor(t.name, t.dims, t.type_id, t.type_name, t.offset, t.n_bytes, split=i) for t in h.tensors)
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"{files.source(parts[0])}: tensors: expected each tensor in one split part only, found duplicates")
    sizes = [h.file_size for h in headers]
    return GGUFHeader(first.path, first.version, first.metadata, first.value_types, tensors, first.alignment, first.data_offset,
                      sum(h.data_size for h in headers), None if None in sizes else sum(s or 0 for s in sizes), tuple(parts))
