"""The probe snapshot's schema (version 1) and its validation: `validate_snapshot`, `parse_snapshot`, `load_snapshot`.

A snapshot is the plain JSON `read_raw()` writes (and `planner probe --raw` prints); `validate_snapshot` checks a saved,
received or freshly probed one before `interpret()` reads it. The schema is plain data checked by a small validator,
not pydantic models: every `planner recommend` on a probed machine validates one, and pydantic's import and model
building (~0.2 s) would be most of that command's time. Types are strict (an int is not a bool or a float; floats are
finite), unknown keys are ignored (newer planners' additions still load), and a missing optional field takes its
default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.cache import plain
from planner.errors import InvalidInputError, preview, show
from planner.hardware.probe._shared import GIB, MIB
from planner.yamlio import parse_json, read_text

SNAPSHOT_VERSION = 1
_MAX_BYTES = 2**52  # 4 PiB: far above any machine, low enough that a unit slip cannot pass
_MAX_DEVICE_BYTES = 4096 * GIB  # DeviceSpec's own bound


@dataclass(frozen=True)
class Field:
    """One field of the schema: its type ('int', 'float', 'bool', 'str', 'list', 'dict' or a section's name), bounds,
    and whether it may be null or left out."""

    kind: str
    default: Any = None  # taken when the key is missing (a list or dict default is copied)
    required: bool = False
    nullable: bool = True
    ge: float | None = None
    le: float | None = None
    max_length: int | None = None  # characters of a string, items of a list
    pattern: str | None = None  # a string must match it whole
    item: str | None = None  # a list's items, a dict's values: a kind
    item_nullable: bool = False


def _bytes(le: int = _MAX_BYTES) -> Field:
    return Field("int", ge=0, le=le)


_NAME = Field("str", max_length=256)
_ERRORS = Field("dict", default={}, nullable=False, item="str")

# Section name -> its fields. read_raw() fills these from NVML, amd-smi/sysfs, sysctl, /proc and cgroupfs.
SCHEMA: dict[str, dict[str, Field]] = {
    "SourceStatus": {  # how one probe source went: ok, absent (not on this machine), or failed with a reason
        "ok": Field("bool", required=True, nullable=False),
        "absent": Field("bool", default=False, nullable=False),  # no library / other OS: not an error
        "reason": Field("str", max_length=2000),
        "elapsed_ms": Field("float", ge=0),
    },
    "MigRecord": {
        "index": Field("int", required=True, nullable=False, ge=0, le=64),
        "name": _NAME, "uuid": _NAME, "gpu_instance_id": Field("int"), "compute_instance_id": Field("int"),
        "memory_total_bytes": _bytes(_MAX_DEVICE_BYTES), "memory_free_bytes": _bytes(), "memory_used_bytes": _bytes(),
        "errors": _ERRORS,
    },
    "ProcessRecord": {"pid": Field("int", required=True, nullable=False, ge=0), "used_memory_bytes": _bytes()},
    "NvidiaGpuRecord": {
        "index": Field("int", required=True, nullable=False, ge=0, le=1024),
        "name": _NAME, "uuid": _NAME, "pci_bus_id": _NAME,
        "pci_device_id": Field("str", pattern=r"[0-9a-f]{4}"),
        "pci_subsystem_id": Field("str", pattern=r"[0-9a-f]{4}:[0-9a-f]{4}"),  # vendor:device
        "memory_total_bytes": _bytes(_MAX_DEVICE_BYTES), "memory_free_bytes": _bytes(), "memory_used_bytes": _bytes(),
        "memory_bus_width_bits": Field("int", ge=8, le=16384),
        "max_memory_clock_mhz": Field("int", ge=1, le=100_000),
        "max_sm_clock_mhz": Field("int", ge=1, le=10_000),
        "cuda_cores": Field("int", ge=1, le=1_000_000),
        "sm_count": Field("int", ge=1, le=10_000),  # from the CUDA driver
        "sm_clock_mhz": Field("int", ge=1, le=10_000),  # rated boost, from the CUDA driver
        "compute_capability": Field("str", pattern=r"\d{1,2}\.\d"),
        "pcie_gen_current": Field("int", ge=0, le=16), "pcie_gen_max": Field("int", ge=0, le=16),
        "pcie_width_current": Field("int", ge=0, le=64), "pcie_width_max": Field("int", ge=0, le=64),
        "nvlink_active_links": Field("int", ge=0, le=64),
        "power_limit_w": Field("float", ge=0, le=10000),
        "processes": Field("list", item="ProcessRecord"),
        "mig_enabled": Field("bool"), "mig_pending": Field("bool"),
        "mig_max_devices": Field("int", ge=0, le=64),
        "mig_devices": Field("list", default=[], nullable=False, item="MigRecord"),
        "errors": _ERRORS,
    },
    "NvidiaSection": {
        "driver_version": _NAME, "cuda_driver_version": _NAME, "nvml_version": _NAME,
        "gpus": Field("list", default=[], nullable=False, item="NvidiaGpuRecord", max_length=1024),
        "errors": _ERRORS,
    },
    "AmdGpuRecord": {
        "index": Field("int", required=True, nullable=False, ge=0, le=1024),
        "name": _NAME, "gfx_target": _NAME, "pci_bus_id": _NAME, "unique_id": _NAME,
        "vram_total_bytes": _bytes(_MAX_DEVICE_BYTES), "vram_used_bytes": _bytes(),
        "gtt_total_bytes": _bytes(), "gtt_used_bytes": _bytes(), "apu": Field("bool"),
    },
    "AmdSection": {
        "tool": _NAME, "gpus": Field("list", default=[], nullable=False, item="AmdGpuRecord", max_length=1024),
        "errors": _ERRORS,
    },
    "AppleSection": {
        "chip": _NAME, "model": _NAME, "memory_bytes": _bytes(_MAX_DEVICE_BYTES),
        "gpu_cores": Field("int", ge=0, le=100000), "wired_limit_mb": Field("int", ge=0, le=_MAX_BYTES // MIB),
        "errors": _ERRORS,
    },
    "CpuSection": {
        "model": _NAME, "arch": _NAME,
        "physical_cores": Field("int", ge=0, le=65536), "logical_cores": Field("int", ge=0, le=65536),
        "usable_cores": Field("int", ge=0, le=65536),
        "flags": Field("list", default=[], nullable=False, item="str", max_length=4096),
        "flags_source": _NAME,
    },
    "MemorySection": {"total_bytes": _bytes(), "available_bytes": _bytes(), "swap_total_bytes": _bytes(),
                      "swap_free_bytes": _bytes()},
    "CgroupSection": {
        "version": Field("int", ge=1, le=2), "path": Field("str", max_length=4096),
        "memory_limit_bytes": _bytes(), "memory_usage_bytes": _bytes(), "inactive_file_bytes": _bytes(),
    },
    "PlatformSection": {"system": _NAME, "machine": _NAME, "release": _NAME, "python": _NAME},
    "Snapshot": {  # every hardware section is null when its source failed
        "snapshot_version": Field("int", required=True, nullable=False, ge=1),
        "planner_version": _NAME, "captured_at": _NAME,
        "platform": Field("PlatformSection"),
        "env": Field("dict", default={}, nullable=False, item="str", item_nullable=True),
        # one status per source: nvml, amd, apple, cpu, memory, cgroup
        "sources": Field("dict", required=True, nullable=False, item="SourceStatus"),
        "nvidia": Field("NvidiaSection"), "amd": Field("AmdSection"), "apple": Field("AppleSection"),
        "cpu": Field("CpuSection"), "memory": Field("MemorySection"), "cgroup": Field("CgroupSection"),
    },
}


class Section:
    """A validated section of a snapshot: its fields as attributes (read-only)."""

    def __init__(self, section: str, fields: dict[str, Any]) -> None:
        object.__setattr__(self, "_section", section)
        self.__dict__.update(fields)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{self._section} is read-only")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Section) and self.__dict__ == other.__dict__

    def __repr__(self) -> str:
        return f"{self._section}({', '.join(f'{k}={v!r}' for k, v in self.fields().items())})"

    def fields(self) -> dict[str, Any]:
        """The fields by name."""
        return {k: v for k, v in self.__dict__.items() if k != "_section"}

    def model_dump(self, mode: str | None = None) -> dict:
        """Fields as plain data (nested sections too), as the snapshot JSON holds them."""
        return {k: plain(v, mode) for k, v in self.fields().items()}


class _Problems(list):
    """Where the data breaks the schema: (location, message) pairs."""

    def add(self, loc: str, msg: str) -> None:
        self.append((loc or "(top level)", msg))


def _check(value: Any, f: Field, loc: str, problems: _Problems) -> Any:
    """The value for field `f`, or None after recording why it does not fit."""
    if value is None:
        if not f.nullable:
            problems.add(loc, "must not be null")
        return None
    kind = f.kind
    if kind in SCHEMA:
        return _section(value, kind, loc, problems)
    if kind == "bool":
        if not isinstance(value, bool):
            problems.add(loc, f"expected true or false, got {preview(value, 40)}")
        return value
    if kind in ("int", "float"):
        ok = isinstance(value, int) and not isinstance(value, bool) or kind == "float" and isinstance(value, float)
        if not ok:
            problems.add(loc, f"expected {'an integer' if kind == 'int' else 'a number'}, got {preview(value, 40)}")
            return None
        if isinstance(value, float) and not math.isfinite(value):
            problems.add(loc, "expected a finite number")
        elif f.ge is not None and value < f.ge:
            problems.add(loc, f"must be >= {f.ge:g}, got {preview(value, 40)}")
        elif f.le is not None and value > f.le:
            problems.add(loc, f"must be <= {f.le:g}, got {preview(value, 40)}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            problems.add(loc, f"expected a string, got {preview(value, 40)}")
        elif f.max_length is not None and len(value) > f.max_length:
            problems.add(loc, f"longer than {f.max_length} characters")
        elif f.pattern is not None and re.fullmatch(f.pattern, value) is None:
            problems.add(loc, f"expected the form {f.pattern}, got {preview(value, 40)}")
        return value
    item = Field(f.item or "str", nullable=f.item_nullable)
    if kind == "list":
        if not isinstance(value, list):
            problems.add(loc, f"expected a list, got {preview(value, 40)}")
            return None
        if f.max_length is not None and len(value) > f.max_length:
            problems.add(loc, f"more than {f.max_length} items")
            return None
        return [_check(x, item, f"{loc}[{i}]", problems) for i, x in enumerate(value)]
    if not isinstance(value, Mapping):  # dict
        problems.add(loc, f"expected an object, got {preview(value, 40)}")
        return None
    return {k: _check(x, item, f"{loc}.{show(str(k), 60)}", problems) for k, x in value.items()}


def _section(value: Any, section: str, loc: str, problems: _Problems) -> Section | None:
    if not isinstance(value, Mapping):
        problems.add(loc, f"expected an object, got {preview(value, 40)}")
        return None
    out: dict[str, Any] = {}
    for name, f in SCHEMA[section].items():
        where = f"{loc}.{name}" if loc else name
        if name in value:
            out[name] = _check(value[name], f, where, problems)
        elif f.required:
            problems.add(where, "missing")
        else:
            out[name] = type(f.default)(f.default) if isinstance(f.default, (list, dict)) else f.default
    return Section(section, out)


def validate_snapshot(data: Any, source: str = "snapshot") -> Section:
    """Validate a snapshot dict; raise InvalidInputError with one line naming the first bad field."""
    if not isinstance(data, Mapping):
        raise InvalidInputError(f"{source}: not a probe snapshot (expected a JSON object, got {type(data).__name__})")
    if "snapshot_version" not in data:
        hint = " (this looks like 'planner probe --json' output; save 'planner probe --raw' instead)" if "gpus" in data else ""
        raise InvalidInputError(f"{source}: not a probe snapshot: no snapshot_version field{hint}")
    version = data.get("snapshot_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SNAPSHOT_VERSION:
        raise InvalidInputError(f"{source}: snapshot_version {preview(version, 20)} is newer than this planner reads "
                                f"({SNAPSHOT_VERSION}); upgrade planner")
    problems = _Problems()
    snap = _section(data, "Snapshot", "", problems)
    if problems:
        loc, msg = problems[0]
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise InvalidInputError(f"{source}: {loc}: {msg}{more}")
    assert snap is not None  # a Mapping always gives a Section
    return snap


def parse_snapshot(text: str, source: str = "snapshot") -> dict:
    """Parse and validate snapshot JSON text; raise InvalidInputError naming `source` on any problem."""
    data = parse_json(text, source, hint=" (truncated snapshot?)")
    validate_snapshot(data, source)
    return data


def load_snapshot(path: str | Path) -> dict:
    """Read a snapshot saved with `planner probe --raw`; raise InvalidInputError on unreadable, bad or truncated files."""
    return parse_snapshot(read_text(Path(path), "snapshot file"), str(path))
