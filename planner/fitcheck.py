"""CI fit checks: the deployment spec schema, evaluating each deployment against its limits, and the reporters.

A spec file lists deployments (model x format x runtime x target x context) with limits. Each deployment is costed
with the same library calls as `planner estimate` / `planner recommend` (evaluate() and recommend()), and every limit
becomes a Check with the value the cost model gives, the limit, the margin and a verdict.

Run `python -m planner.fitcheck` after changing the schema: it rewrites planner/data/deploy.schema.json, and a test
fails while that file is stale.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from planner.errors import InvalidInputError, NotFoundError, PlannerError, clip, close_matches, preview, show
from planner.plan import GIB, Plan, Target
from planner.yamlio import safe_loader, parse_yaml, read_text

SPEC_VERSION = 1
REPORT_SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).resolve().parent / "data" / "deploy.schema.json"
# The words planner.cost.quality.Quality.label gives, mildest first (a test keeps the two in step).
QUALITY_LABELS = ("lossless", "negligible", "small", "noticeable", "large", "severe")
# Same default as --context: the model's maximum, capped so a 128k model is not planned at 128k by accident.
DEFAULT_CONTEXT = 8192
DEFAULT_PROMPT_TOKENS = 512
MAX_TOKENS = 10_485_760  # 10 Mi tokens: beyond any model's context; a slip of a factor of 1000 cannot load
REPORT_FORMATS = ("text", "json", "junit", "github", "markdown")
_NAME_RE = r"^\S(?:[^\x00-\x1f\x7f]*\S)?$"  # printable, no control characters, no surrounding spaces



# ---------------------------------------------------------------------------------------------------- schema


class _Strict(BaseModel):
    # strict: `count: true` or `context: "8k"` is an error, not a silent coercion.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Limits(_Strict):
    """What a deployment must meet; every limit is optional. Memory is GiB (2^30 bytes), speeds are model estimates."""

    min_headroom_pct: float | None = Field(
        default=None, ge=0, lt=100,
        description="Free memory left on the most loaded device, as % of its usable memory (catalog memory minus "
                    "driver reserve, or the probed free memory for `local`).")
    max_memory_gib: float | None = Field(
        default=None, gt=0, le=1_000_000,
        description="Most memory the deployment may need on any one device, GiB (per device: VRAM is not pooled).")
    min_decode_tokens_per_s: float | None = Field(
        default=None, gt=0, le=1_000_000,
        description="Minimum decode speed of one sequence, tokens/s, with `concurrency` sequences decoding together "
                    "at `prompt_tokens` of context.")
    min_throughput_tokens_per_s: float | None = Field(
        default=None, gt=0, le=100_000_000,
        description="Minimum aggregate decode throughput over all `concurrency` sequences, tokens/s.")
    max_ttft_s: float | None = Field(
        default=None, gt=0, le=86_400,
        description="Maximum time to first token for a prompt of `prompt_tokens` tokens, seconds.")
    max_quality_kld: float | None = Field(
        default=None, ge=0, le=100,
        description="Maximum expected quality loss: KL divergence vs 16-bit weights (nats/token), weights plus a "
                    "quantized KV cache.")
    max_quality_loss: Literal["lossless", "negligible", "small", "noticeable", "large", "severe"] | None = Field(
        default=None,
        description="Maximum expected quality loss as a word: lossless <= 0.002 KLD, negligible <= 0.012, "
                    "small <= 0.04, noticeable <= 0.1, large <= 0.35, severe beyond.")


class DeviceTarget(_Strict):
    """Catalogued hardware: `count` identical devices."""

    device: str = Field(min_length=1, max_length=200, pattern=_NAME_RE,
                        description="Catalog device id, alias or name (see `planner catalog`), e.g. rtx-4090, h100-sxm.")
    count: int = Field(default=1, ge=1, le=1024, description="Number of identical devices (tensor or layer split).")
    ram_gib: float | None = Field(default=None, gt=0, le=1_048_576,
                                  description="Host RAM available for layers offloaded to the CPU, GiB.")
    nodes: int = Field(default=1, ge=1, le=4096, description="Identical nodes of `count` devices each (multi-node).")
    fabric: str | None = Field(default=None, min_length=1, max_length=100, pattern=_NAME_RE,
                               description="Inter-node fabric id (see hwdb/fabrics), e.g. ib-ndr, roce-400g, eth-100g.")
    expert_parallel: bool = Field(default=False, description="MoE across nodes: shard experts over every GPU.")
    replicas: int = Field(default=1, ge=1, le=65_536,
                          description="Data-parallel copies of one layout sharing the count x nodes GPUs, each serving "
                                      "its share of `concurrency`; the GPUs must split evenly into whole copies.")

    @field_validator("replicas")
    @classmethod
    def _replicas_split_gpus(cls, value: int, info: ValidationInfo) -> int:
        from planner.plan import replica_layout_error

        # count and nodes are validated first (field order); when either is invalid it is reported on its own
        if "count" in info.data and "nodes" in info.data:
            why = replica_layout_error(info.data["count"], info.data["nodes"], value)
            if why:
                raise PydanticCustomError("replicas_split", why)
        return value


def _target_tag(value: Any) -> str:
    """Pick the branch of `target` so an error is reported for one branch, not both."""
    return "local" if isinstance(value, str) else "device"


TargetSpec = Annotated[
    Union[Annotated[Literal["local"], Tag("local")], Annotated[DeviceTarget, Tag("device")]],
    Discriminator(_target_tag),
]


class Settings(_Strict):
    """The settings of a deployment; under `defaults:` they apply to every deployment that does not set them."""

    model: str | None = Field(default=None, min_length=1, max_length=4096, pattern=_NAME_RE,
                              description="Profile id or alias, HF repo id, bare size (70B), or a path to a "
                                          "config.json, model directory or .gguf file (relative to the spec file).")
    target: TargetSpec | None = Field(default=None, description="`{device: ID, count: N}` or `local` (this machine, probed).")
    runtime: str | None = Field(default=None, min_length=1, max_length=100, pattern=_NAME_RE,
                                description="Runtime id (llama.cpp, vllm, ...). Omitted: the runtime that best runs the format.")
    format: str | None = Field(default=None, min_length=1, max_length=100, pattern=_NAME_RE,
                               description="Weight format (Q4_K_M, awq-int4, fp8, ...) or `auto` (the default): the "
                                           "recommended format that meets the limits.")
    context: int | None = Field(default=None, ge=1, le=MAX_TOKENS,
                                description=f"Context length per sequence, tokens (default min({DEFAULT_CONTEXT}, model maximum)).")
    allow_context_extension: bool | None = Field(default=None, description="Allow a context beyond the model's maximum (RoPE scaling).")
    concurrency: int | None = Field(default=None, ge=1, le=100_000, description="Concurrent sequences (default 1).")
    kv_dtype: str | None = Field(default=None, min_length=1, max_length=40, pattern=_NAME_RE,
                                 description="KV cache dtype (f16, q8_0, fp8, ...; default: the runtime's).")
    prompt_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS,
                                      description=f"Prompt length for TTFT and decode position, tokens (default {DEFAULT_PROMPT_TOKENS}).")
    limits: Limits | None = Field(default=None, description="Limits to check; under defaults they merge key by key.")


class Defaults(Settings):
    """Settings shared by every deployment of the file."""


class DeploymentEntry(Settings):
    """One deployment as written in the file (model and target may come from `defaults`)."""

    name: str = Field(min_length=1, max_length=200, pattern=_NAME_RE,
                      description="Unique name (over all files checked together); used by --explain and in reports.")


class DeployFile(_Strict):
    """A deployment spec file for `planner check`."""

    version: Literal[1] = Field(default=1, description="Spec format version.")
    defaults: Defaults | None = Field(default=None, description="Settings applied to every deployment unless it sets them.")
    deployments: list[DeploymentEntry] = Field(min_length=1, max_length=10_000, description="The deployments to check.")


_FIELD_NAMES = sorted({*DeployFile.model_fields, *DeploymentEntry.model_fields, *Limits.model_fields, *DeviceTarget.model_fields})


def schema_json() -> dict:
    """The JSON schema of a deployment spec file, as committed in planner/data/deploy.schema.json."""
    schema = DeployFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "planner check deployment spec"
    return schema


# --------------------------------------------------------------------------------------------- loading specs


@dataclass(frozen=True)
class Deployment:
    """One deployment with the file's defaults applied, ready to evaluate."""

    name: str
    model: str
    target: DeviceTarget | str  # a DeviceTarget or "local"
    runtime: str | None
    format: str  # a format id or "auto"
    context: int | None
    allow_context_extension: bool
    concurrency: int
    kv_dtype: str | None
    prompt_tokens: int
    limits: Limits
    file: str
    line: int | None = None
    field_lines: tuple[tuple[str, int], ...] = ()  # line of each key the deployment (or defaults) sets

    @property
    def where(self) -> str:
        """'file:line' of the deployment, for messages."""
        return f"{self.file}:{self.line}" if self.line else self.file

    def line_of(self, key: str) -> int | None:
        """Line of a key of this deployment (falls back to the deployment's own line)."""
        return dict(self.field_lines).get(key, self.line)


