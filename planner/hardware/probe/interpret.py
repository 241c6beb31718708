"""Interpreting a snapshot (pure): `interpret()` turns it into a `Host` of `ProbedDevice`s and a `CpuInfo`, matched to
the catalog by name (exactly, then without vendor/brand words, then by PCI device id; an unknown NVIDIA GPU is planned
from the bandwidth and FP32 derived from what NVML reports), with MIG instances as devices, *_VISIBLE_DEVICES applied, and a warning for each surprise."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from planner.cache import plain
from planner.hardware.catalog import Catalog
from planner.hardware.device import CPU_ISA_NAMES
from planner.hardware.probe._shared import GIB, MIB
from planner.hardware.probe.derived import SOURCE as DERIVED_SOURCE
from planner.hardware.probe.derived import Derived, derive
from planner.hardware.probe.snapshot import Section, validate_snapshot
from planner.hardware.synthesized import validated_device

if TYPE_CHECKING:
    from planner.hardware.schema import DeviceSpec

# Validated snapshot sections (planner.hardware.probe.snapshot.SCHEMA), by the section each annotation stands for.
Snapshot = SourceStatus = NvidiaGpuRecord = MigRecord = AmdGpuRecord = CpuSection = Section

# Bandwidth given to a device the catalog does not know. DeviceSpec needs a figure; this one is deliberately low
# (about dual-channel DDR5) so an unknown device never gets optimistic speed estimates. Always listed as unverified.
PLACEHOLDER_MEM_BANDWIDTH_GB_S = 50.0

# GPU share of unified memory when neither the OS limit nor the catalog says: Metal's default working set is about
# 3/4 of RAM on 16-64 GB Macs (measured; see shared/reference/hardware_notes.md section 2).
DEFAULT_UNIFIED_GPU_FRACTION = 0.75

# launch_year is required by DeviceSpec; an uncatalogued device gets the schema's lower bound, marked unverified.
_PLACEHOLDER_LAUNCH_YEAR = 2010


class _Out:
    """Plain, frozen output records (dataclasses): the probe runs on every `planner recommend`, so its results do not
    pay for pydantic; `model_dump` and `model_copy` keep the small API the commands use."""

    def model_dump(self, mode: str | None = None) -> dict:
        """Fields as plain data (the device spec and nested records too), e.g. for `planner probe --json`."""
        return {f.name: plain(getattr(self, f.name), mode) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def model_copy(self, update: dict | None = None) -> Any:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **(update or {}))  # type: ignore[type-var]


@dataclass(frozen=True)
class ProbedDevice(_Out):
    """One device a model can be placed on: a GPU, a MIG instance, or a unified-memory GPU."""

    index: int  # the vendor's index of the physical GPU (NVML / amd-smi order; 0 for Apple)
    name: str  # as the driver reports it, e.g. 'NVIDIA A100-SXM4-80GB MIG 3g.40gb'
    vendor: Literal["nvidia", "amd", "apple"]  # silicon vendor
    memory_total_bytes: int  # memory of the device (unified: the machine's RAM)
    memory_usable_bytes: int  # what a plan may use on this device now: free VRAM, or the GPU share of unified memory
    spec: Any  # DeviceSpec (or its cached record): the catalog entry, a MIG slice of it, or a synthesized placeholder
    uuid: str | None = None  # driver UUID ('GPU-...', 'MIG-...'), as CUDA_VISIBLE_DEVICES accepts
    memory_free_bytes: int | None = None  # memory free now (unified: RAM available now)
    catalog_id: str | None = None  # catalog entry matched by name (MIG: the parent GPU's); None if uncatalogued
    unified: bool = False  # memory shared with the CPU (Apple silicon, AMD APUs)
    mig_profile: str | None = None  # MIG profile, e.g. '3g.40gb', for a MIG instance
    parent_uuid: str | None = None  # UUID of the physical GPU of a MIG instance
    compute_capability: str | None = None  # CUDA compute capability as probed
    gfx_target: str | None = None  # AMD LLVM gfx target as probed
    pcie_gen: int | None = None  # PCIe generation of the link (the maximum; idle links train down)
    pcie_width: int | None = None  # PCIe lanes of the link
    nvlink_active_links: int | None = None  # active NVLink links (0 without NVLink)
    power_limit_w: float | None = None  # enforced power limit in watts
    gpu_cores: int | None = None  # GPU cores (Apple) as probed

    @property
    def catalogued(self) -> bool:
        """True when the device matched a catalog entry."""
        return self.catalog_id is not None


@dataclass(frozen=True)
class CpuInfo(_Out):
    """The host CPU."""

    model: str | None = None  # CPU model string, e.g. 'AMD EPYC 9654 96-Core Processor'
    arch: str | None = None  # machine architecture, e.g. 'x86_64', 'arm64'
    physical_cores: int | None = None
    logical_cores: int | None = None  # hardware threads
    usable_cores: int | None = None  # cores this process may run on (CPU affinity / cpuset)
    # ISA extensions that matter to CPU kernels: avx2, avx512f, avx512_vnni, avx512_bf16, amx, neon, sve, ...
    isa: list[str] = field(default_factory=list)
    catalog_id: str | None = None  # CPU target in the catalog, matched by exact model name


@dataclass(frozen=True)
class Host(_Out):
    """A machine as the planner sees it: devices with their usable memory, CPU, RAM, and what went wrong probing it."""

    gpus: list[ProbedDevice] = field(default_factory=list)  # placeable devices, after *_VISIBLE_DEVICES filtering
    unified: bool = False  # the GPU shares memory with the CPU
    cpu: CpuInfo = field(default_factory=CpuInfo)
    ram_total_bytes: int | None = None  # RAM this process may use in total (container limit applied)
    ram_available_bytes: int | None = None  # RAM available now (container limit applied)
    ram_physical_bytes: int | None = None  # physical RAM the OS reports
    swap_total_bytes: int | None = None
    cgroup_memory_limit_bytes: int | None = None  # container (cgroup) memory limit, if below RAM
    gpu_usable_bytes: int | None = None  # unified memory: the most the GPU may use (wired limit or catalog fraction)
    gpu_usable_source: str | None = None  # where gpu_usable_bytes comes from
    driver_version: str | None = None  # NVIDIA driver version
    cuda_driver_version: str | None = None  # highest CUDA version the NVIDIA driver supports, e.g. '12.4'
    platform: str | None = None  # OS and machine, e.g. 'Linux x86_64'
    env: dict[str, str | None] = field(default_factory=dict)  # environment variables that changed what is visible
    sources: dict[str, Any] = field(default_factory=dict)  # how each probe source went (SourceStatus records)
    warnings: list[str] = field(default_factory=list)  # things the user should know, one sentence each
    captured_at: str | None = None  # when the snapshot was taken (UTC)

    @property
    def interconnect(self) -> Literal["nvlink", "pcie"] | None:
        """How several NVIDIA GPUs talk: 'nvlink' when every one has active links, else 'pcie'; None for fewer than two.

        AMD Infinity Fabric (xGMI) is not probed, so AMD GPUs give None rather than a guess.
        """
        if any(g.vendor == "amd" and not g.unified for g in self.gpus):
            return None
        dedicated = [g for g in self.gpus if g.vendor == "nvidia" and g.mig_profile is None]
        if len(dedicated) < 2:
            return None
        return "nvlink" if all((g.nvlink_active_links or 0) > 0 for g in dedicated) else "pcie"

    def model_dump(self, mode: str | None = None) -> dict:
        """Fields as plain data, with the derived interconnect."""
        return {**super().model_dump(mode), "interconnect": self.interconnect}


def interpret(snapshot: Mapping[str, Any], catalog: Catalog) -> Host:
    """Turn a snapshot into a Host matched to `catalog` (pure); raise InvalidInputError for a malformed snapshot."""
    snap = validate_snapshot(snapshot)
    warnings: list[str] = []
    cpu = _interpret_cpu(snap.cpu, catalog)
    ram = _interpret_ram(snap, warnings)
    gpus: list[ProbedDevice] = []
    gpus += _nvidia_devices(snap, catalog, warnings)
    amd, amd_cap = _amd_devices(snap, catalog, ram, cpu, warnings)
    gpus += amd
    gpu_usable: int | None = amd_cap
    usable_source = "amdgpu VRAM carve-out + GTT" if amd_cap is not None else None
    apple = _apple_device(snap, catalog, ram, warnings)
    if apple is not None:
        gpus.append(apple[0])
        gpu_usable, usable_source = apple[1], apple[2]
    _source_warnings(snap, gpus, warnings)
    plat = snap.platform
    return Host(
        gpus=gpus,
        unified=any(g.unified for g in gpus),
        cpu=cpu,
        ram_total_bytes=ram["total"],
        ram_available_bytes=ram["available"],
        ram_physical_bytes=ram["physical"],
        swap_total_bytes=snap.memory.swap_total_bytes if snap.memory else None,
        cgroup_memory_limit_bytes=ram["limit"],
        gpu_usable_bytes=gpu_usable,
        gpu_usable_source=usable_source,
        driver_version=snap.nvidia.driver_version if snap.nvidia else None,
        cuda_driver_version=snap.nvidia.cuda_driver_version if snap.nvidia else None,
        platform=(" ".join(p for p in (plat.system, plat.machine) if p) or None) if plat else None,
        env={k: v for k, v in snap.env.items() if v is not None},
        sources=dict(snap.sources),
        warnings=warnings,
        captured_at=snap.captured_at,
    )


# Flags as /proc/cpuinfo or sysctl spell them -> the ISA names the planner uses (ordered as shown).
_ISA_NAMES: dict[str, str] = {
    # x86 /proc/cpuinfo
    "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c", "avx512f": "avx512f", "avx512bw": "avx512bw",
    "avx512_vnni": "avx512_vnni", "avx512_bf16": "avx512_bf16", "avx512_fp16": "avx512_fp16", "avx_vnni": "avx_vnni",
    "amx_tile": "amx", "amx_bf16": "amx_bf16", "amx_int8": "amx_int8",
    # ARM Linux /proc/cpuinfo Features
    "asimd": "neon", "neon": "neon", "asimddp": "dotprod", "i8mm": "i8mm", "bf16": "bf16", "sve": "sve", "sve2": "sve2", "sme": "sme",
    # macOS sysctl hw.optional.*
    "AdvSIMD": "neon", "arm.FEAT_DotProd": "dotprod", "arm.FEAT_I8MM": "i8mm", "arm.FEAT_BF16": "bf16",
    "arm.FEAT_SME": "sme", "arm.FEAT_SME2": "sme2", "avx1_0": "avx", "avx2_0": "avx2", "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16",
}

_ISA_ORDER = list(CPU_ISA_NAMES)  # the catalog's names (DeviceSpec.cpu_isa), so a probed CPU target carries them


def _interpret_cpu(cpu: CpuSection | None, catalog: Catalog) -> CpuInfo:
    """CPU model, cores and normalised ISA flags; catalog id when the model names a CPU target."""
    if cpu is None:
        return CpuInfo()
    found = {_ISA_NAMES[f] for f in cpu.flags if f in _ISA_NAMES}
    spec = catalog.by_nvml_name(cpu.model) if cpu.model else None
    return CpuInfo(
        model=cpu.model, arch=cpu.arch, physical_cores=cpu.physical_cores, logical_cores=cpu.logical_cores,
        usable_cores=cpu.usable_cores, isa=[i for i in _ISA_ORDER if i in found],
        catalog_id=spec.id if spec is not None and spec.backend == "cpu" else None,
    )


def _interpret_ram(snap: Snapshot, warnings: list[str]) -> dict[str, int | None]:
    """RAM totals with the container limit applied (usage net of reclaimable page cache, as kubelet counts it)."""
    mem, cg = snap.memory, snap.cgroup
    physical = mem.total_bytes if mem else None
    total, available = physical, mem.available_bytes if mem else None
    limit = None
    if cg is not None and cg.memory_limit_bytes is not None and (physical is None or cg.memory_limit_bytes < physical):
        limit = cg.memory_limit_bytes
        working_set = max(0, (cg.memory_usage_bytes or 0) - (cg.inactive_file_bytes or 0))
        room = max(0, limit - working_set)
        total = limit
        available = room if available is None else min(available, room)
        warnings.append(
            f"This process runs in a container limited to {_gib(limit)} of RAM"
            + (f" (the machine has {_gib(physical)})" if physical else "")
            + "; CPU offload and loading are planned within the limit."
        )
    return {"physical": physical, "total": total, "available": available, "limit": limit}


def _nvidia_devices(snap: Snapshot, catalog: Catalog, warnings: list[str]) -> list[ProbedDevice]:
    """NVIDIA GPUs and MIG instances visible to CUDA, each with its catalog match."""
    if snap.nvidia is None:
        return []
    records = snap.nvidia.gpus
    selected = _cuda_visible(records, snap.env.get("CUDA_VISIBLE_DEVICES"), warnings)
    devices: list[ProbedDevice] = []
    for gpu, mig_subset in selected:
        name = gpu.name or f"NVIDIA GPU {gpu.index}"
        if gpu.memory_total_bytes is None or gpu.memory_total_bytes == 0:
            reason = gpu.errors.get("memory") or gpu.errors.get("handle") or "not reported"
            warnings.append(f"GPU {gpu.index} '{name}': memory could not be read ({reason}); it is left out of planning.")
            continue
        spec, catalog_id = _match(catalog, gpu, name, warnings, f"GPU {gpu.index}")
        if spec is None:
            continue
        common = dict(
            vendor="nvidia", compute_capability=gpu.compute_capability, pcie_gen=gpu.pcie_gen_max or gpu.pcie_gen_current,
            pcie_width=gpu.pcie_width_max or gpu.pcie_width_current, power_limit_w=gpu.power_limit_w,
        )
        if gpu.mig_pending is not None and gpu.mig_enabled is not None and gpu.mig_pending != gpu.mig_enabled:
            warnings.append(f"GPU {gpu.index} '{name}': a MIG mode change is pending; it applies after a GPU reset.")
        if gpu.mig_enabled:
            migs = [m for m in gpu.mig_devices if mig_subset is None or m.uuid in mig_subset]
            if not gpu.mig_devices:
                warnings.append(f"GPU {gpu.index} '{name}' is in MIG mode but has no MIG instances; create some with nvidia-smi mig.")
            elif mig_subset is None:
                warnings.append(
                    f"GPU {gpu.index} '{name}' is in MIG mode: its {len(gpu.mig_devices)} MIG instance(s) are planned as separate "
                    "devices (a CUDA process uses one MIG device; no tensor parallelism across them)."
                )
            for mig in migs:
                dev = _mig_device(gpu, mig, spec, catalog_id, common, warnings)
                if dev is not None:
                    devices.append(dev)
            continue
        free = gpu.memory_free_bytes
        if free is not None and free > gpu.memory_total_bytes:
            free = gpu.memory_total_bytes
        _busy_warning(gpu, name, free, warnings)
        devices.append(ProbedDevice(
            index=gpu.index, name=name, uuid=gpu.uuid, memory_total_bytes=gpu.memory_total_bytes, memory_free_bytes=free,
            memory_usable_bytes=free if free is not None else gpu.memory_total_bytes, catalog_id=catalog_id, spec=spec,
            nvlink_active_links=gpu.nvlink_active_links, **common,
        ))
    order = snap.env.get("CUDA_DEVICE_ORDER")
    if len({d.name for d in devices if d.mig_profile is None}) > 1 and order != "PCI_BUS_ID":
        warnings.append(
            "Different GPU models are present: CUDA numbers them fastest-first unless CUDA_DEVICE_ORDER=PCI_BUS_ID, so CUDA "
            "device numbers may not match the indices shown here (NVML's PCI order)."
        )
    return devices


def _busy_warning(gpu: NvidiaGpuRecord, name: str, free: int | None, warnings: list[str]) -> None:
    """Say when memory is already taken on a GPU, so a smaller plan is no surprise."""
    if free is None or gpu.memory_total_bytes is None:
        return
    used = gpu.memory_total_bytes - free
    if used > max(GIB, gpu.memory_total_bytes // 20):
        procs = gpu.processes or []
        who = f" by {len(procs)} process(es)" if procs else ""
        warnings.append(f"GPU {gpu.index} '{name}': {_gib(used)} of {_gib(gpu.memory_total_bytes)} is already in use{who}; plans use the free {_gib(free)}.")


_MIG_PROFILE_RE = re.compile(r"\b(\d+)g\.(\d+)gb\b", re.I)


def _mig_device(gpu: NvidiaGpuRecord, mig: MigRecord, parent: DeviceSpec, catalog_id: str | None,
                common: dict, warnings: list[str]) -> ProbedDevice | None:
    """A MIG instance as its own device: the parent's figures scaled to its memory and compute share."""
    parent_name = gpu.name or f"NVIDIA GPU {gpu.index}"
    name = mig.name or f"{parent_name} MIG {mig.index}"
    if not mig.memory_total_bytes or not gpu.memory_total_bytes:
        warnings.append(f"GPU {gpu.index} MIG {mig.index} '{name}': memory could not be read; it is left out of planning.")
        return None
    m = _MIG_PROFILE_RE.search(name)
    profile = f"{m.group(1)}g.{m.group(2)}gb" if m else None
    mem_share = min(1.0, mig.memory_total_bytes / gpu.memory_total_bytes)
    # Compute slices: A100/H100 have 7, A30 has 4; NVML's max MIG device count is that number.
    slices = gpu.mig_max_devices or 7
    compute_share = min(1.0, int(m.group(1)) / slices) if m else mem_share
    scaled = {f: getattr(parent, f) * compute_share for f in _PEAK_FIELDS if getattr(parent, f) is not None}
    update = {
        "id": f"{parent.id}-mig-{profile or mig.index}".lower(),
        "name": name,
        "memory_gib": round(mig.memory_total_bytes / GIB, 3),
        "memory_options_gib": [],
        "mem_bandwidth_gb_s": parent.mem_bandwidth_gb_s * mem_share,
        "nvlink_gb_s": None,  # MIG instances do not do peer-to-peer over NVLink
        "aliases": [],
        "nvml_names": [],
        "tdp_w": None,
        "notes": f"MIG instance of {parent.id}: bandwidth scaled by its memory share ({mem_share:.2f}), compute by {profile or '?'} of {slices} slices.",
        **scaled,
    }
    spec = _make_spec({**parent.model_dump(), **update}, warnings, name)
    if spec is None:
        return None
    free = mig.memory_free_bytes if mig.memory_free_bytes is not None else None
    if free is not None:
        free = min(free, mig.memory_total_bytes)
    return ProbedDevice(
        index=gpu.index, name=name, uuid=mig.uuid, memory_total_bytes=mig.memory_total_bytes, memory_free_bytes=free,
        memory_usable_bytes=free if free is not None else mig.memory_total_bytes, catalog_id=catalog_id, spec=spec,
        mig_profile=profile, parent_uuid=gpu.uuid, nvlink_active_links=0, **common,
    )


