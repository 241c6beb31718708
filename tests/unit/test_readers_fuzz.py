"""Fuzzing the readers (GGUF, safetensors headers, config.json, probe snapshots): any bytes or JSON -- unbounded
numbers, nan/inf, 4301+ digit integers, nesting thousands deep -- give a result or an InvalidInputError naming the
file, never another exception or a hang."""

from __future__ import annotations

import io
import json
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from fuzz_values import JSON_VALUES, WIDE_INTS, all_paths, json_text, set_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from planner.errors import InvalidInputError
from planner.hardware.catalog import load_catalog
from planner.hardware.probe import interpret, parse_snapshot
from planner.models.readers import (
    ModelSource,
    load_model_source,
    parse_gguf_header,
    parse_safetensors_header,
    read_gguf_header,
    read_safetensors_header,
    spec_from_gguf,
    spec_from_hf_config,
)

# Each example parses a few KB at most; the deadline catches a parser that starts looping or allocating.
FUZZ = settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def outcome(fn: Callable[[], Any], name: str = "") -> str:
    """Run a reader: 'ok' or 'invalid' are the only acceptable outcomes (anything else propagates and fails).
    An error is one bounded line that starts with the file's name."""
    try:
        fn()
    except InvalidInputError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg and "Traceback" not in msg
        assert msg.startswith(name) and len(msg) <= 1000, msg[:2000]
        return "invalid"
    return "ok"


@pytest.fixture(scope="module")
def work_dir() -> Path:
    # Module-scoped (hypothesis rejects function-scoped fixtures such as tmp_path inside @given).
    with tempfile.TemporaryDirectory(prefix="readers-fuzz-") as d:
        yield Path(d)


def _valid_gguf(path: Path) -> bytes:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(32)
    w.add_feed_forward_length(32)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_sliding_window(16)
    w.add_token_list(["a", "b", "c", "d"])
    w.add_array("test.ints", [1, -2, 3])
    w.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    w.add_tensor("blk.0.attn_q.weight",
                 gguf.quants.quantize(np.ones((32, 32), np.float32), gguf.GGMLQuantizationType.Q8_0),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("blk.0.attn_norm.weight", np.ones((32,), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


@pytest.fixture(scope="module")
def gguf_bytes(work_dir: Path) -> bytes:
    return _valid_gguf(work_dir / "valid.gguf")


@pytest.fixture(scope="module")
def safetensors_bytes(work_dir: Path) -> bytes:
    save_file({"a": np.zeros((4, 8), np.float16), "b": np.zeros((3,), np.float32), "c": np.zeros((2, 2), np.int8)},
              str(work_dir / "valid.safetensors"))
    return (work_dir / "valid.safetensors").read_bytes()


def _gguf_outcome(data: bytes) -> str:
    def run() -> None:
        header = parse_gguf_header(io.BytesIO(data), "fuzz.gguf", len(data))
        spec_from_gguf(header, "fuzz.gguf")

    return outcome(run, "fuzz.gguf")


# --- GGUF ----------------------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=512))
def test_gguf_arbitrary_bytes(data: bytes) -> None:
    _gguf_outcome(data)


@FUZZ
@given(version=st.sampled_from([2, 3]), counts=st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
       rest=st.binary(max_size=512))
def test_gguf_valid_prefix_then_noise(version: int, counts: tuple[int, int], rest: bytes) -> None:
    """Past the magic and version, so the fuzzer reaches the metadata and tensor-table code."""
    _gguf_outcome(b"GGUF" + struct.pack("<IQQ", version, *counts) + rest)


@FUZZ
@given(data=st.data())
def test_gguf_truncations_always_fail_cleanly(gguf_bytes: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(gguf_bytes) - 1))
    assert _gguf_outcome(gguf_bytes[:cut]) == "invalid"


@FUZZ
@given(data=st.data())
def test_gguf_byte_mutations(gguf_bytes: bytes, data: st.DataObject) -> None:
    header_end = read_header_end(gguf_bytes)
    edits = data.draw(st.lists(st.tuples(st.integers(0, header_end - 1), st.integers(0, 255)), min_size=1, max_size=6))
    buf = bytearray(gguf_bytes)
    for pos, value in edits:
        buf[pos] = value
    _gguf_outcome(bytes(buf))


def read_header_end(data: bytes) -> int:
    h = parse_gguf_header(io.BytesIO(data), "valid.gguf", len(data))
    return h.data_offset


def test_gguf_fuzz_file_is_valid(gguf_bytes: bytes, work_dir: Path) -> None:
    """The seed file itself parses (so the truncation test above is about truncation only)."""
    assert _gguf_outcome(gguf_bytes) == "ok"
    h = read_gguf_header(work_dir / "valid.gguf")
    assert h.metadata["test.ints"] == [1, -2, 3] and len(h.tensors) == 3


def test_gguf_reading_a_file_that_lies_about_sizes_is_fast(work_dir: Path) -> None:
    """Huge counts in a tiny file are refused before anything is allocated or looped over."""
    lies = [
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 0, 2**24),
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 9, 2**20),
        b"GGUF" + struct.pack("<IQQ", 3, 2**20, 0),
    ]
    for data in lies:
        p = work_dir / "lies.gguf"
        p.write_bytes(data)
        with pytest.raises(InvalidInputError):
            read_gguf_header(p)


