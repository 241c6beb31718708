"""What the TUI shows, computed without Textual: filtered device and model rows, the fit inputs and their
recommendation, fit-table rows and matrix cells. Every size and speed comes from `evaluate` / `recommend`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from planner.formats import FORMATS
from planner.hardware.catalog import Catalog, DeviceSpec, get_fabric, load_fabrics
from planner.hardware.targets import target_from_host
from planner.models.inventory import count_active_params, count_params, tensor_inventory
from planner.models.spec import ModelSpec
from planner.plan import GIB, Plan, Target, target_from_catalog
from planner.recommend import default_formats, recommend
from planner.runtimes import RUNTIMES

LOCAL = "local"  # device id of "this machine, as probed"
ALL = "all"  # the "no filter" value of the format and runtime filters
PREFERENCES = ("balanced", "quality", "speed", "memory")
MIN_CONTEXT = 256
MAX_CONCURRENCY = 1024
MAX_COUNT = 64
MAX_NODES = 64
# Above this share of usable memory a plan fits but leaves little room (fragmentation, a longer prompt).
TIGHT_FRACTION = 0.92

# Preferred defaults; each is used only if the injected catalog / registry has it.
DEFAULT_MODELS = ("llama-3.1-8b", "qwen3-8b", "llama-3.2-3b")
DEFAULT_DEVICES = ("rtx-4090", "rtx-3090", "h100-sxm")
MATRIX_MODELS = ("llama-3.2-3b", "qwen3-8b", "llama-3.1-8b", "mistral-nemo-12b", "gemma-3-27b", "qwen3-32b",
                 "qwen3-30b-a3b", "llama-3.3-70b", "mixtral-8x22b", "gpt-oss-120b")
MATRIX_DEVICES = ("rtx-3060-12gb", "rtx-4070-ti-super", "rtx-3090", "rtx-4090", "rtx-5090", "rx-7900-xtx",
                  "m4-pro-48gb", "m4-max-128gb", "strix-halo-395-128gb", "l40s", "a100-80gb-sxm", "h100-sxm")
MATRIX_SIZE = (10, 12)
# "best" matrix cells climb down this ladder (highest quality first) and stop at the first format that fits.
BEST_LADDER = ("BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS", "Q3_K_M", "IQ3_XXS", "Q2_K", "IQ2_XXS", "IQ1_M")
BEST = "best"
MATRIX_FORMATS = (BEST, "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS", "Q3_K_M", "Q2_K", "awq-int4",
                  "gptq-int4", "fp8", "mlx-4bit", "nf4")


# ------------------------------------------------------------------------------------------- devices


def device_haystack(d: DeviceSpec) -> str:
    """Everything a device search matches against, lower-cased."""
    return " ".join([d.id, d.name, d.vendor, d.backend, d.architecture, d.memory_kind, d.memory_type,
                     f"{d.memory_gib:g}gb", *d.aliases]).lower()


def _memory_test(token: str) -> Callable[[float], bool] | None:
    """'>=48', '>24', '<=16', '<8' compare memory in GiB; anything else is a text token."""
    for op, fn in ((">=", lambda a, b: a >= b), ("<=", lambda a, b: a <= b), (">", lambda a, b: a > b),
                   ("<", lambda a, b: a < b)):
        if token.startswith(op):
            try:
                limit = float(token[len(op):].lower().removesuffix("gib").removesuffix("gb"))
            except ValueError:
                return None
            return lambda gib, fn=fn, limit=limit: fn(gib, limit)
    return None


def device_matches(d: DeviceSpec, query: str) -> bool:
    """Every whitespace-separated token must match: text tokens as substrings, '>=48' as memory GiB."""
    hay = device_haystack(d)
    for tok in query.lower().split():
        test = _memory_test(tok)
        if test is not None:
            if not test(d.memory_gib):
                return False
        elif tok not in hay:
            return False
    return True


# Sortable device columns: key -> (header, sort key, descending by default).
DEVICE_SORTS: dict[str, tuple[str, Callable[[DeviceSpec], Any], bool]] = {
    "name": ("name", lambda d: d.name.lower(), False),
    "vendor": ("vendor", lambda d: (d.vendor, d.name.lower()), False),
    "memory": ("memory GiB", lambda d: d.memory_gib, True),
    "kind": ("kind", lambda d: d.memory_kind, False),
    "bandwidth": ("GB/s", lambda d: d.mem_bandwidth_gb_s, True),
    "fp16": ("FP16 TFLOPS", lambda d: d.peak_fp16_tflops or d.peak_bf16_tflops or 0.0, True),
    "fp8": ("FP8 TFLOPS", lambda d: d.peak_fp8_tflops or 0.0, True),
    "year": ("year", lambda d: d.launch_year, True),
}


def device_rows(catalog: Catalog | Iterable[DeviceSpec], query: str = "", sort: str = "memory",
                reverse: bool | None = None) -> list[DeviceSpec]:
    """Catalog devices matching `query`, sorted by a DEVICE_SORTS key (ties by name)."""
    _, key, default_desc = DEVICE_SORTS[sort]
    desc = default_desc if reverse is None else reverse
    rows = sorted((d for d in catalog if device_matches(d, query)), key=lambda d: d.name.lower())
    return sorted(rows, key=key, reverse=desc)  # stable: equal keys stay in name order


# -------------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelRow:
    """One profile as the models table shows it."""

    spec: ModelSpec
    params: int
    active_params: int

    @property
    def notes(self) -> str:
        """Architecture notes: MoE, MLA, sliding window, GQA (worded as `planner models` words them)."""
        return self.spec.architecture_notes()


def model_row(spec: ModelSpec) -> ModelRow:
    """Parameter counts from the tensor inventory (the same counts `planner models` shows)."""
    tensors = tensor_inventory(spec)
    total = count_params(spec, tensors)
    active = count_active_params(spec, tensors) if spec.moe is not None else total
    return ModelRow(spec, total, active)


def model_matches(row: ModelRow, query: str) -> bool:
    """Every token must appear in the id, name, family, architecture, aliases, repo or notes."""
    m = row.spec
    hay = " ".join([m.id, m.name, m.family, m.architecture, m.hf_repo or "", m.reference_for_size or "", row.notes,
                    *m.aliases]).lower()
    return all(tok in hay for tok in query.lower().split())


MODEL_SORTS: dict[str, tuple[str, Callable[[ModelRow], Any], bool]] = {
    "name": ("name", lambda r: r.spec.name.lower(), False),
    "family": ("family", lambda r: (r.spec.family.lower(), r.params), False),
    "params": ("params", lambda r: r.params, True),
    "active": ("active", lambda r: r.active_params, True),
    "context": ("context", lambda r: r.spec.max_context, True),
}


def model_rows(rows: Iterable[ModelRow], query: str = "", sort: str = "family", reverse: bool | None = None) -> list[ModelRow]:
    """Model rows matching `query`, sorted by a MODEL_SORTS key."""
    _, key, default_desc = MODEL_SORTS[sort]
    desc = default_desc if reverse is None else reverse
    return sorted((r for r in rows if model_matches(r, query)), key=key, reverse=desc)


def format_params(n: float) -> str:
    """12.2B, 135M."""
    return f"{n / 1e9:.1f}B" if n >= 0.995e9 else f"{n / 1e6:.0f}M"


# --------------------------------------------------------------------------------------- fit inputs


@dataclass(frozen=True)
class FitInputs:
    """Everything one recommendation depends on; two equal FitInputs give the same Recommendation."""

    model_id: str
    device_id: str  # a catalog id, or LOCAL for the probed machine
    count: int = 1
    context: int = 8192
    concurrency: int = 1
    format_family: str = ALL
    runtime_id: str = ALL
    prefer: str = "balanced"
    nodes: int = 1  # identical nodes of `count` devices each (catalog devices only)
    fabric_id: str = "ib-ndr"  # inter-node fabric (hwdb/fabrics) when nodes > 1

    def with_(self, **changes: Any) -> "FitInputs":
        """A copy with some fields changed."""
        return replace(self, **changes)


def make_target(inputs: FitInputs, catalog: Catalog, host: Any | None) -> Target:
    """The Target the inputs name: a catalog device x count, or the probed machine with its free memory."""
    if inputs.device_id == LOCAL:
        if host is None:
            raise LookupError("the local machine has not been probed")
        # as `planner recommend` plans this machine: its CPU's read bandwidth measured once (cached per machine)
        from planner.hardware import membw

        return target_from_host(host, measured=membw.for_host(host))
    if inputs.nodes > 1:
        return target_from_catalog(catalog.get(inputs.device_id), inputs.count, nodes=inputs.nodes,
                                   fabric=get_fabric(inputs.fabric_id, fabrics()))
    return target_from_catalog(catalog.get(inputs.device_id), inputs.count)


_FABRICS: dict = {}


def fabrics() -> dict:
    """The inter-node fabrics of hwdb/fabrics (loaded once), for the fabric choice."""
    if not _FABRICS:
        _FABRICS.update(load_fabrics())
    return _FABRICS


def filter_args(inputs: FitInputs, native_dtype: str) -> tuple[list, list]:
    """(formats, runtimes) to pass to recommend(): empty lists mean recommend's own defaults."""
    fmts = [f for f in default_formats(native_dtype) if f.family == inputs.format_family] if inputs.format_family != ALL else []
    rts = [RUNTIMES[inputs.runtime_id]] if inputs.runtime_id != ALL else []
    return fmts, rts