_PEAK_FIELDS = ("peak_fp32_tflops", "peak_fp16_tflops", "peak_bf16_tflops", "peak_fp8_tflops", "peak_fp4_tflops", "peak_int8_tops")


def _cuda_visible(records: list[NvidiaGpuRecord], value: str | None, warnings: list[str]) -> list[tuple[NvidiaGpuRecord, set[str] | None]]:
    """Apply CUDA_VISIBLE_DEVICES as CUDA does: indices or UUID prefixes in order; the first invalid entry ends the list."""
    if value is None:
        return [(g, None) for g in records]
    chosen: list[tuple[NvidiaGpuRecord, set[str] | None]] = []
    seen: set[int] = set()
    for token in (t.strip() for t in value.split(",")):
        gpu, mig_uuid = _cuda_token(records, token)
        if gpu is None:
            if token:
                warnings.append(f"CUDA_VISIBLE_DEVICES entry '{token}' matches no GPU; CUDA ignores it and every entry after it.")
            break
        if mig_uuid is not None:
            existing = next((c for c in chosen if c[0] is gpu), None)
            if existing is not None and existing[1] is not None:
                existing[1].add(mig_uuid)
                continue
            if existing is None:
                chosen.append((gpu, {mig_uuid}))
            continue
        if gpu.index not in seen:
            chosen.append((gpu, None))
            seen.add(gpu.index)
    hidden = len(records) - len({id(g) for g, _ in chosen})
    if not chosen:
        warnings.append(f"CUDA_VISIBLE_DEVICES='{value}' hides every NVIDIA GPU ({len(records)} present); CUDA sees none.")
    elif hidden > 0:
        warnings.append(f"CUDA_VISIBLE_DEVICES='{value}' hides {hidden} of {len(records)} NVIDIA GPU(s); only the visible ones are planned.")
    return chosen