def _node_lines(root: yaml.Node | None, loc: Sequence[Any]) -> int | None:
    """1-based line of the YAML node at a pydantic `loc` (the deepest part that exists in the file)."""
    if root is None:
        return None
    node: yaml.Node | None = root
    line = root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    line, node = key.start_mark.line + 1, value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _duplicate_keys(root: yaml.Node | None, path: str) -> list[str]:
    """PyYAML keeps the last of two equal keys silently; in a spec that is a slip worth an error."""
    problems: list[str] = []
    stack: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    seen_nodes: set[int] = set()
    while stack:
        node, where = stack.pop()
        if id(node) in seen_nodes:  # aliases share nodes; visit each once
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in keys and key.value != "<<":
                        problems.append(f"{path}:{key.start_mark.line + 1}: {where or '(top level)'}: "
                                        f"duplicate key '{show(key.value, 60)}'")
                    keys.add(key.value)
                    name = show(key.value, 60)  # a key the user wrote: bounded in messages
                    stack.append((value, f"{where}.{name}" if where else name))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(node.value))
    return sorted(problems)


def _compose(text: str) -> yaml.Node | None:
    """The YAML node tree (for line numbers); None where it cannot be built."""
    try:
        return yaml.compose(text, Loader=safe_loader())  # the one bounded safe loader (C composer where built)
    except (yaml.YAMLError, RecursionError):
        return None


