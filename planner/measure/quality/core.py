"""`planner eval`: quantize a model to several formats, run each in llama.cpp over a text, and measure what each
format costs in quality against the 16-bit model: perplexity, KL divergence (mean, p99), top-1 agreement.

Flow: SOURCE -> F16 GGUF (the reference) and one GGUF per format, each quantized once into the cache
(user_cache_dir()/eval/models/<source fingerprint>/) -> the text tokenized once, cut into ctx-token chunks -> the
reference's log-probabilities at the scored positions computed once and cached compactly (metrics.compact) ->
one pass per format. Scoring follows llama.cpp's perplexity tool: each chunk starts from an empty cache (BOS first
when the model wants one) and only its second half is scored, so every scored token sees at least ctx/2 tokens.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from planner.errors import InvalidInputError, NotFoundError, PlannerError
from planner.measure.quality import metrics
from planner.measure.reports import results_dir, text_sha256
from planner.native import NativeCrash
from planner.paths import user_cache_dir, user_path
from planner.measure.quality.text import CALIB_TEXT, GPU_CALIB_TEXT

REFERENCE_FORMAT = "F16"
SCHEME = "llama.cpp-perplexity-v1"  # how chunks are cut and scored; part of the reference cache key
DEFAULT_FORMATS = ("Q8_0", "Q5_K_M", "Q4_K_M", "Q3_K_M")
# Weight-only GPU formats eval measures through their dequantized weights (planner.measure.quality.dequant).
WEIGHT_ONLY_FORMATS = ("gptq-int4", "gptq-int4-g32", "gptq-int4-perchannel", "gptq-int8", "gptq-int8-perchannel",
                       "rtn-int4", "rtn-int4-g32", "rtn-int4-perchannel", "rtn-int8", "rtn-int8-perchannel", "awq-int4",
                       "nf4", "nf4-nodq", "fp8", "fp8-pertensor", "mlx-4bit", "mlx-8bit")


class Model(Protocol):
    """What the evaluation needs of a runtime (runtime.LlamaModel; tests pass fakes)."""

    n_vocab: int
    bos: int | None

    def tokenize(self, text: str) -> list[int]: ...

    def logits(self, tokens: list[int]) -> np.ndarray: ...

    def close(self) -> None: ...


OpenModel = Callable[[Path, int], Model]


class Progress(Protocol):
    """Where progress goes (a rich bar per format in the CLI)."""

    def stage(self, name: str, total: float) -> None: ...

    def advance(self, name: str, n: float = 1) -> None: ...


class _NoProgress:
    def stage(self, name: str, total: float) -> None:
        pass

    def advance(self, name: str, n: float = 1) -> None:
        pass


class _QuantizeBar:
    """The quantizer's byte progress shown as a stage in MB."""

    def __init__(self, progress: Progress, fmt: str):
        self.progress = progress
        self.name = f"quantize {fmt} (MB)"

    def start(self, total_bytes: int) -> None:
        self.progress.stage(self.name, total_bytes / 1e6)

    def advance(self, nbytes: int, tensor: str) -> None:
        self.progress.advance(self.name, nbytes / 1e6)


# ---------------------------------------------------------------------------------------------- results


@dataclass
class FormatResult:
    """One format's measured quality on the text."""

    format: str
    file: str
    file_bytes: int
    bits_per_weight: float
    tokens: int  # scored positions
    ppl: float
    ppl_err: float
    kld_mean: float
    kld_p99: float
    kld_median: float
    top1: float  # fraction of positions whose argmax equals the reference's
    reference: bool = False
    knee: bool = False
    method: str = ""  # weight-only GPU formats: how the weights were made; they run dequantized (F32 GGUF)
    calibration: str = ""  # GPTQ/AWQ: the text they were calibrated on ('name, sha256 <first 12 hex>')

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = None if not math.isfinite(v) else round(v, 6)
        return d