def _cuda_token(records: list[NvidiaGpuRecord], token: str) -> tuple[NvidiaGpuRecord | None, str | None]:
    """Resolve one CUDA_VISIBLE_DEVICES entry to a GPU (and a MIG UUID when it names one)."""
    if re.fullmatch(r"\d+", token):
        n = int(token)
        return (records[n] if n < len(records) else None), None
    if token.startswith("MIG-"):
        hits = [(g, m.uuid) for g in records for m in g.mig_devices if m.uuid and m.uuid.startswith(token)]
        return hits[0] if len(hits) == 1 else (None, None)
    if token.startswith("GPU-"):
        gpu_hits = [g for g in records if g.uuid and g.uuid.startswith(token)]
        return (gpu_hits[0] if len(gpu_hits) == 1 else None), None
    return None, None


def _amd_devices(snap: Snapshot, catalog: Catalog, ram: dict, cpu: CpuInfo,
                 warnings: list[str]) -> tuple[list[ProbedDevice], int | None]:
    """AMD GPUs visible to ROCm/HIP, and the GPU cap of an APU's shared memory (Strix Halo) if there is one."""
    if snap.amd is None:
        return [], None
    records = list(snap.amd.gpus)
    for var in ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"):  # ROCr filters first; HIP indexes what is left
        value = snap.env.get(var)
        if value is not None:
            kept = _index_filter(records, value)
            if len(kept) < len(records):
                warnings.append(f"{var}='{value}' hides {len(records) - len(kept)} of {len(records)} AMD GPU(s); only the visible ones are planned.")
            records = kept
    devices = []
    unified_cap = None
    for gpu in records:
        name = gpu.name or f"AMD GPU {gpu.index}"
        vram = gpu.vram_total_bytes
        if not vram:
            warnings.append(f"AMD GPU {gpu.index} '{name}': VRAM size could not be read; it is left out of planning.")
            continue
        spec = catalog.by_nvml_name(name)
        if spec is None and gpu.apu is not False and cpu.model:
            # An APU's GPU reports a generic name ('AMD Radeon Graphics'); the catalog names the chip by its CPU string.
            by_cpu = catalog.by_nvml_name(cpu.model)
            spec = by_cpu if by_cpu is not None and by_cpu.vendor == "amd" and by_cpu.memory_kind == "unified" else None
        unified = bool(gpu.apu) or (spec is not None and spec.memory_kind == "unified")
        used = min(gpu.vram_used_bytes or 0, vram)
        if unified:
            # The OS does not count the BIOS carve-out as RAM; the GPU may use the carve-out plus GTT (RAM the driver maps).
            total = vram + (ram["physical"] or 0)
            if gpu.gtt_total_bytes:
                cap = min(total, vram + gpu.gtt_total_bytes)
            else:
                fraction = spec.gpu_usable_fraction if spec is not None and spec.gpu_usable_fraction else DEFAULT_UNIFIED_GPU_FRACTION
                cap = int(total * fraction)
            free = (vram - used) + (ram["available"] if ram["available"] is not None else cap)
            usable = max(0, min(cap, free))
            unified_cap = cap
        else:
            total, free = vram, vram - used
            usable = free
        catalog_id = None
        if spec is not None:
            spec = _memory_variant(catalog, spec, total, warnings=warnings if unified else None, what=name)
            catalog_id = spec.id
        else:
            # For an APU the catalog entry should carry the CPU string: the GPU's own name is generic.
            warnings.append(_uncatalogued(f"AMD GPU {gpu.index}", name, total, cpu.model if unified and cpu.model else name))
            spec = _synthesize(name, "amd", "rocm", total, unified, warnings, gfx_target=gpu.gfx_target,
                               usable_fraction=min(1.0, unified_cap / total) if unified and unified_cap else None)
            if spec is None:
                continue
        if not unified and vram < 4 * GIB and (gpu.gtt_total_bytes or 0) >= 4 * vram:
            warnings.append(
                f"AMD GPU {gpu.index} '{name}' has a small VRAM carve-out ({_gib(vram)}) and a large GTT: it may be an APU; "
                "if so, add it to a catalog with memory_kind 'unified' so its shared memory is planned."
            )
        devices.append(ProbedDevice(
            index=gpu.index, name=name, vendor="amd", uuid=gpu.unique_id, memory_total_bytes=total, memory_free_bytes=free,
            memory_usable_bytes=usable, catalog_id=catalog_id, spec=spec, unified=unified, gfx_target=gpu.gfx_target,
        ))
    return devices, unified_cap