def _loc_text(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        name = show(part, 60) if isinstance(part, str) else preview(part, 60)  # keys the user wrote: bounded
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + name
    return out or "(top level)"


def _short(value: Any) -> str:
    return preview(value, 60)  # never repr() a user value whole: it may be huge


def _validation_problems(path: str, exc: ValidationError, root: yaml.Node | None) -> list[str]:
    """One 'file:line: field: message' line per pydantic error."""
    problems: list[tuple[int, str]] = []
    for err in exc.errors():
        loc = _strip_tags(list(err.get("loc", ())))
        line = _node_lines(root, loc)
        where = f"{path}:{line}" if line else path
        kind = err.get("type", "")
        msg = clip(str(err.get("msg", "invalid")))  # pydantic messages can quote the input
        if kind == "extra_forbidden":
            # a long key is cut first: difflib's cost grows with the square of its length
            near = close_matches(str(loc[-1])[:100], _FIELD_NAMES, n=3) if loc else []
            msg = "unknown field" + (f" (did you mean: {', '.join(near)}?)" if near else "")
        elif kind == "missing":
            msg = "required field is missing"
        elif "input" in err:
            msg += f" (got {_short(err['input'])})"
        problems.append((line or 0, f"{where}: {_loc_text(loc)}: {msg}"))
    return [text for _, text in sorted(problems, key=lambda p: p[0])]  # in file order


def _strip_tags(loc: list[Any]) -> list[Any]:
    """Drop the discriminator tag pydantic puts after `target` in error locations."""
    out = []
    for i, part in enumerate(loc):
        if i > 0 and loc[i - 1] == "target" and part in ("device", "local") and isinstance(part, str):
            continue
        out.append(part)
    return out


def parse_spec(text: str, path: str | Path = "<spec>") -> list[Deployment]:
    """Validate a spec file's text into deployments; raise InvalidInputError listing every problem as file:line: field."""
    path = str(path)
    data = parse_yaml(text, path)
    root = _compose(text)
    if data is None:
        raise InvalidInputError(f"{path}: empty deployment spec (expected 'deployments:' with at least one deployment)")
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path}: expected a mapping with a 'deployments' list at the top level, "
                                f"got {type(data).__name__}")
    problems = _duplicate_keys(root, path)
    try:
        spec = DeployFile.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError("\n".join(problems + _validation_problems(path, exc, root))) from None
    except RecursionError:
        raise InvalidInputError(f"{path}: nested too deeply") from None
    if problems:
        raise InvalidInputError("\n".join(problems))
    base_dir = Path(path).parent
    out: list[Deployment] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(spec.deployments):
        line = _node_lines(root, ("deployments", i))
        where = f"{path}:{line}" if line else path
        if entry.name in seen:
            problems.append(f"{where}: deployments[{i}].name: duplicate name '{entry.name}' (also deployments[{seen[entry.name]}])")
        seen.setdefault(entry.name, i)
        dep, missing = _merge(entry, spec.defaults, path, base_dir, root, i)
        for key in missing:
            problems.append(f"{where}: deployments[{i}].{key}: required field is missing (set it here or under defaults)")
        if dep is not None:
            out.append(dep)
    if problems:
        raise InvalidInputError("\n".join(problems))
    return out


