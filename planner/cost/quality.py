"""Expected quality loss of a format: KL divergence and perplexity change versus 16-bit weights, with an interval.

Per family, not across families. The published measurements in planner/data/quality_published.csv (one source per
row; planner/data/README.md) are fitted family by family: ln(PPL increase %) = a + b * bits (+ c * log2(group size)
where the family's rows vary the group), where bits are the format's *bits per quantized linear weight* on the model
(its per-tensor assignments; 16-bit embeddings, heads and norms never count). The slope b comes from the family's
own rows where they span at least MIN_BITS_SPAN bits, else from the GGUF K-quant family (stated in `note`). There is
no model-size term: the rows disagree on its direction (Llama-2-70B loses less than 7B, Llama-3-70B more than 8B).
Families without rows borrow a named family's fit (EXTRAPOLATE) and say `extrapolated`, with a wider interval.
Each source weighs the same within its family however many rows it published. A model with published rows in the
family keeps its own mean residual (shrunk by MODEL_SHRINK; basis `published`), and a point release without rows takes
its same-size predecessor's (Llama-3.1-8B from Llama-3-8B; `sibling`).
Each row carries its family's usual head (USUAL_HEAD_BITS). A format whose head (output.weight / lm_head, or the
tied token embedding) is stored at other bits is adjusted by head_factor: the head counts as HEAD_WEIGHT x its share of
the quantized parameters, its loss read off the same family curve at the head's bits.

KLD is converted from the perplexity increase by a power law fitted to the rows that carry both (llama.cpp's
Llama-3-8B scoreboard), computed at load. A quantized KV cache adds its own loss (KV_QUALITY_KLD).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from planner.formats import EMBED_OUTPUT_Q8_VARIANTS, FORMATS, GroupQuant, WeightFormat, gguf_base_type

if TYPE_CHECKING:
    from planner.cost.model import ModelCost

# Assumed extra loss of a quantized KV cache (llama.cpp discussions: q8_0 KV is near-lossless, q4_0 is not).
KV_QUALITY_KLD = {"q8_0": 0.0005, "q8": 0.0005, "fp8_e4m3": 0.0005, "fp8_e5m2": 0.001, "fp8": 0.0005, "int8": 0.0005,
                  "q5_1": 0.002, "q5_0": 0.002, "q6": 0.001, "q4_1": 0.008, "q4_0": 0.01, "iq4_nl": 0.008, "q4": 0.004}
SOURCE_KEY_CHARS = 45  # rows of one source (one paper, README or PR) share this much of their `source` text
MODEL_SHRINK = 1.0  # assumed: a model's own mean residual counts n / (n + 1) (partial pooling toward the family line)
MIN_BITS_SPAN = 0.75  # assumed: a family's own bits slope needs rows at least this far apart in bits
MIN_ROWS_FOR_SPREAD = 4  # assumed: fewer fitted rows than this give no residual spread; DEFAULT_SPREAD is used
DEFAULT_SPREAD = math.log(2.0)  # assumed: x/÷2 when a family has too few rows to measure its spread
EXTRAPOLATED_WIDEN = math.log(2.0)  # assumed: an extrapolated family's interval is a further x/÷2 wider
BITS_MARGIN = 0.5  # assumed: a prediction more than this outside the family's measured bits is extrapolated
# Models trained on many tokens per parameter lose more to the same quantization (arXiv 2404.14047, "How Good Are
# Low-bit Quantized LLaMA3 Models?"; the rows show it: llama.cpp's Llama-3-8B/70B losses are ~3x Llama-1/2's at the
# same type). Assumed grouping by release (>= ~9T training tokens); the factor itself is fitted (GENERATION_ITERS).
HEAVY_TRAINED = ("llama-3", "qwen2", "qwen3", "gemma-2", "gemma-3", "phi-3", "phi-4", "gpt-oss", "deepseek", "mistral-small",
                 "mistral-nemo", "mistral-large", "command-r", "smollm2")
GENERATION_ITERS = 20  # alternating least squares: family terms, then the shared heavily-trained-model term
PER_CHANNEL_GROUP = 4096  # a per-channel scale spans a whole row: taken as a group of 4096 (Llama-7B/8B rows)
# Families without usable rows, and the fitted family each borrows (the nearest quantizer by mechanism):
EXTRAPOLATE = {
    "exl2": "gptq",  # EXL2 is GPTQ's error-compensated rounding with mixed bit widths per layer
    "mxfp4": "bnb-fp4",  # 4-bit E2M1 floats with a block scale (g32, power-of-two scale)
    "nvfp4": "bnb-fp4",  # 4-bit E2M1 floats with a block scale (g16, FP8 scale)
    "bnb-int8": "int8-wo",  # LLM.int8: per-row absmax int8 (+ fp16 outlier columns): no worse than int8 weight-only
    "gptq-8bit": "int8-wo",  # GPTQ rows are all 3-4 bit; at 8 bits the int8 weight-only rows are the nearest
    # used when a family's own rows are missing (e.g. leave-one-source-out in benchmarks/quality.py):
    "gguf-imatrix": "gguf", "gguf-legacy": "gguf", "gguf": "gguf-legacy",
    "mlx": "rtn", "hqq": "rtn", "bnb-nf4": "rtn", "bnb-fp4": "rtn",  # round-to-nearest group quantizers
    "awq": "gptq", "rtn": "gptq", "gptq": "awq",  # calibrated int4
    "int8-wo": "gguf-legacy",  # Q8_0 is round-to-nearest int8 (g32)
    "fp8-wo": "fp8-w8a8", "fp8-w8a8": "fp8-wo", "int8-w8a8": "fp8-w8a8",
}
# The head (output.weight / lm_head; the token embedding when tied) each family's published rows were measured with,
# in bits per weight. None: quantized like the linear weights (the format's own head is the usual one).
GPU_HEAD_BITS = 16.0  # GPTQ/AWQ/bnb/FP8/INT8/HQQ/RTN checkpoints keep lm_head in 16-bit (AutoGPTQ/AutoAWQ/llm-compressor
# skip lm_head by default); assumed for torchao's rows too, though its int4 filter may include the head (not modelled)
USUAL_HEAD_BITS: dict[str, float | None] = {
    "exl2": 6 + 32 / 128,  # exllamav2 convert.py -hb default 6 (+ its scales, as planner.formats._exl2 counts them)
    "mlx": None,  # mlx_lm.convert quantizes nn.Embedding and lm_head with the linears (the PR #202 rows)
}
# GGUF families: the head of the file type's own llama.cpp mix on the model (planner.formats.gguf_mix: output.weight
# Q6_K, Q8_0 in a Q8_0 file; a tied token_embd like output), i.e. the head of the base file type (Q4_K_L -> Q4_K_M).
HEAD_WEIGHT = 1.0  # assumed: per weight, a head error costs as much as an average quantized linear weight's at the
# same bits (no published pair of rows differing only in head type in the reference tables; the interval widens by
# the whole adjustment either way)
# Published formats' families (bnb formats split by their encoding).
_GGUF_LEGACY = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"}
LABELS = ((0.002, "lossless"), (0.012, "negligible"), (0.04, "small"), (0.1, "noticeable"), (0.35, "large"))
BASES = ("measured", "published", "published-family", "extrapolated")


def label_for(kld: float) -> str:
    """A word for a KL divergence: lossless / negligible / small / noticeable / large / severe."""
    for limit, word in LABELS:
        if kld <= limit:
            return word
    return "severe"


@dataclass(frozen=True)
class Quality:
    """Expected loss of a format on a model, with a 10-90 % interval and how it was obtained."""

    kld: float  # mean KL divergence vs 16-bit, nats/token
    ppl_delta_pct: float  # perplexity increase, percent
    basis: str  # one of BASES
    source: str = "estimated"  # 'estimated' (this model) or 'measured' (planner eval on the model itself)
    kld_low: float | None = None
    kld_high: float | None = None
    ppl_low: float | None = None
    ppl_high: float | None = None
    note: str = ""  # what the number rests on, in words
    release: str = ""  # what the model's quantized release means for this format (planner.cost.release); '' for none

    @property
    def label(self) -> str:
        """The word for the loss: the central KLD's, except an extrapolated estimate takes its interval's upper end."""
        return label_for(self.kld_high if self.basis == "extrapolated" and self.kld_high is not None else self.kld)

    def as_dict(self) -> dict:
        """JSON form."""
        lo = self.kld if self.kld_low is None else self.kld_low
        hi = self.kld if self.kld_high is None else self.kld_high
        plo = self.ppl_delta_pct if self.ppl_low is None else self.ppl_low
        phi = self.ppl_delta_pct if self.ppl_high is None else self.ppl_high
        return {"kld": round(self.kld, 5), "kld_low": round(lo, 5), "kld_high": round(hi, 5),
                "ppl_delta_pct": round(self.ppl_delta_pct, 3), "ppl_delta_pct_low": round(plo, 3),
                "ppl_delta_pct_high": round(phi, 3), "label": self.label, "basis": self.basis, "note": self.note,
                "source": self.source, **({"release": self.release} if self.release else {})}


def ranking_kld(q: dict) -> float:
    """The KLD ranking charges: a measurement as is, an estimate at its interval's upper end."""
    if q.get("source") == "measured":
        return float(q.get("kld", 0.0))
    return float(q.get("kld_high", q.get("kld", 0.0)))