def _index_filter(records: list[AmdGpuRecord], value: str) -> list[AmdGpuRecord]:
    """Apply a HIP/ROCR visibility list (indices into `records` or unique ids); the first invalid entry ends it."""
    kept: list[AmdGpuRecord] = []
    for token in (t.strip() for t in value.split(",")):
        hit = None
        if re.fullmatch(r"\d+", token):
            hit = records[int(token)] if int(token) < len(records) else None
        elif token:
            hit = next((r for r in records if r.unique_id and token.lower() in (r.unique_id.lower(), f"gpu-{r.unique_id.lower()}")), None)
        if hit is None:
            break
        if hit not in kept:
            kept.append(hit)
    return kept


def _apple_device(snap: Snapshot, catalog: Catalog, ram: dict, warnings: list[str]) -> tuple[ProbedDevice, int, str] | None:
    """The Apple-silicon GPU: chip + memory pick the catalog variant; the wired limit or catalog fraction caps its memory."""
    apple = snap.apple
    if apple is None:
        return None
    memory = apple.memory_bytes or ram["physical"]
    if not memory:
        warnings.append("Apple silicon found but its memory size could not be read; the GPU is left out of planning.")
        return None
    chip = apple.chip or "Apple silicon"
    spec = catalog.by_nvml_name(chip) if apple.chip else None
    catalog_id = None
    if spec is not None:
        spec = _memory_variant(catalog, spec, memory, warnings=warnings, what=chip)
        catalog_id = spec.id
        if spec.gpu_cores and apple.gpu_cores and spec.gpu_cores != apple.gpu_cores:
            warnings.append(
                f"{chip}: this machine has {apple.gpu_cores} GPU cores, the catalog entry {spec.id} has {spec.gpu_cores}; "
                "binned chips can have less bandwidth and compute than the entry says."
            )
    if apple.wired_limit_mb:
        cap, source = min(apple.wired_limit_mb * MIB, memory), "iogpu.wired_limit_mb"
    elif spec is not None and spec.gpu_usable_fraction:
        cap, source = int(memory * spec.gpu_usable_fraction), f"catalog default fraction {spec.gpu_usable_fraction:g} of RAM"
    else:
        cap, source = int(memory * DEFAULT_UNIFIED_GPU_FRACTION), f"assumed default fraction {DEFAULT_UNIFIED_GPU_FRACTION:g} of RAM"
    if spec is None:
        warnings.append(_uncatalogued("Apple GPU", chip, memory))
        spec = _synthesize(chip, "apple", "metal", memory, True, warnings, gpu_cores=apple.gpu_cores or None,
                           usable_fraction=min(1.0, cap / memory))
        if spec is None:
            return None
    available = ram["available"]
    usable = min(cap, available) if available is not None else cap
    if available is not None and available < cap:
        warnings.append(
            f"Only {_gib(available)} of RAM is available now, below the GPU's {_gib(cap)} limit; plans use {_gib(usable)} "
            "(quit other programs to free more)."
        )
    device = ProbedDevice(
        index=0, name=chip, vendor="apple", memory_total_bytes=memory, memory_free_bytes=available, memory_usable_bytes=usable,
        catalog_id=catalog_id, spec=spec, unified=True, gpu_cores=apple.gpu_cores,
    )
    return device, cap, source


