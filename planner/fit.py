"""Rank models for a target: which model, in which format and runtime, is the most capable one that runs here at a
usable speed ("what is the best model I can run here?").

For every model (bundled profiles and models in the local Hugging Face cache) the cost model (planner.cost.evaluate)
is run on a short ladder of formats per runtime class, best quality first; the model's plan is the most capable one
that fits and decodes at least `min_tokens_per_s` (formats whose KL divergence is within NOISE_KLD of the best count
as equal, and then the faster wins). Models are ranked by the expected capability of that plan
(planner.capability.expected: published score x what the format keeps of it). Models without a published score for the
use are listed after the ranked ones, never guessed.

Fast path (the whole bundled set must rank in well under a second): one runtime per engine class (llama.cpp for GGUF;
vLLM on CUDA/ROCm GPUs; MLX on Apple), a ladder of ~9 GGUF types and the 16-bit / 8-bit / 4-bit GPU formats, and two
cheap bounds before a candidate is costed: its weights must fit in the memory the engine can use at all, and its
bytes per token over the device's peak bandwidth must allow the speed floor. Each ladder stops two formats after its
first acceptable plan (only those can tie with it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from planner import __version__
from planner.cache import checksum, fingerprint

from planner.capability import NOISE_KLD, Capability, Expected, expected, for_spec
from planner.cost.evaluate import evaluate
from planner.cost.model import ModelCost
from planner.formats import FORMATS, ShapeError, WeightFormat
from planner.paths import user_cache_dir
from planner.plan import GIB, Plan, Target
from planner.runtimes import RUNTIMES, Runtime
from planner.cachefiles import write_keyed

if TYPE_CHECKING:
    from planner.models.profiles import ModelRegistry
    from planner.models.spec import ModelSpec

# A usable interactive rate: silent reading runs at ~238 words/min for non-fiction (Brysbaert 2019, J. Memory and
# Language 109:104047), ~5.3 tokens/s at ~0.75 words per token (OpenAI's tokenizer rule of thumb); assumed: twice that,
# rounded, so the reply streams faster than it is read.
DEFAULT_MIN_TOKENS_PER_S = 10.0
DEFAULT_CONTEXT = 8192  # the same default as `recommend --model` (min(8192, model max))
# Per engine, the formats tried, best quality first (GGUF: the types llama.cpp's quantize offers most, one per step).
GGUF_LADDER = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS", "Q3_K_M", "IQ3_XXS", "IQ2_M", "IQ2_XXS")
GPU_LADDER = ("bf16", "fp8", "awq-int4")
MLX_LADDER = ("bf16", "mlx-8bit", "mlx-4bit")
TIE_LOOKAHEAD = 2  # formats evaluated past a ladder's first acceptable plan (the only ones that can tie with it)


@dataclass
class ModelFit:
    """One model on the target: its chosen plan (or why none), capability and expected capability."""

    spec: ModelSpec
    origin: str  # 'profile' or 'HF cache (ORG/NAME)'
    capability: Capability
    plan: Plan | None = None
    expected: Expected | None = None
    reason: str = ""  # why there is no plan
    best_speed: float = 0.0  # fastest fitting plan's decode tok/s (when none meets the floor)

    @property
    def ranked(self) -> bool:
        """Has a plan and a score to rank it by."""
        return self.plan is not None and self.expected is not None


@dataclass
class Ranking:
    """Models ranked for one target and use."""

    target_label: str
    use: str
    context: int
    min_tokens_per_s: float
    fits: list[ModelFit] = field(default_factory=list)  # ranked first (best first), then unranked

    @property
    def ranked(self) -> list[ModelFit]:
        """Models with a plan and a capability score, best first."""
        return [f for f in self.fits if f.ranked]

    @property
    def best(self) -> ModelFit | None:
        """The top model, if any."""
        r = self.ranked
        return r[0] if r else None


def ladder(target: Target, model_native: str = "") -> list[tuple[Runtime, list[WeightFormat]]]:
    """The runtimes and format ladders the ranking tries on this target."""
    dev = target.device
    out: list[tuple[Runtime, list[WeightFormat]]] = []
    gguf = list(GGUF_LADDER) + (["MXFP4_MOE"] if model_native == "mxfp4" else [])
    gpu = (["mxfp4"] if model_native == "mxfp4" else []) + list(GPU_LADDER)
    engines = [("llama.cpp", gguf)]
    if dev.backend == "metal":
        engines.append(("mlx", list(MLX_LADDER)))
    elif not target.is_cpu:
        engines.append(("vllm", gpu))
    for rid, ids in engines:
        rt = RUNTIMES.get(rid)
        if rt is None:
            continue
        fmts = [FORMATS[i] for i in ids if i in FORMATS and rt.support(FORMATS[i], dev).runs]
        if fmts:
            out.append((rt, fmts))
    return out


def _capacity_bytes(target: Target, runtime: Runtime) -> float:
    """All memory the engine can hold weights in: every device, plus host RAM for an engine that offloads layers."""
    dev_total = float(sum(target.usable_bytes)) * max(1, target.nodes)
    if runtime.engine == "llamacpp" and not target.is_cpu and target.host_ram_bytes:
        dev_total += target.host_ram_bytes
    return dev_total


def _speed_bound(target: Target, runtime: Runtime, weights: float, read_bytes: float) -> float:
    """An upper bound on decode tokens/s: the bytes one token reads at the devices' peak bandwidth, all devices
    together; for an engine that offloads, the share of the weights beyond the devices' memory is read from host RAM
    at its bandwidth (KV cache and buffers only push more to the host, so the bound stays above the real speed)."""
    dev = target.device
    bw = dev.mem_bandwidth_gb_s * 1e9 * target.count * max(1, target.nodes)
    on_dev = 1.0
    if runtime.engine == "llamacpp" and not target.is_cpu and weights > 0:
        on_dev = min(1.0, float(sum(target.usable_bytes)) * max(1, target.nodes) / weights)
    seconds = read_bytes * on_dev / bw
    if on_dev < 1.0:
        seconds += read_bytes * (1.0 - on_dev) / (target.host_bandwidth_gb_s * 1e9)
    return 1.0 / max(seconds, 1e-12)


def _quick_reject(mc: ModelCost, fmt: WeightFormat, runtime: Runtime, target: Target, floor: float) -> str:
    """'' when the candidate may fit and be fast enough; else why not (without costing it)."""
    try:
        lay = mc.layout(fmt)
    except ShapeError as exc:
        return f"{fmt.id} cannot hold the shapes: {exc}"
    weights = lay.sum_layers + lay.embed_bytes + lay.head_bytes
    if weights > _capacity_bytes(target, runtime):
        return f"weights alone need {weights / GIB:.1f} GiB"
    if floor and _speed_bound(target, runtime, weights, lay.sum_active + lay.head_active_bytes) < floor:
        return f"cannot reach {floor:g} tok/s even at peak memory bandwidth"
    return ""


def choose(plans: Sequence[Plan]) -> Plan | None:
    """The most capable plan (lowest KLD), counting KLDs within NOISE_KLD of it as equal and then taking the fastest."""
    if not plans:
        return None
    best_kld = min(float(p.quality.get("kld", 0.0)) for p in plans)
    close = [p for p in plans if float(p.quality.get("kld", 0.0)) <= best_kld + NOISE_KLD]
    return max(close, key=lambda p: (p.decode_tokens_per_s, -float(p.quality.get("kld", 0.0))))


# The modules and data a plan's quality dict is computed from: a change to any of them invalidates the cache below.
_QUALITY_SOURCES = ("cost/quality.py", "cost/release.py", "formats.py", "data/quality_published.csv")


@lru_cache(maxsize=1)
def _quality_cache_file() -> Path:
    """One file of per-(model, format) quality dicts, keyed by the planner version and its quality sources' bytes."""
    here = Path(__file__).parent
    material = __version__.encode() + b"".join((here / p).read_bytes() for p in _QUALITY_SOURCES)
    return user_cache_dir() / f"fit-quality-{checksum(material)}.json"


