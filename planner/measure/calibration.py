"""Calibration records: what `planner bench` measured on a device, stored as schema'd YAML, fed to the cost model.

One file per device, `user_data_dir()/calibration/<device id>.yaml`, written atomically. Each record is one kernel's
measurement: the decode bandwidth it reached as a fraction of the catalog's peak bandwidth for that device (the
same peak `evaluate()` multiplies by), the prefill FLOP rate as a fraction of the peak the cost model uses, and the
copy bandwidth measured in the same run.

How records become efficiencies (`load_calibration`):
- A record whose `engine` is a runtime engine ('transformers' for torch's kernels, 'llamacpp' for llama.cpp)
  replaces that engine's row of the EFFICIENCY table on the device's backend. Its bandwidth fraction is divided by
  the kernel-class factor the cost model multiplies back in, so evaluate() reproduces the measured figure.
- Every record also measured the memory system (copy bandwidth, and what its kernels streamed). No runtime reads
  weights faster than that, so it caps the bandwidth fraction of every engine without its own record on that
  backend. Records from numpy's reference kernels (`engine: reference`) are used only this way: they are not a
  runtime's kernels, so they say nothing about any engine's compute rate or per-layer cost.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from planner.cost.speed import KERNEL_BANDWIDTH_FACTOR, Efficiency, efficiency
from planner.errors import InvalidInputError, PlannerError
from planner.paths import user_data_dir
from planner.yamlio import atomic_write_text, format_validation_error, load_yaml

SCHEMA_VERSION = 1
SOURCE = "planner bench"
ENGINES = ("llamacpp", "vllm", "sglang", "trtllm", "tgi", "exllamav2", "mlx", "transformers")
REFERENCE_ENGINE = "reference"  # numpy reference kernels: not a runtime; used only as a bandwidth cap
_DEVICE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")  # catalog id pattern; also keeps the file name safe


def _schema():  # type: ignore[no-untyped-def]
    """The pydantic models, built on first use (recommend without records never pays for pydantic here)."""
    global _MODELS
    if _MODELS is not None:
        return _MODELS
    # lazy: keeps pydantic (and the pydantic device schema) off recommend's start-up path
    from pydantic import BaseModel, ConfigDict, Field, model_validator

    from planner.hardware.schema import Backend

    class CalibrationRecord(BaseModel):
        """One kernel measured by `planner bench` on one device."""

        model_config = ConfigDict(extra="forbid", frozen=True)

        device_id: str = Field(pattern=_DEVICE_ID_RE.pattern, max_length=120,
                               description="Catalog id of the device measured (the id `planner recommend` plans for).")
        backend: Backend = Field(description="The device's compute backend (cpu, cuda, metal, ...).")
        engine: Literal[ENGINES + (REFERENCE_ENGINE,)] = Field(  # type: ignore[valid-type]
            description="Runtime engine whose kernels were timed, or 'reference' for numpy's reference kernels.")
        kernel_backend: Literal["numpy", "torch", "llamacpp"] = Field(description="Library whose kernel was timed.")
        kernel: str = Field(min_length=1, max_length=100, description="Kernel id, e.g. 'numpy-int8', 'torch-int4-g128'.")
        kernel_class: Literal["float", "q8", "legacy4", "kquant", "iquant", "group4", "fp8", "fp4"] = Field(
            description="The cost model's kernel class (planner.cost.speed.kernel_class) the kernel stands for.")
        format_id: str | None = Field(default=None, max_length=100, description="Format benched (--format), if any.")
        model_id: str | None = Field(default=None, max_length=200, description="Model whose shapes were timed.")
        bandwidth_fraction: float = Field(
            gt=0, le=10, description="Decode (batch 1) weight bytes per second over all layers, as a fraction of the "
            "catalog's peak bandwidth for the device (above 1 when the catalog figure is too low).")
        compute_fraction: float | None = Field(
            default=None, gt=0, le=10, description="Prefill FLOP/s over all layers as a fraction of `peak_flops`.")
        layer_overhead_us: float | None = Field(
            default=None, ge=0, le=1e5, description="Fixed cost per layer per decode step in microseconds, if measured.")
        copy_bandwidth_gb_s: float = Field(
            gt=0, le=20000, description="Copy bandwidth measured in the same run: bytes read plus bytes written per "
            "second (STREAM convention), decimal GB/s.")
        peak_bandwidth_gb_s: float = Field(gt=0, le=20000, description="The catalog peak the fractions are relative to, GB/s.")
        peak_flops: float | None = Field(default=None, gt=0, le=1e18, description="The peak FLOP/s compute_fraction is relative to.")
        measured_at: datetime = Field(description="When the measurement was taken (ISO 8601).")
        planner_version: str = Field(min_length=1, max_length=40, description="planner version that measured it.")
        source: Literal["planner bench"] = Field(description="Always 'planner bench'.")
        notes: str | None = Field(default=None, max_length=2000, description="Caveats (stand-in kernels, sampled rows).")

    class CalibrationFile(BaseModel):
        """calibration/<device id>.yaml: every record measured on one device."""

        model_config = ConfigDict(extra="forbid", frozen=True)

        schema_version: Literal[1] = Field(description="Version of this file's schema.")
        device_id: str = Field(pattern=_DEVICE_ID_RE.pattern, max_length=120, description="The device all records are for.")
        records: list[CalibrationRecord] = Field(default_factory=list, description="The measurements.")

        @model_validator(mode="after")
        def _one_device(self) -> "CalibrationFile":
            """A file holds one device's records only (it is looked up by the device id)."""
            other = sorted({r.device_id for r in self.records} - {self.device_id})
            if other:
                raise ValueError(f"records for other devices {other} in the file of '{self.device_id}'")
            return self

    _MODELS = (CalibrationRecord, CalibrationFile)
    return _MODELS