def _merge(entry: DeploymentEntry, defaults: Defaults | None, path: str, base_dir: Path, root: yaml.Node | None,
           index: int) -> tuple[Deployment | None, list[str]]:
    """Apply defaults to one entry: a key the entry sets (even to null) wins; limits merge key by key."""
    def pick(key: str) -> Any:
        if key in entry.model_fields_set or defaults is None:
            return getattr(entry, key)
        return getattr(defaults, key)

    limits: dict[str, Any] = {}
    for src in (defaults.limits if defaults else None, entry.limits):
        if src is not None:
            limits.update({k: getattr(src, k) for k in src.model_fields_set})
    missing = [k for k in ("model", "target") if pick(k) is None]
    if missing:
        return None, missing
    lines = []
    for key in Settings.model_fields:
        own = _node_lines(root, ("deployments", index, key)) if key in entry.model_fields_set else None
        if own is None and defaults is not None and key in defaults.model_fields_set:
            own = _node_lines(root, ("defaults", key))
        if own is not None:
            lines.append((key, own))
    for key in Limits.model_fields:  # a failed limit's annotation points at the limit itself
        own = _node_lines(root, ("deployments", index, "limits", key)) if entry.limits and key in entry.limits.model_fields_set else None
        if own is None and defaults is not None and defaults.limits and key in defaults.limits.model_fields_set:
            own = _node_lines(root, ("defaults", "limits", key))
        if own is not None:
            lines.append((f"limits.{key}", own))
    model = pick("model")
    # A model path is read relative to the spec file, so CI can run from any directory.
    rel = base_dir / model
    try:
        if not Path(model).is_absolute() and str(base_dir) not in ("", ".") and rel.exists():
            model = str(rel)
    except OSError:  # e.g. a name too long for a path: it is not a path, leave it to the profile lookup
        pass
    return Deployment(
        name=entry.name, model=model, target=pick("target"), runtime=pick("runtime"), format=pick("format") or "auto",
        context=pick("context"), allow_context_extension=bool(pick("allow_context_extension")),
        concurrency=pick("concurrency") or 1, kv_dtype=pick("kv_dtype"),
        prompt_tokens=pick("prompt_tokens") or DEFAULT_PROMPT_TOKENS, limits=Limits.model_validate(limits),
        file=path, line=_node_lines(root, ("deployments", index)), field_lines=tuple(lines),
    ), []


def load_spec(path: Path | str) -> list[Deployment]:
    """Read and validate one spec file."""
    return parse_spec(read_text(Path(path), "deployment spec file"), path)


def load_specs(paths: Iterable[Path | str]) -> list[Deployment]:
    """Read every spec file; names must be unique over all of them. Every problem in every file is reported at once."""
    problems: list[str] = []
    out: list[Deployment] = []
    first: dict[str, Deployment] = {}
    for p in paths:
        try:
            deps = load_spec(p)
        except InvalidInputError as exc:
            problems.append(str(exc))
            continue
        for d in deps:
            if d.name in first:
                problems.append(f"{d.where}: name: duplicate deployment name '{d.name}' (also in {first[d.name].where})")
                continue
            first[d.name] = d
            out.append(d)
    if problems:
        raise InvalidInputError("\n".join(problems))
    return out


# -------------------------------------------------------------------------------------------------- checks


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
    from planner.cost.quality import KV_QUALITY_KLD

    return float(plan.quality.get("kld", 0.0)) + KV_QUALITY_KLD.get(plan.kv_dtype, 0.0)


def quality_label(kld: float) -> str:
    """The quality word for a KL divergence (planner.cost.quality's thresholds)."""
    from planner.cost.quality import Quality

    return Quality(kld, 0.0, "").label


def _tightest(plan: Plan):  # type: ignore[no-untyped-def]
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
        d = _tightest(plan)
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
    d = _tightest(plan)
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
            from planner.hardware.catalog import load_catalog

            self._catalog = load_catalog()
        return self._catalog

    @property
    def registry(self):  # type: ignore[no-untyped-def]
        """The model profiles (built-in unless given)."""
        if self._registry is None:
            from planner.models.profiles import load_registry

            self._registry = load_registry()
        return self._registry

    def model(self, name: str):  # type: ignore[no-untyped-def]
        """A ModelCost for a model name or path, as `planner estimate --model` resolves it (cached: layouts are shared)."""
        if name not in self._models:
            from planner.cost.model import ModelCost

            try:
                from planner.models.readers import resolve_model
            except ImportError:  # pragma: no cover - readers are part of the package
                resolve_model = None
            if resolve_model is not None:
                try:
                    src = resolve_model(name, self.registry)
                except OSError as exc:  # a name the OS cannot take as a path (too long, ...)
                    raise InvalidInputError(f"cannot read '{name}': {exc.strerror or exc}") from None
                self._models[name] = ModelCost(src.spec, list(src.tensors) if src.tensors else [])
            else:  # pragma: no cover
                self._models[name] = ModelCost(self.registry.get(name))
        return self._models[name]

    def target(self, spec: DeviceTarget | str, count: int | None = None, device: str | None = None) -> Target:
        """The Target of a deployment (optionally with another count or device, for what-if suggestions)."""
        from planner.plan import replicated, target_from_catalog

        if not isinstance(spec, DeviceTarget):
            if self._host_target is None:
                from planner.hardware import probe
                from planner.targets import target_from_host

                self._host_target = target_from_host(probe.local_host(self.catalog), origin="probe")
            return self._host_target
        n = count or spec.count
        dev_name = device or spec.device
        key = (dev_name, n, spec.ram_gib, spec.nodes, spec.fabric, spec.expert_parallel, spec.replicas)
        if key not in self._targets:
            ram = int(spec.ram_gib * GIB) if spec.ram_gib else None
            fabric = None
            if spec.nodes > 1 or spec.fabric:
                from planner.hardware.catalog import get_fabric, load_fabrics

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
        from planner.formats import get_format
        from planner.runtimes import get_runtime

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
        from planner.cost.evaluate import evaluate
        from planner.recommend import recommend
        from planner.runtimes import RUNTIMES

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
            rts = [rt for rt in RUNTIMES.values() if rt.support(inp.fmt, target.device).runs]
            if not rts:
                why = f"no runtime runs {inp.fmt.id} on {target.device.name} ({target.device.backend})"
                return CheckResult(dep, None, checks_of(None, why), "no runtime for the format", inp)
            plans = [evaluate(mc, inp.fmt, rt, target, kv_dtype=inp.kv_dtype, **kw) for rt in rts]
            # `planner estimate`'s choice of runtime: runs, fits, fastest.
            plans.sort(key=lambda p: (p.runs, p.fits, p.decode_tokens_per_s), reverse=True)
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
    from planner.runtimes import RUNTIMES

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


