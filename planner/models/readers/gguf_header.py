"""GGUF header and tensor-table reader (v2/v3, little-endian), and a ModelSpec from its metadata.

Our own struct-based parser rather than gguf.GGUFReader: that one memory-maps the whole file and trusts the
counts it reads, so a corrupt count can allocate gigabytes. Here every count and length is checked against
sane caps and against the bytes the file still has before anything is allocated, and the tensor data is never
read. Only the ggml type table (ids, names, block sizes) comes from the `gguf` package.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import Any, BinaryIO

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

from planner.errors import InvalidInputError, preview
from planner.models.readers.common import build_spec, layer_of, layer_pattern_period, make_id, show, tensor_info, validated
from planner.models.spec import MLASpec, ModelSpec, MoESpec

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# Caps far above any real file (a 262k-token vocabulary, ~1.5k tensors for DeepSeek-V3, chat templates of a
# few tens of KB) yet small enough that a corrupt count fails fast instead of allocating or looping for long.
MAX_KV_COUNT = 1 << 16
MAX_TENSOR_COUNT = 1 << 20
MAX_ARRAY_LEN = 1 << 24
MAX_STRING_BYTES = 1 << 24
MAX_NAME_BYTES = 1 << 16
MAX_ARRAY_DEPTH = 4
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_DIM = 1 << 48
MAX_ALIGNMENT = 1 << 20
MAX_LAYERS = 1024  # ModelSpec.num_layers' bound

# GGUF value types: id -> (name, struct format, size). 8 = string and 9 = array are handled apart.
_SCALARS: dict[int, tuple[str, str, int]] = {
    0: ("UINT8", "<B", 1),
    1: ("INT8", "<b", 1),
    2: ("UINT16", "<H", 2),
    3: ("INT16", "<h", 2),
    4: ("UINT32", "<I", 4),
    5: ("INT32", "<i", 4),
    6: ("FLOAT32", "<f", 4),
    7: ("BOOL", "<B", 1),
    10: ("UINT64", "<Q", 8),
    11: ("INT64", "<q", 8),
    12: ("FLOAT64", "<d", 8),
}
_STRING, _ARRAY = 8, 9
_INT_TYPES = {"UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "UINT64", "INT64"}
# The fewest bytes one value of a type can take in the file: bounds array lengths by the bytes left.
_MIN_SIZE = {**{t: s for t, (_, _, s) in _SCALARS.items()}, _STRING: 8, _ARRAY: 12}


@dataclass(frozen=True)
class GGUFTensor:
    """One entry of the tensor table: dims in ggml order (ne0 = row length first)."""

    name: str
    dims: tuple[int, ...]
    type_id: int
    type_name: str
    offset: int  # from the start of the data section
    n_bytes: int
    split: int = 0  # index of the file it lives in, for split GGUFs

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape in our (rows, row_length) order: ggml dims reversed, e.g. (E, out, in) for experts."""
        return tuple(reversed(self.dims))

    @property
    def n_elements(self) -> int:
        """Number of values."""
        return prod(self.dims)


@dataclass(frozen=True)
class GGUFHeader:
    """Everything in a GGUF file before the tensor data."""

    path: str
    version: int
    metadata: dict[str, Any]
    value_types: dict[str, str]  # key -> 'UINT32', 'STRING', 'ARRAY[STRING]', ...
    tensors: list[GGUFTensor]
    alignment: int
    data_offset: int  # where the data section starts in the file
    data_size: int  # bytes from data_offset to the end of the last tensor
    file_size: int | None
    split_files: tuple[str, ...] = field(default=())  # all files of a split GGUF, in order

    @property
    def architecture(self) -> str | None:
        """general.architecture, if it is a string."""
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None


_U64 = struct.Struct("<Q")