_MODELS: tuple[Any, Any] | None = None


def record_model():  # type: ignore[no-untyped-def]
    """The CalibrationRecord pydantic model."""
    return _schema()[0]


def file_model():  # type: ignore[no-untyped-def]
    """The CalibrationFile pydantic model."""
    return _schema()[1]


def calibration_dir() -> Path:
    """Where calibration files live: user_data_dir()/calibration."""
    return user_data_dir() / "calibration"


def calibration_path(device_id: str) -> Path:
    """The file of one device's records; refuses ids that are not catalog-style (no path tricks)."""
    if not _DEVICE_ID_RE.match(device_id or "") or len(device_id) > 120:
        raise PlannerError(f"'{device_id}' is not a device id (lower-case letters, digits, '.' and '-')")
    return calibration_dir() / f"{device_id}.yaml"


def parse_calibration(doc: Any, path: Path | str):  # type: ignore[no-untyped-def]
    """Validate a loaded YAML document; every problem is reported as 'file: field: message' (exit code 2)."""
    from pydantic import ValidationError  # lazy: keeps pydantic off recommend's start-up path

    if not isinstance(doc, dict):
        raise InvalidInputError(f"{path}: a calibration file is a mapping with schema_version, device_id and records; "
                                f"got {type(doc).__name__}")
    try:
        return file_model().model_validate(doc)
    except ValidationError as exc:
        lines = format_validation_error(path, exc)
        raise InvalidInputError(f"{path}: malformed calibration file (fix it or run `planner calibration clear`):\n"
                                + "\n".join(lines)) from None


def read_calibration(device_id: str):  # type: ignore[no-untyped-def]
    """The device's CalibrationFile, or None when it has none; malformed files raise naming the file."""
    path = calibration_path(device_id)
    if not path.is_file():
        return None
    cal = parse_calibration(load_yaml(path), path)
    if cal.device_id != device_id:
        raise InvalidInputError(f"{path}: device_id: '{cal.device_id}' does not match the file name ('{device_id}')")
    return cal