# --- safetensors ---------------------------------------------------------------------------------------------


def _safetensors_outcome(work_dir: Path, data: bytes) -> str:
    p = work_dir / "fuzz.safetensors"
    p.write_bytes(data)
    return outcome(lambda: read_safetensors_header(p), str(p))


@FUZZ
@given(st.binary(max_size=512))
def test_safetensors_arbitrary_bytes(work_dir: Path, data: bytes) -> None:
    _safetensors_outcome(work_dir, data)


@FUZZ
@given(data=st.data())
def test_safetensors_truncations_always_fail_cleanly(work_dir: Path, safetensors_bytes: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(safetensors_bytes) - 1))
    assert _safetensors_outcome(work_dir, safetensors_bytes[:cut]) == "invalid"


@FUZZ
@given(data=st.data())
def test_safetensors_byte_mutations(work_dir: Path, safetensors_bytes: bytes, data: st.DataObject) -> None:
    (n,) = struct.unpack("<Q", safetensors_bytes[:8])
    edits = data.draw(st.lists(st.tuples(st.integers(0, 8 + n - 1), st.integers(0, 255)), min_size=1, max_size=6))
    buf = bytearray(safetensors_bytes)
    for pos, value in edits:
        buf[pos] = value
    _safetensors_outcome(work_dir, bytes(buf))


JSON = JSON_VALUES  # unbounded ints and floats, nan/inf, and markers json_text() writes as 4301+ digit integers
NEST = st.integers(0, 3) | st.integers(0, 5000)  # lists wrapped around a header: mostly none, sometimes thousands
DTYPES = st.sampled_from(["F32", "F16", "BF16", "I8", "U8", "F8_E4M3", "F4", "BOOL", "I64", "X9", ""])
ENTRY = st.fixed_dictionaries({
    "dtype": DTYPES | JSON,
    "shape": st.lists(st.integers(-2, 2**40) | WIDE_INTS, max_size=4) | JSON,
    "data_offsets": st.lists(st.integers(-2, 2**40) | WIDE_INTS, min_size=0, max_size=3) | JSON,
})


@FUZZ
@given(st.dictionaries(st.text(max_size=6), ENTRY | JSON, max_size=5), st.integers(0, 2**20) | st.integers() | st.none())
def test_safetensors_structured_headers(header: dict, data_size: int | None) -> None:
    raw = json_text(header).encode()
    outcome(lambda: parse_safetensors_header(raw, "fuzz.safetensors", data_size), "fuzz.safetensors")


@FUZZ
@given(st.sampled_from(["F32", "BF16", "F4", "BOOL"]), st.lists(WIDE_INTS.map(abs), max_size=8),
       st.lists(WIDE_INTS.map(abs), min_size=2, max_size=2).map(sorted))
def test_safetensors_wide_shapes_and_offsets(dtype: str, shape: list[int], offsets: list[int]) -> None:
    """Well-formed entries whose dimensions and offsets are past 64 bits or float range (a shape of 10^400 once
    raised OverflowError while the byte count was formatted)."""
    raw = json_text({"t": {"dtype": dtype, "shape": shape, "data_offsets": offsets}}).encode()
    outcome(lambda: parse_safetensors_header(raw, "fuzz.safetensors", offsets[1]), "fuzz.safetensors")