class _Reader:
    """Little-endian reads from a file in chunks; running out of bytes is a clear 'truncated' error."""

    def __init__(self, fh: BinaryIO, source: str, file_size: int | None):
        self.fh = fh
        self.source = source
        self.file_size = file_size
        self.pos = 0  # absolute position of the next unread byte
        self._buf = b""
        self._off = 0

    def fail(self, what: str, expected: str) -> InvalidInputError:
        return InvalidInputError(f"{self.source}: {what}: expected {expected} (at byte {self.pos})")

    def left(self) -> int | None:
        """Bytes the file still has after the current position (None when the size is unknown)."""
        return None if self.file_size is None else self.file_size - self.pos

    def _need(self, n: int, what: str) -> None:
        """Make n unread bytes available in the buffer (a clear 'truncated' error when the file has fewer)."""
        left = self.left()
        if left is not None and n > left:
            raise InvalidInputError(
                f"{self.source}: {what}: file truncated, needs {n} bytes at byte {self.pos} but only {left} remain"
            )
        while len(self._buf) - self._off < n:
            chunk = self.fh.read(max(n - (len(self._buf) - self._off), 1 << 20))
            if not chunk:
                raise InvalidInputError(f"{self.source}: {what}: file truncated at byte {self.pos + len(self._buf) - self._off}")
            self._buf = self._buf[self._off:] + chunk
            self._off = 0

    def take(self, n: int, what: str) -> bytes:
        self._need(n, what)
        out = self._buf[self._off:self._off + n]
        self._off += n
        self.pos += n
        return out

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return struct.unpack("<Q", self.take(8, what))[0]

    def string(self, what: str, cap: int, strict: bool) -> str:
        n = self.u64(f"{what} length")
        if n > cap:
            raise self.fail(f"{what} length", f"at most {cap} bytes, found {n}")
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8", errors="strict" if strict else "replace")
        except UnicodeDecodeError:
            raise self.fail(what, "UTF-8 text") from None

    def strings(self, n: int, what: str, cap: int) -> list[str]:
        """n length-prefixed strings (invalid UTF-8 replaced): the same checks as string(), without a method call
        and a struct call per item (a vocabulary has hundreds of thousands)."""
        out: list[str] = []
        length = _U64.unpack_from
        for _ in range(n):
            if len(self._buf) - self._off < 8:
                self._need(8, f"{what} length")
            (ln,) = length(self._buf, self._off)
            if ln > cap:
                raise self.fail(f"{what} length", f"at most {cap} bytes, found {ln}")
            self._off += 8
            self.pos += 8
            if len(self._buf) - self._off < ln:
                self._need(ln, what)
            out.append(self._buf[self._off:self._off + ln].decode("utf-8", "replace"))
            self._off += ln
            self.pos += ln
        return out

    def count(self, n: int, what: str, cap: int, min_item_bytes: int) -> int:
        """Check a count against its cap and the bytes left, before anything that size is allocated."""
        if n > cap:
            raise self.fail(what, f"at most {cap}, found {n}")
        left = self.left()
        if left is not None and n * min_item_bytes > left:
            raise InvalidInputError(
                f"{self.source}: {what}: {n} entries need at least {n * min_item_bytes} bytes but only {left} remain (corrupt or truncated)"
            )
        return n


def _type_name(vtype: int, elem: str | None = None) -> str:
    if vtype == _STRING:
        return "STRING"
    if vtype == _ARRAY:
        return f"ARRAY[{elem}]"
    return _SCALARS[vtype][0]