def format_families() -> list[str]:
    """The format families recommend considers, for the format filter."""
    seen: dict[str, None] = {}
    for f in default_formats("mxfp4"):
        seen.setdefault(f.family, None)
    return list(seen)


def runtime_ids() -> list[str]:
    """Every runtime id, for the runtime filter."""
    return list(RUNTIMES)


class CostCache:
    """ModelCost per model id, shared by the fit and matrix workers (layouts are cached inside each)."""

    def __init__(self, registry: Any):
        self.registry = registry
        self._costs: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, model_id: str):  # type: ignore[no-untyped-def]
        """The ModelCost of a profile, built once."""
        from planner.cost.model import ModelCost

        with self._lock:
            mc = self._costs.get(model_id)
            if mc is None:
                mc = self._costs[model_id] = ModelCost(self.registry.get(model_id))
            return mc


def compute_recommendation(inputs: FitInputs, costs: CostCache, catalog: Catalog, host: Any | None = None,  # type: ignore[no-untyped-def]
                           eval_reports: Sequence[dict] = ()):
    """recommend() for the inputs: the same call `planner recommend` makes, with the measured quality of stored
    planner eval reports of the model in place of the table estimate."""
    from planner.measure.reports import stored_quality

    mc = costs.get(inputs.model_id)
    target = make_target(inputs, catalog, host)
    fmts, rts = filter_args(inputs, mc.spec.native_dtype)
    measured = stored_quality(mc.spec, reports=eval_reports) if eval_reports else {}
    from planner.measure.calibration import for_target

    calibration, _note = for_target(target)  # `planner bench` records and this machine's measured bandwidth, as the CLI
    return recommend(mc, target, context=inputs.context, concurrency=inputs.concurrency, formats=fmts, runtimes=rts,
                     prefer=inputs.prefer, catalog=catalog, calibration=calibration, measured_quality=measured or None)