def _memory_variant(catalog: Catalog, spec: DeviceSpec, size_bytes: int, warnings: list[str] | None = None,
                    what: str = "") -> DeviceSpec:
    """The '<id>-<N>gb' variant of a catalog entry closest to the probed memory (within 8%), else the entry itself."""
    # Variants first, so a machine whose size equals the base entry's still gets its explicit '<id>-<N>gb' id.
    options = [*(d for d in catalog if d.id.startswith(f"{spec.id}-") and d.id.endswith("gb") and d.name.startswith(spec.name)), spec]
    size_gib = size_bytes / GIB
    best = min(options, key=lambda d: abs(d.memory_gib - size_gib))
    if abs(best.memory_gib - size_gib) <= 0.08 * size_gib:
        return best
    if warnings is not None:
        sizes = ", ".join(f"{d.memory_gib:g}" for d in options)
        warnings.append(f"{what}: {size_gib:.0f} GiB is not a catalogued size of {spec.id} ({sizes} GiB); its other figures are used.")
    return spec


def _match(catalog: Catalog, gpu: NvidiaGpuRecord, name: str, warnings: list[str], label: str) -> tuple[DeviceSpec | None, str | None]:
    """Catalog entry of a dedicated NVIDIA GPU (by name, loosely, or by PCI device id), else a spec from what NVML
    reports (bandwidth and FP32 derived from its bus width, clocks and cores), else a placeholder; with a warning."""
    memory_bytes = gpu.memory_total_bytes or 0
    spec, how = catalog.match_probed(name, gpu.pci_device_id, gpu.pci_subsystem_id)
    if spec is not None:
        if how:
            warnings.append(f"{label} '{name}' {how}; add '{name}' to its nvml_names to match it exactly.")
        spec = _memory_variant(catalog, spec, memory_bytes)
        if abs(spec.memory_bytes - memory_bytes) > 0.1 * memory_bytes:
            warnings.append(f"{label} '{name}' reports {_gib(memory_bytes)} but catalog entry {spec.id} has {spec.memory_gib:g} GiB; "
                            "plans use the reported memory.")
        return spec, spec.id
    figures = derive(gpu)
    if figures.mem_bandwidth_gb_s is None:
        warnings.append(_uncatalogued(label, name, memory_bytes))
        return _synthesize(name, "nvidia", "cuda", memory_bytes, False, warnings, compute_capability=gpu.compute_capability), None
    fp32 = f", FP32 {figures.peak_fp32_tflops:.1f} TFLOPS" if figures.peak_fp32_tflops else ", compute unknown"
    warnings.append(
        f"{label} '{name}' is not in the catalog: planning from what NVML reports: {_gib(memory_bytes)}, "
        f"{figures.mem_bandwidth_gb_s:.0f} GB/s{fp32} (derived from NVML: bus width x memory clock x 2"
        + (", cores x 2 x SM clock" if figures.peak_fp32_tflops else "") + "; tensor-core rates unknown). Add it to a user "
        f"catalog (a YAML entry with nvml_names: ['{name}']) and pass --hwdb DIR for datasheet figures."
    )
    return _synthesize(name, "nvidia", "cuda", memory_bytes, False, warnings, compute_capability=gpu.compute_capability,
                       derived=figures), None


