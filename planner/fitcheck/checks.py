"""Checking deployments: each is costed with the same library calls as `planner estimate` / `planner recommend`
(evaluate() and recommend()), and every limit becomes a Check with the value the cost model gives, the limit, the
margin and a verdict. Checker resolves models, targets and formats once per run; run_check loads and checks files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.cost.evaluate import evaluate
from planner.cost.model import ModelCost
from planner.cost.quality import KV_QUALITY_KLD, Quality
from planner.errors import InvalidInputError, NotFoundError, PlannerError, close_matches
from planner.fitcheck.spec import DEFAULT_CONTEXT, QUALITY_LABELS, Deployment, DeviceTarget, Limits, load_specs
from planner.formats import get_format
from planner.hardware.catalog import get_fabric, load_catalog, load_fabrics
from planner.hardware.targets import target_from_host
from planner.models.profiles import load_registry
from planner.models.resolve import resolve_model
from planner.plan import GIB, MemoryBreakdown, Plan, Target, replicated, target_from_catalog
from planner.recommend import recommend
from planner.runtimes import RUNTIMES, arch_id, get_runtime


@dataclass(frozen=True)
class Check:
    """One limit against the value the cost model gives."""

    name: str  # 'fits', 'context', or the limit's key in the spec
    passed: bool
    value: float | int | str | None
    limit: float | int | str | None
    op: str  # how value is compared with limit: '<=' or '>='
    unit: str
    margin: float | int | None  # slack towards failing: positive passes, negative fails by that much
    message: str

    def as_dict(self) -> dict:
        """JSON form."""
        return {"name": self.name, "passed": self.passed, "value": self.value, "limit": self.limit, "op": self.op,
                "unit": self.unit, "margin": self.margin, "message": self.message}


def _num_check(name: str, value: float, limit: float, op: str, unit: str, digits: int, what: str) -> Check:
    ok = value <= limit if op == "<=" else value >= limit
    margin = limit - value if op == "<=" else value - limit
    fmt = f"{{:.{digits}f}}"
    v, lim = fmt.format(value), fmt.format(limit)
    if ok:
        msg = f"{what} {v} {unit}, limit {op} {lim} {unit}"
    else:
        msg = f"{what} {v} {unit} is {'above the maximum' if op == '<=' else 'below the minimum'} of {lim} {unit}"
    return Check(name, ok, round(value, digits), round(limit, digits), op, unit, round(margin, digits), msg)


def quality_kld(plan: Plan) -> float:
    """Expected KL divergence of a plan: the format's loss plus a quantized KV cache's (as recommend scores it)."""
    return float(plan.quality.get("kld", 0.0)) + KV_QUALITY_KLD.get(plan.kv_dtype, 0.0)


def quality_label(kld: float) -> str:
    """The quality word for a KL divergence (planner.cost.quality's thresholds)."""
    return Quality(kld, 0.0, "").label


def tightest_device(plan: Plan) -> MemoryBreakdown:
    """The device closest to (or furthest over) its usable memory."""
    return max(plan.per_device, key=lambda d: d.total_bytes / max(d.usable_bytes, 1))


def plan_checks(plan: Plan | None, limits: Limits, *, max_context: int | None, allow_context_extension: bool,
                context: int, reason: str = "") -> list[Check]:
    """Every check of a deployment: it fits, its context is allowed, and each limit the spec sets."""
    checks: list[Check] = []
    runs = plan is not None and plan.runs and bool(plan.per_device)
    if not runs:
        why = reason or (plan.reason if plan is not None else "") or "does not run"
        checks.append(Check("fits", False, None, None, "<=", "GiB", None, f"does not run: {why}"))
    else:
        assert plan is not None
        d = tightest_device(plan)
        used, usable = d.total_bytes / GIB, d.usable_bytes / GIB
        msg = (f"{used:.2f} GiB of {usable:.2f} GiB usable on {d.device}" if plan.fits
               else f"does not fit: {plan.reason or f'needs {used:.2f} GiB on {d.device}, {usable:.2f} GiB usable'}")
        # A failure for another reason (layers left for a host with no RAM given) has no memory margin to show.
        margin = round(usable - used, 3) if plan.fits or used > usable else None
        checks.append(Check("fits", plan.fits, round(used, 3), round(usable, 3), "<=", "GiB", margin, msg))
    if max_context is not None:
        ok = context <= max_context or allow_context_extension
        msg = (f"context {context} tokens, model maximum {max_context}" if context <= max_context else
               f"context {context} tokens is beyond the model's maximum of {max_context}"
               + (" (allowed: allow_context_extension)" if ok else " (set allow_context_extension to plan for RoPE scaling)"))
        checks.append(Check("context", ok, context, max_context, "<=", "tokens", max_context - context, msg))
    lim = limits
    wanted = [k for k in Limits.model_fields if getattr(lim, k) is not None]
    for key in wanted:
        limit = getattr(lim, key)
        if not runs:
            checks.append(Check(key, False, None, limit, "<=" if key.startswith("max") else ">=", _UNITS[key], None,
                                "not evaluated: the deployment does not run"))
            continue
        assert plan is not None
        checks.append(_LIMIT_CHECKS[key](plan, limit))
    return checks


def _headroom(plan: Plan, limit: float) -> Check:
    d = tightest_device(plan)
    pct = (d.usable_bytes - d.total_bytes) / max(d.usable_bytes, 1) * 100
    return _num_check("min_headroom_pct", pct, limit, ">=", "%", 2, f"free memory on {d.device}")


def _memory(plan: Plan, limit: float) -> Check:
    d = max(plan.per_device, key=lambda x: x.total_bytes)
    return _num_check("max_memory_gib", d.total_bytes / GIB, limit, "<=", "GiB", 3, f"memory on {d.device}")


def _decode(plan: Plan, limit: float) -> Check:
    what = "decode per sequence" + (f" ({plan.concurrency} together)" if plan.concurrency > 1 else "")
    return _num_check("min_decode_tokens_per_s", plan.decode_tokens_per_s, limit, ">=", "tok/s", 2, what)


def _throughput(plan: Plan, limit: float) -> Check:
    return _num_check("min_throughput_tokens_per_s", plan.throughput_tokens_per_s, limit, ">=", "tok/s", 2,
                      f"decode throughput of {plan.concurrency} sequence(s)")


def _ttft(plan: Plan, limit: float) -> Check:
    return _num_check("max_ttft_s", plan.ttft_s, limit, "<=", "s", 4, f"TTFT for {plan.prompt_tokens} prompt tokens")


def _kld(plan: Plan, limit: float) -> Check:
    return _num_check("max_quality_kld", quality_kld(plan), limit, "<=", "KLD", 5, "expected KL divergence")


def _label(plan: Plan, limit: str) -> Check:
    label = quality_label(quality_kld(plan))
    rank, lim = QUALITY_LABELS.index(label), QUALITY_LABELS.index(limit)
    ok = rank <= lim
    msg = f"expected quality loss {label}, limit {limit}" if ok else f"expected quality loss {label} is worse than {limit}"
    return Check("max_quality_loss", ok, label, limit, "<=", "label", lim - rank, msg)


_LIMIT_CHECKS: dict[str, Callable[[Plan, Any], Check]] = {
    "min_headroom_pct": _headroom, "max_memory_gib": _memory, "min_decode_tokens_per_s": _decode,
    "min_throughput_tokens_per_s": _throughput, "max_ttft_s": _ttft, "max_quality_kld": _kld, "max_quality_loss": _label,
}
_UNITS = {"min_headroom_pct": "%", "max_memory_gib": "GiB", "min_decode_tokens_per_s": "tok/s",
          "min_throughput_tokens_per_s": "tok/s", "max_ttft_s": "s", "max_quality_kld": "KLD", "max_quality_loss": "label"}


@dataclass
class Inputs:
    """What a deployment resolved to: the model's costs, the target, and the format / runtime it pins."""

    mc: Any  # planner.cost.model.ModelCost
    target: Target
    fmt: Any | None  # WeightFormat, None for auto
    runtime: Any | None  # Runtime, None: the best for the format
    kv_dtype: str | None
    context: int


@dataclass
class CheckResult:
    """One deployment's verdict: the plan it was costed as and every check."""

    deployment: Deployment
    plan: Plan | None
    checks: list[Check]
    chosen: str  # how the format and runtime were picked
    inputs: Inputs | None = None
    suggestions: list[str] = field(default_factory=list)  # recommend's hints when nothing fits

    @property
    def passed(self) -> bool:
        """All checks pass."""
        return all(c.passed for c in self.checks)

    @property
    def name(self) -> str:
        """The deployment's name."""
        return self.deployment.name

    @property
    def failures(self) -> list[Check]:
        """The checks that fail."""
        return [c for c in self.checks if not c.passed]

    @property
    def summary(self) -> str:
        """'llama-3.1-8b Q4_K_M llama.cpp on NVIDIA GeForce RTX 4090, 8192 tokens x 1'."""
        d, p = self.deployment, self.plan
        if p is None:
            return f"{d.model} {d.format} on {_target_text(d.target)}"
        return (f"{p.model_id} {p.format_id} {p.runtime_id} on {p.target_label}, {p.context} tokens x {p.concurrency}"
                + (f", KV {p.kv_dtype}" if p.kv_dtype else ""))

    def as_dict(self) -> dict:
        """JSON form of one result."""
        d, p = self.deployment, self.plan
        return {
            "name": d.name, "passed": self.passed, "file": d.file, "line": d.line,
            "model": p.model_id if p else d.model, "format": p.format_id if p else d.format,
            "runtime": p.runtime_id if p else d.runtime, "target": p.target_label if p else _target_text(d.target),
            "device": p.device_id if p else None, "device_count": p.device_count if p else None,
            "context": p.context if p else d.context, "concurrency": d.concurrency,
            "kv_dtype": (p.kv_dtype or None) if p else d.kv_dtype, "prompt_tokens": d.prompt_tokens, "chosen": self.chosen,
            "checks": [c.as_dict() for c in self.checks], "failures": [c.name for c in self.failures],
            "plan": p.as_dict() if p else None, "suggestions": self.suggestions,
        }


def _target_text(t: DeviceTarget | str) -> str:
    if isinstance(t, DeviceTarget):
        return f"{t.count}x {t.device}" if t.count > 1 else t.device
    return str(t)


class Checker:
    """Evaluates deployments; models, targets and format layouts are resolved once per run and shared."""

    def __init__(self, catalog=None, registry=None, host_target: Target | None = None) -> None:  # type: ignore[no-untyped-def]
        self._catalog = catalog
        self._registry = registry
        self._host_target = host_target
        self._models: dict[str, Any] = {}
        self._targets: dict[tuple, Target] = {}

    @property
    def catalog(self):  # type: ignore[no-untyped-def]
        """The hardware catalog (built-in unless one was given)."""
        if self._catalog is None:
            self._catalog = load_catalog()
        return self._catalog

    @property
    def registry(self):  # type: ignore[no-untyped-def]
        """The model profiles (built-in unless given)."""
        if self._registry is None:
            self._registry = load_registry()
        return self._registry

    def model(self, name: str):  # type: ignore[no-untyped-def]
        """A ModelCost for a model name or path, as `planner estimate --model` resolves it (cached: layouts are shared)."""
        if name not in self._models:
            try:
                src = resolve_model(name, self.registry)
            except OSError as exc:  # a name the OS cannot take as a path (too long, ...)
                raise InvalidInputError(f"cannot read '{name}': {exc.strerror or exc}") from None
            self._models[name] = ModelCost(src.spec, list(src.tensors) if src.tensors else [])
        return self._models[name]

    def target(self, spec: DeviceTarget | str, count: int | None = None, device: str | None = None) -> Target:
        """The Target of a deployment (optionally with another count or device, for what-if suggestions)."""
        if not isinstance(spec, DeviceTarget):
            if self._host_target is None:
                # lazy: the probe (about 80 ms to import) is needed only for `target: local`
                from planner.hardware import probe

                self._host_target = target_from_host(probe.local_host(self.catalog), origin="probe")
            return self._host_target
        n = count or spec.count
        dev_name = device or spec.device
        key = (dev_name, n, spec.ram_gib, spec.nodes, spec.fabric, spec.expert_parallel, spec.replicas)
        if key not in self._targets:
            ram = int(spec.ram_gib * GIB) if spec.ram_gib else None
            fabric = None
            if spec.nodes > 1 or spec.fabric:
                fabric = get_fabric(spec.fabric or "ib-ndr", load_fabrics())
            t = target_from_catalog(self.catalog.get(dev_name), n, ram, nodes=spec.nodes, fabric=fabric,
                                    expert_parallel=spec.expert_parallel)
            try:
                self._targets[key] = replicated(t, spec.replicas)
            except ValueError as exc:  # a what-if count the replicas do not divide (the spec itself is validated)
                raise InvalidInputError(f"replicas: {exc}") from None
        return self._targets[key]

    def resolve(self, dep: Deployment) -> Inputs:
        """Resolve names to library objects; raise a PlannerError naming the field."""
        mc = _field("model", lambda: self.model(dep.model))
        target = _field("target", lambda: self.target(dep.target))
        fmt = None if dep.format.lower() == "auto" else _field("format", lambda: get_format(dep.format))
        runtime = _field("runtime", lambda: get_runtime(dep.runtime)) if dep.runtime else None
        if dep.kv_dtype:
            _field("kv_dtype", lambda: _known_kv_dtype(dep.kv_dtype or ""))
        context = dep.context if dep.context is not None else min(DEFAULT_CONTEXT, mc.spec.max_context)
        return Inputs(mc, target, fmt, runtime, dep.kv_dtype, context)

    def check(self, dep: Deployment, inputs: Inputs | None = None) -> CheckResult:
        """Cost one deployment and check it against its limits."""
        inp = inputs or self.resolve(dep)
        mc, target, ctx = inp.mc, inp.target, inp.context

        def checks_of(plan: Plan | None, reason: str = "") -> list[Check]:
            return plan_checks(plan, dep.limits, max_context=mc.spec.max_context,
                               allow_context_extension=dep.allow_context_extension, context=ctx, reason=reason)

        kw = dict(context=ctx, concurrency=dep.concurrency, prompt_tokens=dep.prompt_tokens)
        suggestions: list[str] = []
        if inp.fmt is not None and inp.runtime is not None:
            plan = evaluate(mc, inp.fmt, inp.runtime, target, kv_dtype=inp.kv_dtype, **kw)
            return CheckResult(dep, plan, checks_of(plan), "format and runtime as given", inp)
        if inp.fmt is not None:
            rts = [rt for rt in RUNTIMES.values() if rt.support(inp.fmt, target.device, arch_id(mc.spec), mc.spec.native_dtype).runs]
            if not rts:
                why = f"no runtime runs {inp.fmt.id} on {target.device.name} ({target.device.backend})"
                return CheckResult(dep, None, checks_of(None, why), "no runtime for the format", inp)
            plans = [evaluate(mc, inp.fmt, rt, target, kv_dtype=inp.kv_dtype, **kw) for rt in rts]
            # `planner estimate`'s choice of runtime: runs, fits, fastest.
            plans.sort(key=lambda p: (p.runs, p.fits, p.support_status == "full", p.decode_tokens_per_s), reverse=True)
            how = "runtime: the one that best runs the format and meets the limits"
        else:
            rec = recommend(mc, target, runtimes=[inp.runtime] if inp.runtime else (),
                            kv_dtypes=[inp.kv_dtype] if inp.kv_dtype else (),
                            min_tokens_per_s=dep.limits.min_decode_tokens_per_s, catalog=self.catalog, **kw)
            plans = rec.plans
            suggestions = rec.suggestions
            how = "format: auto, the best-ranked recommendation that meets the limits"
        if not plans:
            return CheckResult(dep, None, checks_of(None, "no candidate runs on this target"), how, inp, suggestions)
        for p in plans:
            c = checks_of(p)
            if all(x.passed for x in c):
                return CheckResult(dep, p, c, how, inp, suggestions)
        best = plans[0]
        return CheckResult(dep, best, checks_of(best), how + " (none does; showing the best)", inp, suggestions)

    def check_all(self, deployments: Sequence[Deployment]) -> list[CheckResult]:
        """Resolve every deployment (reporting every unknown name at once), then check each."""
        resolved: list[Inputs] = []
        invalid: list[str] = []
        other: list[str] = []
        for dep in deployments:
            try:
                resolved.append(self.resolve(dep))
            except _FieldError as exc:
                line = dep.line_of(exc.key)
                where = f"{dep.file}:{line}" if line else dep.file
                msg = f"{where}: deployment '{dep.name}': {exc.key}: {exc.error}"
                # Unknown names, bad values and bad model files are spec errors (exit 2); a failed probe of the
                # `local` machine is not (exit 1).
                probe_failed = exc.key == "target" and not isinstance(dep.target, DeviceTarget)
                (other if probe_failed and not isinstance(exc.error, InvalidInputError) else invalid).append(msg)
        if invalid or other:
            raise (InvalidInputError if invalid else PlannerError)("\n".join(invalid + other))
        return [self.check(d, i) for d, i in zip(deployments, resolved)]


class _FieldError(Exception):
    def __init__(self, key: str, error: PlannerError):
        self.key = key
        self.error = error
        super().__init__(f"{key}: {error}")


def _field(key: str, fn: Callable[[], Any]) -> Any:
    """Run a lookup; a PlannerError is tagged with the spec field it came from."""
    try:
        return fn()
    except PlannerError as exc:
        raise _FieldError(key, exc) from None


def _known_kv_dtype(name: str) -> str:
    """A KV dtype some runtime offers (a typo is a spec error, not a failed deployment)."""
    known = {k for rt in RUNTIMES.values() for k in rt.kv_dtypes}
    # the spellings evaluate maps onto runtime names (planner.cost.evaluate._kv_dtype)
    known |= {"fp16", "f16", "auto", "fp8", "fp8_e4m3", "q8_0", "q4_0", "int8"}
    if name.lower() not in {k.lower() for k in known}:
        raise NotFoundError("KV cache dtype", name, close_matches(name, sorted(known)))
    return name


def run_check(paths: Iterable[Path | str], checker: Checker | None = None) -> list[CheckResult]:
    """Load spec files and check every deployment."""
    deps = load_specs(paths)
    return (checker or Checker()).check_all(deps)
