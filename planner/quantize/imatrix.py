"""Importance matrices: per input column of each weight matrix, the mean square of the activations it multiplies.

llama.cpp's quantizer weights each value's rounding error by this (llama-imatrix computes it; llama-quantize
--imatrix reads it). Here it is read from either of llama.cpp's files, or computed by running the model in numpy
over a calibration text, and handed to the encoders as `qw` (planner.quantize.primitives.encode).

File formats (llama.cpp tools/imatrix/imatrix.cpp, save_imatrix / save_imatrix_legacy):
- GGUF (current): general.type = "imatrix", imatrix.datasets / imatrix.chunk_count / imatrix.chunk_size keys, and
  per weight NAME the F32 tensors NAME.in_sum2 (ne = [n_per_row, n_mat]: sums of squared activations) and
  NAME.counts (ne = [1, n_mat]: activation rows summed), optionally NAME.in_sum. Importance = in_sum2 / counts;
  a matrix with no count (an expert the text never routed to) gets 1s, as llama-quantize does.
- legacy imatrix.dat: int32 n_entries, then per entry int32 name length, the name, int32 ncall, int32 nval and nval
  float32 values (mean square times ncall); then int32 chunk count and the dataset name. Importance = values / ncall.
Names are GGUF tensor names ('blk.0.attn_q.weight'); a 3-D expert tensor has n_expert x n_per_row values.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from planner.errors import InvalidInputError
from planner.yamlio import read_bytes

MAX_ENTRIES = 1 << 20  # far more weight matrices than any model has (a 671B MoE has ~ 2k)
MAX_NAME = 1 << 10  # GGUF tensor names are at most 64 bytes (GGML_MAX_NAME); generous bound for bad input
MAX_VALUES = 1 << 31  # values in one entry: beyond any n_expert x row length (keeps a corrupt count from allocating)


@dataclass
class ImportanceMatrix:
    """Importance of each input column per GGUF weight name: float32 (n_mat, n_per_row), n_mat = experts or 1."""

    entries: dict[str, np.ndarray]
    datasets: list[str] = field(default_factory=list)
    chunks: int = 0
    source: str = ""

    def weights_for(self, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """Per-row importance for a tensor of `shape` (rows..., row_length), as the encoders take it: (row_length,)
        for a matrix, (n_rows, row_length) for stacked experts; None when the file has no entry for it."""
        e = self.entries.get(name)
        if e is None or len(shape) < 2:
            return None
        row = shape[-1]
        if e.shape[1] != row:
            raise InvalidInputError(f"{self.source}: {name}: the importance matrix has {e.shape[1]} values per row, "
                                    f"the tensor's rows have {row} (an imatrix of another model?)")
        n_mat = math.prod(shape[:-2]) if len(shape) > 2 else 1
        if e.shape[0] == 1 and n_mat == 1:
            return e[0]
        if e.shape[0] != n_mat:
            raise InvalidInputError(f"{self.source}: {name}: the importance matrix has {e.shape[0]} matrices, the "
                                    f"tensor {n_mat}")
        return np.repeat(e, shape[-2], axis=0)  # one row of importance per weight row of each expert



def _label(name: str) -> str:
    """A tensor name for a one-line error: at most 80 characters, control characters escaped (a name read from a
    damaged file may hold newlines)."""
    cut = name[:80]
    return cut if cut.isprintable() else cut.encode("unicode_escape").decode("ascii")

def read_imatrix(path: Path | str) -> ImportanceMatrix:
    """Read a llama.cpp importance matrix (GGUF or legacy imatrix.dat); bad input is one InvalidInputError."""
    path = Path(path)
    return parse_imatrix(read_bytes(path, "llama.cpp importance matrix file (.gguf or .dat)"), str(path))


def parse_imatrix(data: bytes, source: str) -> ImportanceMatrix:
    """Parse the bytes of an importance matrix file (GGUF when it starts with b'GGUF', else legacy)."""
    im = _parse_gguf(data, source) if data[:4] == b"GGUF" else _parse_legacy(data, source)
    if not im.entries:
        raise InvalidInputError(f"{source}: no importance matrix entries in the file")
    for name, e in im.entries.items():
        if not np.isfinite(e).all() or (e < 0).any():
            raise InvalidInputError(f"{source}: {_label(name)}: importance values must be finite and non-negative")
    return im


def _parse_legacy(data: bytes, source: str) -> ImportanceMatrix:
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if n < 0 or pos + n > len(data):
            raise InvalidInputError(f"{source}: {what}: file truncated at byte {pos} (not a llama.cpp imatrix.dat or "
                                    "imatrix GGUF file?)")
        out = data[pos:pos + n]
        pos += n
        return out

    def i32(what: str) -> int:
        return struct.unpack("<i", take(4, what))[0]

    n = i32("n_entries")
    if not 1 <= n <= MAX_ENTRIES:
        raise InvalidInputError(f"{source}: n_entries: expected 1 to {MAX_ENTRIES} entries, found {n} (not a llama.cpp "
                                "imatrix.dat or imatrix GGUF file?)")
    entries: dict[str, np.ndarray] = {}
    for i in range(n):
        ln = i32(f"entry {i} name length")
        if not 1 <= ln <= MAX_NAME:
            raise InvalidInputError(f"{source}: entry {i} name length: expected 1 to {MAX_NAME}, found {ln}")
        try:
            name = take(ln, f"entry {i} name").decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInputError(f"{source}: entry {i} name: not UTF-8") from None
        ncall = i32(f"{_label(name)} ncall")
        nval = i32(f"{_label(name)} nval")
        if not 1 <= nval <= MAX_VALUES or nval * 4 > len(data) - pos:
            raise InvalidInputError(f"{source}: {_label(name)}: nval: expected 1 up to the {len(data) - pos} bytes left / 4, "
                                    f"found {nval}")
        values = np.frombuffer(take(4 * nval, f"{_label(name)} values"), dtype="<f4").astype(np.float32)
        if ncall <= 0:
            raise InvalidInputError(f"{source}: {_label(name)}: ncall: expected a positive call count, found {ncall}")
        if name in entries:
            raise InvalidInputError(f"{source}: {_label(name)}: appears twice")
        entries[name] = (values / np.float32(ncall)).reshape(1, -1)
    chunks = 0
    datasets: list[str] = []
    if len(data) - pos >= 4:  # optional trailer: chunk count and the dataset's file name
        chunks = max(0, i32("chunk count"))
        if len(data) - pos >= 4:
            ln = i32("dataset name length")
            if 0 < ln <= len(data) - pos:
                datasets.append(take(ln, "dataset name").decode("utf-8", "replace"))
    return ImportanceMatrix(entries, datasets, chunks, source)


def _parse_gguf(data: bytes, source: str) -> ImportanceMatrix:
    from planner.models.readers.gguf_header import parse_gguf_header

    header = parse_gguf_header(io.BytesIO(data), source, len(data))
    kind = header.metadata.get("general.type")
    if kind != "imatrix":
        raise InvalidInputError(f"{source}: general.type: expected 'imatrix' (an importance matrix GGUF), found "
                                f"{str(kind)[:40]!r}")
    by_name = {t.name: t for t in header.tensors}
    entries: dict[str, np.ndarray] = {}
    for t in header.tensors:
        if not t.name.endswith(".in_sum2"):
            continue
        base = t.name[: -len(".in_sum2")]
        c = by_name.get(base + ".counts")
        if c is None:
            raise InvalidInputError(f"{source}: {_label(t.name)}: no matching {_label(base)}.counts tensor")
        for x in (t, c):
            if x.type_name != "F32" or len(x.dims) > 2:
                raise InvalidInputError(f"{source}: {_label(x.name)}: expected a 1-D or 2-D F32 tensor, found {x.type_name} "
                                        f"with dims {list(x.dims)}")
        n_per_row, n_mat = t.dims[0], (t.dims[1] if len(t.dims) > 1 else 1)
        if c.n_elements != n_mat:
            raise InvalidInputError(f"{source}: {_label(c.name)}: expected {n_mat} counts (one per matrix), found {c.n_elements}")
        sums = _f32(data, header.data_offset + t.offset, t.n_elements).reshape(n_mat, n_per_row)
        counts = _f32(data, header.data_offset + c.offset, n_mat)
        if not np.isfinite(counts).all() or (counts < 0).any():
            raise InvalidInputError(f"{source}: {_label(c.name)}: counts must be finite and non-negative")
        with np.errstate(divide="ignore", invalid="ignore"):
            imp = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], np.float32(1))
        entries[base] = imp.astype(np.float32)
    ds = header.metadata.get("imatrix.datasets")
    datasets = [d for d in ds if isinstance(d, str)] if isinstance(ds, list) else []
    chunks = header.metadata.get("imatrix.chunk_count")
    return ImportanceMatrix(entries, datasets, chunks if isinstance(chunks, int) else 0, source)


def _f32(data: bytes, offset: int, count: int) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4", count=count, offset=offset).astype(np.float32)


# ---------------------------------------------------------------------------------------------- writing


def write_imatrix_gguf(im: ImportanceMatrix, path: Path | str, chunk_size: int) -> None:
    """Write `im` as llama.cpp's GGUF imatrix (in_sum2 = importance x count, counts = chunks x chunk_size), atomically."""
    import os

    import gguf

    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    w = gguf.GGUFWriter(str(tmp), arch="imatrix")  # arch key dropped below: an imatrix file has none
    w.kv_data[0].pop("general.architecture", None)
    w.add_type("imatrix")
    w.add_array("imatrix.datasets", im.datasets or ["planner"])
    w.add_uint32("imatrix.chunk_count", im.chunks)
    w.add_uint32("imatrix.chunk_size", chunk_size)
    count = float(max(1, im.chunks * chunk_size))
    for name in sorted(im.entries):
        e = im.entries[name]
        w.add_tensor(f"{name}.in_sum2", (e * np.float32(count)).astype(np.float32))
        w.add_tensor(f"{name}.counts", np.full((e.shape[0], 1), count, dtype=np.float32))
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------- computing