def _uncatalogued(label: str, name: str, memory_bytes: int, match_name: str | None = None) -> str:
    """The warning for a device the catalog does not know."""
    return (
        f"{label} '{name}' is not in the catalog: planning from its probed memory ({_gib(memory_bytes)}) with a placeholder "
        f"bandwidth of {PLACEHOLDER_MEM_BANDWIDTH_GB_S:g} GB/s and unknown compute, so speed estimates are rough. Add it to a "
        f"user catalog (a YAML entry with nvml_names: ['{match_name or name}']) and pass --hwdb DIR."
    )


def _synthesize(name: str, vendor: Literal["nvidia", "amd", "apple"], backend: Literal["cuda", "rocm", "metal"], memory_bytes: int,
                unified: bool, warnings: list[str], compute_capability: str | None = None, gfx_target: str | None = None,
                gpu_cores: int | None = None, usable_fraction: float | None = None,
                derived: Derived | None = None) -> DeviceSpec | None:
    """A DeviceSpec for an uncatalogued device: probed memory, bandwidth and FP32 derived from NVML where it reported
    them (each with its formula in `sources`), else a placeholder bandwidth and unknown compute, marked unverified."""
    unverified = ["architecture", "memory_type", "launch_year"]
    sources: dict[str, str] = {}
    bandwidth = PLACEHOLDER_MEM_BANDWIDTH_GB_S
    fp32 = None
    if derived is not None and derived.mem_bandwidth_gb_s and derived.bandwidth_formula:
        bandwidth, sources["mem_bandwidth_gb_s"] = round(derived.mem_bandwidth_gb_s, 1), derived.bandwidth_formula
    else:
        unverified.insert(0, "mem_bandwidth_gb_s")
    if derived is not None and derived.peak_fp32_tflops and derived.fp32_formula:
        fp32, sources["peak_fp32_tflops"] = round(derived.peak_fp32_tflops, 2), derived.fp32_formula
    if backend == "cuda" and compute_capability is None:
        compute_capability = "5.0"  # the oldest architecture current CUDA builds for; the real one was not reported
        unverified.append("compute_capability")
    if unified and usable_fraction is None:
        usable_fraction = DEFAULT_UNIFIED_GPU_FRACTION
        unverified.append("gpu_usable_fraction")
    slug = re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-.") or "device"
    data = {
        "id": f"probed-{slug}",
        "name": name,
        "vendor": vendor,
        "backend": backend,
        "architecture": "unknown",
        "compute_capability": compute_capability if vendor == "nvidia" else None,
        "gfx_target": gfx_target,
        "memory_gib": round(memory_bytes / GIB, 3),
        "memory_type": "unknown",
        "memory_kind": "unified" if unified else "dedicated",
        "mem_bandwidth_gb_s": bandwidth,
        "peak_fp32_tflops": fp32,
        "gpu_usable_fraction": usable_fraction if unified else None,
        "gpu_cores": gpu_cores,
        "launch_year": _PLACEHOLDER_LAUNCH_YEAR,
        "nvml_names": [name],
        "source": ("planner probe: not in the catalog; memory probed, bandwidth" + (" and FP32" if fp32 else "")
                   + f" {DERIVED_SOURCE}" if sources else
                   "planner probe: synthesized from probed memory; this device is not in the catalog"),
        "sources": sources,
        "unverified": unverified,
    }
    return _make_spec(data, warnings, name)