def _read_value(r: _Reader, vtype: int, what: str, depth: int = 0) -> tuple[Any, str]:
    """Read one metadata value of type `vtype`; return it and its type name."""
    if vtype in _SCALARS:
        name, fmt, size = _SCALARS[vtype]
        value = struct.unpack(fmt, r.take(size, what))[0]
        return (bool(value) if name == "BOOL" else value), name
    if vtype == _STRING:
        return r.string(what, MAX_STRING_BYTES, strict=False), "STRING"
    if vtype != _ARRAY:
        raise r.fail(f"{what} type", f"a GGUF value type 0-12, found {vtype}")
    if depth >= MAX_ARRAY_DEPTH:
        raise r.fail(what, f"arrays nested at most {MAX_ARRAY_DEPTH} deep")
    etype = r.u32(f"{what} element type")
    if etype not in _MIN_SIZE:
        raise r.fail(f"{what} element type", f"a GGUF value type 0-12, found {etype}")
    n = r.count(r.u64(f"{what} length"), f"{what} length", MAX_ARRAY_LEN, _MIN_SIZE[etype])
    if etype in _SCALARS:
        # Numbers in one slice: fast for token_type / scores arrays of a quarter-million entries.
        ename, fmt, size = _SCALARS[etype]
        raw = r.take(n * size, what)
        values: list[Any] = list(struct.unpack(f"<{n}{fmt[1]}", raw)) if n else []
        if ename == "BOOL":
            values = [bool(v) for v in values]
        return values, f"ARRAY[{ename}]"
    if etype == _STRING:  # token and merge lists: hundreds of thousands of strings, so no per-item labels
        return r.strings(n, what, MAX_STRING_BYTES), "ARRAY[STRING]"
    items = []
    elem = _type_name(etype, "?")
    for i in range(n):
        v, elem = _read_value(r, etype, f"{what}[{i}]", depth + 1)
        items.append(v)
    return items, f"ARRAY[{elem}]"