def measured_formats(plans: Sequence[Plan]) -> dict[str, str]:
    """Format id -> the text its quality was measured on, for the plans whose quality planner eval measured."""
    return {p.format_id: str(p.quality.get("text", "?")) for p in plans if (p.quality or {}).get("source") == "measured"}


def best_per_format(plans: Sequence[Plan]) -> list[Plan]:
    """The first (best-ranked) plan of each format, in rank order."""
    seen: set[str] = set()
    out = []
    for p in plans:
        if p.format_id not in seen:
            seen.add(p.format_id)
            out.append(p)
    return out


def used_fraction(plan: Plan) -> float:
    """The largest share of usable memory the plan takes on any device."""
    return max((d.total_bytes / max(d.usable_bytes, 1) for d in plan.per_device), default=0.0)


def verdict(plan: Plan) -> tuple[str, str]:
    """(text, style) of a plan's verdict: fits / tight / does not fit (why) / cannot run (why)."""
    if plan.fits:
        frac = used_fraction(plan)
        if frac > TIGHT_FRACTION:
            return f"fits, tight ({frac:.0%})", "yellow"
        return "fits", "green"
    if plan.runs:
        return plan.reason or "does not fit", "red"
    return plan.reason or "cannot run", "dim"


QUALITY_STYLES = {"lossless": "green", "negligible": "green", "small": "yellow", "noticeable": "dark_orange",
                  "large": "red", "severe": "bold red"}


def gib(n: float) -> str:
    """Bytes as GiB with one decimal."""
    return f"{n / GIB:.1f}"


# ------------------------------------------------------------------------------------- context steps


def step_power_of_two(value: int, up: bool, low: int, high: int) -> int:
    """The next power of two above (or below) `value`, clamped to [low, high]; `high` itself is a stop."""
    if up:
        nxt = 1 << (max(value, 1)).bit_length()  # strictly above value
        return min(nxt, high) if value < high else high
    if value <= low:
        return low
    prev = 1 << (value - 1).bit_length() - 1  # strictly below value
    return max(prev, low)


