"""The hardware catalog schema: DeviceSpec (one device) and CatalogFile (one YAML file of a family).

Units: memory sizes are GiB (2**30 bytes), as GPU and unified-memory capacities are sold; bandwidths are
decimal GB/s (10**9 bytes per second), as vendors publish them; compute is dense (no 2:4 sparsity) TFLOPS/TOPS.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from planner.hardware.device import CPU_ISA_NAMES, DeviceMethods

Vendor = Literal["nvidia", "amd", "apple", "intel", "qualcomm", "generic"]
Backend = Literal["cuda", "rocm", "metal", "sycl", "vulkan", "habana", "cpu"]
MemoryKind = Literal["dedicated", "unified", "system"]
Provenance = Literal["measured", "assumed", "datasheet"]

_ID_RE = r"^[a-z0-9][a-z0-9.-]*$"

CpuIsa = Literal[CPU_ISA_NAMES]  # type: ignore[valid-type]


class Derating(BaseModel):
    """An achievable fraction of a peak figure, with where it comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True, from_attributes=True)

    fraction: float = Field(gt=0, le=1, description="Achievable fraction of the peak figure (0-1].")
    provenance: Provenance = Field(description="'measured' on real hardware, or 'assumed'.")
    source: str = Field(min_length=1, description="Where the fraction comes from (URL, benchmark, 'planner bench').")


class DeviceSpec(DeviceMethods, BaseModel):
    """One device a model can run on: a GPU, a unified-memory system, an accelerator or a CPU memory system."""

    model_config = ConfigDict(extra="forbid", frozen=True, from_attributes=True)

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
    cpu_isa: list[CpuIsa] = Field(
        default_factory=list,
        description="CPU vector extensions that CPU kernels use (the probe's names: avx2, avx_vnni, avx512_vnni, neon, "
        "dotprod, i8mm, ...); empty when unknown. The int8 dot-product extensions set llama.cpp's CPU prompt rate.",
    )
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


class CatalogFile(BaseModel):
    """One YAML file of the catalog: a device family."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: str = Field(min_length=1, description="Family name, e.g. 'NVIDIA Hopper'.")
    description: str | None = Field(default=None, description="What the file covers.")
    devices: list[DeviceSpec] = Field(min_length=1, description="The devices of this family.")




class FabricSpec(BaseModel):
    """An inter-node network a multi-node deployment runs its collectives over."""

    model_config = ConfigDict(extra="forbid", frozen=True, from_attributes=True)

    id: str = Field(pattern=_ID_RE, description="Stable lower-case id, e.g. 'ib-ndr'.")
    name: str = Field(min_length=1, description="Display name.")
    kind: Literal["infiniband", "roce", "ethernet"] = Field(description="Fabric technology.")
    link_gb_s: float = Field(gt=0, le=1000, description="Bandwidth of one port (one NIC per GPU) in one direction, decimal GB/s.")
    latency_us: float = Field(gt=0, le=10000, description="Small-message latency between nodes as NCCL/MPI see it, microseconds.")
    aliases: list[str] = Field(default_factory=list, description="Other names a user may type.")
    source: str = Field(min_length=1, description="Where the figures come from.")
    unverified: list[str] = Field(default_factory=list, description="Fields whose figures no source confirms.")
    notes: str | None = Field(default=None, description="Caveats.")


class FabricFile(BaseModel):
    """hwdb/fabrics/*.yaml: inter-node fabrics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: str = Field(min_length=1, description="Always 'fabrics'.")
    fabrics: list[FabricSpec] = Field(min_length=1, description="The fabrics.")