def read_gguf_header(path: Path | str) -> GGUFHeader:
    """Read a GGUF file's metadata and tensor table (never the tensor data)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            return parse_gguf_header(fh, str(path), size)
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: no such GGUF file") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path}: is a directory, expected a GGUF file") from None
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read ({exc.strerror})") from None


def parse_gguf_header(fh: BinaryIO, source: str, file_size: int | None) -> GGUFHeader:
    """Parse a GGUF header from an open binary stream positioned at byte 0 (file_size None: unknown length)."""
    r = _Reader(fh, source, file_size)
    magic = r.take(4, "magic")
    if magic != GGUF_MAGIC:
        raise InvalidInputError(f"{source}: magic: expected b'GGUF' (not a GGUF file), found {magic!r}")
    version = r.u32("version")
    if version not in SUPPORTED_VERSIONS:
        swapped = struct.unpack(">I", struct.pack("<I", version))[0]
        if swapped in (1, 2, 3):
            raise InvalidInputError(f"{source}: version: big-endian GGUF is not supported (expected a little-endian file)")
        hint = " (GGUF v1 is obsolete; re-convert the model)" if version == 1 else ""
        raise InvalidInputError(f"{source}: version: expected 2 or 3, found {version}{hint}")
    n_tensors = r.count(r.u64("tensor_count"), "tensor_count", MAX_TENSOR_COUNT, 8 + 4 + 8 + 4 + 8)
    n_kv = r.count(r.u64("kv_count"), "kv_count", MAX_KV_COUNT, 8 + 4 + 1)

    metadata: dict[str, Any] = {}
    types: dict[str, str] = {}
    for i in range(n_kv):
        key = r.string(f"metadata[{i}].key", MAX_NAME_BYTES, strict=True)
        label = show(key)
        if key in metadata:
            raise r.fail(f"metadata[{i}].key", f"unique keys, '{label}' appears twice")
        vtype = r.u32(f"{label} type")
        if vtype not in _MIN_SIZE:
            raise r.fail(f"{label} type", f"a GGUF value type 0-12, found {vtype}")
        metadata[key], types[key] = _read_value(r, vtype, label)

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if (
        types.get("general.alignment", "UINT32") not in _INT_TYPES
        or not isinstance(alignment, int)
        or not 0 < alignment <= MAX_ALIGNMENT
        or alignment & (alignment - 1)
    ):
        raise InvalidInputError(f"{source}: general.alignment: expected a power of two up to {MAX_ALIGNMENT}, found {preview(alignment, 40)}")

    raw_tensors: list[tuple[str, tuple[int, ...], int, str, int]] = []
    seen: set[str] = set()
    for i in range(n_tensors):
        key = r.string(f"tensors[{i}].name", MAX_NAME_BYTES, strict=True)
        name = show(key)  # for messages
        if key in seen:
            raise r.fail(f"tensors[{i}].name", f"unique tensor names, '{name}' appears twice")
        seen.add(key)
        n_dims = r.u32(f"{name}.n_dims")
        if not 1 <= n_dims <= MAX_DIMS:
            raise r.fail(f"{name}.n_dims", f"1 to {MAX_DIMS}, found {n_dims}")
        dims = tuple(r.u64(f"{name}.dims") for _ in range(n_dims))
        if any(not 1 <= d <= MAX_DIM for d in dims):
            raise r.fail(f"{name}.dims", f"each dim 1 to 2**48, found {list(dims)}")
        type_id = r.u32(f"{name}.type")
        try:
            qtype = GGMLQuantizationType(type_id)
            block, type_size = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise r.fail(f"{name}.type", f"a known ggml type id, found {type_id}") from None
        offset = r.u64(f"{name}.offset")
        if dims[0] % block:
            raise r.fail(f"{name}.dims", f"a row length (ne0 = {dims[0]}) that is a multiple of {qtype.name}'s block of {block}")
        if offset % alignment:
            raise r.fail(f"{name}.offset", f"a multiple of the alignment {alignment}, found {offset}")
        raw_tensors.append((key, dims, type_id, qtype.name, offset))
    header_end = r.pos
    data_offset = -(-header_end // alignment) * alignment

    tensors: list[GGUFTensor] = []
    for name, dims, type_id, type_name, offset in raw_tensors:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(type_id)]
        n_bytes = prod(dims) // block * type_size
        tensors.append(GGUFTensor(name, dims, type_id, type_name, offset, n_bytes))
    data_size = 0
    for t in sorted(tensors, key=lambda t: t.offset):
        if t.offset < data_size:
            raise InvalidInputError(f"{source}: {show(t.name)}.offset: expected tensor data not to overlap, but it starts at {t.offset} before the previous tensor ends at {data_size}")
        data_size = t.offset + t.n_bytes
    if file_size is not None and data_size and data_offset + data_size > file_size:
        raise InvalidInputError(
            f"{source}: tensor data: file truncated, the tensor table needs {data_offset + data_size} bytes but the file has {file_size}"
        )
    return GGUFHeader(source, version, metadata, types, tensors, alignment, data_offset, data_size, file_size)


# --- Split GGUFs -------------------------------------------------------------------------------------------

_SPLIT_RE = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def read_gguf_model(path: Path | str) -> GGUFHeader:
    """Read a GGUF model; for a split GGUF (x-00001-of-00003.gguf) read every part and join their tensor tables."""
    path = Path(path)
    first = read_gguf_header(path)
    count = first.metadata.get("split.count")
    if not isinstance(count, int) or count <= 1:
        return first
    m = _SPLIT_RE.match(path.name)
    if m is None or int(m.group("count")) != count:
        raise InvalidInputError(f"{path}: split.count: file is one of {count} parts but its name does not follow NAME-00001-of-{count:05d}.gguf, so the other parts cannot be found")
    parts = [path.with_name(f"{m.group('stem')}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    headers = []
    for i, p in enumerate(parts):
        if not p.is_file():
            raise InvalidInputError(f"{p}: no such file; split GGUF part {i + 1} of {count} is missing")
        headers.append(first if p == path else read_gguf_header(p))
    main = headers[0]
    tensors: list[GGUFTensor] = []
    for i, h in enumerate(headers):
        tensors.extend(GGUFTensor(t.name, t.dims, t.type_id, t.type_name, t.offset, t.n_bytes, split=i) for t in h.tensors)
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"{path}: tensors: expected each tensor in one split part only, found duplicates")
    return GGUFHeader(
        main.path, main.version, main.metadata, main.value_types, tensors, main.alignment, main.data_offset,
        sum(h.data_size for h in headers), sum(h.file_size or 0 for h in headers), tuple(str(p) for p in parts),
    )


# --- ModelSpec from metadata --------------------------------------------------------------------------------

# Layer patterns llama.cpp hard-codes per architecture (every Nth layer global) when the file has no key for it.
_DEFAULT_SWA_PERIOD = {"gemma2": 2, "gemma3": 6, "cohere2": 4, "gpt-oss": 2}
# Architectures whose norms are LayerNorm (a bias may or may not be stored).
_LAYERNORM_ARCHS = {"command-r", "cohere2", "phi2", "gpt2", "gptj", "gptneox", "falcon", "bloom", "starcoder", "starcoder2", "mpt", "stablelm"}
_NATIVE_BY_FILE_TYPE = {0: "float32", 1: "float16", 32: "bfloat16"}


class _Meta:
    """Typed access to {arch}.* metadata keys; errors name the file and the key."""

    def __init__(self, header: GGUFHeader, source: str, arch: str):
        self.h, self.source, self.arch = header, source, arch
        self.notes: list[str] = []

    def _int(self, key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInputError(f"{self.source}: {show(key)}: expected an integer, found {preview(value, 40)}")
        return value

    def get(self, name: str) -> int | None:
        """Integer at '{arch}.{name}'; a per-layer array becomes its largest entry (noted)."""
        key = f"{self.arch}.{name}"
        value = self.h.metadata.get(key)
        if value is None:
            return None
        if isinstance(value, list):
            ints = [self._int(key, v) for v in value]
            if not ints:
                raise InvalidInputError(f"{self.source}: {show(key)}: expected an integer or a non-empty per-layer array")
            if len(set(ints)) > 1:
                self.notes.append(f"{show(key)} varies per layer; the largest value ({max(ints)}) is used")
            return max(ints)
        return self._int(key, value)

    def need(self, name: str) -> int:
        """Like get(), but a missing key is an error."""
        value = self.get(name)
        if value is None:
            raise InvalidInputError(f"{self.source}: {show(self.arch)}.{name}: expected an integer key, it is missing")
        return value


def spec_from_gguf(header: GGUFHeader, path: Path | str) -> ModelSpec:
    """Build a ModelSpec from a GGUF header: hyper-parameters from '{arch}.*' keys, structure from its tensors."""
    source = str(path)
    arch = header.architecture
    if arch is None:
        raise InvalidInputError(f"{source}: general.architecture: expected a string key, it is missing")
    m = _Meta(header, source, arch)
    by_name = {t.name: t for t in header.tensors}
    has = by_name.__contains__

    n_layers = m.need("block_count")
    if n_layers > MAX_LAYERS:  # checked before anything loops over layers
        raise InvalidInputError(f"{source}: {show(arch)}.block_count: expected at most {MAX_LAYERS}, found {n_layers}")
    hidden = m.need("embedding_length")
    n_heads = m.need("attention.head_count")
    n_kv = m.get("attention.head_count_kv") or n_heads
    ctx = m.need("context_length")

    vocab = None
    if "token_embd.weight" in by_name and len(by_name["token_embd.weight"].dims) == 2:
        vocab = by_name["token_embd.weight"].shape[0]
    vocab = vocab or m.get("vocab_size")
    tokens = header.metadata.get("tokenizer.ggml.tokens")
    if vocab is None and isinstance(tokens, list) and tokens:
        vocab = len(tokens)
    if vocab is None:
        raise InvalidInputError(f"{source}: tokenizer.ggml.tokens: expected a token list, a {show(arch)}.vocab_size key or a token_embd.weight tensor to size the vocabulary")

    moe = _moe_from_gguf(m, by_name)
    mla = _mla_from_gguf(m, "blk.0.attn_k_b.weight" in by_name)
    ffn = m.get("feed_forward_length") or (moe.expert_intermediate_size if moe else None)
    if ffn is None:
        raise InvalidInputError(f"{source}: {show(arch)}.feed_forward_length: expected an integer key, it is missing")

    sliding = m.get("attention.sliding_window")
    global_every = None
    if sliding is not None and (sliding <= 0 or sliding >= ctx):
        sliding = None
    if sliding is not None:
        global_every = _swa_period(header, m)
        if global_every == 1:  # every layer global: the window never applies
            sliding, global_every = None, None

    head_dim = None if mla else m.get("attention.key_length")
    if head_dim is not None and head_dim * n_heads == hidden:
        head_dim = None  # the default, as in specs from config.json and profiles
    b0 = "blk.0."
    q_norm = by_name.get(b0 + "attn_q_norm.weight")
    # Gemma 2/3 norm after attention and after the MLP (post_ffw_norm) besides the pre-MLP ffn_norm; gpt-oss names
    # its pre-MLP norm post_attention_norm; parallel blocks (Command R) have only attn_norm.
    post_norms = has(b0 + "post_ffw_norm.weight")
    ffn_norm_name = "ffn_norm"
    parallel = False
    if not has(b0 + "ffn_norm.weight"):
        if has(b0 + "post_attention_norm.weight") and not post_norms:
            ffn_norm_name = "post_attention_norm"
        else:
            parallel = True
    file_type = header.metadata.get("general.file_type")
    name = header.metadata.get("general.name")
    stem = Path(source).name.removesuffix(".gguf")
    family = header.metadata.get("general.basename")
    # RoPE factor tensors are precomputed buffers, not parameters (as count_params treats them).
    total = sum(t.n_elements for t in header.tensors if tensor_info(t.name, t.shape, None).is_parameter)
    notes = ["parameter count computed from the GGUF tensor table (not a published figure)", *m.notes]
    kwargs: dict[str, Any] = dict(
        id=make_id(stem, arch),
        name=name if isinstance(name, str) and name.strip() else stem,
        family=family if isinstance(family, str) and family.strip() else arch,
        architecture=arch,
        vocab_size=vocab,
        hidden_size=hidden,
        num_layers=n_layers,
        num_heads=n_heads,
        num_kv_heads=n_kv,
        head_dim=head_dim,
        intermediate_size=ffn,
        mlp_gated=has(b0 + "ffn_gate.weight") or has(b0 + "ffn_gate_exps.weight") or _fused_gate_up(by_name, ffn),
        tie_word_embeddings="output.weight" not in by_name,
        attention_bias=has(b0 + "attn_q.bias") or has(b0 + "attn_qkv.bias"),
        attention_output_bias=has(b0 + "attn_output.bias"),
        mlp_bias=has(b0 + "ffn_up.bias") or has(b0 + "ffn_down.bias"),
        norm="layernorm" if arch in _LAYERNORM_ARCHS or has(b0 + "attn_norm.bias") else "rmsnorm",
        norm_bias=has(b0 + "attn_norm.bias"),
        qk_norm=q_norm is not None,
        qk_norm_per_head=q_norm is not None and len(q_norm.dims) == 2,
        post_norms=post_norms,
        ffn_norm_name=ffn_norm_name,
        parallel_block=parallel,
        fused_qkv=has(b0 + "attn_qkv.weight"),
        fused_gate_up=_fused_gate_up(by_name, ffn),
        attention_sinks=has(b0 + "attn_sinks.weight"),
        sliding_window=sliding,
        global_every=global_every,
        rope_factors="freqs" if has("rope_freqs.weight") else "long_short" if has("rope_factors_long.weight") else "none",
        max_context=ctx,
        native_dtype=_NATIVE_BY_FILE_TYPE.get(file_type, "bfloat16") if isinstance(file_type, int) else "bfloat16",
        moe=moe,
        mla=mla,
        params_published=max(total, 1),
        params_source=source,
        notes="; ".join(notes),
    )
    return build_spec(kwargs, source)


def _fused_gate_up(by_name: dict[str, GGUFTensor], ffn: int) -> bool:
    """Phi-3 stores gate and up as one ffn_up of twice the width and no ffn_gate."""
    up = by_name.get("blk.0.ffn_up.weight")
    return up is not None and "blk.0.ffn_gate.weight" not in by_name and up.shape[0] == 2 * ffn


def _moe_from_gguf(m: _Meta, by_name: dict[str, GGUFTensor]) -> MoESpec | None:
    """Experts from expert_* keys; shared experts, biases and dense leading layers from the tensor table."""
    n_exp = m.get("expert_count")
    if not n_exp:
        return None
    used = m.need("expert_used_count")
    first = m.get("leading_dense_block_count")
    if first is None:  # the first block with a router
        routed = [layer_of(n) for n in by_name if n.endswith(".ffn_gate_inp.weight")]
        first = min((i for i in routed if i is not None), default=0)
    lm = f"blk.{first}."
    width = m.get("expert_feed_forward_length")
    down = by_name.get(lm + "ffn_down_exps.weight")
    if width is None and down is not None and len(down.shape) == 3:
        width = down.shape[2]
    width = width or m.need("feed_forward_length")
    n_shared = 0
    shared_width = None
    shexp = by_name.get(lm + "ffn_down_shexp.weight")
    if shexp is not None:
        n_shared = m.get("expert_shared_count") or 1
        shared_width = shexp.shape[-1] // n_shared or None
        if shared_width == width:
            shared_width = None  # the default: shared experts as wide as routed ones
    return validated(m.source, MoESpec, dict(
        num_experts=n_exp,
        experts_per_token=used,
        expert_intermediate_size=width,
        num_shared_experts=n_shared,
        shared_expert_intermediate_size=shared_width,
        shared_expert_gate=lm + "ffn_gate_inp_shexp.weight" in by_name,
        first_dense_layers=first,
        router_bias=lm + "ffn_gate_inp.bias" in by_name,
        expert_bias=lm + "ffn_up_exps.bias" in by_name,
        score_correction_bias=lm + "exp_probs_b.bias" in by_name,
    ))


def _mla_from_gguf(m: _Meta, split_kv_b: bool) -> MLASpec | None:
    """DeepSeek MLA ranks; newer conversions keep the per-head sizes in *_mla keys."""
    kv_rank = m.get("attention.kv_lora_rank")
    if not kv_rank:
        return None
    rope = m.need("rope.dimension_count")
    key_len = m.get("attention.key_length_mla") or m.need("attention.key_length")
    v_len = m.get("attention.value_length_mla") or m.need("attention.value_length")
    return validated(m.source, MLASpec, dict(
        q_lora_rank=m.get("attention.q_lora_rank") or None,
        kv_lora_rank=kv_rank,
        qk_nope_head_dim=key_len - rope,
        qk_rope_head_dim=rope,
        v_head_dim=v_len,
        split_kv_b=split_kv_b,
    ))


def _swa_period(header: GGUFHeader, m: _Meta) -> int | None:
    """Every how many layers one attends globally; None when all layers use the window."""
    key = f"{m.arch}.attention.sliding_window_pattern"
    pattern = header.metadata.get(key)
    if isinstance(pattern, list) and pattern and all(isinstance(v, bool) for v in pattern):
        return layer_pattern_period([bool(v) for v in pattern], m.notes, key)
    if isinstance(pattern, int) and not isinstance(pattern, bool) and pattern > 0:
        return pattern
    return _DEFAULT_SWA_PERIOD.get(m.arch)


def gguf_quantization(header: GGUFHeader) -> dict[str, Any]:
    """What a GGUF file is quantized to: its general.file_type and the count of tensors per ggml type."""
    counts: dict[str, int] = {}
    for t in header.tensors:
        counts[t.type_name] = counts.get(t.type_name, 0) + 1
    file_type = header.metadata.get("general.file_type")
    name = None
    if isinstance(file_type, int) and not isinstance(file_type, bool):
        try:
            name = LlamaFileType(file_type).name.removeprefix("MOSTLY_")
        except ValueError:
            name = None
    return {"method": "gguf", "file_type": name, "tensor_types": counts, "source": f"{header.path}: general.file_type"}
