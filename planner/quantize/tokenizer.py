"""Tokenizer metadata both ways: Hugging Face tokenizer files -> GGUF tokenizer.* keys, and a GGUF's byte-level BPE
vocabulary -> tokenizer.json / tokenizer_config.json (for GGUF -> safetensors).

- SentencePiece models (tokenizer.model: Llama 2, Mistral 7B v0.1-v0.3, Gemma) are read with gguf-py's
  SentencePieceVocab (the `sentencepiece` library): pieces, scores and token types as the model stores them, and
  gguf-py's SpecialVocab for the special token ids, add_bos/add_eos and the chat template.
- Byte-level BPE (tokenizer.json: Llama 3, Qwen, SmolLM, GPT-2 style) is read as JSON. llama.cpp picks its
  pre-tokenizer regex by name (tokenizer.ggml.pre); as its converter does, the name is found by encoding a fixed
  probe text with the tokenizer (the `tokenizers` library) and looking the sha256 of the ids up in llama.cpp's table
  (planner/data/llamacpp_pre_hashes.json). An unknown hash falls back to the family rule, then to the
  tokenizer.json's own pre-tokenizer when it is plain GPT-2 byte-level, and only then to 'default' with a warning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gguf import GGUFValueType, Keys, TokenType

from planner.errors import InvalidInputError
from planner.quantize.gguf_writer import KV, kv_array, kv_bool, kv_str, kv_u32

T = Keys.Tokenizer


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{path}: cannot read tokenizer file ({str(exc)[:120]})") from None


def _content(v: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(v, str):
        return v
    if isinstance(v, dict) and isinstance(v.get("content"), str):
        return v["content"]
    return None


_HASHES = Path(__file__).resolve().parent.parent / "data" / "llamacpp_pre_hashes.json"


def tokenizer_fingerprint(tokenizer_json: Path) -> str | None:
    """llama.cpp's fingerprint of a tokenizer: sha256 of str(ids) of its probe text (None without `tokenizers`, or
    for a tokenizer.json the library cannot load; the caller then falls back to the family rules)."""
    import hashlib

    try:
        from tokenizers import Tokenizer  # lazy: only quantize needs it
    except ImportError:
        return None
    try:
        tok = Tokenizer.from_file(str(tokenizer_json))
    except Exception:  # noqa: BLE001 (the library raises a bare Exception on a file it cannot read)
        return None
    probe = json.loads(_HASHES.read_text(encoding="utf-8"))["chktxt"]
    ids = tok.encode(probe).ids  # with special tokens, as transformers' encode() in llama.cpp's converter
    return hashlib.sha256(str(list(ids)).encode()).hexdigest()


def pre_tokenizer_by_hash(tokenizer_json: Path) -> str | None:
    """llama.cpp's pre-tokenizer name for this tokenizer, by its fingerprint (None: not in llama.cpp's table)."""
    fp = tokenizer_fingerprint(tokenizer_json)
    if fp is None:
        return None
    return json.loads(_HASHES.read_text(encoding="utf-8"))["hashes"].get(fp)


def _plain_byte_level(tj: dict[str, Any]) -> bool:
    """tokenizer.json pre-tokenizes with GPT-2's byte-level regex and nothing else (llama.cpp's 'gpt-2')."""
    pre = tj.get("pre_tokenizer")
    return (isinstance(pre, dict) and pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
            and not pre.get("add_prefix_space", False) and tj.get("normalizer") is None)


def pre_tokenizer_name(arch: str, vocab_size: int) -> str | None:
    """llama.cpp's pre-tokenizer name for byte-level BPE vocabularies of the families we convert (None: unknown)."""
    if arch == "qwen2":
        return "qwen2"
    if vocab_size in (128256, 128000):
        return "llama-bpe"  # Llama 3.x
    if vocab_size == 49152:
        return "smollm"  # SmolLM / SmolLM2 / StarCoder2-style vocabulary
    return None


