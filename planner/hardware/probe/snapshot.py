"""The probe snapshot's schema (version 1) and its validation: `validate_snapshot`, `parse_snapshot`, `load_snapshot`.

A snapshot is the plain JSON `read_raw()` writes (and `planner probe --raw` prints); these models check a saved or
received one before `interpret()` reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from planner.errors import InvalidInputError, preview
from planner.hardware.probe._shared import GIB, MIB
from planner.yamlio import format_validation_error, parse_json, read_text

SNAPSHOT_VERSION = 1
_MAX_BYTES = 2**52  # 4 PiB: far above any machine, low enough that a unit slip cannot pass
_MAX_DEVICE_BYTES = 4096 * GIB  # DeviceSpec's own bound


class _Snap(BaseModel):
    """Base of the snapshot models: strict types, unknown keys ignored so newer planners' additions still load."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True, allow_inf_nan=False)


_Bytes = Annotated[int, Field(ge=0, le=_MAX_BYTES)]
_DeviceBytes = Annotated[int, Field(ge=0, le=_MAX_DEVICE_BYTES)]
_Name = Annotated[str, Field(max_length=256)]


class SourceStatus(_Snap):
    """How one probe source went: ok, absent (not on this machine), or failed with a reason."""

    ok: bool = Field(description="The source was read.")
    absent: bool = Field(default=False, description="The source does not exist here (no library, other OS); not an error.")
    reason: str | None = Field(default=None, max_length=2000, description="Why the source was not read.")
    elapsed_ms: float | None = Field(default=None, ge=0, description="Time the source took.")


class MigRecord(_Snap):
    index: int = Field(ge=0, le=64)
    name: _Name | None = None
    uuid: _Name | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    memory_total_bytes: _DeviceBytes | None = None
    memory_free_bytes: _Bytes | None = None
    memory_used_bytes: _Bytes | None = None
    errors: dict[str, str] = Field(default_factory=dict)


class ProcessRecord(_Snap):
    pid: int = Field(ge=0)
    used_memory_bytes: _Bytes | None = None


class NvidiaGpuRecord(_Snap):
    index: int = Field(ge=0, le=1024)
    name: _Name | None = None
    uuid: _Name | None = None
    pci_bus_id: _Name | None = None
    pci_device_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{4}$")
    pci_subsystem_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{4}:[0-9a-f]{4}$")  # vendor:device
    memory_total_bytes: _DeviceBytes | None = None
    memory_free_bytes: _Bytes | None = None
    memory_used_bytes: _Bytes | None = None
    memory_bus_width_bits: int | None = Field(default=None, ge=8, le=16384)
    max_memory_clock_mhz: int | None = Field(default=None, ge=1, le=100_000)
    max_sm_clock_mhz: int | None = Field(default=None, ge=1, le=10_000)
    cuda_cores: int | None = Field(default=None, ge=1, le=1_000_000)
    sm_count: int | None = Field(default=None, ge=1, le=10_000)  # from the CUDA driver
    sm_clock_mhz: int | None = Field(default=None, ge=1, le=10_000)  # rated boost, from the CUDA driver
    compute_capability: str | None = Field(default=None, pattern=r"^\d{1,2}\.\d$")
    pcie_gen_current: int | None = Field(default=None, ge=0, le=16)
    pcie_gen_max: int | None = Field(default=None, ge=0, le=16)
    pcie_width_current: int | None = Field(default=None, ge=0, le=64)
    pcie_width_max: int | None = Field(default=None, ge=0, le=64)
    nvlink_active_links: int | None = Field(default=None, ge=0, le=64)
    power_limit_w: float | None = Field(default=None, ge=0, le=10000)
    processes: list[ProcessRecord] | None = None
    mig_enabled: bool | None = None
    mig_pending: bool | None = None
    mig_max_devices: int | None = Field(default=None, ge=0, le=64)
    mig_devices: list[MigRecord] = Field(default_factory=list)
    errors: dict[str, str] = Field(default_factory=dict)