def quality_text(q: dict | None) -> str:
    """A plan's quality as a table cell: '0.0312 small', '0.0312 small (measured)' for planner eval's measurement,
    '-' for none."""
    if not q:
        return "-"
    return f"{q.get('kld', 0):.4f} {q.get('label', '')}" + (" (measured)" if q.get("source") == "measured" else "")


# ---- the published rows and the per-family fit


@dataclass(frozen=True)
class Row:
    """One published measurement usable for fitting."""

    family: str
    bits: float
    group: int  # 0 = none / per-channel
    model: str
    ppl_pct: float
    kld: float | None
    source: str


def data_path() -> Path:
    """planner/data/quality_published.csv."""
    return Path(__file__).parent.parent / "data" / "quality_published.csv"


@lru_cache(maxsize=1)
def published_rows() -> list[dict[str, str]]:
    """Every row of the published-quality table (fitted or not)."""
    with data_path().open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def fit_rows(rows: list[dict[str, str]] | None = None) -> list[Row]:
    """The rows marked fit=yes, with bits and a positive perplexity increase."""
    out = []
    for r in published_rows() if rows is None else rows:
        if r["fit"] != "yes" or not r["bits"] or not r["ppl_delta_pct"]:
            continue
        out.append(Row(r["family"], float(r["bits"]), int(r["group_size"] or 0), r["model"], float(r["ppl_delta_pct"]),
                       float(r["value"]) if r["metric"] == "kld" else None, r["source"]))
    return out


