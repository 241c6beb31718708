"""What `planner quantize` reads: a Hugging Face model directory or a GGUF file, one tensor at a time.

Headers come from planner.models.readers (validated, never the data); the data is memory-mapped here, one tensor
at a time, and handed out as float32 row chunks so that memory stays near one chunk, not one model.

Rows come out in either of two layouts. HF checkpoints store each Llama attention head's q/k rows as two halves
(rotate_half RoPE); llama.cpp's 'llama' architecture rotates adjacent pairs, so its converter interleaves the
halves. `layout="gguf"` gives GGUF's order, `layout="hf"` the checkpoint order, whichever the source stores.
"""

from __future__ import annotations

import json
import math
import mmap
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from planner.errors import InvalidInputError
from planner.formats import GGML_TYPES
from planner.models.inventory import TensorInfo, tensor_inventory
from planner.models.readers import (
    gguf_slot, load_model_source, read_gguf_header, read_gguf_model, read_safetensors_dir, spec_from_gguf,
)
from planner.models.readers.common import layer_of, tensor_info
from planner.models.spec import ModelSpec
from planner.quantize.gguf_writer import KV, arch_metadata, kv_from_header, llama3_rope_factors, longrope_factors
from planner.quantize.primitives import from_bf16_bits
from planner.quantize.tokenizer import gguf_tokenizer_from_hf, hf_tokenizer_from_gguf
from planner.paths import user_path

Layout = Literal["gguf", "hf"]

# transformers class -> GGUF architecture, for the families we convert (llama.cpp's converter maps Mistral and
# SmolLM checkpoints, which are LlamaForCausalLM / MistralForCausalLM, and Mixtral to 'llama'; see its
# conversion/llama.py, conversion/qwen.py, conversion/gemma.py and conversion/phi.py at ggml-org/llama.cpp@2bbcf7f).
HF_ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
                    "Qwen3ForCausalLM": "qwen3", "MixtralForCausalLM": "llama", "Qwen3MoeForCausalLM": "qwen3moe",
                    "Gemma2ForCausalLM": "gemma2", "Gemma3ForCausalLM": "gemma3",
                    "Gemma3ForConditionalGeneration": "gemma3", "Phi3ForCausalLM": "phi3"}
# Classes converted to GGUF only: their GGUF tensors are not the checkpoint's (stacked experts, Gemma's norm + 1,
# no vision tower), and the safetensors writers and GPTQ/AWQ calibration take the checkpoint's own tensors.
GGUF_ONLY = frozenset({"MixtralForCausalLM", "Qwen3MoeForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM",
                       "Gemma3ForConditionalGeneration", "Phi3ForCausalLM"})
# Gemma's RMSNorm multiplies by (1 + weight); llama.cpp's norm multiplies by the weight, so its converter adds 1
# to every '*norm.weight' of Gemma 2/3 (conversion/gemma.py, Gemma2Model/Gemma3Model.modify_tensors).
_NORM_SHIFT_ARCHS = frozenset({"gemma2", "gemma3"})
GGUF_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
# GGUF files re-quantized to GGUF only (no transformers config or checkpoint names are rebuilt for them).
GGUF_TO_GGUF_ARCHITECTURES = ("qwen3moe", "gemma2", "gemma3", "phi3")
_FLOAT_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
# Files a Hugging Face loader wants beside the weights; copied from an HF source into safetensors outputs.
HF_SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                 "generation_config.json", "chat_template.jinja", "vocab.json", "merges.txt")


def supported_sources() -> str:
    """A one-line description of what can be read, for error messages."""
    return (f"Hugging Face checkpoints of {', '.join(HF_ARCHITECTURES)} (SmolLM is LlamaForCausalLM) "
            f"or GGUF files of architecture {', '.join([*GGUF_ARCHITECTURES, *GGUF_TO_GGUF_ARCHITECTURES])}")