@dataclass
class EvalReport:
    """Everything `planner eval` measured, sorted by file size; `interrupted` when Ctrl-C cut it short."""

    source: str
    text: str  # the file or dataset name
    ctx: int
    chunks: int
    scored_tokens: int
    results: list[FormatResult] = field(default_factory=list)
    interrupted: bool = False
    created: str = ""
    crash: str = ""  # why the run stopped early (llama.cpp crashed); the results before it are kept
    warnings: list[str] = field(default_factory=list)
    text_sha256: str = ""  # of the text evaluated: `recommend --eval FILE` finds reports of that text by it
    model: dict[str, str] | None = None  # {id, name, key}: which network was measured (stored.describe_source)

    def sort_and_mark(self) -> None:
        """Sort by size and mark the knee of the size/KL-divergence curve (reference excluded)."""
        self.results.sort(key=lambda r: r.file_bytes)
        for r in self.results:
            r.knee = False
        cands = [r for r in self.results if not r.reference]
        k = metrics.knee([r.file_bytes for r in cands], [r.kld_mean for r in cands])
        if k is not None:
            cands[k].knee = True

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "text": self.text, "ctx": self.ctx, "chunks": self.chunks,
                "scored_tokens": self.scored_tokens, "interrupted": self.interrupted, "crash": self.crash,
                "created": self.created,
                "scheme": SCHEME, "warnings": self.warnings, "text_sha256": self.text_sha256, "model": self.model,
                "results": [r.as_dict() for r in self.results]}


# ---------------------------------------------------------------------------------------------- chunks


def make_chunks(tokens: Sequence[int], ctx: int, max_chunks: int | None, bos: int | None) -> list[list[int]]:
    """Cut tokens into ctx-sized chunks (at most max_chunks); BOS replaces each chunk's first token when wanted."""
    if ctx < 8:
        raise PlannerError(f"--ctx must be at least 8, got {ctx}")
    n = len(tokens) // ctx
    if max_chunks is not None:
        if max_chunks < 1:
            raise PlannerError(f"--chunks must be at least 1, got {max_chunks}")
        n = min(n, max_chunks)
    out = []
    for i in range(n):
        c = list(tokens[i * ctx:(i + 1) * ctx])
        if bos is not None:
            c[0] = bos
        out.append(c)
    return out