def _make_spec(data: dict, warnings: list[str], name: str) -> DeviceSpec | None:
    """Validate a derived DeviceSpec; a device whose probed figures cannot form one is skipped with a warning."""
    try:
        return validated_device(data)
    except ValueError as exc:  # the validation error's first problem, as 'field: message'
        warnings.append(f"'{name}': its probed figures do not form a valid device ({exc}); it is left out of planning.")
        return None


def _source_warnings(snap: Snapshot, gpus: list[ProbedDevice], warnings: list[str]) -> None:
    """Warn about sources that failed (not merely absent) and never report 'no GPU' without saying why."""
    for name, status in snap.sources.items():
        if not status.ok and not status.absent:
            warnings.append(f"Probe source '{name}' failed: {status.reason or 'no reason given'}.")
    if snap.nvidia is not None and not snap.nvidia.gpus:
        driver = f" (driver {snap.nvidia.driver_version})" if snap.nvidia.driver_version else ""
        warnings.append(
            f"NVML works{driver} but reports no GPU: in a container, pass the GPUs in (docker --gpus all); "
            "otherwise check that the GPU is seated and bound to the nvidia driver."
        )
    if not gpus:
        why = "; ".join(f"{n}: {s.reason}" for n, s in snap.sources.items() if n in ("nvml", "amd", "apple") and not s.ok and s.reason)
        warnings.append(f"No GPU found: planning for the CPU only{f' ({why})' if why else ''}.")


def _gib(n: int | None) -> str:
    """Bytes as 'N.N GiB'."""
    return "unknown" if n is None else f"{n / GIB:.1f} GiB"
