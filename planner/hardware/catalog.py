"""The device catalog: one schema (DeviceSpec), a loader that reports every problem at once, and a resolver.

Units: memory sizes are GiB (2**30 bytes), as GPU and unified-memory capacities are sold; bandwidths are
decimal GB/s (10**9 bytes per second), as vendors publish them; compute is dense (no 2:4 sparsity) TFLOPS/TOPS.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from planner.errors import AmbiguousError, CatalogError, NotFoundError, close_matches, normalize_name
from planner.yamlio import load_yaml_dir, format_validation_error

Vendor = Literal["nvidia", "amd", "apple", "intel", "qualcomm", "generic"]
Backend = Literal["cuda", "rocm", "metal", "sycl", "vulkan", "habana", "cpu"]
MemoryKind = Literal["dedicated", "unified", "system"]
Provenance = Literal["measured", "assumed", "datasheet"]

_ID_RE = r"^[a-z0-9][a-z0-9.-]*$"


class Derating(BaseModel):
    """An achievable fraction of a peak figure, with where it comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fraction: float = Field(gt=0, le=1, description="Achievable fraction of the peak figure (0-1].")
    provenance: Provenance = Field(description="'measured' on real hardware, or 'assumed'.")
    source: str = Field(min_length=1, description="Where the fraction comes from (URL, benchmark, 'planner bench').")