class NvidiaSection(_Snap):
    driver_version: _Name | None = None
    cuda_driver_version: _Name | None = None
    nvml_version: _Name | None = None
    gpus: list[NvidiaGpuRecord] = Field(default_factory=list, max_length=1024)
    errors: dict[str, str] = Field(default_factory=dict)


class AmdGpuRecord(_Snap):
    index: int = Field(ge=0, le=1024)
    name: _Name | None = None
    gfx_target: _Name | None = None
    pci_bus_id: _Name | None = None
    unique_id: _Name | None = None
    vram_total_bytes: _DeviceBytes | None = None
    vram_used_bytes: _Bytes | None = None
    gtt_total_bytes: _Bytes | None = None
    gtt_used_bytes: _Bytes | None = None
    apu: bool | None = None


class AmdSection(_Snap):
    tool: _Name | None = None
    gpus: list[AmdGpuRecord] = Field(default_factory=list, max_length=1024)
    errors: dict[str, str] = Field(default_factory=dict)


class AppleSection(_Snap):
    chip: _Name | None = None
    model: _Name | None = None
    memory_bytes: _DeviceBytes | None = None
    gpu_cores: int | None = Field(default=None, ge=0, le=100000)
    wired_limit_mb: int | None = Field(default=None, ge=0, le=_MAX_BYTES // MIB)
    errors: dict[str, str] = Field(default_factory=dict)


class CpuSection(_Snap):
    model: _Name | None = None
    arch: _Name | None = None
    physical_cores: int | None = Field(default=None, ge=0, le=65536)
    logical_cores: int | None = Field(default=None, ge=0, le=65536)
    usable_cores: int | None = Field(default=None, ge=0, le=65536)
    flags: list[str] = Field(default_factory=list, max_length=4096)
    flags_source: _Name | None = None


class MemorySection(_Snap):
    total_bytes: _Bytes | None = None
    available_bytes: _Bytes | None = None
    swap_total_bytes: _Bytes | None = None
    swap_free_bytes: _Bytes | None = None


class CgroupSection(_Snap):
    version: int | None = Field(default=None, ge=1, le=2)
    path: str | None = Field(default=None, max_length=4096)
    memory_limit_bytes: _Bytes | None = None
    memory_usage_bytes: _Bytes | None = None
    inactive_file_bytes: _Bytes | None = None


class PlatformSection(_Snap):
    system: _Name | None = None
    machine: _Name | None = None
    release: _Name | None = None
    python: _Name | None = None


class Snapshot(_Snap):
    """A probe snapshot as `read_raw()` writes it (version 1); every hardware section is null when its source failed."""

    snapshot_version: int = Field(ge=1, description="Format version of the snapshot.")
    planner_version: _Name | None = None
    captured_at: _Name | None = None
    platform: PlatformSection | None = None
    env: dict[str, str | None] = Field(default_factory=dict)
    sources: dict[str, SourceStatus] = Field(description="Status of each source: nvml, amd, apple, cpu, memory, cgroup.")
    nvidia: NvidiaSection | None = None
    amd: AmdSection | None = None
    apple: AppleSection | None = None
    cpu: CpuSection | None = None
    memory: MemorySection | None = None
    cgroup: CgroupSection | None = None


def validate_snapshot(data: Any, source: str = "snapshot") -> Snapshot:
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
    try:
        return Snapshot.model_validate(data)
    except ValidationError as exc:
        lines = format_validation_error(source, exc)
        more = f" (and {len(lines) - 1} more problem(s))" if len(lines) > 1 else ""
        raise InvalidInputError(lines[0].replace("\n", " ") + more) from None
    except RecursionError:
        raise InvalidInputError(f"{source}: nested too deeply") from None


def parse_snapshot(text: str, source: str = "snapshot") -> dict:
    """Parse and validate snapshot JSON text; raise InvalidInputError naming `source` on any problem."""
    data = parse_json(text, source, hint=" (truncated snapshot?)")
    validate_snapshot(data, source)
    return data


def load_snapshot(path: str | Path) -> dict:
    """Read a snapshot saved with `planner probe --raw`; raise InvalidInputError on unreadable, bad or truncated files."""
    return parse_snapshot(read_text(Path(path), "snapshot file"), str(path))