def _solve(xs: list[list[float]], ys: list[float], ws: list[float] | None = None) -> list[float]:
    """(Weighted) least squares by the normal equations (a few unknowns; Gaussian elimination with partial pivoting)."""
    n = len(xs[0])
    ws = ws or [1.0] * len(xs)
    a = [[sum(w * x[i] * x[j] for x, w in zip(xs, ws)) for j in range(n)]
         + [sum(w * x[i] * y for x, y, w in zip(xs, ys, ws))] for i in range(n)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(a[r][c]))
        a[c], a[p] = a[p], a[c]
        if abs(a[c][c]) < 1e-12:
            raise ValueError("singular fit")
        for r in range(n):
            if r != c:
                f = a[r][c] / a[c][c]
                a[r] = [u - f * v for u, v in zip(a[r], a[c])]
    return [a[i][n] / a[i][i] for i in range(n)]


def _log2_group(g: int) -> float:
    return math.log2(g if g > 0 else PER_CHANNEL_GROUP)


@dataclass(frozen=True)
class FamilyFit:
    """ln(ppl%) = a + b * bits + c * log2(group); residual 10/90 % quantiles; the measured bits range."""

    family: str
    a: float
    b: float
    c: float
    g: float  # ln factor of a heavily trained model (shared by all families)
    lo: float  # 10 % residual quantile (ln)
    hi: float  # 90 % residual quantile (ln)
    bits_min: float
    bits_max: float
    n: int
    own_slope: bool
    models: frozenset[str]
    # model_key -> its rows' mean residual in this family, shrunk toward 0 (MODEL_SHRINK): a model with published rows
    # keeps what its own measurements say about it (e.g. Llama-3-8B's K-quants lose less than the family line)
    offsets: tuple[tuple[str, float], ...] = ()

    def offset(self, model: str) -> float:
        """The model's own published residual in this family (0 without rows)."""
        return dict(self.offsets).get(model, 0.0)

    def ln_ppl(self, bits: float, group: int, model: str) -> float:
        """Predicted ln(PPL increase %) for a model_key."""
        return self.a + self.b * bits + (self.c * _log2_group(group) if self.c else 0.0) + self.g * heavy(model)