# ------------------------------------------------------------------------------------------------- explain


@dataclass
class Suggestion:
    """A change to the spec that makes a failing deployment pass, with the numbers it would then have."""

    change: dict[str, Any]
    text: str

    def as_dict(self) -> dict:
        """JSON form."""
        return {"change": self.change, "text": self.text}


def _brief(plan: Plan) -> str:
    d = _tightest(plan)
    return (f"{d.total_bytes / GIB:.1f}/{d.usable_bytes / GIB:.1f} GiB, decode {plan.decode_tokens_per_s:.1f} tok/s, "
            f"TTFT {plan.ttft_s:.2f} s, quality {quality_label(quality_kld(plan))}")


def what_would_pass(result: CheckResult, checker: Checker, max_items: int = 8) -> list[Suggestion]:
    """Spec changes that make a failing deployment pass: another format, a shorter context, fewer sequences, an 8-bit
    KV cache, more devices, a larger or faster device. Each changed deployment goes through Checker.check, the same
    path as the check itself, so every suggestion is costed and passes every limit."""
    from planner.plan import replica_layout_error
    from planner.recommend import recommend
    from planner.runtimes import RUNTIMES

    if result.passed or result.inputs is None:
        return []
    dep, inp = result.deployment, result.inputs
    mc, plan = inp.mc, result.plan
    out: list[Suggestion] = []

    def attempt(**change: Any) -> CheckResult | None:
        """The check of the deployment with `change` applied; None when it still fails."""
        target = checker.target(change["target"]) if "target" in change else inp.target
        new = Inputs(mc, target, inp.fmt, inp.runtime, change.get("kv_dtype", inp.kv_dtype), change.get("context", inp.context))
        r = checker.check(dataclasses.replace(dep, **change), new)
        return r if r.passed else None

    # 1. Another format (with the pinned runtime, if any): recommend's ranking, the first that meets every limit.
    if inp.fmt is not None:
        rec = recommend(mc, inp.target, context=inp.context, concurrency=dep.concurrency,
                        runtimes=[inp.runtime] if inp.runtime else (), kv_dtypes=[inp.kv_dtype] if inp.kv_dtype else (),
                        prompt_tokens=dep.prompt_tokens, min_tokens_per_s=dep.limits.min_decode_tokens_per_s)
        for p in rec.plans:
            if p.format_id == inp.fmt.id:
                continue
            if all(c.passed for c in plan_checks(p, dep.limits, max_context=mc.spec.max_context,
                                                 allow_context_extension=dep.allow_context_extension, context=inp.context)):
                change: dict[str, Any] = {"format": p.format_id}
                if not inp.runtime:
                    change["runtime"] = p.runtime_id
                if not inp.kv_dtype and p.kv_dtype != RUNTIMES[p.runtime_id].kv_dtypes[0]:
                    change["kv_dtype"] = p.kv_dtype  # recommend also tries an 8-bit KV cache
                out.append(Suggestion(change, f"format {p.format_id} with {p.runtime_id}: {_brief(p)}"))
                break
    # 2. A shorter context: the longest that passes, in steps of 256 tokens (binary search; failures grow with context).
    step = 256
    if inp.context > step and attempt(context=step) is not None:
        lo, hi = 1, (inp.context - 1) // step  # lo * step passes
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if attempt(context=mid * step) is not None:
                lo = mid
            else:
                hi = mid - 1
        r = attempt(context=lo * step)
        if r is not None and r.plan is not None:
            out.append(Suggestion({"context": lo * step}, f"context {lo * step} tokens (from {inp.context}): {_brief(r.plan)}"))
    # 3. Fewer concurrent sequences.
    if dep.concurrency > 1 and attempt(concurrency=1) is not None:
        lo, hi = 1, dep.concurrency - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if attempt(concurrency=mid) is not None:
                lo = mid
            else:
                hi = mid - 1
        r = attempt(concurrency=lo)
        if r is not None and r.plan is not None:
            out.append(Suggestion({"concurrency": lo}, f"concurrency {lo} (from {dep.concurrency}): {_brief(r.plan)}"))
    # 4. An 8-bit KV cache, where the deployment uses a 16-bit one.
    rt = inp.runtime or (RUNTIMES.get(plan.runtime_id) if plan is not None else None)
    if rt is not None and (inp.kv_dtype or "f16").lower() in ("f16", "fp16", "auto", "bf16"):
        eight = next((k for k in ("q8_0", "fp8_e4m3", "q8", "fp8", "int8") if k in rt.kv_dtypes), None)
        r = attempt(kv_dtype=eight) if eight else None
        if r is not None and r.plan is not None:
            out.append(Suggestion({"kv_dtype": eight}, f"KV cache {eight}: {_brief(r.plan)}"))
    # 5. More devices of the same kind, and 6. a larger or faster device (catalog targets only: `local` cannot grow).
    if isinstance(dep.target, DeviceTarget):
        t = dep.target
        most = 1 if inp.runtime is not None and inp.runtime.multi_gpu == "none" else max(8, t.count + 1)
        for n in range(t.count + 1, most + 1):
            if replica_layout_error(n, t.nodes, t.replicas):  # the replicas must still split the GPUs evenly
                continue
            r = attempt(target=t.model_copy(update={"count": n}))
            if r is not None and r.plan is not None:
                out.append(Suggestion({"target": {"device": t.device, "count": n}}, f"{n}x {inp.target.device.id}: {_brief(r.plan)}"))
                break
        here = inp.target.device
        better = sorted((d for d in checker.catalog if d.memory_kind == here.memory_kind and d.id != here.id
                         and (d.memory_bytes > here.memory_bytes or (d.memory_bytes == here.memory_bytes
                                                                     and d.mem_bandwidth_gb_s > here.mem_bandwidth_gb_s))),
                        key=lambda d: (d.backend != here.backend, d.memory_bytes, -d.mem_bandwidth_gb_s))
        # A pinned format costs one evaluate per device; `auto` runs recommend for each, so look at fewer.
        budget = len(better) if inp.fmt is not None else 12
        found: list[tuple[str, CheckResult]] = []
        for d in better[:budget]:
            r = attempt(target=t.model_copy(update={"device": d.id}))
            if r is not None and r.plan is not None:
                found.append((d.id, r))
                if len(found) == 3:
                    break
        if found:
            first_id, first = found[0]
            out.append(Suggestion({"target": {"device": first_id, "count": t.count}},
                                  f"a larger or faster device: {', '.join(i for i, _ in found)} "
                                  f"({first_id}: {_brief(first.plan)})"))  # type: ignore[arg-type]
    return out[:max_items]