# ------------------------------------------------------------------------------------------- matrix


@dataclass(frozen=True)
class MatrixCell:
    """One model x device cell: the plan shown (None when no runtime runs the format there)."""

    plan: Plan | None
    note: str = ""

    @property
    def text(self) -> str:
        """Short cell text: 'Q5_K_M 42' (format, decode tok/s), '✗ 48G' (memory it would need), '—' (nothing runs)."""
        p = self.plan
        if p is None:
            return "—"
        if p.fits:
            return f"{p.format_id} {p.decode_tokens_per_s:.0f}"
        if p.runs and needed_bytes(p):
            return f"✗ {needed_bytes(p) / GIB:.0f}G"
        return "✗ cannot run"

    @property
    def style(self) -> str:
        """green when it fits, yellow when tight, red when not, dim when nothing runs."""
        p = self.plan
        if p is None or not p.runs:
            return "dim"
        if p.fits:
            return "yellow" if used_fraction(p) > TIGHT_FRACTION else "green"
        return "red"


def pick_default(ids: Sequence[str], available: Iterable[str]) -> str | None:
    """The first of `ids` that is available, else the first available, else None."""
    avail = list(available)
    return next((i for i in ids if i in avail), avail[0] if avail else None)


def matrix_axes(catalog: Catalog, registry: Any) -> tuple[list[str], list[str]]:
    """A bounded selection (about 10 models x 12 devices): the preferred ids present, topped up from the data."""
    n_models, n_devices = MATRIX_SIZE
    models = [m for m in MATRIX_MODELS if m in registry.models]
    if len(models) < n_models:  # fixtures without the preferred ids: spread over sizes instead
        rest = sorted((m for m in registry if m.id not in models), key=count_params)
        step = max(1, len(rest) // max(1, n_models - len(models)))
        models += [m.id for m in rest[::step]][: n_models - len(models)]
    devices = [d for d in MATRIX_DEVICES if d in catalog.devices]
    if len(devices) < n_devices:
        rest_d = sorted((d for d in catalog if d.id not in devices), key=lambda d: d.memory_gib)
        step = max(1, len(rest_d) // max(1, n_devices - len(devices)))
        devices += [d.id for d in rest_d[::step]][: n_devices - len(devices)]
    return models, devices


def matrix_cell(mc: Any, target: Target, format_id: str, context: int) -> MatrixCell:
    """One cell: the format (or the best rung of the ladder) on the target with its fastest fitting runtime."""
    ladder = [f for f in BEST_LADDER if f in FORMATS] if format_id == BEST else [format_id]
    tried: list[Plan] = []
    for fid in ladder:
        plan = _best_runtime(mc, FORMATS[fid], target, context)
        if plan is None:
            continue
        if plan.fits:
            return MatrixCell(plan)
        tried.append(plan)
    # Nothing fits: show what the smallest option would need.
    sized = [p for p in tried if p.runs and needed_bytes(p)]
    if sized:
        return MatrixCell(min(sized, key=needed_bytes))
    return MatrixCell(tried[0] if tried else None)


def _best_runtime(mc: Any, fmt: Any, target: Target, context: int) -> Plan | None:
    """The fastest fitting plan over the runtimes that run `fmt` on the device, else the smallest; None if none runs it."""
    from planner.cost.evaluate import evaluate

    plans = [evaluate(mc, fmt, rt, target, context=context) for rt in RUNTIMES.values() if rt.support(fmt, target.device).runs]
    if not plans:
        return None
    fitting = [p for p in plans if p.fits]
    if fitting:
        return max(fitting, key=lambda p: p.decode_tokens_per_s)
    sized = [p for p in plans if p.runs and needed_bytes(p)]
    return min(sized, key=needed_bytes) if sized else plans[0]


def needed_bytes(plan: Plan) -> int:
    """Memory a plan needs in all: on the devices plus system RAM, and never less than its weights and KV cache
    (a runtime that cannot offload stops placing layers, so its device total alone undercounts)."""
    return plan.needed_bytes


def clamp_context(context: int, max_context: int) -> int:
    """Keep a context inside [MIN_CONTEXT, model max]."""
    return max(MIN_CONTEXT, min(context, max_context))


def default_context(max_context: int) -> int:
    """What `planner recommend` uses when no --context is given."""
    return min(8192, max_context)