def _quantile(v: list[float], q: float) -> float:
    s = sorted(v)
    k = (len(s) - 1) * q
    i = int(k)
    return s[i] + (s[min(i + 1, len(s) - 1)] - s[i]) * (k - i)


def heavy(model: str) -> int:
    """1 for a model_key of a heavily trained release (HEAVY_TRAINED), else 0."""
    return int(model.startswith(HEAVY_TRAINED))


def fit_family(rows: list[Row], slope: float | None, g: float = 0.0) -> FamilyFit:
    """Fit one family's rows (all of the same family) given the shared term `g`; `slope` is the fallback bits slope."""
    bits = [r.bits for r in rows]
    groups = {r.group for r in rows}
    ys = [math.log(r.ppl_pct) - g * heavy(model_key(r.model)) for r in rows]
    own = max(bits) - min(bits) >= MIN_BITS_SPAN
    use_group = len(groups) > 1
    xs = []
    for r in rows:
        x = [1.0]
        x += [r.bits] if own else []
        x += [_log2_group(r.group)] if use_group else []
        xs.append(x)
    # each source weighs the same in its family, however many rows it published (one lab's setup, e.g. its
    # perplexity context or its AWQ implementation, must not set a family's level alone)
    per_source: dict[str, int] = {}
    for r in rows:
        per_source[r.source[:SOURCE_KEY_CHARS]] = per_source.get(r.source[:SOURCE_KEY_CHARS], 0) + 1
    ws = [1.0 / per_source[r.source[:SOURCE_KEY_CHARS]] for r in rows]
    y_fit = ys if own else [y - (slope or 0.0) * r.bits for y, r in zip(ys, rows)]
    try:
        coef = _solve(xs, y_fit, ws)
    except ValueError:  # e.g. group and bits collinear: drop the group term
        use_group = False
        xs = [x[:2] if own else x[:1] for x in xs]
        coef = _solve(xs, y_fit, ws)
    a = coef[0]
    b = coef[1] if own else (slope or 0.0)
    c = coef[-1] if use_group else 0.0
    fit = FamilyFit(rows[0].family, a, b, c, g, 0.0, 0.0, min(bits), max(bits), len(rows), own,
                    frozenset(model_key(r.model) for r in rows))
    res = [math.log(r.ppl_pct) - fit.ln_ppl(r.bits, r.group, model_key(r.model)) for r in rows]
    if len(rows) >= MIN_ROWS_FOR_SPREAD:
        lo, hi = min(_quantile(res, 0.1), -0.1), max(_quantile(res, 0.9), 0.1)
    else:
        lo, hi = -DEFAULT_SPREAD, DEFAULT_SPREAD
    by_model: dict[str, list[float]] = {}
    for r, e in zip(rows, res):
        by_model.setdefault(model_key(r.model), []).append(e)
    offsets = tuple(sorted((m, sum(v) / (len(v) + MODEL_SHRINK)) for m, v in by_model.items()))
    return FamilyFit(fit.family, a, b, c, g, lo, hi, fit.bits_min, fit.bits_max, fit.n, own, fit.models, offsets)


