"""The deployment spec of `planner check`: its pydantic schema and the loading of spec files into Deployments.

A spec file lists deployments (model x format x runtime x target x context) with limits, and optional defaults.
Loading reports every problem of every file at once, each as `file:line: field: message` (line numbers come from
the YAML node tree; duplicate keys, which PyYAML would keep silently, are errors).

The committed JSON schema, planner/data/deploy.schema.json, is schema_json(): `python -m planner.schemas` rewrites
it after a change, and a test fails while it is stale.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from planner.errors import InvalidInputError, clip, close_matches, preview, show
from planner.plan import replica_layout_error
from planner.yamlio import safe_loader, parse_yaml, read_text

SPEC_VERSION = 1
# The words planner.cost.quality.Quality.label gives, mildest first (a test keeps the two in step).
QUALITY_LABELS = ("lossless", "negligible", "small", "noticeable", "large", "severe")
# Same default as --context: the model's maximum, capped so a 128k model is not planned at 128k by accident.
DEFAULT_CONTEXT = 8192
DEFAULT_PROMPT_TOKENS = 512
MAX_TOKENS = 10_485_760  # 10 Mi tokens: beyond any model's context; a slip of a factor of 1000 cannot load
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