def scored_slice(ctx: int) -> slice:
    """Positions of a chunk whose logits are scored (each predicting the next token): the second half."""
    return slice(ctx // 2, ctx - 1)


def chunk_logp(model: Model, chunk: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities at a chunk's scored positions and the tokens they predict."""
    ctx = len(chunk)
    s = scored_slice(ctx)
    logits = model.logits(chunk)
    return metrics.log_softmax(logits[s]), np.asarray(chunk[s.start + 1:s.stop + 1], dtype=np.int32)


# ---------------------------------------------------------------------------------------------- caches


def fingerprint(source: Path) -> str:
    """A key for a model source: resolved path, size and mtime of its files (cheap; no hashing of weights), and the
    planner version (a newer quantizer re-makes the cached files)."""
    from planner import __version__

    source = user_path(source).resolve()
    files = [source] if source.is_file() else sorted(
        p for p in source.iterdir() if p.suffix in (".json", ".safetensors", ".gguf", ".model"))
    h = hashlib.sha256(f"{__version__}\0{source}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    return user_cache_dir() / "eval"


def _calibrated(cfg: Any) -> bool:
    """Whether a format's config is made from calibration activations of a text (GPTQ, AWQ; not imatrix GGUF,
    whose importance matrix eval computes once per source from the bundled text)."""
    from planner.quantize.config import AWQConfig, GPTQConfig

    return isinstance(cfg, (GPTQConfig, AWQConfig)) and cfg.calibrated


def calibration_label(name: str, text: str) -> str:
    """How a report names a calibration text: its name and the start of its SHA-256 (the cache key)."""
    from planner.measure.reports import text_sha256

    return f"{name}, sha256 {text_sha256(text)[:12]}"


def quantized(source: Path, fmt: str, *, cache: Path | None = None, progress: Progress | None = None,
              calib: tuple[str, str] | None = None) -> tuple[Path, dict[str, Any]]:
    """The GGUF file llama.cpp runs for `source` in `fmt`, made once and reused: (path, summary with file_bytes and
    bpw of the format itself). A GGUF format is quantized directly; a weight-only GPU format is written by planner
    quantize, dequantized and stored as an F32 GGUF (planner.measure.quality.dequant). calib: (name, text) that
    GPTQ/AWQ calibrate on (default: the bundled calibration text); the summary's 'calibration' names it."""
    from planner.outputs import OutputRefusedError, check_output, occupied
    from planner.quantize.config import GGUFConfig
    from planner.quantize.pipeline import quantize_model

    f, cfg = _check_measurable(fmt)
    calibrated = _calibrated(cfg)
    user_calib = calibrated and calib is not None
    if calibrated and calib is None:
        calib = (f"bundled {GPU_CALIB_TEXT.name}", GPU_CALIB_TEXT.read_text(encoding="utf-8"))
    label = calibration_label(*calib) if calibrated and calib is not None else ""
    d = (cache or cache_root()) / "models" / fingerprint(source)
    # a file per user calibration text: evaluating with --calib does not replace the bundled text's file
    stem = f"{f.id}-calib-{label.rsplit(' ', 1)[-1]}" if user_calib else f.id
    out = d / f"{stem}.gguf"
    meta = d / f"{stem}.json"
    if out.is_file() and meta.is_file():
        try:
            summary = json.loads(meta.read_text())
            from planner.measure.quality.dequant import WEIGHT_ONLY_CONFIGS, method

            same_method = not isinstance(cfg, WEIGHT_ONLY_CONFIGS) or (
                summary.get("method") == method(cfg) and summary.get("calibration", "") == label)
            if isinstance(summary, dict) and same_method and \
                    summary.get("run_file_bytes", summary.get("file_bytes")) == out.stat().st_size:
                return out, summary
        except (OSError, ValueError, RecursionError):  # damaged, over-long ints, too deep: rebuilt below
            pass
    if occupied(d) and not d.is_dir():
        raise OutputRefusedError(f"{d}: is not a directory, and planner eval keeps its quantized files there; move "
                                 "it away")
    d.mkdir(parents=True, exist_ok=True)
    # force replaces only a stale file of eval's own (a regular file at this path in its cache); a directory or a
    # symbolic link put there is refused, never deleted
    check_output(out, "file", force=True, hint=f"move it away ({d} is planner eval's cache)")
    bar = _QuantizeBar(progress, f.id) if progress else None
    if isinstance(cfg, GGUFConfig):
        im = calibration_imatrix(source, cache=cache, progress=progress) if cfg.imatrix else None
        res = quantize_model(source, f, out, force=True, progress=bar, imatrix=im)
        summary = {"format": f.id, "file_bytes": res.file_bytes, "bits_per_weight": res.bits_per_weight,
                   "warnings": res.warnings}
    else:
        from planner.measure.quality.dequant import quantize_dequantized

        summary = quantize_dequantized(source, f, cfg, out, d, progress=bar, calib=calib[1] if label and calib else None)
        if label:
            summary["calibration"] = label
    from planner.yamlio import atomic_write_text

    atomic_write_text(meta, json.dumps(summary))
    return out, summary


# The importance matrix of the '-imat' formats: the bundled calibration text (not the default evaluation text, so
# the imatrix quants are not scored on what they were calibrated on), cut into chunks as llama-imatrix does.
CALIB_CTX = 512  # llama-imatrix's default chunk (-c 512)
CALIB_CHUNKS = 4  # assumed: enough for a stable mean square per column on small models, ~30 s for SmolLM2-135M


def calibration_imatrix(source: Path, *, cache: Path | None = None, progress: Progress | None = None,
                        open_model: OpenModel | None = None) -> Any:
    """The importance matrix eval quantizes the '-imat' formats with: computed once per source (cached as llama.cpp's
    GGUF imatrix beside its quantized files) over CALIB_CHUNKS chunks of the bundled calibration text, tokenized by
    the reference GGUF in llama.cpp."""
    from planner.quantize.imatrix import compute_imatrix, read_imatrix, write_imatrix_gguf

    text = CALIB_TEXT.read_text(encoding="utf-8")
    d = (cache or cache_root()) / "models" / fingerprint(source)
    path = d / f"imatrix-{hashlib.sha256(text.encode()).hexdigest()[:12]}-{CALIB_CHUNKS}x{CALIB_CTX}.gguf"
    if path.is_file():
        try:
            return read_imatrix(path)
        except InvalidInputError:  # damaged: computed again below
            pass
    ref, _ = quantized(source, REFERENCE_FORMAT, cache=cache, progress=progress)
    model = (open_model or _open_llama)(ref, CALIB_CTX)
    try:
        chunks = make_chunks(model.tokenize(text), CALIB_CTX, CALIB_CHUNKS, model.bos)
    finally:
        model.close()
    if progress is not None:
        progress.stage("importance matrix", 1)
    im = compute_imatrix(source, chunks, name=CALIB_TEXT.name)
    if progress is not None:
        progress.advance("importance matrix")
    d.mkdir(parents=True, exist_ok=True)
    write_imatrix_gguf(im, path, CALIB_CTX)
    return im


def measurable(fmt: str) -> bool:
    """Whether `planner eval` can measure `fmt` (a GGUF type or a weight-only GPU format planner quantize writes)."""
    try:
        _check_measurable(fmt)
    except PlannerError:
        return False
    return True


# Families whose error is not all in the weights: a run of dequantized weights cannot measure them.
_ACTIVATION_QUANTIZED = {"w8a8": "it quantizes activations to INT8 as well (SmoothQuant W8A8)",
                         "bnb-int8": "LLM.int8() keeps outlier activation columns in fp16 and quantizes the rest of "
                                     "the activations to int8 at run time"}


def _check_measurable(fmt: str):  # type: ignore[no-untyped-def]
    """(format, quantize config) if planner eval can measure `fmt`, else a clear error saying why not."""
    from planner.formats import get_format
    from planner.measure.quality.dequant import WEIGHT_ONLY_CONFIGS
    from planner.quantize.config import FloatConfig, GGUFConfig, config_for

    f = get_format(fmt)
    why = _ACTIVATION_QUANTIZED.get(f.id) or _ACTIVATION_QUANTIZED.get(f.family)
    if why:
        raise InvalidInputError(f"planner eval cannot measure {f.id}: {why}; its error is not in the weights alone, and "
                           "eval runs dequantized weights in llama.cpp")
    try:
        cfg = config_for(f)
    except PlannerError:
        raise InvalidInputError(f"planner eval cannot measure {f.id} ({f.description}): planner quantize cannot write it, "
                           f"and eval measures the weights planner quantize writes; it measures GGUF types and "
                           f"{', '.join(WEIGHT_ONLY_FORMATS)}") from None
    if isinstance(cfg, FloatConfig):
        raise InvalidInputError(f"planner eval cannot measure {f.id}: it is an unquantized checkpoint; the {REFERENCE_FORMAT} "
                           "reference every report carries is its quality")
    if not isinstance(cfg, (GGUFConfig, *WEIGHT_ONLY_CONFIGS)):
        raise InvalidInputError(f"planner eval cannot measure {f.id}: no way to run it in llama.cpp")
    return f, cfg


def reference_key(source: Path, text: str, ctx: int, n_chunks: int, top_k: int) -> str:
    h = hashlib.sha256()
    for part in (fingerprint(source), REFERENCE_FORMAT, SCHEME, str(ctx), str(n_chunks), str(top_k)):
        h.update(part.encode() + b"\0")
    h.update(text.encode("utf-8"))
    return h.hexdigest()[:24]


@dataclass
class Reference:
    """The reference model's compact rows over all scored positions, and its NLL of each target."""

    rows: metrics.RefRows
    nll: np.ndarray
    tokens: list[int]  # the whole text's tokens (so a format pass need not tokenize again)

    def save(self, path: Path) -> None:
        """Write atomically as one .npz."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial.npz")
        arrays = {"logp": self.rows.logp, "targets": self.rows.targets, "nll": self.nll,
                  "tokens": np.asarray(self.tokens, dtype=np.int32)}
        if not self.rows.full:
            arrays.update(idx=self.rows.idx, rest=self.rows.rest)
        try:
            np.savez(tmp, **arrays)
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> "Reference | None":
        """Read a cached reference; None when missing or unreadable (it is then recomputed)."""
        try:
            with np.load(path) as z:
                rows = metrics.RefRows(z["logp"], z["targets"], z["idx"] if "idx" in z else None,
                                       z["rest"] if "rest" in z else None)
                return cls(rows, z["nll"], z["tokens"].tolist())
        except (OSError, KeyError, ValueError, EOFError):
            return None


def _concat(rows: list[metrics.RefRows]) -> metrics.RefRows:
    cat = np.concatenate
    if rows[0].full:
        return metrics.RefRows(cat([r.logp for r in rows]), cat([r.targets for r in rows]))
    return metrics.RefRows(cat([r.logp for r in rows]), cat([r.targets for r in rows]),
                           cat([r.idx for r in rows]), cat([r.rest for r in rows]))


# ---------------------------------------------------------------------------------------------- the evaluation


def _open_llama(path: Path, ctx: int) -> Model:
    from planner.measure.quality.runtime import LlamaModel

    return LlamaModel(path, ctx)


def evaluate(source: Path | str, formats: Sequence[str], text: str, *, text_name: str = "text", ctx: int = 512,
             max_chunks: int | None = None, top_k: int = metrics.DEFAULT_TOP_K, open_model: OpenModel | None = None,
             progress: Progress | None = None, cache: Path | None = None,
             on_result: Callable[[FormatResult], None] | None = None,
             flags: tuple[str, str] = ("--ctx", "--chunks"), calib: tuple[str, str] | None = None) -> EvalReport:
    """Measure each format's quality against the 16-bit reference on `text`. Ctrl-C returns the report with the
    formats finished so far and `interrupted` set. `flags` names the context and chunk options in error messages
    (recommend --eval calls them --eval-ctx and --eval-chunks). calib: (name, text) GPTQ/AWQ formats calibrate on
    instead of the bundled calibration text."""
    from planner.formats import get_format

    source = user_path(source)
    if not source.exists():
        raise InvalidInputError(f"{source}: no such file or directory")
    try:
        fmts = list(dict.fromkeys(get_format(f).id for f in formats))
    except NotFoundError as exc:  # a format eval cannot measure is bad input (exit 2), like those refused below
        raise InvalidInputError(f"{exc}; planner eval measures GGUF types and {', '.join(WEIGHT_ONLY_FORMATS)}") from None
    if not fmts:
        raise PlannerError("no formats to evaluate; pass --formats Q8_0,Q4_K_M,...")
    for f in fmts:  # refuse what llama.cpp cannot run before spending minutes on the others
        _check_measurable(f)
    if calib is not None and not any(_calibrated(_check_measurable(f)[1]) for f in fmts):
        raise InvalidInputError(f"--calib: none of the formats ({', '.join(fmts)}) is calibrated on a text; it is "
                                "used by gptq-int4, gptq-int8 and awq-int4")
    if ctx < 8:
        raise PlannerError(f"{flags[0]} must be at least 8, got {ctx}")
    if max_chunks is not None and max_chunks < 1:
        raise PlannerError(f"{flags[1]} must be at least 1, got {max_chunks}")
    check_tokenizer(source)  # before minutes of quantizing: a GGUF without a vocabulary cannot tokenize the text
    open_model = open_model or _open_llama
    progress = progress or _NoProgress()
    cache = cache or cache_root()
    report = EvalReport(source=str(source), text=text_name, ctx=ctx, chunks=0, scored_tokens=0,
                        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), text_sha256=text_sha256(text),
                        model=_source_model(source))
    try:
        ref_path, ref_summary = quantized(source, REFERENCE_FORMAT, cache=cache, progress=progress)
        report.warnings.extend(ref_summary.get("warnings", []))
        ref = _reference(ref_path, source, text, ctx, max_chunks, top_k, open_model, progress, cache, flags[0])
        report.chunks = len(ref.rows) // (scored_slice(ctx).stop - scored_slice(ctx).start)
        report.scored_tokens = len(ref.rows)
        ref_ppl = metrics.perplexity(ref.nll)
        report.results.append(FormatResult(
            REFERENCE_FORMAT, str(ref_path), int(ref_summary["file_bytes"]), float(ref_summary["bits_per_weight"]),
            len(ref.rows), ref_ppl, metrics.perplexity_error(ref.nll), 0.0, 0.0, 0.0, 1.0, reference=True))
        for f in fmts:
            if f == REFERENCE_FORMAT:
                continue
            path, summary = quantized(source, f, cache=cache, progress=progress, calib=calib)
            r = _measure(f, path, summary, ref, ctx, report.chunks, open_model, progress)
            report.results.append(r)
            if on_result is not None:
                on_result(r)
    except KeyboardInterrupt:
        report.interrupted = True
    except NativeCrash as exc:
        if not report.results:  # nothing measured: the crash is the whole answer
            raise
        report.crash = str(exc)
    report.sort_and_mark()
    return report


def check_tokenizer(source: Path) -> None:
    """Refuse a source whose GGUF files would have no vocabulary: eval tokenizes the text with the model."""
    if source.is_dir():
        from planner.quantize.tokenizer import missing_tokenizer

        why = missing_tokenizer(source)
        if why:
            raise InvalidInputError(f"eval needs a tokenizer: {why}")
        return
    if source.suffix.lower() != ".gguf":  # not a source eval reads: the quantizer names what it expects
        return
    from planner.models.readers.gguf_header import read_gguf_header

    meta = read_gguf_header(source).metadata
    kind = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(kind, str) or kind in ("no_vocab", "none") or not isinstance(tokens, list) or not tokens:
        raise InvalidInputError(f"eval needs a tokenizer: {source} carries no vocabulary (tokenizer.ggml.model is "
                                f"{str(kind)[:40]!r}); evaluate the model directory with its tokenizer.json, or a "
                                "GGUF that has one")


def _source_model(source: Path) -> dict[str, str] | None:
    """Which model the source holds, so recommend and the TUI can match the report to a profile; None when its
    headers do not describe one (the evaluation itself still runs)."""
    from planner.measure.reports import describe_source

    try:
        return describe_source(source)
    except PlannerError:
        return None


def _reference(path: Path, source: Path, text: str, ctx: int, max_chunks: int | None, top_k: int,
               open_model: OpenModel, progress: Progress, cache: Path, ctx_flag: str = "--ctx") -> Reference:
    """The reference rows: from the cache, or one pass of the 16-bit model (then cached)."""
    model = open_model(path, ctx)
    try:
        tokens = model.tokenize(text)
        chunks = make_chunks(tokens, ctx, max_chunks, model.bos)
        if not chunks:
            raise InvalidInputError(f"the text has {len(tokens)} tokens, fewer than one chunk of {ctx_flag} {ctx}; "
                                    f"give a longer text or a smaller {ctx_flag}")
        key = reference_key(source, text, ctx, len(chunks), top_k)
        cpath = cache / "reference" / f"{key}.npz"
        cached = Reference.load(cpath)
        if cached is not None:
            return cached
        rows, nll = [], []
        progress.stage(f"{REFERENCE_FORMAT} (reference)", len(chunks))
        for c in chunks:
            lp, targets = chunk_logp(model, c)
            nll.append(metrics.target_nll(lp, targets))
            rows.append(metrics.compact(lp, targets, top_k))
            progress.advance(f"{REFERENCE_FORMAT} (reference)")
        ref = Reference(_concat(rows), np.concatenate(nll), list(tokens))
        ref.save(cpath)
        return ref
    finally:
        model.close()


def _measure(fmt: str, path: Path, summary: dict[str, Any], ref: Reference, ctx: int, n_chunks: int,
             open_model: OpenModel, progress: Progress) -> FormatResult:
    """One pass of a format over the chunks, against the reference rows."""
    model = open_model(path, ctx)
    try:
        chunks = make_chunks(ref.tokens, ctx, n_chunks, model.bos)
        progress.stage(fmt, len(chunks))
        nll, kl, agree = [], [], []
        per = scored_slice(ctx).stop - scored_slice(ctx).start
        for i, c in enumerate(chunks):
            lp, targets = chunk_logp(model, c)
            rows = _slice_rows(ref.rows, i * per, (i + 1) * per)
            nll.append(metrics.target_nll(lp, targets))
            kl.append(metrics.kl_per_position(rows, lp))
            agree.append(lp.argmax(axis=1) == rows.top1)
            progress.advance(fmt)
    finally:
        model.close()
    nll_a, kl_a = np.concatenate(nll), np.concatenate(kl)
    return FormatResult(fmt, str(path), int(summary["file_bytes"]), float(summary["bits_per_weight"]), int(nll_a.size),
                        metrics.perplexity(nll_a), metrics.perplexity_error(nll_a), float(kl_a.mean()),
                        float(np.percentile(kl_a, 99)), float(np.median(kl_a)), float(np.concatenate(agree).mean()),
                        method=str(summary.get("method", "")), calibration=str(summary.get("calibration", "")))


def _slice_rows(rows: metrics.RefRows, a: int, b: int) -> metrics.RefRows:
    if rows.full:
        return metrics.RefRows(rows.logp[a:b], rows.targets[a:b])
    return metrics.RefRows(rows.logp[a:b], rows.targets[a:b], rows.idx[a:b], rows.rest[a:b])


# ---------------------------------------------------------------------------------------------- storage


def save_report(report: EvalReport, directory: Path | None = None) -> Path:
    """Store the report as JSON under user_data_dir()/eval/ (atomic); returns the path."""
    from planner.yamlio import atomic_write_text

    d = directory or results_dir()
    name = Path(report.source.rstrip("/")).name.replace(".gguf", "") or "model"
    stamp = (report.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())).replace(":", "")
    path = d / f"{name}-{stamp}.json"
    n = 2
    while path.exists():  # two evaluations in one second (recommend --eval measures in rounds): keep both
        path = d / f"{name}-{stamp}-{n}.json"
        n += 1
    atomic_write_text(path, json.dumps(report.as_dict(), indent=2) + "\n")
    return path