def _key(r: Any) -> tuple[str, str, str, str]:
    """Records with the same key replace each other (the newest measurement wins)."""
    return (r.engine, r.backend, r.kernel, r.kernel_class)


def save_records(records: list[Any]) -> Path:
    """Merge records into their device's file (same engine/backend/kernel/class replaced) and write it atomically."""
    if not records:
        raise PlannerError("no calibration records to save")
    ids = {r.device_id for r in records}
    if len(ids) != 1:
        raise PlannerError(f"records for several devices {sorted(ids)}: save them one device at a time")
    device_id = ids.pop()
    path = calibration_path(device_id)
    old = read_calibration(device_id)
    merged = {_key(r): r for r in (old.records if old else [])}
    for r in records:
        merged[_key(r)] = r
    cal = file_model()(schema_version=SCHEMA_VERSION, device_id=device_id,
                       records=sorted(merged.values(), key=lambda r: (r.engine, r.kernel, r.kernel_class)))
    import yaml  # lazy: only --save writes YAML

    header = (f"# planner calibration records for {device_id}, written by `planner bench --save`.\n"
              "# Schema: planner.measure.calibration.CalibrationFile. Remove with `planner calibration clear`.\n")
    atomic_write_text(path, header + yaml.safe_dump(cal.model_dump(mode="json"), sort_keys=False))
    return path


def list_calibrations() -> list[tuple[str, Path]]:
    """(device id, file) of every calibration file, sorted by id."""
    d = calibration_dir()
    if not d.is_dir():
        return []
    return sorted((p.stem, p) for p in d.glob("*.yaml") if p.is_file())


def clear_calibration(device_id: str | None = None) -> list[Path]:
    """Delete one device's calibration file, or every one; return what was removed."""
    paths = [calibration_path(device_id)] if device_id else [p for _, p in list_calibrations()]
    removed = []
    for p in paths:
        if p.is_file():
            p.unlink()
            removed.append(p)
    return removed


def _latest(records: list[Any]) -> list[Any]:
    """The newest record per key."""
    latest: dict[tuple, Any] = {}
    for r in records:
        k = _key(r)
        if k not in latest or r.measured_at >= latest[k].measured_at:
            latest[k] = r
    return list(latest.values())


def bandwidth_caps(records: list[Any]) -> dict[str, float]:
    """backend -> the largest fraction of catalog peak the memory system delivered (copy or any kernel)."""
    caps: dict[str, float] = {}
    for r in _latest(records):
        cap = max(r.copy_bandwidth_gb_s / r.peak_bandwidth_gb_s, r.bandwidth_fraction)
        caps[r.backend] = max(caps.get(r.backend, 0.0), cap)
    return caps


def efficiencies(records: list[Any]) -> dict[tuple[str, str], Efficiency]:
    """(engine, backend) -> Efficiency from records (see the module docstring for the rules)."""
    out: dict[tuple[str, str], Efficiency] = {}
    groups: dict[tuple[str, str], list[Any]] = {}
    for r in _latest(records):
        if r.engine != REFERENCE_ENGINE:
            groups.setdefault((r.engine, r.backend), []).append(r)
    for (engine, backend), rs in groups.items():
        base = efficiency(engine, backend)
        # evaluate() multiplies the engine's fraction by the kernel-class factor: divide it out per record.
        bw = sum(r.bandwidth_fraction / KERNEL_BANDWIDTH_FACTOR.get(r.kernel_class, 0.9) for r in rs) / len(rs)
        comp = [r.compute_fraction for r in rs if r.compute_fraction is not None]
        over = [r.layer_overhead_us for r in rs if r.layer_overhead_us is not None]
        out[(engine, backend)] = Efficiency(bw, sum(comp) / len(comp) if comp else base.compute,
                                            sum(over) / len(over) if over else base.layer_overhead_us, "measured",
                                            base.step_overhead_us)
    # The memory system caps every other engine on the backend: the best of copy and kernel streaming rates.
    for backend, cap in bandwidth_caps(records).items():
        for engine in ENGINES:
            if (engine, backend) in out:
                continue
            base = efficiency(engine, backend)
            if cap < base.bandwidth:
                out[(engine, backend)] = Efficiency(cap, base.compute, base.layer_overhead_us, "measured",
                                                            base.step_overhead_us)
    return out