# Architectures whose forward pass compute_imatrix runs (the ones planner quantize reads); their RoPE layout in
# GGUF: llama's q/k rows are interleaved by the converter (rotate adjacent pairs), qwen2 keeps halves (NeoX).
_ROPE_PAIRS = {"llama": "adjacent", "qwen2": "halves", "qwen3": "halves"}


def _kv(src, key: str, default: float) -> float:  # type: ignore[no-untyped-def]
    for kv in src.gguf_kvs:
        if kv.key == key and isinstance(kv.value, (int, float)):
            return float(kv.value)
    return default


def _torch():  # type: ignore[no-untyped-def]
    """torch, imported only to compute an importance matrix (planner recommend never pays for it)."""
    try:
        import torch
    except ImportError:
        from planner.errors import PlannerError

        raise PlannerError("computing an importance matrix runs the model in torch, which is not installed: "
                           "pip install 'llm-deploy-planner[quant]' (or pass a llama.cpp imatrix file)") from None
    return torch


def _rope_tables(n: int, d: int, base: float, freq_div):  # type: ignore[no-untyped-def]
    """cos and sin of the rotary angles for positions 0..n-1, (n, 1, d/2) float32 each."""
    torch = _torch()
    inv = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    if freq_div is not None:  # llama3 rope scaling: llama.cpp divides each frequency by rope_freqs
        inv = inv / torch.from_numpy(freq_div).double()
    ang = torch.arange(n, dtype=torch.float64)[:, None] * inv[None, :]
    return ang.cos().float()[:, None, :], ang.sin().float()[:, None, :]