def explain_data(result: CheckResult, checker: Checker) -> dict:
    """Everything --explain shows: the result, the full memory breakdown and what would make it pass."""
    data = result.as_dict()
    p = result.plan
    data["memory"] = None
    if p is not None and p.runs:
        data["memory"] = {
            "layout": p.layout, "gpu_layers": p.gpu_layers, "n_layers": p.n_layers, "host_bytes": p.host_bytes,
            "per_device": [dict(d.as_dict(), headroom_pct=round((d.usable_bytes - d.total_bytes) / max(d.usable_bytes, 1) * 100, 2))
                           for d in p.per_device],
        }
    data["what_would_pass"] = [s.as_dict() for s in what_would_pass(result, checker)]
    return data


def render_explain(data: dict) -> str:
    """--explain as text."""
    lines = [f"{'PASS' if data['passed'] else 'FAIL'} {data['name']} ({data['file']}{':' + str(data['line']) if data['line'] else ''})",
             f"  {data['model']} {data['format']} {data['runtime'] or '-'} on {data['target']}, context {data['context']} "
             f"tokens x {data['concurrency']}, KV {data['kv_dtype'] or '-'}, prompt {data['prompt_tokens']} tokens",
             f"  chosen: {data['chosen']}", ""]
    mem = data.get("memory")
    if mem:
        lines.append(f"Memory ({mem['layout']}" + (f", {mem['gpu_layers']}/{mem['n_layers']} layers on GPU" if mem['gpu_layers'] is not None else "") + "):")
        hdr = f"  {'device':<22}{'weights':>10}{'KV cache':>10}{'compute':>10}{'overhead':>10}{'total':>10}{'usable':>10}{'free':>9}"
        lines.append(hdr + "   (GiB)")
        for d in mem["per_device"]:
            g = lambda n: f"{n / GIB:.2f}"  # noqa: E731
            lines.append(f"  {d['device']:<22}{g(d['weights_bytes']):>10}{g(d['kv_cache_bytes']):>10}{g(d['activations_bytes']):>10}"
                         f"{g(d['overhead_bytes']):>10}{g(d['total_bytes']):>10}{g(d['usable_bytes']):>10}{d['headroom_pct']:>8.1f}%"
                         + ("" if d["fits"] else "  OVER"))
        if mem["host_bytes"]:
            lines.append(f"  host RAM (tensors kept on the host, offloaded layers): {mem['host_bytes'] / GIB:.2f} GiB")
        lines.append("")
    lines.append("Checks:")
    lines += _check_lines(data["checks"])
    plan = data.get("plan") or {}
    if plan.get("quality"):
        lines.append(f"  quality basis: {plan['quality'].get('basis')}")
    for w in plan.get("warnings") or []:
        lines.append(f"  ! {w}")
    if plan.get("launch"):
        lines.append(f"  launch: {plan['launch']}")
    if not data["passed"]:
        lines += ["", "What would make it pass:"]
        ways = data["what_would_pass"]
        for s in ways:
            lines.append(f"  - {_change_text(s['change'])}: {s['text']}")
        if not ways:
            lines.append("  - nothing simple found: no other format, context, concurrency, KV dtype, device count or "
                         "larger device of this kind meets every limit")
        for s in data.get("suggestions") or []:
            lines.append(f"  - {s}")
    return "\n".join(lines) + "\n"