def load_calibration(device_id: str) -> dict[tuple[str, str], Efficiency]:
    """The device's measured efficiencies, (engine, backend) -> Efficiency with provenance 'measured'; {} if none."""
    try:
        path = calibration_path(device_id)
    except PlannerError:
        return {}  # ids that cannot name a file (custom devices) never have records
    if not path.is_file():
        return {}
    cal = read_calibration(device_id)
    return efficiencies(list(cal.records)) if cal else {}


def describe(device_id: str) -> str | None:
    """One line for command output: which records a plan for this device uses; None when there are none."""
    try:
        path = calibration_path(device_id)
    except PlannerError:
        return None
    if not path.is_file():
        return None
    cal = read_calibration(device_id)
    if cal is None or not cal.records:
        return None
    records = list(cal.records)
    eff = efficiencies(records)
    newest = max(records, key=lambda r: r.measured_at)
    direct = sorted({r.engine for r in _latest(records) if r.engine != REFERENCE_ENGINE})
    parts = [f"measured kernels for {', '.join(direct)}"] if direct else []
    capped = sorted({e for e, _ in eff} - set(direct))
    if capped:
        caps = bandwidth_caps(records)
        cap = min(caps.values())
        parts.append(f"decode bandwidth of {'other engines' if direct else 'every engine'} capped at {cap:.2f} of the "
                     f"catalog's {newest.peak_bandwidth_gb_s:g} GB/s (copy bandwidth {newest.copy_bandwidth_gb_s:.1f} GB/s)")
    if not parts:
        parts.append("measurements at or above the table's figures (no change)")
    return (f"calibration for {device_id} measured {newest.measured_at:%Y-%m-%d %H:%M} ({len(records)} record(s)): "
            f"{'; '.join(parts)}. From {path}; --no-calibration ignores it")


def for_target(target: Any, enabled: bool = True) -> tuple[dict[tuple[str, str], Efficiency] | None, str | None]:
    """(calibration for evaluate/recommend, a note saying it is used) for a target's device; (None, None) when
    disabled (--no-calibration) or when the device has no records."""
    measured = getattr(target, "measured_bandwidth", None)
    device_id = target.device.id
    cal = load_calibration(device_id) if enabled else {}
    note = describe(device_id) if cal else None
    if measured is not None and target.device.backend == "cpu":
        cal = measured_caps(cal, measured.read_gb_s, target.device.mem_bandwidth_gb_s, target.device.backend)
    if not cal:
        return None, note
    return cal, note


def measured_caps(cal: dict[tuple[str, str], Efficiency], read_gb_s: float, peak_gb_s: float,
                  backend: str) -> dict[tuple[str, str], Efficiency]:
    """Calibration with this machine's measured read bandwidth as a cap on every engine's decode bandwidth on the
    backend, like a record's copy bandwidth; an engine that `planner bench --save` records already cover keeps them
    (they measured this device too, with a runtime's kernels or its copy bandwidth)."""
    out = dict(cal)
    cap = read_gb_s / peak_gb_s
    for engine in ENGINES:
        key = (engine, backend)
        if key in cal:
            continue
        base = efficiency(engine, backend)
        if cap < base.bandwidth:
            # only the bandwidth was measured, not the engine: its speed keeps the basis of its own constants
            out[key] = Efficiency(cap, base.compute, base.layer_overhead_us, base.provenance, base.step_overhead_us)
    return out