class DeviceSpec(BaseModel):
    """One device a model can run on: a GPU, a unified-memory system, an accelerator or a CPU memory system."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_ID_RE, description="Stable lower-case id used on the command line, e.g. 'h100-sxm'.")
    name: str = Field(min_length=1, description="Display name, e.g. 'NVIDIA H100 SXM5 80GB'.")
    vendor: Vendor = Field(description="Silicon vendor.")
    backend: Backend = Field(description="Main compute backend runtimes use on it (cuda, rocm, metal, sycl, habana, cpu).")
    architecture: str = Field(min_length=1, description="Architecture name, e.g. 'hopper', 'ada', 'cdna3', 'apple-m3'.")
    compute_capability: str | None = Field(
        default=None, pattern=r"^\d{1,2}\.\d$", description="NVIDIA CUDA compute capability, e.g. '9.0'."
    )
    gfx_target: str | None = Field(default=None, description="AMD LLVM gfx target, e.g. 'gfx942'.")
    memory_gib: float = Field(gt=0, le=4096, description="Device memory in GiB (2**30 bytes); for unified memory the system RAM.")
    memory_options_gib: list[float] = Field(
        default_factory=list, description="Other memory sizes this device is sold with (GiB); each becomes an id '<id>-<N>gb'."
    )
    memory_type: str = Field(min_length=1, description="Memory technology, e.g. 'HBM3', 'GDDR6X', 'LPDDR5X', 'DDR5'.")
    memory_kind: MemoryKind = Field(description="'dedicated' VRAM, 'unified' memory shared with the CPU, or 'system' RAM (CPU targets).")
    mem_bandwidth_gb_s: float = Field(gt=0, le=20000, description="Peak memory bandwidth in decimal GB/s.")
    gpu_usable_fraction: float | None = Field(
        default=None, gt=0, le=1, description="Unified memory only: default fraction of RAM the GPU may use."
    )
    peak_fp32_tflops: float | None = Field(default=None, gt=0, le=5000, description="Peak dense FP32 TFLOPS.")
    peak_fp16_tflops: float | None = Field(default=None, gt=0, le=30000, description="Peak dense FP16 tensor TFLOPS (FP32 accumulate).")
    peak_bf16_tflops: float | None = Field(default=None, gt=0, le=30000, description="Peak dense BF16 tensor TFLOPS (FP32 accumulate).")
    peak_fp16_acc16_tflops: float | None = Field(
        default=None, gt=0, le=60000,
        description="Peak dense FP16 tensor TFLOPS with FP16 accumulate, where it differs (GeForce: 2x the FP32-accumulate rate).",
    )
    peak_fp8_tflops: float | None = Field(default=None, gt=0, le=30000, description="Peak dense FP8 tensor TFLOPS.")
    peak_fp4_tflops: float | None = Field(default=None, gt=0, le=60000, description="Peak dense FP4 tensor TFLOPS.")
    peak_int8_tops: float | None = Field(default=None, gt=0, le=30000, description="Peak dense INT8 tensor TOPS.")
    gpu_cores: int | None = Field(default=None, gt=0, le=100000, description="GPU cores (Apple) or SMs/CUs where useful.")
    cpu_cores: int | None = Field(default=None, gt=0, le=1024, description="CPU cores, for CPU and unified-memory targets.")
    tdp_w: float | None = Field(default=None, gt=0, le=3000, description="Board power / TDP in watts.")
    nvlink_gb_s: float | None = Field(default=None, gt=0, le=5000, description="NVLink bandwidth per GPU, GB/s (bidirectional).")
    infinity_fabric_gb_s: float | None = Field(default=None, gt=0, le=5000, description="AMD Infinity Fabric bandwidth per GPU, GB/s.")
    pcie_gen: int | None = Field(default=None, ge=1, le=6, description="PCIe generation of the host link.")
    pcie_lanes: int | None = Field(default=None, ge=1, le=32, description="PCIe lanes of the host link.")
    launch_year: int = Field(ge=2010, le=2030, description="Year the device launched.")
    aliases: list[str] = Field(default_factory=list, description="Other names a user may type, e.g. '4090'.")
    nvml_names: list[str] = Field(default_factory=list, description="Names NVML / rocm-smi / sysctl report for it.")
    bandwidth_derating: Derating | None = Field(
        default=None, description="Achievable fraction of peak bandwidth when known for this device (else the backend default)."
    )
    source: str = Field(min_length=1, description="Where the figures come from: datasheet URL, vendor page, or 'measured'.")
    sources: dict[str, str] = Field(
        default_factory=dict, description="Per-field sources where a figure comes from elsewhere than `source`."
    )
    unverified: list[str] = Field(
        default_factory=list, description="Names of fields whose figures no source confirms; shown by 'catalog --unverified'."
    )
    notes: str | None = Field(default=None, description="Caveats about the figures.")

    @field_validator("unverified", "sources")
    @classmethod
    def _known_fields(cls, value):  # type: ignore[no-untyped-def]
        """Only real field names can be marked unverified or given their own source."""
        names = value.keys() if isinstance(value, dict) else value
        unknown = [n for n in names if n not in cls.model_fields]
        if unknown:
            raise ValueError(f"unknown field name(s) {unknown}")
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> "DeviceSpec":
        """Rules that tie fields together, so an inconsistent entry cannot load."""
        if self.memory_kind == "unified" and self.gpu_usable_fraction is None:
            raise ValueError("a unified-memory device needs gpu_usable_fraction (the default GPU share of RAM)")
        if self.memory_kind != "unified" and self.gpu_usable_fraction is not None:
            raise ValueError("gpu_usable_fraction applies only to unified-memory devices")
        if self.memory_kind == "system" and self.backend != "cpu":
            raise ValueError("memory_kind 'system' is for CPU targets (backend 'cpu')")
        if self.backend == "cuda" and self.compute_capability is None:
            raise ValueError("an NVIDIA CUDA device needs compute_capability")
        if self.compute_capability is not None:
            if self.vendor != "nvidia":
                raise ValueError("compute_capability is an NVIDIA notion")
            cc = self.cc
            if self.peak_bf16_tflops is not None and cc < 8.0:
                raise ValueError(f"peak_bf16_tflops given but compute capability {self.compute_capability} has no BF16 tensor cores (needs 8.0+)")
            if self.peak_fp8_tflops is not None and cc < 8.9:
                raise ValueError(f"peak_fp8_tflops given but compute capability {self.compute_capability} has no FP8 (needs 8.9+)")
            if self.peak_fp4_tflops is not None and cc < 10.0:
                raise ValueError(f"peak_fp4_tflops given but compute capability {self.compute_capability} has no FP4 (needs 10.0+)")
        if self.memory_options_gib and self.memory_gib not in self.memory_options_gib:
            raise ValueError("memory_options_gib must include memory_gib")
        return self

    @property
    def cc(self) -> float:
        """Compute capability as a number (0.0 where it does not apply)."""
        return float(self.compute_capability) if self.compute_capability else 0.0

    @property
    def memory_bytes(self) -> int:
        """Total device memory in bytes."""
        return int(self.memory_gib * 2**30)

    def peak_tflops(self, dtype: str) -> float | None:
        """Peak dense tensor throughput for a compute dtype ('fp16', 'bf16', 'fp8', 'fp4', 'int8', 'fp32')."""
        return {
            "fp32": self.peak_fp32_tflops,
            "fp16": self.peak_fp16_tflops or self.peak_bf16_tflops,
            "fp16_acc16": self.peak_fp16_acc16_tflops or self.peak_fp16_tflops or self.peak_bf16_tflops,
            "bf16": self.peak_bf16_tflops,
            "fp8": self.peak_fp8_tflops,
            "fp4": self.peak_fp4_tflops,
            "int8": self.peak_int8_tops,
        }.get(dtype)


class CatalogFile(BaseModel):
    """One YAML file of the catalog: a device family."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: str = Field(min_length=1, description="Family name, e.g. 'NVIDIA Hopper'.")
    description: str | None = Field(default=None, description="What the file covers.")
    devices: list[DeviceSpec] = Field(min_length=1, description="The devices of this family.")