@FUZZ
@given(JSON, NEST)
def test_safetensors_arbitrary_json_header(doc: Any, nest: int) -> None:
    raw = json_text(doc, nest).encode()
    outcome(lambda: parse_safetensors_header(raw, "fuzz.safetensors", None), "fuzz.safetensors")


@FUZZ
@given(JSON, NEST)
def test_safetensors_file_with_arbitrary_json_header(work_dir: Path, doc: Any, nest: int) -> None:
    """Through the file reader (length prefix and all), as `--model x.safetensors` reads it."""
    raw = json_text(doc, nest).encode()
    p = work_dir / "fuzz-json.safetensors"
    p.write_bytes(struct.pack("<Q", len(raw)) + raw)
    outcome(lambda: read_safetensors_header(p), str(p))


# --- config.json ---------------------------------------------------------------------------------------------

BASE_CONFIGS = [
    {"architectures": ["LlamaForCausalLM"], "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
     "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48, "max_position_embeddings": 256,
     "rope_scaling": {"rope_type": "llama3"}},
    {"architectures": ["Qwen3MoeForCausalLM"], "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
     "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 64,
     "moe_intermediate_size": 16, "num_experts": 4, "num_experts_per_tok": 2, "max_position_embeddings": 256,
     "mlp_only_layers": [], "use_sliding_window": True, "sliding_window": 64},
    {"architectures": ["DeepseekV3ForCausalLM"], "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 3,
     "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 64, "moe_intermediate_size": 16,
     "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2, "first_k_dense_replace": 1,
     "topk_method": "noaux_tc", "q_lora_rank": 16, "kv_lora_rank": 8, "qk_nope_head_dim": 8,
     "qk_rope_head_dim": 4, "v_head_dim": 8, "max_position_embeddings": 256,
     "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}},
    {"architectures": ["Gemma3ForConditionalGeneration"], "text_config": {"hidden_size": 32, "intermediate_size": 64,
     "num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
     "sliding_window": 16, "layer_types": ["sliding_attention"] * 5 + ["full_attention"], "vocab_size": 64,
     "max_position_embeddings": 128}},
    {"architectures": ["GptOssForCausalLM"], "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
     "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 32,
     "num_local_experts": 4, "experts_per_token": 2, "sliding_window": 8, "max_position_embeddings": 128,
     "attention_bias": True, "quantization_config": {"quant_method": "mxfp4"}},
    {"architectures": ["CohereForCausalLM"], "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
     "num_attention_heads": 4, "intermediate_size": 48, "max_position_embeddings": 256, "use_qk_norm": True},
]


def test_base_configs_are_valid() -> None:
    for config in BASE_CONFIGS:
        assert outcome(lambda c=config: spec_from_hf_config(c, "config.json")) == "ok"


@FUZZ
@given(JSON)
def test_config_arbitrary_json(doc: Any) -> None:
    outcome(lambda: spec_from_hf_config(doc, "config.json"))


@FUZZ
@given(base=st.sampled_from(BASE_CONFIGS), data=st.data())
def test_config_one_field_replaced(base: dict, data: st.DataObject) -> None:
    """A valid config with one field (possibly nested in text_config) set to arbitrary JSON, or deleted."""
    config = json.loads(json.dumps(base))
    target = config["text_config"] if "text_config" in config and data.draw(st.booleans()) else config
    key = data.draw(st.sampled_from(sorted(target)) | st.text(max_size=8))
    if data.draw(st.booleans()):
        target.pop(key, None)
    else:
        target[key] = data.draw(JSON | st.integers(-(2**70), 2**70))
    if _BIG not in json_text(config):  # a parsed config cannot hold a 4301+ digit int; the file test below can
        outcome(lambda: spec_from_hf_config(json.loads(json_text(config)), "config.json"), "config.json")


@FUZZ
@given(base=st.sampled_from(BASE_CONFIGS), data=st.data())
def test_config_file_one_field_replaced(work_dir: Path, base: dict, data: st.DataObject) -> None:
    """As above through the file: 4301+ digit integers, nan/inf and deep nesting reach json.loads itself."""
    config = json.loads(json.dumps(base))
    path = data.draw(st.sampled_from(all_paths(config)))
    config = set_path(config, path, data.draw(JSON))
    d = work_dir / "cfg-replaced"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json_text(config, data.draw(NEST)), encoding="utf-8")
    outcome(lambda: load_model_source(d / "config.json"), str(d / "config.json"))