def qk_row_order(n_rows: int, n_head: int) -> np.ndarray:
    """GGUF row r of a Llama q/k projection is HF row order[r]: within each head, the two halves interleaved."""
    if n_rows % (2 * n_head):
        raise InvalidInputError(f"{n_rows} q/k rows do not split into {n_head} heads of an even size")
    return np.arange(n_rows).reshape(n_head, 2, n_rows // n_head // 2).swapaxes(1, 2).reshape(-1)


@dataclass
class SourceTensor:
    """One tensor of the source: GGUF name and shape (rows, row_length), HF name, stored type and bytes."""

    info: TensorInfo
    hf_name: str | None  # None: llama.cpp-only tensors (rope_freqs) that an HF checkpoint does not store
    dtype: str  # F32 / F16 / BF16, or the ggml type of a GGUF tensor
    nbytes: int
    file: Path | None = None
    offset: int = 0  # absolute byte offset of the data in `file`
    perm: np.ndarray | None = None  # rows to take to produce the other layout (see module doc)
    values: np.ndarray | None = None  # computed tensors (rope_freqs)
    parts: list["SourceTensor"] | None = None  # routed experts' 2-D slices, stacked in expert order (GGUF's 3-D)
    shift: float = 0.0  # added to every value in GGUF layout (Gemma's norms: llama.cpp stores 1 + weight)

    @property
    def n_rows(self) -> int:
        """Rows of the 2-D view (1-D tensors are one row)."""
        return math.prod(self.info.shape[:-1]) if len(self.info.shape) > 1 else 1

    @property
    def row_length(self) -> int:
        """Values per row."""
        return self.info.shape[-1]


@dataclass
class Source:
    """A model to quantize: spec, tensors in write order, and what writers need to describe it."""

    kind: Literal["hf", "gguf"]
    path: Path
    arch: str  # GGUF architecture
    spec: ModelSpec
    tensors: list[SourceTensor]
    origin: str
    hf_config: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    gguf_kvs: list[KV] = field(default_factory=list)  # '{arch}.*' and tokenizer.* keys, general.* excluded
    side_files: dict[str, bytes] = field(default_factory=dict)  # tokenizer files etc. for safetensors outputs
    gguf_only: str | None = None  # why this source converts to GGUF only (None: any output)
    side_loader: Callable[[], tuple[dict[str, bytes], list[str]]] | None = None  # more of them, made on first use
    _map: tuple[Path, mmap.mmap] | None = None

    @property
    def infos(self) -> list[TensorInfo]:
        """The tensors as TensorInfo (what the formats' assignment rules and the cost model take)."""
        return [t.info for t in self.tensors]

    @property
    def input_bytes(self) -> int:
        """Bytes of tensor data read from the source."""
        return sum(t.nbytes for t in self.tensors)

    def _file(self, path: Path) -> mmap.mmap:
        # One mapping per file, kept while its tensors are read; pages of finished tensors are released below.
        if self._map is None or self._map[0] != path:
            self.close()
            with path.open("rb") as fh:
                self._map = (path, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
        return self._map[1]

    def hf_side_files(self) -> dict[str, bytes]:
        """Files a safetensors output carries beside its weights (tokenizer, config.json). A GGUF source converts its
        vocabulary to tokenizer.json only here, so a GGUF output does not pay for it (tenths of a second)."""
        if self.side_loader is not None:
            side, warnings = self.side_loader()
            self.side_loader = None
            self.side_files = {**side, **self.side_files}
            self.warnings.extend(warnings)
        return self.side_files

    def map_file(self, path: Path) -> None:
        """Map `path` now, so that threads reading its tensors afterwards share one mapping."""
        self._file(path)

    def release(self, t: SourceTensor) -> None:
        """Tell the kernel a tensor's pages are no longer needed, so they leave this process's resident set."""
        for p in t.parts or ():
            self.release(p)
        if self._map is not None and t.file == self._map[0] and t.nbytes and hasattr(mmap, "MADV_DONTNEED"):
            start = t.offset - t.offset % mmap.PAGESIZE
            try:
                self._map[1].madvise(mmap.MADV_DONTNEED, start, t.offset + t.nbytes - start)
            except (OSError, ValueError):
                pass  # only an optimisation

    def close(self) -> None:
        """Unmap the open file."""
        if self._map is not None:
            try:
                self._map[1].close()
            except BufferError:  # a numpy view still points into it; the GC unmaps it later
                pass
            self._map = None

    def read_rows(self, t: SourceTensor, a: int, b: int, layout: Layout) -> np.ndarray:
        """Rows [a, b) of tensor t as float32 (b - a, row_length), in `layout`; non-finite values are an error."""
        if t.values is not None:
            return np.asarray(t.values, dtype=np.float32).reshape(t.n_rows, t.row_length)[a:b]
        if t.parts is not None:  # stacked experts: rows [a, b) may span several experts' slices
            per = t.parts[0].n_rows
            pieces = [self.read_rows(t.parts[e], max(a, e * per) - e * per, min(b, (e + 1) * per) - e * per, layout)
                      for e in range(a // per, -(-b // per))]
            return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        assert t.file is not None
        other = (self.kind == "hf") == (layout == "gguf")  # the layout this source does not store
        rows: slice | np.ndarray = t.perm[a:b] if (other and t.perm is not None) else slice(a, b)
        buf = self._file(t.file)
        if self.kind == "hf":
            raw = np.frombuffer(buf, dtype=_FLOAT_DTYPES[t.dtype], count=t.n_rows * t.row_length, offset=t.offset)
            chunk = raw.reshape(t.n_rows, t.row_length)[rows]
            x = from_bf16_bits(chunk) if t.dtype == "BF16" else chunk.astype(np.float32)
        else:
            x = _dequantize_rows(buf, t, rows)
        if not np.isfinite(x).all():
            bad = int(x.size - np.count_nonzero(np.isfinite(x)))
            raise InvalidInputError(f"{t.file}: {t.hf_name or t.info.name}: {bad} NaN/Inf values in rows {a}-{b - 1} (corrupt weights)")
        if t.shift and layout == "gguf":
            x = x + np.float32(t.shift)
        return x


def _dequantize_rows(buf: mmap.mmap, t: SourceTensor, rows: slice | np.ndarray) -> np.ndarray:
    """Rows of a GGUF tensor as float32, through gguf-py's dequantizers for quantized types."""
    typ = GGML_TYPES[t.dtype]
    row_bytes = typ.nbytes((t.row_length,))
    raw = np.frombuffer(buf, dtype=np.uint8, count=t.n_rows * row_bytes, offset=t.offset).reshape(t.n_rows, row_bytes)
    chunk = raw[rows]
    if t.dtype == "F32":
        return chunk.view("<f4").astype(np.float32)
    if t.dtype == "F16":
        return chunk.view("<f2").astype(np.float32)
    if t.dtype == "BF16":
        return from_bf16_bits(chunk.view("<u2"))
    try:
        return dequantize(np.ascontiguousarray(chunk), GGMLQuantizationType[t.dtype]).reshape(-1, t.row_length)
    except NotImplementedError:
        raise InvalidInputError(f"{t.file}: {t.info.name}: gguf-py cannot dequantize {t.dtype}") from None


def open_source(path: Path) -> Source:
    """Open a Hugging Face model directory or a GGUF file for quantization (headers only; data is mapped later)."""
    path = user_path(path)
    if not path.exists():
        raise InvalidInputError(f"{path}: no such file or directory")
    if path.is_file() and path.suffix.lower() == ".gguf":
        return _open_gguf(path)
    if path.is_dir():
        if (path / "config.json").is_file():
            return _open_hf(path)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return _open_gguf(ggufs[0])
        raise InvalidInputError(f"{path}: expected config.json and *.safetensors (a Hugging Face model) or one .gguf file")
    raise InvalidInputError(f"{path}: expected a Hugging Face model directory or a .gguf file")


# ---------------------------------------------------------------------------------------------- Hugging Face


def _sort_key(t: SourceTensor) -> tuple[int, int, str]:
    """llama.cpp's converter order: global tensors first, then blocks in order, output norm and head last."""
    if t.info.layer is not None:
        return (1, t.info.layer, t.info.name)
    return (2 if t.info.name.startswith("output") else 0, 0, t.info.name)


def _open_hf(directory: Path) -> Source:
    config_path = directory / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{config_path}: cannot read ({str(exc)[:120]})") from None
    if not isinstance(config, dict):
        raise InvalidInputError(f"{config_path}: expected a JSON object")
    archs = config.get("architectures") if isinstance(config.get("architectures"), list) else []
    cls = next((a for a in archs if a in HF_ARCHITECTURES), None)
    if cls is None:
        found = ", ".join(str(a) for a in archs) or "none"
        raise InvalidInputError(f"{config_path}: architectures: planner quantize supports {', '.join(HF_ARCHITECTURES)}; found {found}")
    if not any(directory.glob("*.safetensors")):
        raise InvalidInputError(f"{directory}: no *.safetensors weights beside config.json")
    src = load_model_source(directory)  # validates config and every shard header against its file
    spec = src.spec
    if src.quantization is not None:
        raise InvalidInputError(f"{config_path}: the checkpoint is already quantized ({src.quantization.get('method')}); "
                                "planner quantize reads F32/F16/BF16 weights")
    arch = HF_ARCHITECTURES[cls]
    # Gemma 3's multimodal config nests the decoder's settings under text_config
    text_config = config["text_config"] if isinstance(config.get("text_config"), dict) else config
    raw, _files = read_safetensors_dir(directory)
    warnings: list[str] = []
    tensors: list[SourceTensor] = []
    experts: dict[str, dict[int, SourceTensor]] = {}  # GGUF name of a stacked tensor -> its slices by expert
    # HF's post_attention_layernorm is the pre-MLP norm (ffn_norm) except in Gemma 2/3, which norm after attention
    # there and have a pre_feedforward_layernorm (llama.cpp: post_attention_norm and ffn_norm).
    post_attn = "post_attention_norm" if spec.post_norms else spec.ffn_norm_name
    shift = 1.0 if arch in _NORM_SHIFT_ARCHS else 0.0
    skipped_tower = 0
    for r in raw:
        slot = gguf_slot(r.name, post_attn)
        if slot is None:
            if cls == "Gemma3ForConditionalGeneration" and r.name.startswith(_VISION_PREFIXES):
                skipped_tower += 1
            else:
                warnings.append(f"{r.name}: not a weight of the {cls} decoder, skipped")
            continue
        name, expert = slot
        if r.dtype not in _FLOAT_DTYPES:
            raise InvalidInputError(f"{directory / r.file}: {r.name}: stored as {r.dtype}; planner quantize reads F32, F16 and BF16 weights")
        if name == "output.weight" and arch in _NORM_SHIFT_ARCHS and spec.tie_word_embeddings:
            continue  # Gemma's head is the embedding; llama.cpp's converter drops a stored lm_head copy
        path = directory / r.file
        start = _data_start(path) + r.data_offsets[0]
        if expert is not None:
            part = SourceTensor(tensor_info(r.name, r.shape, None), r.name, r.dtype, r.n_bytes, path, start)
            experts.setdefault(name, {})[expert] = part
            continue
        info = tensor_info(name, r.shape if r.shape else (1,), layer_of(name))
        perm = None
        if arch == "llama" and info.role in ("attn_q", "attn_k") and len(r.shape) >= 1:
            heads = spec.num_heads if info.role == "attn_q" else spec.num_kv_heads
            perm = qk_row_order(r.shape[0], heads)
        norm_shift = shift if name.endswith("norm.weight") else 0.0
        tensors.append(SourceTensor(info, r.name, r.dtype, r.n_bytes, path, start, perm, shift=norm_shift))
    for name, parts in experts.items():
        tensors.append(_stacked(directory, name, parts))
    if skipped_tower:
        warnings.append(f"{skipped_tower} vision-tower and projector tensors skipped: the GGUF holds the text decoder "
                        "only (llama.cpp reads the vision part from a separate mmproj file)")
    if spec.rope_factors == "freqs":  # llama3 RoPE scaling: llama.cpp reads the factors from a tensor
        values = llama3_rope_factors(config, spec.dim_head)
        tensors.append(SourceTensor(tensor_info("rope_freqs.weight", values.shape, None), None, "F32", 0, values=values))
    elif spec.rope_factors == "long_short":  # Phi-3 LongRoPE: llama.cpp reads both factor lists from tensors
        for key, values in longrope_factors(config_path, text_config, spec.dim_head).items():
            tensors.append(SourceTensor(tensor_info(f"{key}.weight", values.shape, None), None, "F32", 0, values=values))
    tensors.sort(key=_sort_key)
    have = {t.info.name: t for t in tensors}
    inventory = tensor_inventory(spec)
    missing = [t.name for t in inventory if t.name not in have]
    if missing:  # llama.cpp refuses a GGUF without every tensor its architecture loads
        raise InvalidInputError(f"{directory}: {cls} needs {len(missing)} tensor(s) the checkpoint does not hold "
                                f"(GGUF names: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''})")
    for want in inventory:  # ... or one of another shape than config.json describes (e.g. an expert too few)
        got = have[want.name]
        if tuple(got.info.shape) != tuple(want.shape):
            raise InvalidInputError(f"{directory}: {got.hf_name or want.name}: shape {list(got.info.shape)}, config.json "
                                    f"describes {list(want.shape)} ({want.name})")
    kvs, w = arch_metadata(arch, spec, text_config)
    tok, w2 = gguf_tokenizer_from_hf(directory, spec.vocab_size, arch)
    side = {n: (directory / n).read_bytes() for n in HF_SIDE_FILES if (directory / n).is_file()}
    only = (f"{cls} is converted to GGUF only (its GGUF tensors differ from the checkpoint's)" if cls in GGUF_ONLY else None)
    return Source("hf", directory, arch, spec, tensors, src.origin, config, warnings + w + w2, kvs + tok, side,
                  gguf_only=only)


# Gemma 3's multimodal checkpoints: SigLIP tower and projector (transformers 4: top level; 5: under model.)
_VISION_PREFIXES = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector.")


def _stacked(directory: Path, name: str, parts: dict[int, SourceTensor]) -> SourceTensor:
    """One 3-D GGUF expert tensor (experts, rows, row_length) from every expert's 2-D slice, as llama.cpp's
    converter stacks them (torch.stack over experts 0..E-1; conversion/qwen.py Qwen2MoeModel.modify_tensors)."""
    first = parts[min(parts)]
    if sorted(parts) != list(range(len(parts))):
        missing = sorted(set(range(max(parts) + 1)) - set(parts))
        raise InvalidInputError(f"{directory}: {name}: experts {missing[:5]} have no weights; expected every expert 0..{max(parts)}")
    for e, p in sorted(parts.items()):
        if p.info.shape != first.info.shape or p.dtype != first.dtype or len(p.info.shape) != 2:
            raise InvalidInputError(f"{directory}: {p.hf_name}: {p.dtype} {list(p.info.shape)} differs from expert 0's "
                                    f"{first.dtype} {list(first.info.shape)}; every expert must have one 2-D shape")
    ordered = [parts[e] for e in range(len(parts))]
    info = tensor_info(name, (len(parts), *first.info.shape), layer_of(name))
    pattern = re.sub(r"experts\.\d+\.", "experts.*.", first.hf_name or name)  # for messages: experts.*.w1.weight
    return SourceTensor(info, pattern, first.dtype, sum(p.nbytes for p in ordered), parts=ordered)


def _data_start(path: Path) -> int:
    """Where a safetensors file's data section starts (8-byte length + JSON header)."""
    with path.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
    return 8 + n


# ---------------------------------------------------------------------------------------------- GGUF

# GGUF role -> HF module path inside a layer (the Llama/Qwen2 checkpoint names).
_HF_LAYER = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
    "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",  # Qwen3's per-head RMSNorm on q and k
}
_HF_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def hf_name_of(name: str) -> str | None:
    """The HF checkpoint name of a Llama-family GGUF tensor ('blk.0.attn_q.weight' -> 'model.layers.0.self_attn.q_proj.weight')."""
    base, _, param = name.rpartition(".")
    if base in _HF_TOP:
        return f"{_HF_TOP[base]}.{param}"
    parts = base.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _HF_LAYER:
        return f"model.layers.{parts[1]}.{_HF_LAYER[parts[2]]}.{param}"
    return None


# general.* keys the writer sets itself; the source's other general.* keys (license, base model...) are kept.
_GENERAL_WRITTEN = {"general.architecture", "general.type", "general.name", "general.file_type",
                    "general.quantization_version", "general.alignment"}


def _open_gguf(path: Path) -> Source:
    header = read_gguf_model(path)
    arch = header.architecture or "?"
    known = [*GGUF_ARCHITECTURES, *GGUF_TO_GGUF_ARCHITECTURES]
    if arch not in known:
        raise InvalidInputError(f"{path}: general.architecture: planner quantize supports {', '.join(known)}; found {arch}")
    spec = spec_from_gguf(header, path)
    only = None
    if arch in GGUF_TO_GGUF_ARCHITECTURES or spec.moe is not None:
        only = f"a {arch}{' mixture-of-experts' if spec.moe is not None else ''} GGUF is re-quantized to GGUF only"
    parts = [Path(p) for p in header.split_files] or [path]
    starts = [header.data_offset if i == 0 else read_gguf_header(p).data_offset for i, p in enumerate(parts)]
    warnings: list[str] = []
    tensors: list[SourceTensor] = []
    quantized: set[str] = set()
    for t in header.tensors:
        info = tensor_info(t.name, t.shape, layer_of(t.name))
        hf = hf_name_of(t.name)
        if GGML_TYPES[t.type_name].quantized:
            quantized.add(t.type_name)
        perm = None
        if arch == "llama" and info.role in ("attn_q", "attn_k"):
            heads = spec.num_heads if info.role == "attn_q" else spec.num_kv_heads
            perm = np.argsort(qk_row_order(info.shape[0], heads))  # GGUF -> HF: the inverse interleave
        tensors.append(SourceTensor(info, hf, t.type_name, t.n_bytes, parts[t.split], starts[t.split] + t.offset, perm))
    if quantized:
        warnings.append(f"the source is already quantized ({', '.join(sorted(quantized))}): re-quantizing adds a second "
                        "rounding error on top of the first (double loss); quantize from the original weights when you can")
    kvs = []
    for key, value in header.metadata.items():
        if key.startswith(("split.", "quantize.")) or key in _GENERAL_WRITTEN:  # quantize.*: how the source was made
            continue
        kv = kv_from_header(key, header.value_types[key], value)
        if kv is not None:
            kvs.append(kv)
    if only is not None:
        return Source("gguf", path, arch, spec, tensors, f"GGUF file {path.name}", {}, warnings, kvs, {}, gguf_only=only)
    config = _hf_config_from_gguf(header.metadata, arch, spec)
    side = {"config.json": json.dumps(config, indent=2).encode()}
    return Source("gguf", path, arch, spec, tensors, f"GGUF file {path.name}", config, warnings, kvs, side,
                  side_loader=lambda: hf_tokenizer_from_gguf(header.metadata))


def _hf_config_from_gguf(meta: dict[str, Any], arch: str, spec: ModelSpec) -> dict[str, Any]:
    """A transformers config.json for a Llama-family GGUF."""
    def num(key: str, default: float) -> float:
        v = meta.get(f"{arch}.{key}")
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default

    cls = GGUF_ARCHITECTURES[arch]
    cfg: dict[str, Any] = {
        "architectures": [cls], "model_type": arch, "hidden_act": "silu",
        "hidden_size": spec.hidden_size, "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers, "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads, "max_position_embeddings": spec.max_context,
        "rms_norm_eps": num("attention.layer_norm_rms_epsilon", 1e-5), "rope_theta": num("rope.freq_base", 10000.0),
        "vocab_size": spec.vocab_size, "tie_word_embeddings": spec.tie_word_embeddings, "torch_dtype": "bfloat16",
    }
    if spec.head_dim is not None:
        cfg["head_dim"] = spec.head_dim
    for key, gguf_key in (("bos_token_id", "tokenizer.ggml.bos_token_id"), ("eos_token_id", "tokenizer.ggml.eos_token_id")):
        if isinstance(meta.get(gguf_key), int):
            cfg[key] = meta[gguf_key]
    if arch == "llama":
        cfg["attention_bias"] = spec.attention_bias
        cfg["mlp_bias"] = spec.mlp_bias
    return cfg