class QualityCache:
    """Quality dicts of earlier rankings, so ranking 60 models does not recompute ~300 quality estimates (~8 ms each)
    on every run. Keyed per model by its spec and exact tensor list, like ModelCost's layout cache."""

    def __init__(self) -> None:
        self.enabled = os.environ.get("PLANNER_NO_CACHE") != "1"
        self.data: dict[str, dict] = {}
        self.dirty = False
        if self.enabled:
            try:
                self.data = json.loads(_quality_cache_file().read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.data = {}

    @staticmethod
    def model_key(mc: ModelCost) -> str:
        """The model's spec and tensor shapes, as a short key."""
        material = fingerprint(mc.spec) + "".join(f"{t.name}{t.shape}" for t in mc.tensors)
        return f"{mc.spec.id}|{checksum(material.encode())}"

    def seed(self, mc: ModelCost, key: str) -> None:
        """Put the stored quality dicts of this model into its memo, where planner.cost.evaluate looks first."""
        for k, q in self.data.get(key, {}).items():
            fmt_id, _, dequant = k.partition("|")
            mc.memo(("quality", fmt_id, dequant or None), lambda q=q: q)

    def store(self, key: str, plans: Iterable[Plan], target: Target) -> None:
        """Remember the quality dicts of the plans costed for this model."""
        got = self.data.setdefault(key, {})
        for p in plans:
            if not p.quality or p.quality.get("source") == "measured":
                continue
            fmt = FORMATS.get(p.format_id)
            rt = RUNTIMES.get(p.runtime_id)
            if fmt is None or rt is None:
                continue
            k = f"{p.format_id}|{rt.support(fmt, target.device).dequant_to or ''}"
            if k not in got:
                got[k] = p.quality
                self.dirty = True

    def flush(self) -> None:
        """Write the file (atomic; a read-only home is not an error)."""
        if not (self.enabled and self.dirty):
            return
        try:
            write_keyed(_quality_cache_file(), json.dumps(self.data))
        except OSError:
            pass
        self.dirty = False


def fit_model(mc: ModelCost, target: Target, *, context: int, concurrency: int = 1, min_tokens_per_s: float,
              formats: Sequence[WeightFormat] = (), calibration: dict | None = None,
              cache: QualityCache | None = None, prompt_tokens: int | None = None) -> tuple[Plan | None, str, float]:
    """(chosen plan or None, why none, fastest fitting decode tok/s) for one model. `formats`: plan only these (a
    pre-quantized checkpoint as stored)."""
    key = ""
    if cache is not None:
        key = cache.model_key(mc)
        cache.seed(mc, key)
    costed: list[Plan] = []
    acceptable: list[Plan] = []
    fastest = 0.0
    # why nothing qualified: too slow (the more useful answer) before too big
    why_slow, why_big = "", "no runtime here loads its formats"
    for rt, ladder_fmts in ladder(target, mc.spec.native_dtype):
        fmts = [f for f in formats if rt.support(f, target.device).runs] if formats else ladder_fmts
        found_at = None
        for i, fmt in enumerate(fmts):
            if found_at is not None and i > found_at + TIE_LOOKAHEAD:
                break
            rejected = _quick_reject(mc, fmt, rt, target, min_tokens_per_s)
            if rejected:
                if "tok/s" in rejected:
                    why_slow = rejected
                else:
                    why_big = rejected
                continue
            plan = evaluate(mc, fmt, rt, target, context=context, concurrency=concurrency, calibration=calibration,
                            prompt_tokens=prompt_tokens)
            costed.append(plan)
            if not plan.fits:
                why_big = plan.reason or why_big
                continue
            fastest = max(fastest, plan.decode_tokens_per_s)
            if plan.decode_tokens_per_s < min_tokens_per_s:
                continue
            acceptable.append(plan)
            if found_at is None:
                found_at = i
    mc.flush()
    if cache is not None:
        cache.store(key, costed, target)
    best = choose(acceptable)
    if best is not None:
        return best, "", fastest
    if fastest:
        return None, f"fits but decodes at {fastest:.1f} tok/s at best, below {min_tokens_per_s:g}", fastest
    return None, why_slow or why_big, fastest


@dataclass
class Candidate:
    """A model to rank: its spec (and tensors as read, if any), where it came from, the profile it matches, and the
    format(s) a pre-quantized checkpoint is stored in. The cost model is built only when the model is costed."""

    spec: ModelSpec
    origin: str = "profile"
    profile_id: str | None = None
    stored: Sequence[WeightFormat] = ()
    tensors: list = field(default_factory=list)
    cost_without_score: bool = False  # cost it even with no published score (the user's own models)


def _min_weight_bytes(spec: ModelSpec) -> float:
    """A lower bound on any ladder format's weights: the published parameter count at 2 bits (IQ2_XXS stores 2.06)."""
    return (spec.params_published or 0) * 2 / 8


def rank_models(models: Iterable[Candidate], target: Target, *, use: str = "chat", context: int | None = None,
                concurrency: int = 1, min_tokens_per_s: float = DEFAULT_MIN_TOKENS_PER_S,
                calibration: dict | None = None, prompt_tokens: int | None = None) -> Ranking:
    """Rank the candidates on the target for a use. Bundled profiles without a published score for the use are
    listed (not ranked, not costed); the user's own models are costed either way."""
    ctx_asked = context or DEFAULT_CONTEXT
    out = Ranking(target.label, use, ctx_asked, min_tokens_per_s)
    cache = QualityCache()
    capacity = max(_capacity_bytes(target, rt) for rt in RUNTIMES.values())
    for c in models:
        spec = c.spec
        cap = for_spec(spec, use, c.profile_id)
        mf = ModelFit(spec, c.origin, cap)
        out.fits.append(mf)
        if ctx_asked > spec.max_context:
            mf.reason = f"context {ctx_asked} is beyond its maximum of {spec.max_context}"
        elif not cap.has_data and not c.cost_without_score:
            mf.reason = f"not ranked: {cap.note}"
        elif _min_weight_bytes(spec) > capacity:
            mf.reason = f"does not fit: {_min_weight_bytes(spec) / GIB:.0f} GiB of weights even at 2 bits"
        else:
            mc = ModelCost(spec, list(c.tensors))
            plan, why, fastest = fit_model(mc, target, context=ctx_asked, concurrency=concurrency,
                                           min_tokens_per_s=min_tokens_per_s, formats=c.stored, calibration=calibration,
                                           cache=cache, prompt_tokens=prompt_tokens)
            mf.plan, mf.reason, mf.best_speed = plan, why, fastest
            if plan is not None:
                mf.expected = expected(cap, plan.quality)
    cache.flush()

    def key(f: ModelFit):  # type: ignore[no-untyped-def]
        if f.ranked:
            assert f.expected is not None and f.plan is not None
            return (0, -f.expected.rank_value, -f.plan.decode_tokens_per_s, f.spec.id)
        return (1 if f.plan is not None else 2, 0.0, 0.0, f.spec.id)

    out.fits.sort(key=key)
    return out


def rank_here(registry: ModelRegistry, target: Target, *, use: str = "chat", context: int | None = None,
              concurrency: int = 1, min_tokens_per_s: float = DEFAULT_MIN_TOKENS_PER_S,
              calibration: dict | None = None, prompt_tokens: int | None = None) -> tuple[Ranking, list[str]]:
    """The ranking of `planner recommend` without --model and of the TUI's "Best here" tab: the registry's profiles
    and the models in the local HF cache; (ranking, a note per cached repo that could not be read)."""
    cached, skipped = cached_models(registry)
    ranking = rank_models(bundled_models(registry) + cached, target, use=use, context=context, concurrency=concurrency,
                          min_tokens_per_s=min_tokens_per_s, calibration=calibration, prompt_tokens=prompt_tokens)
    return ranking, skipped


def bundled_models(registry: ModelRegistry) -> list[Candidate]:
    """Every bundled profile as a ranking candidate."""
    return [Candidate(spec, "profile", spec.id) for spec in registry]


def _hf_cache_may_exist() -> bool:
    """Whether any place huggingface_hub keeps its cache exists, checked before importing planner.models.hub (its
    package imports numpy, which `recommend` must not pay for when there is no cache); which of them is the cache is
    planner.models.hub.hfcache's decision."""
    env = [os.environ.get(v) for v in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME")]
    places = [Path(p).expanduser() for p in env if p] + [Path.home() / ".cache" / "huggingface"]
    return any(p.exists() for p in places)


def cached_models(registry: ModelRegistry) -> tuple[list[Candidate], list[str]]:
    """Models in the local Hugging Face cache (read offline) that are not bundled profiles, and a note per repo that
    could not be read. A cached copy of a profile's repo is that profile (already a candidate)."""
    from planner.errors import PlannerError

    if not _hf_cache_may_exist():
        return [], []
    from planner.models.hub.hfcache import hf_hub_cache_dir  # lazy: the hub package imports the readers (numpy)

    base = hf_hub_cache_dir()
    if not base.is_dir():
        return [], []
    from planner.models.resolve import resolve  # lazy: reading a cached repo imports the readers (numpy, gguf)

    out, skipped = [], []
    for d in sorted(base.iterdir()):
        if not d.name.startswith("models--") or not d.is_dir():
            continue
        repo = d.name[len("models--"):].replace("--", "/", 1)
        try:
            registry.get(repo)
            continue  # a profile's repo: ranked as the profile
        except PlannerError:
            pass
        try:
            got = resolve(repo, registry, online=False)
        except PlannerError as exc:
            skipped.append(f"{repo}: {exc}")
            continue
        stored = [f if isinstance(f, WeightFormat) else FORMATS[f] for f in got.stored_formats
                  if isinstance(f, WeightFormat) or f in FORMATS]
        out.append(Candidate(got.spec, f"HF cache ({repo})", None, stored, list(got.tensors), cost_without_score=True))
    return out, skipped