@FUZZ
@given(st.binary(max_size=256))
def test_config_file_arbitrary_bytes(work_dir: Path, data: bytes) -> None:
    d = work_dir / "cfgdir"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_bytes(data)
    result: list[ModelSource] = []
    if outcome(lambda: result.append(load_model_source(d / "config.json"))) == "ok":
        assert result[0].tensors is None


_BIG = "9" * 4301


# --- probe snapshots (`planner probe --snapshot FILE`) ------------------------------------------------------

SNAPSHOTS = Path(__file__).resolve().parents[1] / "fixtures" / "snapshots"
_SNAPSHOT_TEXTS = {p.name: p.read_text(encoding="utf-8") for p in sorted(SNAPSHOTS.glob("*.json")) if p.name != "truncated.json"}


@pytest.fixture(scope="module")
def probe_catalog() -> Any:
    return load_catalog()


def _snapshot_outcome(text: str, catalog: Any) -> str:
    def run() -> None:
        interpret(parse_snapshot(text, "snap.json"), catalog)

    return outcome(run, "snap.json")


@FUZZ
@given(name=st.sampled_from(sorted(_SNAPSHOT_TEXTS)), data=st.data())
def test_snapshot_one_value_replaced(probe_catalog: Any, name: str, data: st.DataObject) -> None:
    """A captured snapshot with one node replaced by unbounded / 4301+ digit numbers, nan/inf or deep nesting."""
    doc = json.loads(_SNAPSHOT_TEXTS[name])
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(all_paths(doc)))
        doc = set_path(doc, path, data.draw(JSON))
    _snapshot_outcome(json_text(doc, data.draw(NEST)), probe_catalog)


@FUZZ
@given(JSON, NEST)
def test_snapshot_arbitrary_json(probe_catalog: Any, doc: Any, nest: int) -> None:
    if isinstance(doc, dict) and nest == 0:
        doc = {**doc, "snapshot_version": 1}  # past the first check, so the models are exercised
    _snapshot_outcome(json_text(doc, nest), probe_catalog)


# --- GGUF metadata -> ModelSpec with arbitrary key values ----------------------------------------------------

_KEYS = [
    "block_count", "context_length", "embedding_length", "feed_forward_length", "attention.head_count",
    "attention.head_count_kv", "attention.key_length", "attention.value_length", "attention.sliding_window",
    "attention.sliding_window_pattern", "expert_count", "expert_used_count", "expert_feed_forward_length",
    "expert_shared_count", "leading_dense_block_count", "attention.kv_lora_rank", "attention.q_lora_rank",
    "rope.dimension_count", "attention.key_length_mla", "vocab_size",
]
_GOOD = {"block_count": 2, "context_length": 64, "embedding_length": 32, "feed_forward_length": 32,
         "attention.head_count": 4, "attention.head_count_kv": 2}
_TENSORS = [("token_embd.weight", (32, 8))] + [
    (f"blk.{i}.{r}.weight", d) for i in range(2) for r, d in (
        ("attn_norm", (32,)), ("attn_q", (32, 32)), ("attn_k", (32, 16)), ("attn_v", (32, 16)),
        ("attn_output", (32, 32)), ("ffn_norm", (32,)), ("ffn_gate", (32, 32)), ("ffn_up", (32, 32)),
        ("ffn_down", (32, 32)), ("ffn_gate_inp", (32, 4)), ("attn_q_norm", (8,)), ("post_ffw_norm", (32,)))
]