def _change_text(change: dict) -> str:
    parts = []
    for k, v in change.items():
        if isinstance(v, dict):
            v = "{" + ", ".join(f"{a}: {b}" for a, b in v.items()) + "}"
        parts.append(f"{k}: {v}")
    return ", ".join(parts)


# ----------------------------------------------------------------------------------------------- reporters


def _fmt_value(v: Any, unit: str) -> str:
    if v is None:
        return "-"
    if unit in ("label", "tokens") or isinstance(v, str):
        return f"{v}" + ("" if unit == "label" else f" {unit}")
    return f"{v:g} {unit}" if unit != "KLD" else f"{v:.4f}"


def _check_lines(checks: list[dict]) -> list[str]:
    out = [f"  {'':4} {'check':<29}{'value':>16}  {'limit':<18}{'margin':>12}"]
    for c in checks:
        limit = f"{c['op']} {_fmt_value(c['limit'], c['unit'])}" if c["limit"] is not None else "-"
        margin = "-" if c["margin"] is None else (f"{c['margin']:+g}" if not isinstance(c["margin"], str) else c["margin"])
        out.append(f"  {'ok' if c['passed'] else 'FAIL':<4} {c['name']:<29}{_fmt_value(c['value'], c['unit']):>16}  {limit:<18}{margin:>12}")
        if not c["passed"]:
            out.append(f"       {c['message']}")
    return out


def render_text(results: Sequence[CheckResult]) -> str:
    """Human-readable report: one block per deployment, then a summary line."""
    lines: list[str] = []
    for r in results:
        d = r.deployment
        lines.append(f"{'PASS' if r.passed else 'FAIL'} {d.name} ({d.where})")
        lines.append(f"  {r.summary}")
        lines += _check_lines([c.as_dict() for c in r.checks])
        if not r.passed:
            lines.append(f"  run `planner check {d.file} --explain {_shell_word(d.name)}` for the breakdown and what would make it pass")
        lines.append("")
    lines.append(summary_line(results))
    return "\n".join(lines) + "\n"


def _shell_word(s: str) -> str:
    return s if re.fullmatch(r"[A-Za-z0-9._/:@+-]+", s) else "'" + s.replace("'", "'\\''") + "'"


def summary_line(results: Sequence[CheckResult]) -> str:
    """'3 deployments checked: 2 passed, 1 failed (name)'."""
    failed = [r.name for r in results if not r.passed]
    n = len(results)
    text = f"{n} deployment{'s' if n != 1 else ''} checked: {n - len(failed)} passed, {len(failed)} failed"
    return text + (f" ({', '.join(failed[:10])}{', ...' if len(failed) > 10 else ''})" if failed else "")


def report_dict(results: Sequence[CheckResult]) -> dict:
    """The documented JSON report."""
    failed = sum(1 for r in results if not r.passed)
    return {"schema_version": REPORT_SCHEMA_VERSION, "passed": failed == 0,
            "summary": {"deployments": len(results), "passed": len(results) - failed, "failed": failed},
            "results": [r.as_dict() for r in results]}


def render_json(results: Sequence[CheckResult]) -> str:
    """JSON report (`results` list; each with name, passed and checks with limit, value, passed, margin)."""
    return json.dumps(report_dict(results), indent=2, default=str) + "\n"


_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml(text: Any) -> str:
    """Text XML 1.0 can carry (control characters would make the report unparseable)."""
    return _XML_BAD.sub("?", str(text))