def _rope(x, cos, sin, pairs: str):  # type: ignore[no-untyped-def]
    """Rotary embedding of (n, heads, d): pairs 'adjacent' (2i, 2i+1; llama in GGUF order) or 'halves' (i, i+d/2)."""
    torch = _torch()
    d = x.shape[-1]
    if pairs == "adjacent":
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
    a, b = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


def compute_imatrix(source: Path | str, chunks: list[list[int]], *, name: str = "calibration text",
                    progress=None) -> ImportanceMatrix:  # type: ignore[no-untyped-def]
    """Run the model at `source` (HF directory or GGUF; llama / qwen2 architectures) in torch (CPU) over token chunks,
    one layer at a time for all chunks, and return the mean squared input of every layer's weight matrix.

    As llama-imatrix does, the output head is left out (it is quantized without weights) and each chunk is an
    independent sequence. `progress(layer, n_layers)` is called after each layer.
    """
    im, _ = _run(source, chunks, name, progress, logits=False)
    return im


def model_logits(source: Path | str, tokens: list[int]) -> np.ndarray:
    """Logits (n, vocab) of one token sequence through the same forward pass (checks it against llama.cpp)."""
    _, logits = _run(source, [tokens], "logits", None, logits=True)
    assert logits is not None
    return logits


def _run(source, chunks, name, progress, logits: bool):  # type: ignore[no-untyped-def]
    from planner.quantize.sources import open_source

    src = open_source(Path(source))
    try:
        if src.arch not in _ROPE_PAIRS:
            raise InvalidInputError(f"{src.path}: computing an importance matrix supports {', '.join(_ROPE_PAIRS)} models, "
                                    f"not {src.arch}")
        spec = src.spec
        by_name = {t.info.name: t for t in src.tensors}

        torch = _torch()

        def weight(n: str):  # type: ignore[no-untyped-def]
            t = by_name.get(n)
            if t is None:
                raise InvalidInputError(f"{src.path}: {n}: missing, cannot run the model to compute an importance matrix")
            x = src.read_rows(t, 0, t.n_rows, "gguf")
            src.release(t)
            return torch.from_numpy(np.ascontiguousarray(x.reshape(t.info.shape) if len(t.info.shape) == 1 else x))

        def maybe(n: str):  # type: ignore[no-untyped-def]
            return weight(n).reshape(-1) if n in by_name else None

        def rms_norm(x, w):  # type: ignore[no-untyped-def]
            return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps) * w

        eps = _kv(src, f"{src.arch}.attention.layer_norm_rms_epsilon", 1e-5)
        base = _kv(src, f"{src.arch}.rope.freq_base", 10000.0)
        freq_div = maybe("rope_freqs.weight")
        freq_div = None if freq_div is None else freq_div.numpy()
        pairs = _ROPE_PAIRS[src.arch]
        hd, nh, nkv = spec.dim_head, spec.num_heads, spec.num_kv_heads
        toks = [np.asarray(c, dtype=np.int64) for c in chunks if len(c)]
        if not toks:
            raise InvalidInputError("no calibration tokens to compute an importance matrix from")
        flat = np.concatenate(toks)
        if flat.min() < 0 or flat.max() >= spec.vocab_size:
            raise InvalidInputError(f"calibration token ids out of range for a vocabulary of {spec.vocab_size}")
        hidden = torch.from_numpy(_embed(src, by_name["token_embd.weight"], flat))
        bounds = np.cumsum([0] + [len(c) for c in toks])
        sums: dict[str, np.ndarray] = {}
        count = np.float32(len(flat))

        def record(n: str, x) -> None:  # type: ignore[no-untyped-def]
            sums[n] = sums.get(n, 0) + x.square().sum(dim=0).double().numpy()  # type: ignore[operator]

        ffn_norm = spec.ffn_norm_name
        tables: dict[int, tuple] = {}  # chunk length -> rotary cos/sin (the same for every layer)
        for layer in range(spec.num_layers):
            p = f"blk.{layer}."
            h = rms_norm(hidden, weight(p + "attn_norm.weight"))
            for r in ("attn_q", "attn_k", "attn_v"):
                record(p + r + ".weight", h)
            q = h @ weight(p + "attn_q.weight").T
            k = h @ weight(p + "attn_k.weight").T
            v = h @ weight(p + "attn_v.weight").T
            for arr, r in ((q, "attn_q"), (k, "attn_k"), (v, "attn_v")):
                b = maybe(p + r + ".bias")
                if b is not None:
                    arr += b
            att = torch.empty((len(flat), nh * hd), dtype=torch.float32)
            qn, kn = maybe(p + "attn_q_norm.weight"), maybe(p + "attn_k_norm.weight")  # Qwen3: RMSNorm per head
            if qn is not None:
                q = rms_norm(q.reshape(-1, hd), qn).reshape(q.shape)
            if kn is not None:
                k = rms_norm(k.reshape(-1, hd), kn).reshape(k.shape)
            for a, e in zip(bounds[:-1], bounds[1:]):
                if e - a not in tables:
                    tables[e - a] = _rope_tables(e - a, hd, base, freq_div)
                cos, sin = tables[e - a]
                qs = _rope(q[a:e].reshape(-1, nh, hd), cos, sin, pairs).transpose(0, 1)
                ks = _rope(k[a:e].reshape(-1, nkv, hd), cos, sin, pairs).transpose(0, 1)
                vs = v[a:e].reshape(-1, nkv, hd).transpose(0, 1)
                ks, vs = ks.repeat_interleave(nh // nkv, dim=0), vs.repeat_interleave(nh // nkv, dim=0)  # GQA groups
                o = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True)
                att[a:e] = o.transpose(0, 1).reshape(e - a, nh * hd)
            record(p + "attn_output.weight", att)
            hidden = hidden + att @ weight(p + "attn_output.weight").T
            h = rms_norm(hidden, weight(f"{p}{ffn_norm}.weight"))
            record(p + "ffn_gate.weight", h)
            record(p + "ffn_up.weight", h)
            g = h @ weight(p + "ffn_gate.weight").T
            u = h @ weight(p + "ffn_up.weight").T
            act = torch.nn.functional.silu(g) * u
            record(p + "ffn_down.weight", act)
            hidden = hidden + act @ weight(p + "ffn_down.weight").T
            if not bool(torch.isfinite(hidden).all()):
                raise InvalidInputError(f"{src.path}: layer {layer}: activations overflowed while computing the importance matrix")
            if progress is not None:
                progress(layer + 1, spec.num_layers)
        entries = {n: (s / count).astype(np.float32).reshape(1, -1) for n, s in sums.items()}
        out = None
        if logits:
            head = "output.weight" if "output.weight" in by_name else "token_embd.weight"
            out = (rms_norm(hidden, weight("output_norm.weight")) @ weight(head).T).numpy()
        return ImportanceMatrix(entries, [name], len(toks), str(source)), out
    finally:
        src.close()


def _embed(src, t, ids: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Rows `ids` of the token embedding: only the rows the text uses are read (the table may be GBs as float32)."""
    uniq, inverse = np.unique(ids, return_inverse=True)
    rows = np.empty((len(uniq), t.row_length), dtype=np.float32)
    for i, tok in enumerate(uniq):
        rows[i] = src.read_rows(t, int(tok), int(tok) + 1, "gguf")[0]
    src.release(t)
    return rows[inverse.reshape(-1)]