def fit_all(rows: list[Row]) -> dict[str, FamilyFit]:
    """Per-family fits plus the shared heavily-trained-model term (alternating least squares); the GGUF K-quant
    family's slope is the fallback for families whose rows span no bits."""
    by: dict[str, list[Row]] = {}
    for r in rows:
        by.setdefault(r.family, []).append(r)
    g = 0.0
    fits: dict[str, FamilyFit] = {}
    for _ in range(GENERATION_ITERS):
        fits = {}
        if "gguf" in by:
            fits["gguf"] = fit_family(by["gguf"], None, g)
        slope = fits["gguf"].b if "gguf" in fits else -1.0
        for fam, rs in by.items():
            if fam not in fits:
                fits[fam] = fit_family(rs, slope, g)
        # g: the mean residual of heavily trained models' rows minus the others', within families that have both
        num = den = 0.0
        for fam, rs in by.items():
            hv = [math.log(r.ppl_pct) - fits[fam].ln_ppl(r.bits, r.group, "") for r in rs if heavy(model_key(r.model))]
            lt = [math.log(r.ppl_pct) - fits[fam].ln_ppl(r.bits, r.group, "") for r in rs if not heavy(model_key(r.model))]
            if hv and lt:
                w = len(hv) * len(lt) / (len(hv) + len(lt))
                num += w * (sum(hv) / len(hv) - sum(lt) / len(lt))
                den += w
        g_new = num / den if den else 0.0
        if abs(g_new - g) < 1e-6:
            break
        g = g_new
    return fits