def render_junit(results: Sequence[CheckResult]) -> str:
    """JUnit XML: one testsuite per spec file, one testcase per deployment, a <failure> listing its failed checks."""
    suites: dict[str, list[CheckResult]] = {}
    for r in results:
        suites.setdefault(r.deployment.file, []).append(r)
    root = ET.Element("testsuites", name="planner check", tests=str(len(results)),
                      failures=str(sum(not r.passed for r in results)), errors="0", time="0")
    for file, rs in suites.items():
        suite = ET.SubElement(root, "testsuite", name=_xml(file), tests=str(len(rs)),
                              failures=str(sum(not r.passed for r in rs)), errors="0", skipped="0", time="0")
        for r in rs:
            case = ET.SubElement(suite, "testcase", name=_xml(r.name), classname=_xml(_classname(file)), file=_xml(file),
                                 time="0")
            if r.deployment.line:
                case.set("line", str(r.deployment.line))
            detail = "\n".join(f"{'ok  ' if c.passed else 'FAIL'} {c.name}: {c.message}" for c in r.checks)
            if not r.passed:
                fail = ET.SubElement(case, "failure", message=_xml("; ".join(f"{c.name}: {c.message}" for c in r.failures)),
                                     type="planner.check")
                fail.text = _xml(f"{r.summary}\n{detail}")
            else:
                out = ET.SubElement(case, "system-out")
                out.text = _xml(f"{r.summary}\n{detail}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _classname(file: str) -> str:
    stem = Path(file).with_suffix("").as_posix().strip("./")
    return "planner.check." + re.sub(r"[^A-Za-z0-9_]+", "_", stem or "spec")


def _gh_data(text: str) -> str:
    """Escape an annotation message (GitHub's workflow-command escaping)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_prop(text: str) -> str:
    """Escape an annotation property (file, title): also ':' and ','."""
    return _gh_data(text).replace(":", "%3A").replace(",", "%2C")


def _rel(file: str) -> str:
    """Annotation paths are relative to the workspace (the working directory in Actions)."""
    try:
        p = Path(file)
        return os.path.relpath(p) if p.is_absolute() else p.as_posix()
    except ValueError:  # another drive on Windows
        return file


def render_github(results: Sequence[CheckResult]) -> str:
    """GitHub Actions workflow commands: ::error per failed check, ::notice per passing deployment."""
    lines = []
    for r in results:
        d = r.deployment
        for c in r.failures:
            line = d.line_of(_CHECK_KEYS.get(c.name, f"limits.{c.name}"))
            props = f"file={_gh_prop(_rel(d.file))}" + (f",line={line}" if line else "")
            title = _gh_prop(f"planner check: {d.name}: {c.name}")
            lines.append(f"::error {props},title={title}::{_gh_data(f'{d.name}: {c.message} ({r.summary})')}")
        if r.passed:
            props = f"file={_gh_prop(_rel(d.file))}" + (f",line={d.line}" if d.line else "")
            margins = ", ".join(c.message for c in r.checks)
            lines.append(f"::notice {props},title={_gh_prop(f'planner check: {d.name} passes')}::{_gh_data(f'{r.summary}: {margins}')}")
    lines.append(summary_line(results))
    return "\n".join(lines) + "\n"


# The spec key whose line an annotation points at, per check.
_CHECK_KEYS = {"fits": "name", "context": "context"}


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(results: Sequence[CheckResult]) -> str:
    """A Markdown table (one row per deployment) with the failures listed under it."""
    lines = ["### planner check", "", summary_line(results), "",
             "| | deployment | plan | memory GiB | decode tok/s | TTFT s | quality | failed checks |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        p = r.plan
        mem = dec = ttft = qual = "-"
        if p is not None and p.runs and p.per_device:
            d = _tightest(p)
            mem = f"{d.total_bytes / GIB:.1f} / {d.usable_bytes / GIB:.1f}"
            dec, ttft = f"{p.decode_tokens_per_s:.1f}", f"{p.ttft_s:.2f}"
            qual = quality_label(quality_kld(p))
        failed = ", ".join(c.name for c in r.failures) or "-"
        lines.append(f"| {'✅' if r.passed else '❌'} | {_md(r.name)} | {_md(r.summary)} | {mem} | {dec} | {ttft} | {qual} | {_md(failed)} |")
    fails = [r for r in results if not r.passed]
    if fails:
        lines += ["", "**Failures**", ""]
        for r in fails:
            for c in r.failures:
                lines.append(f"- `{_md(r.name)}` ({_md(r.deployment.where)}): **{c.name}**: {_md(c.message)}")
    return "\n".join(lines) + "\n"


REPORTERS: dict[str, Callable[[Sequence[CheckResult]], str]] = {
    "text": render_text, "json": render_json, "junit": render_junit, "github": render_github, "markdown": render_markdown,
}


def main() -> None:
    """Write planner/data/deploy.schema.json from the pydantic models."""
    from planner.schemas import render
    from planner.yamlio import atomic_write_text

    atomic_write_text(SCHEMA_PATH, render(schema_json()))
    print(f"wrote {SCHEMA_PATH}")


if __name__ == "__main__":
    main()