def _kv(key: str, value: Any) -> bytes:
    name = struct.pack("<Q", len(key.encode())) + key.encode()
    if isinstance(value, bool):
        return name + struct.pack("<IB", 7, value)
    if isinstance(value, int):
        return name + (struct.pack("<Iq", 11, value) if value < 0 else struct.pack("<IQ", 10, value))
    if isinstance(value, str):
        raw = value.encode()
        return name + struct.pack("<IQ", 8, len(raw)) + raw
    if isinstance(value, float):
        return name + struct.pack("<Id", 12, value)
    items = [v for v in value if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63] if all(
        not isinstance(v, bool) for v in value) else [bool(v) for v in value]
    if items and isinstance(items[0], bool):
        return name + struct.pack("<IIQ", 9, 7, len(items)) + bytes(items)
    return name + struct.pack("<IIQ", 9, 10, len(items)) + b"".join(struct.pack("<Q", v) for v in items)


def encode_gguf(arch: str, kv: dict[str, Any], tensors: list[tuple[str, tuple[int, ...]]]) -> bytes:
    """A minimal GGUF v3 (F32 tensors), written by hand so each example costs microseconds."""
    meta = _kv("general.architecture", arch) + b"".join(_kv(f"{arch}.{k}", v) for k, v in kv.items())
    table, offset = b"", 0
    for name, dims in tensors:
        table += struct.pack("<Q", len(name)) + name.encode() + struct.pack("<I", len(dims))
        table += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", 0, offset)
        offset += -(-4 * int(np.prod(dims)) // 32) * 32
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv) + 1) + meta + table
    return head + b"\0" * (-len(head) % 32) + b"\0" * offset


def test_encoded_gguf_is_valid() -> None:
    data = encode_gguf("llama", _GOOD, [t for t in _TENSORS if "gate_inp" not in t[0] and "q_norm" not in t[0] and "post_ffw" not in t[0]])
    header = parse_gguf_header(io.BytesIO(data), "x.gguf", len(data))
    spec = spec_from_gguf(header, "x.gguf")
    assert (spec.num_layers, spec.hidden_size, spec.vocab_size, spec.num_kv_heads) == (2, 32, 8, 2)


# The widest values GGUF can hold: the full int64/uint64 range, f64 with nan and inf (its integers are fixed-width).
VALUES = (st.integers(-3, 2**34) | st.integers(-(2**63), 2**64 - 1) | st.booleans() | st.text(max_size=4)
          | st.floats(allow_nan=True, allow_infinity=True, width=64)
          | st.lists(st.integers(0, 2**33) | st.integers(0, 2**63 - 1) | st.booleans(), max_size=6))


@FUZZ
@given(arch=st.sampled_from(["llama", "gemma3", "deepseek2", "gpt-oss", "command-r", "qwen3moe", "mamba", "x\ny"]),
       changes=st.dictionaries(st.sampled_from(_KEYS), VALUES, max_size=6),
       drop=st.sets(st.sampled_from(sorted(_GOOD)), max_size=2),
       tensors=st.lists(st.sampled_from(_TENSORS), unique=True, max_size=len(_TENSORS)))
def test_gguf_spec_from_arbitrary_metadata(arch: str, changes: dict, drop: set, tensors: list) -> None:
    kv = {k: v for k, v in {**_GOOD, **changes}.items() if k not in drop}
    data = encode_gguf(arch, kv, tensors)
    _gguf_outcome(data)


def _nested_array(depth: int) -> bytes:
    """A GGUF array value nested `depth` arrays deep around one uint32."""
    body = struct.pack("<IQI", 4, 1, 7)  # innermost: ARRAY[UINT32] of one item
    for _ in range(depth - 1):
        body = struct.pack("<IQ", 9, 1) + body  # ARRAY[ARRAY[...]] of one item
    return body


@FUZZ
@given(depth=st.integers(1, 2000), count=st.integers(0, 2**64 - 1) | st.just(1))
def test_gguf_deeply_nested_arrays(depth: int, count: int) -> None:
    """Arrays of arrays thousands deep (or with a lying length) are refused without recursing that deep."""
    key = b"test.nested"
    kv = struct.pack("<Q", len(key)) + key + struct.pack("<I", 9) + _nested_array(depth)
    if count != 1:  # a lying outer length
        kv = kv[: 8 + len(key) + 8] + struct.pack("<Q", count) + kv[8 + len(key) + 16:]
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + kv
    _gguf_outcome(data + b"\0" * (-len(data) % 32))