def _expand_memory_options(device: DeviceSpec) -> list[DeviceSpec]:
    """One entry per memory size a user can buy, so 'm3-max-128gb' resolves."""
    out = [device]
    for gib in device.memory_options_gib:
        size = f"{gib:g}"
        variant = device.model_copy(
            update={
                "id": f"{device.id}-{size}gb",
                "name": f"{device.name} {size}GB",
                "memory_gib": gib,
                "memory_options_gib": [],
                "aliases": [f"{a} {size}GB" for a in device.aliases],
                "nvml_names": [],
            }
        )
        out.append(variant)
    return out


class Catalog:
    """All devices, looked up by id, alias or NVML name (exact, case- and punctuation-insensitive)."""

    def __init__(self, devices: Iterable[DeviceSpec]):
        self.devices: dict[str, DeviceSpec] = {}
        for d in devices:
            self.devices[d.id] = d
        self._index: dict[str, set[str]] = {}
        for d in self.devices.values():
            for key in (d.id, d.name, *d.aliases, *d.nvml_names):
                self._index.setdefault(normalize_name(key), set()).add(d.id)

    def __len__(self) -> int:
        return len(self.devices)

    def __iter__(self):
        return iter(self.devices.values())

    def get(self, name: str) -> DeviceSpec:
        """Resolve a device by id, then alias / display / NVML name; raise with close candidates on a miss."""
        if name in self.devices:
            return self.devices[name]
        key = normalize_name(name)
        ids = self._index.get(key, set())
        # An entry whose own id normalises to the key wins over aliases of others.
        exact = [i for i in ids if normalize_name(i) == key]
        if len(exact) == 1:
            return self.devices[exact[0]]
        if len(ids) == 1:
            return self.devices[next(iter(ids))]
        if len(ids) > 1:
            raise AmbiguousError("device", name, sorted(ids))
        names = list(self.devices) + [a for d in self.devices.values() for a in d.aliases]
        raise NotFoundError("device", name, close_matches(name, names))

    def by_nvml_name(self, nvml_name: str) -> DeviceSpec | None:
        """Match a name reported by NVML (or another probe) exactly; None if not catalogued."""
        ids = self._index.get(normalize_name(nvml_name), set())
        return self.devices[next(iter(ids))] if len(ids) == 1 else None


def parse_catalog_files(files: Sequence[tuple[Path, object]]) -> list[DeviceSpec]:
    """Validate loaded YAML documents; collect every problem as 'file: path.to.field: message'."""
    from pydantic import ValidationError

    problems: list[str] = []
    devices: list[DeviceSpec] = []
    seen: dict[str, Path] = {}
    for path, doc in files:
        try:
            cat = CatalogFile.model_validate(doc)
        except ValidationError as exc:
            problems.extend(format_validation_error(path, exc))
            continue
        for i, dev in enumerate(cat.devices):
            for d in _expand_memory_options(dev):
                if d.id in seen:
                    problems.append(f"{path}: devices[{i}].id: duplicate id '{d.id}' (also in {seen[d.id]})")
                seen[d.id] = path
                devices.append(d)
    if problems:
        raise CatalogError(problems)
    return devices


def load_catalog(extra_dirs: Sequence[Path] = (), builtin: bool = True) -> Catalog:
    """Load the built-in catalog, then user catalogs merged over it (same id replaces)."""
    from planner.cache import cached_validated

    dirs: list[Path] = []
    if builtin:
        from planner.paths import data_dir

        dirs.append(data_dir("hwdb"))
    dirs.extend(Path(d) for d in extra_dirs)
    merged: dict[str, DeviceSpec] = {}
    for d in dirs:
        for dev in cached_validated("hwdb", d, DeviceSpec, lambda p=d: parse_catalog_files(load_yaml_dir(p))):
            merged[dev.id] = dev
    return Catalog(merged.values())


def validate_catalog_dir(path: Path) -> list[DeviceSpec]:
    """Validate one catalog directory (or file) without the cache; raise CatalogError listing every problem."""
    return parse_catalog_files(load_yaml_dir(Path(path)))


def schema_json() -> dict:
    """The JSON schema of a catalog file, as committed in hwdb/schema.json."""
    return CatalogFile.model_json_schema()


_GIB_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(gib|gb|g|mib|mb|tib|tb)?\s*$", re.I)


def parse_memory(text: str) -> float:
    """Parse '24GiB', '24GB', '24', '512MiB' into GiB; GB is read as GiB, as GPU memory is sold."""
    m = _GIB_RE.match(text)
    if not m:
        raise ValueError(f"cannot read memory size '{text}' (expected e.g. 24GiB or 80GB)")
    value = float(m.group(1))
    unit = (m.group(2) or "gib").lower()
    scale = {"gib": 1, "gb": 1, "g": 1, "mib": 1 / 1024, "mb": 1 / 1024, "tib": 1024, "tb": 1024}[unit]
    return value * scale