def missing_tokenizer(directory: Path) -> str | None:
    """Why a GGUF made from `directory` would carry no vocabulary (llama.cpp could load it but not tokenize text), or
    None when its tokenizer.model or tokenizer.json is one gguf_tokenizer_from_hf converts."""
    if (directory / "tokenizer.model").is_file() and _have_sentencepiece():
        return None
    tj_path = directory / "tokenizer.json"
    if not tj_path.is_file():
        return f"add tokenizer.json to {directory}"
    tj = _load(tj_path)
    model = tj.get("model") if isinstance(tj, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        found = str(model.get("type"))[:40] if isinstance(model, dict) else "none"  # user data: bounded
        return f"{tj_path} holds a {found} tokenizer; planner converts BPE tokenizers (with a vocab) only"
    return None


def _have_sentencepiece() -> bool:
    import importlib.util

    return importlib.util.find_spec("sentencepiece") is not None


def _spm_tokenizer(directory: Path, vocab_size: int) -> tuple[list[KV], list[str]]:
    """tokenizer.* keys of a SentencePiece model (tokenizer.model), through gguf-py's vocab classes."""
    from gguf.vocab import SentencePieceVocab, SpecialVocab

    try:
        vocab = SentencePieceVocab(directory)
    except (OSError, RuntimeError, ValueError) as exc:
        raise InvalidInputError(f"{directory / 'tokenizer.model'}: cannot read the SentencePiece model "
                                f"({str(exc)[:120]})") from None
    names: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    for text, score, typ in vocab.all_tokens():
        names.append(text.decode("utf-8", "replace"))
        scores.append(float(score))
        types.append(int(typ))
    warnings: list[str] = []
    if len(names) > vocab_size:
        warnings.append(f"the SentencePiece model has {len(names)} pieces, the embedding {vocab_size} rows: extra pieces dropped")
        names, scores, types = names[:vocab_size], scores[:vocab_size], types[:vocab_size]
    for i in range(len(names), vocab_size):  # the embedding is padded beyond the vocabulary
        names.append(f"[PAD{i}]")
        scores.append(-1000.0)
        types.append(int(TokenType.UNUSED))
    out = [kv_str(T.MODEL, "llama"), kv_str(T.PRE, "default"),
           kv_array(T.LIST, GGUFValueType.STRING, names), kv_array(T.SCORES, GGUFValueType.FLOAT32, scores),
           kv_array(T.TOKEN_TYPE, GGUFValueType.INT32, types)]
    special = SpecialVocab(directory, load_merges=False, n_vocab=vocab_size)
    keys = {"bos": T.BOS_ID, "eos": T.EOS_ID, "unk": T.UNK_ID, "sep": T.SEP_ID, "pad": T.PAD_ID}
    ids = dict(special.special_token_ids)
    sp = vocab.sentencepiece_tokenizer
    for kind, tid in (("bos", sp.bos_id()), ("eos", sp.eos_id()), ("unk", sp.unk_id()), ("pad", sp.pad_id())):
        ids.setdefault(kind, tid)  # config.json / tokenizer_config.json first, else the model's own (-1: none)
    for kind, tid in ids.items():
        if kind in keys and isinstance(tid, int) and 0 <= tid < vocab_size:
            out.append(kv_u32(keys[kind], tid))
    for kind, key in (("bos", T.ADD_BOS), ("eos", T.ADD_EOS)):
        if isinstance(special.add_special_token.get(kind), bool):
            out.append(kv_bool(key, special.add_special_token[kind]))
    if isinstance(special.chat_template, str):
        out.append(kv_str(T.CHAT_TEMPLATE, special.chat_template))
    return out, warnings


def gguf_tokenizer_from_hf(directory: Path, vocab_size: int, arch: str) -> tuple[list[KV], list[str]]:
    """tokenizer.* GGUF keys from a model directory's tokenizer files (tokenizer.model or tokenizer.json with
    tokenizer_config.json), and warnings."""
    tj_path = directory / "tokenizer.json"
    if (directory / "tokenizer.model").is_file():
        if _have_sentencepiece():
            return _spm_tokenizer(directory, vocab_size)
        if not tj_path.is_file():
            return [kv_str(T.MODEL, "no_vocab")], [
                f"{directory / 'tokenizer.model'} is a SentencePiece model and the sentencepiece library is not "
                "installed (pip install sentencepiece): the GGUF carries no vocabulary"]
    if not tj_path.is_file():
        return [kv_str(T.MODEL, "no_vocab")], [
            f"{directory} has no tokenizer.json: the GGUF carries no vocabulary (llama.cpp can load it but not tokenize text)"]
    tj = _load(tj_path)
    tc_path = directory / "tokenizer_config.json"
    tc = _load(tc_path) if tc_path.is_file() else {}
    model = tj.get("model") if isinstance(tj, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        return [kv_str(T.MODEL, "no_vocab")], [
            f"{tj_path}: only BPE tokenizers are converted (found {model.get('type') if isinstance(model, dict) else 'none'}); the GGUF carries no vocabulary"]
    warnings: list[str] = []
    tokens: dict[int, str] = {}
    for tok, i in model["vocab"].items():
        if isinstance(i, int) and 0 <= i < vocab_size:
            tokens[i] = tok
    added: dict[int, bool] = {}  # id -> special
    for entry in tj.get("added_tokens") or []:
        if isinstance(entry, dict) and isinstance(entry.get("id"), int) and isinstance(entry.get("content"), str):
            if 0 <= entry["id"] < vocab_size:
                tokens[entry["id"]] = entry["content"]
                added[entry["id"]] = bool(entry.get("special"))
    byte_fallback = bool(model.get("byte_fallback"))
    names: list[str] = []
    types: list[int] = []
    scores: list[float] = []
    for i in range(vocab_size):
        tok = tokens.get(i)
        if tok is None:  # the embedding is padded beyond the vocabulary
            names.append(f"[PAD{i}]")
            types.append(int(TokenType.UNUSED))
        else:
            names.append(tok)
            if i in added:
                types.append(int(TokenType.CONTROL if added[i] else TokenType.USER_DEFINED))
            elif byte_fallback and len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">"):
                types.append(int(TokenType.BYTE))
            else:
                types.append(int(TokenType.NORMAL))
        # SentencePiece-derived vocabularies are stored by descending score, so -id keeps llama.cpp's merge order.
        scores.append(0.0 if types[-1] != int(TokenType.NORMAL) else -float(i))
    unk = _content(tc.get("unk_token")) or model.get("unk_token")
    out: list[KV] = []
    if byte_fallback:
        out += [kv_str(T.MODEL, "llama"), kv_str(T.PRE, "default")]
        if isinstance(unk, str) and unk in model["vocab"]:
            types[model["vocab"][unk]] = int(TokenType.UNKNOWN)
        warnings.append("SentencePiece-style vocabulary: token scores are approximated from token ids")
    else:
        pre = pre_tokenizer_by_hash(tj_path) or pre_tokenizer_name(arch, vocab_size)
        if pre is None and _plain_byte_level(tj):
            pre = "gpt-2"  # GPT-2's regex is exactly what a plain ByteLevel pre-tokenizer splits by
        if pre is None:
            pre = "default"
            warnings.append(f"{tj_path}: llama.cpp knows no pre-tokenizer with this tokenizer's fingerprint; 'default' "
                            "written (llama.cpp may split text differently from the Hugging Face tokenizer)")
        out += [kv_str(T.MODEL, "gpt2"), kv_str(T.PRE, pre)]
    out += [kv_array(T.LIST, GGUFValueType.STRING, names), kv_array(T.TOKEN_TYPE, GGUFValueType.INT32, types)]
    if byte_fallback:
        out.append(kv_array(T.SCORES, GGUFValueType.FLOAT32, scores))
    merges = model.get("merges") or []
    merge_strs = [m if isinstance(m, str) else " ".join(m) for m in merges if isinstance(m, (str, list))]
    if merge_strs and not byte_fallback:
        out.append(kv_array(T.MERGES, GGUFValueType.STRING, merge_strs))
    ids = {tok: i for i, tok in enumerate(names)}
    for key, gguf_key in (("bos_token", T.BOS_ID), ("eos_token", T.EOS_ID), ("unk_token", T.UNK_ID), ("pad_token", T.PAD_ID)):
        name = _content(tc.get(key))
        if name is not None and name in ids:
            out.append(kv_u32(gguf_key, ids[name]))
    add_bos = tc.get("add_bos_token")
    if not isinstance(add_bos, bool):
        add_bos = _post_processor_adds_bos(tj, _content(tc.get("bos_token")))
    out.append(kv_bool(T.ADD_BOS, add_bos))
    if isinstance(tc.get("add_eos_token"), bool):
        out.append(kv_bool(T.ADD_EOS, tc["add_eos_token"]))
    template = tc.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": "..."}, ...]
        template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"), None)
    if isinstance(template, str):
        out.append(kv_str(T.CHAT_TEMPLATE, template))
    return out, warnings


def _post_processor_adds_bos(tj: dict[str, Any], bos: str | None) -> bool:
    """Whether tokenizer.json's TemplateProcessing puts the BOS token in front of a single sequence (Llama 3)."""
    post = tj.get("post_processor")
    if not isinstance(post, dict) or bos is None:
        return False
    procs = post.get("processors") if post.get("type") == "Sequence" else [post]
    for p in procs or []:
        if isinstance(p, dict) and p.get("type") == "TemplateProcessing":
            single = p.get("single") or []
            first = single[0] if single else None
            if isinstance(first, dict) and (first.get("SpecialToken") or {}).get("id") == bos:
                return True
    return False


# ---------------------------------------------------------------------------------------------- GGUF -> HF


def hf_tokenizer_from_gguf(metadata: dict[str, Any]) -> tuple[dict[str, bytes], list[str]]:
    """tokenizer.json and tokenizer_config.json for a GGUF's byte-level BPE ('gpt2') vocabulary, and warnings."""
    model = metadata.get(T.MODEL)
    tokens = metadata.get(T.LIST)
    if model != "gpt2" or not isinstance(tokens, list):
        return {}, [f"GGUF tokenizer model {model!r} is not converted to tokenizer.json (only byte-level BPE is)"]
    types = metadata.get(T.TOKEN_TYPE) or [int(TokenType.NORMAL)] * len(tokens)
    merges = metadata.get(T.MERGES) or []
    special = {i for i, t in enumerate(types) if t in (int(TokenType.CONTROL), int(TokenType.USER_DEFINED))}
    added = [{"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": types[i] == int(TokenType.CONTROL)} for i in sorted(special)]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tj = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": byte_level, "post_processor": byte_level, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": [m.split(" ", 1) for m in merges]},
    }

    def tok(key: str) -> str | None:
        i = metadata.get(key)
        return tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else None

    tc: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
                          "add_bos_token": bool(metadata.get(T.ADD_BOS, False))}
    for key, gguf_key in (("bos_token", T.BOS_ID), ("eos_token", T.EOS_ID), ("unk_token", T.UNK_ID), ("pad_token", T.PAD_ID)):
        if tok(gguf_key) is not None:
            tc[key] = tok(gguf_key)
    if isinstance(metadata.get(T.CHAT_TEMPLATE), str):
        tc["chat_template"] = metadata[T.CHAT_TEMPLATE]
    files = {
        "tokenizer.json": json.dumps(tj, ensure_ascii=False).encode("utf-8"),
        "tokenizer_config.json": json.dumps(tc, indent=2, ensure_ascii=False).encode("utf-8"),
    }
    return files, []