@lru_cache(maxsize=1)
def _fits() -> dict[str, FamilyFit]:
    """The fits of the published rows, kept in the user cache: fitting them anew costs a single-model `planner
    recommend` ~20-30 ms on every run. Keyed by the planner version and the bytes of this module and the table."""
    import json
    import os

    from planner import __version__
    from planner.cache import checksum
    from planner.paths import user_cache_dir

    use_cache = os.environ.get("PLANNER_NO_CACHE") != "1"
    path = None
    if use_cache:
        try:
            material = __version__.encode() + Path(__file__).read_bytes() + data_path().read_bytes()
            path = user_cache_dir() / f"quality-fits-{checksum(material)}.json"
            return {k: fit_from_json(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
        except (OSError, ValueError, TypeError, KeyError):
            pass  # no cache yet, or a file that is not one: fit and (re)write it
    fits = fit_all(fit_rows())
    if path is not None:
        from planner.yamlio import atomic_write_text

        try:
            atomic_write_text(path, json.dumps({k: fit_to_json(v) for k, v in fits.items()}), durable=False)
        except OSError:
            pass  # a read-only home must not stop planning
    return fits


def fit_to_json(f: FamilyFit) -> dict:
    """A FamilyFit as plain JSON (floats round-trip exactly)."""
    return {**f.__dict__, "models": sorted(f.models), "offsets": [list(o) for o in f.offsets]}


def fit_from_json(d: dict) -> FamilyFit:
    """fit_to_json's inverse."""
    return FamilyFit(**{**d, "models": frozenset(d["models"]), "offsets": tuple((m, float(v)) for m, v in d["offsets"])})


def kld_relation(rows: list[Row]) -> tuple[float, float]:
    """(alpha, beta) of ln(kld) = alpha + beta * ln(ppl%), fitted to the rows that carry both."""
    both = [r for r in rows if r.kld and r.kld > 0 and r.ppl_pct > 0]
    if len(both) < 3:
        return math.log(0.01), 1.0  # assumed: KLD 0.01 per 1 % of perplexity (the scoreboard's rough ratio)
    a, b = _solve([[1.0, math.log(r.ppl_pct)] for r in both], [math.log(r.kld) for r in both])
    return a, b


@lru_cache(maxsize=1)
def _relation() -> tuple[float, float]:
    return kld_relation(fit_rows())


def kld_from_ppl(ppl_pct: float) -> float:
    """KLD for a perplexity increase (power law fitted to llama.cpp's scoreboard rows that carry both)."""
    a, b = _relation()
    return math.exp(a + b * math.log(max(ppl_pct, 1e-6)))


def model_key(name: str) -> str:
    """A published model name or a profile id reduced to comparable form: 'Meta-Llama-3-8B (base)' -> 'llama-3-8b'."""
    s = name.lower().split("(")[0].strip()
    s = s.replace("meta-", "").replace("llama-v1", "llama-1").replace(" ", "-")
    for tail in ("-instruct", "-chat", "-base", "-hf"):
        s = s.split(tail)[0]
    return s.strip("-")


# ---- a format on a model


def quality_family(fmt: WeightFormat, group: int, bits: float) -> str:
    """The published family a planner format belongs to."""
    fam = fmt.family
    if fam == "gguf":
        base = gguf_base_type(fmt.id.removesuffix("-as-stored")) or fmt.id
        if base in _GGUF_LEGACY:
            return "gguf-legacy"
        return "gguf-imatrix" if fmt.needs_imatrix or fmt.imatrix or base.startswith("IQ") else "gguf"
    if fam == "bnb":
        return "bnb-int8" if bits > 6 else ("bnb-fp4" if "fp4" in fmt.id else "bnb-nf4")
    if fam == "gptq" and bits > 6:
        return "gptq-8bit"
    if fam == "fp8":
        return "fp8-w8a8"  # served with FP8 activations on FP8 hardware (vLLM, TensorRT-LLM)
    if fam == "w8a8":
        return "int8-w8a8"
    if fam == "w8a16":
        return "int8-wo"
    return fam


def linear_bits(fmt: WeightFormat, mc: ModelCost) -> tuple[float, int, float]:
    """(bits per quantized linear weight, its main group size (0: per-channel/none), head bits) of `fmt` on the model."""
    bits, group, head_bits, _ = _linear_and_head(fmt, mc)
    return bits, group, head_bits


def _linear_and_head(fmt: WeightFormat, mc: ModelCost) -> tuple[float, int, float, float]:
    """linear_bits plus the head's parameters as a share of the quantized linear parameters (gathered with the
    model's layout in `fmt`, in the same pass over its tensors, and kept with it in the layout cache)."""
    lay = mc.layout(fmt)
    return lay.linear_bits, lay.linear_group, lay.head_bits, lay.head_share


def usual_head_bits(fmt: WeightFormat, family: str, mc: ModelCost, head_bits: float) -> float:
    """The head bits `family`'s published rows carry, on this model (USUAL_HEAD_BITS; GGUF: the base file type's)."""
    if family.startswith("gguf"):
        base = EMBED_OUTPUT_Q8_VARIANTS.get(fmt.id)
        return _linear_and_head(FORMATS[base], mc)[2] if base in FORMATS else head_bits
    usual = USUAL_HEAD_BITS.get(family, GPU_HEAD_BITS)
    return head_bits if usual is None else usual


def head_factor(fits: dict[str, FamilyFit], family: str, bits: float, group: int, model: str, head_bits: float,
                usual: float, share: float) -> float:
    """Loss multiplier for a head at `head_bits` instead of the family's `usual`: (L(b) + s L(h)) / (L(b) + s L(h0)),
    L the family curve, s = HEAD_WEIGHT x head parameters / quantized linear parameters; 16-bit loses nothing."""
    fit = fits.get(family) or fits.get(EXTRAPOLATE.get(family, ""))
    if fit is None or head_bits == usual:
        return 1.0

    def loss(b: float) -> float:
        return 0.0 if b >= 15 else math.exp(fit.ln_ppl(b, group, model))

    s = HEAD_WEIGHT * share
    return (loss(bits) + s * loss(head_bits)) / (loss(bits) + s * loss(usual))


def sibling(model: str) -> str:
    """The same-size predecessor of a point release: 'llama-3.1-8b' -> 'llama-3-8b', 'qwen2.5-7b' -> 'qwen2-7b'
    ('' when the name has no minor version). A point release keeps its predecessor's architecture and tokenizer."""
    m = re.match(r"^(.*?\d+)\.\d+(-.*)$", model)
    return f"{m.group(1)}{m.group(2)}" if m else ""


def predict(fits: dict[str, FamilyFit], family: str, bits: float, group: int, model: str) -> tuple[float, float, float, str, str]:
    """(ppl%, ppl% low, ppl% high, basis, note) for a family at `bits`/`group` on `model` (a model_key)."""
    fit = fits.get(family)
    basis = "published-family"
    via = family
    if fit is None:  # no rows: the named nearest family, else the fitted family nearest in measured bits
        via = EXTRAPOLATE.get(family, "")
        if via not in fits:
            via = min(fits, key=lambda f: min(abs(bits - fits[f].bits_min), abs(bits - fits[f].bits_max)))
        fit, basis = fits[via], "extrapolated"
    elif not fit.bits_min - BITS_MARGIN <= bits <= fit.bits_max + BITS_MARGIN:
        basis = "extrapolated"  # the family's own fit, outside the bits its rows cover
    elif model in fit.models:
        basis = "published"
    sib = sibling(model) if basis == "published-family" else ""
    own = fit.offset(model) if basis == "published" else (fit.offset(sib) if sib in fit.models else 0.0)
    ln = fit.ln_ppl(bits, group, model) + own
    widen = EXTRAPOLATED_WIDEN if basis == "extrapolated" else 0.0
    slope = "own bits slope" if fit.own_slope else "GGUF K-quant bits slope"
    span = f"{fit.bits_min:.2f}-{fit.bits_max:.2f}"
    note = (f"{family} family fit ({fit.n} published rows at {span} bits, {slope}) at {bits:.2f} bits per quantized "
            f"linear weight" + (" (outside the measured bits: extrapolated)" if basis == "extrapolated" else "")
            if via == family else
            f"no published {family} rows here: extrapolated from the {via} fit ({fit.n} rows) at {bits:.2f} bits")
    if sib in fit.models:
        note += f", with the published residual of its predecessor {sib} (same architecture and size)"
    return math.exp(ln), math.exp(ln + fit.lo - widen), math.exp(ln + fit.hi + widen), basis, note


def expected_quality(fmt: WeightFormat, mc: ModelCost, native_dtype: str = "bfloat16") -> Quality:
    """Expected loss of `fmt` on the model of `mc`, from the per-family fit of published measurements."""
    if fmt.family == "float" or (fmt.family == "gguf" and fmt.id in ("F16", "BF16", "F32")):
        return Quality(0.0, 0.0, "published", note="16/32-bit weights: no quantization loss")
    if fmt.family == "mxfp4" and native_dtype == "mxfp4":
        return Quality(0.0, 0.0, "published", note="the model was released in MXFP4 (quantization-aware trained)")
    if fmt.family == "fp8" and native_dtype == "float8_e4m3":
        return Quality(0.0, 0.0, "published", note="the model was released in FP8 (trained with FP8 weights)")
    bits, group, head_bits, share = _linear_and_head(fmt, mc)
    if bits >= 15:
        return Quality(0.0, 0.0, "published", note=f"{fmt.id} leaves this model's linear weights in 16-bit")
    family = quality_family(fmt, group, bits)
    key = model_key(mc.spec.id)
    ppl, plo, phi, basis, note = predict(_fits(), family, bits, group, key)
    note += f"; head {head_bits:.1f} bits"
    usual = usual_head_bits(fmt, family, mc, head_bits)
    if head_bits != usual:  # the interval keeps its ends and widens by the whole adjustment (HEAD_WEIGHT is assumed)
        f = head_factor(_fits(), family, bits, group, key, head_bits, usual, share)
        ppl, plo, phi = ppl * f, plo * min(f, 1.0) ** 2, phi * max(f, 1.0) ** 2
        note += (f" (the {family} rows' usual head is {usual:.1f} bits: loss x{f:.3f}, the head counted as "
                 f"{HEAD_WEIGHT * share:.1%} of the quantized weights at its own bits, an assumed weight)")
    return Quality(kld_from_ppl(ppl), ppl, basis, kld_low=kld_from_ppl(plo), kld_high=kld_from_ppl(phi),
                   ppl_low=plo, ppl_high=phi, note=note)
