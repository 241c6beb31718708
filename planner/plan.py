"""The planning vocabulary: a Target (hardware), a Candidate (what to run), and a Plan (its cost and verdict)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from planner.hardware.catalog import DeviceSpec


GIB = 2**30
PREFILL_SIDE = frozenset({"prefill_tokens_per_s", "ttft_s"})  # speeds whose band takes the prefill width
# Measured: nvidia-smi shows an H100 80GB with 81559 MiB of its 81920 MiB (ECC and driver reserve).
DEDICATED_RESERVED_FRACTION = 1 - 81559 / 81920
# Assumed: what the OS and desktop keep on a CPU-only machine.
SYSTEM_RESERVED_MIN_BYTES = 2 * GIB
SYSTEM_RESERVED_FRACTION = 0.10
# Assumed host RAM bandwidth for layers offloaded to the CPU when the host is not known (DDR5-5600 dual channel
# is 89.6 GB/s theoretical; llama.cpp CPU decode reaches about 70 % of it).
DEFAULT_HOST_BANDWIDTH_GB_S = 89.6


@dataclass(frozen=True)
class Target:
    """Hardware to plan for: `count` identical devices, the memory usable on each, and the host."""

    device: DeviceSpec
    count: int = 1
    usable_bytes: tuple[int, ...] = ()
    host_ram_bytes: int | None = None
    host_bandwidth_gb_s: float = DEFAULT_HOST_BANDWIDTH_GB_S
    origin: str = "catalog"  # 'catalog', 'probe', 'snapshot' or 'manual'
    notes: tuple[str, ...] = ()
    nodes: int = 1  # identical nodes of `count` devices each
    fabric: Any = None  # inter-node fabric (FabricSpec / record) when nodes > 1
    expert_parallel: bool = False  # shard MoE experts over every GPU instead of pipelining across nodes
    replicas: int = 1  # data-parallel copies of this nodes x count layout, each serving its share of the sequences
    replicas_per_node: int = 1  # copies packed into one node when a copy needs fewer GPUs than a node holds
    # This machine's measured read bandwidth (planner.hardware.membw.ReadBandwidth) for a probed CPU target; it caps
    # decode bandwidth the way a calibration record's copy bandwidth does (planner.measure.calibration.for_target).
    measured_bandwidth: Any = None

    @property
    def is_cpu(self) -> bool:
        """A CPU-only target (the model runs from system RAM)."""
        return self.device.backend == "cpu"

    @property
    def label(self) -> str:
        """e.g. '2x NVIDIA H100 SXM5 80GB', or '2 nodes x 8x NVIDIA H100 SXM5 80GB (ib-ndr)'."""
        one = f"{self.count}x {self.device.name}" if self.count > 1 else self.device.name
        if self.nodes > 1:
            one = f"{self.nodes} nodes x {one}" + (f" ({self.fabric.id})" if self.fabric is not None else "")
        return f"{self.replicas} replicas of {one}" if self.replicas > 1 else one

    @property
    def total_devices(self) -> int:
        """Devices over all nodes."""
        return self.count * self.nodes


def system_usable_bytes(total: int) -> int:
    """RAM a CPU-only plan may use: the total less what the OS and desktop keep."""
    return int(total - max(SYSTEM_RESERVED_MIN_BYTES, total * SYSTEM_RESERVED_FRACTION))


def usable_bytes_from_catalog(device: DeviceSpec) -> int:
    """Memory a model may use on a catalogued device: reserves taken off, GPU share of unified memory."""
    total = device.memory_bytes
    if device.memory_kind == "unified":
        return int(total * (device.gpu_usable_fraction or 0.75))
    if device.memory_kind == "system":
        return system_usable_bytes(total)
    return int(total * (1 - DEDICATED_RESERVED_FRACTION))


def target_from_catalog(device: DeviceSpec, count: int = 1, host_ram_bytes: int | None = None, nodes: int = 1,
                        fabric: Any = None, expert_parallel: bool = False) -> Target:
    """A target made of `nodes` x `count` catalogued devices with catalog memory minus documented reserves."""
    usable = usable_bytes_from_catalog(device)
    notes = []
    if device.memory_kind == "unified":
        notes.append(f"GPU may use {device.gpu_usable_fraction:.0%} of unified memory by default")
    if device.memory_kind == "system" and host_ram_bytes is None:
        host_ram_bytes = usable
    return Target(device, count, tuple([usable] * count), host_ram_bytes, origin="catalog", notes=tuple(notes),
                  nodes=nodes, fabric=fabric, expert_parallel=expert_parallel)


def replica_layout_error(count: int, nodes: int, replicas: int) -> str:
    """Why `replicas` data-parallel copies cannot split `nodes` x `count` GPUs into equal layouts ('' when they can)."""
    gpus = count * nodes
    if replicas < 1:
        return f"must be at least 1, got {replicas}"
    if gpus % replicas:
        return f"{replicas} replicas do not divide the {gpus} GPUs ({nodes} node(s) x {count} GPUs)"
    per = gpus // replicas
    # a copy is some GPUs of one node, or whole nodes: a copy straddling part of a node has no layout
    if (per < count and count % per) or (per > count and per % count):
        return f"{replicas} replicas of {per} GPUs each do not fit whole into nodes of {count} GPUs"
    return ""


def replicated(target: Target, replicas: int) -> Target:
    """`target`'s GPUs as `replicas` data-parallel copies of one equal layout; ValueError when they do not divide."""
    why = replica_layout_error(target.count, target.nodes, replicas)
    if why:
        raise ValueError(why)
    if replicas == 1:
        return target
    per = target.total_devices // replicas
    if per >= target.count:  # each copy is whole nodes (one copy per node group)
        nodes = per // target.count
        return dataclasses.replace(target, nodes=nodes, replicas=replicas, replicas_per_node=1,
                                   expert_parallel=target.expert_parallel and nodes > 1)
    return dataclasses.replace(target, count=per, usable_bytes=target.usable_bytes[:per], nodes=1, replicas=replicas,
                               replicas_per_node=target.count // per, expert_parallel=False)


@dataclass(slots=True)
class MemoryBreakdown:
    """Bytes one device needs for a plan."""

    device: str
    weights_bytes: int
    kv_cache_bytes: int
    activations_bytes: int
    overhead_bytes: int
    usable_bytes: int

    @property
    def total_bytes(self) -> int:
        """Everything the plan puts on this device."""
        return self.weights_bytes + self.kv_cache_bytes + self.activations_bytes + self.overhead_bytes

    @property
    def fits(self) -> bool:
        """Whether it fits in the usable memory."""
        return self.total_bytes <= self.usable_bytes

    def as_dict(self) -> dict:
        """JSON form."""
        return {
            "device": self.device, "weights_bytes": self.weights_bytes, "kv_cache_bytes": self.kv_cache_bytes,
            "activations_bytes": self.activations_bytes, "overhead_bytes": self.overhead_bytes,
            "total_bytes": self.total_bytes, "usable_bytes": self.usable_bytes, "fits": self.fits,
        }


@dataclass
class Plan:
    """One candidate deployment with its memory, speed, quality and verdict."""

    model_id: str
    format_id: str
    runtime_id: str
    target_label: str
    device_id: str
    device_count: int
    context: int
    concurrency: int
    kv_dtype: str
    layout: str  # 'single', 'layer-split', 'tensor-parallel', 'partial-offload', 'expert-offload', 'cpu'
    runs: bool = True
    support_mode: str = "native"
    support_status: str = "full"  # 'partial': experimental or version-dependent support (planner.runtimes)
    reason: str = ""  # why it cannot run or does not fit
    file_size_bytes: int = 0
    weights_bytes: int = 0
    kv_cache_bytes: int = 0
    total_memory_bytes: int = 0
    usable_memory_bytes: int = 0
    per_device: list[MemoryBreakdown] = field(default_factory=list)
    host_bytes: int = 0
    gpu_layers: int | None = None
    cpu_moe_layers: int | None = None  # expert offload: layers whose routed experts stay in RAM (--n-cpu-moe)
    # the other llama.cpp offload placement, predicted too: layout, gpu_layers / cpu_moe_layers, decode tok/s
    offload_alternative: dict = field(default_factory=dict)
    n_layers: int = 0
    prompt_tokens: int = 512
    quality: dict = field(default_factory=dict)
    bits_per_weight: float = 0.0
    warnings: list[str] = field(default_factory=list)
    score: float = 0.0
    parallel: dict = field(default_factory=dict)  # tensor/pipeline/expert/data parallel sizes, nodes, GPUs per node
    # Set by whoever builds the plan (the cost model): renders the launch command, on first read only.
    launch_fn: Callable[[Plan], str] | None = field(default=None, repr=False, compare=False)
    _launch: str | None = field(default=None, repr=False, compare=False)

    @property
    def launch(self) -> str:
        """The command that starts the runtime for this plan (rendered on first use)."""
        if self._launch is None:
            if self.launch_fn is None or not self.runs:
                return ""
            self._launch = self.launch_fn(self)
        return self._launch

    # Speeds are computed on first read: a sweep over thousands of plans that do not fit never pays for them.
    speed_fn: Any = field(default=None, repr=False, compare=False)
    _speeds: dict | None = field(default=None, repr=False, compare=False)
    speed_basis_value: str = field(default="", repr=False, compare=False)  # set with the speeds (planner.cost.speed)

    def _speed(self, name: str) -> float:
        if self._speeds is None:
            self._speeds = {}
            if self.speed_fn is not None:
                fn, self.speed_fn = self.speed_fn, None
                fn(self)
        return self._speeds.get(name, 0.0)

    def set_speeds(self, **values: float) -> None:
        """Record computed speeds (called by the cost model)."""
        if self._speeds is None:
            self._speeds = {}
        self._speeds.update(values)

    @property
    def speed_basis(self) -> str:
        """What the speeds rest on: 'measured here', 'calibrated on this device class', 'calibrated elsewhere' or
        'assumed' ('' when no speed was computed)."""
        self._speed("decode_tokens_per_s")
        return self.speed_basis_value

    def speed_width(self, name: str) -> float:
        """Relative half-width w of a speed's 10-90 % band: prefill and TTFT take the prefill width, the rest decode's."""
        if name in PREFILL_SIDE:
            return self._speed("speed_width_prefill") or self._speed("speed_width")
        return self._speed("speed_width")

    def speed_range(self, name: str) -> tuple[float, float]:
        """10-90 % band of a speed or a time (ttft_s): value / (1 + w) .. value x (1 + w)."""
        v, w = self._speed(name), self.speed_width(name)
        return (v / (1 + w), v * (1 + w))

    @property
    def decode_tokens_per_s(self) -> float:
        """Decode tokens/s per sequence right after the prompt (at the requested concurrency)."""
        return self._speed("decode_tokens_per_s")

    @property
    def decode_tokens_per_s_full_context(self) -> float:
        """Decode tokens/s per sequence with the whole context filled."""
        return self._speed("decode_tokens_per_s_full_context")

    @property
    def throughput_tokens_per_s(self) -> float:
        """Aggregate decode tokens/s over all concurrent sequences."""
        return self._speed("throughput_tokens_per_s")

    @property
    def served_tokens_per_s(self) -> float:
        """What the plan serves: aggregate throughput with several sequences, else one sequence's decode speed."""
        return self.throughput_tokens_per_s if self.concurrency > 1 else self.decode_tokens_per_s

    @property
    def prefill_tokens_per_s(self) -> float:
        """Prompt tokens processed per second."""
        return self._speed("prefill_tokens_per_s")

    @property
    def ttft_s(self) -> float:
        """Seconds to the first token for `prompt_tokens` of prompt."""
        return self._speed("ttft_s")

    @property
    def parallel_layout(self) -> str:
        """The parallel shape, e.g. 'tp4 × pp1 × dp4' (or the placement name for single-device and llama.cpp plans)."""
        par = self.parallel or {}
        if "tensor_parallel" not in par:
            dp = par.get("data_parallel", 1)
            return f"{self.layout} × dp{dp}" if dp > 1 else self.layout
        ep = par.get("expert_parallel", 1)
        return (f"tp{par['tensor_parallel']} × pp{par.get('pipeline_parallel', 1)}" + (f" × ep{ep}" if ep > 1 else "")
                + f" × dp{par.get('data_parallel', 1)}")

    @property
    def needed_bytes(self) -> int:
        """Memory the plan needs in all: on the devices plus system RAM, and never less than its weights and KV
        cache (a runtime that cannot offload stops placing layers, so its device total alone undercounts)."""
        return max(self.total_memory_bytes + self.host_bytes, self.weights_bytes + self.kv_cache_bytes)

    @property
    def fits(self) -> bool:
        """Runs on the target and fits in usable memory."""
        if not self.runs or self.reason or not self.per_device:
            return False
        for d in self.per_device:
            if d.weights_bytes + d.kv_cache_bytes + d.activations_bytes + d.overhead_bytes > d.usable_bytes:
                return False
        return True

    def _speed_ranges(self) -> dict:
        """`*_low` / `*_high` of every speed in the JSON form."""
        out = {}
        for name in ("decode_tokens_per_s", "decode_tokens_per_s_full_context", "throughput_tokens_per_s",
                     "prefill_tokens_per_s", "ttft_s"):
            lo, hi = self.speed_range(name)
            digits = 4 if name == "ttft_s" else 2
            out[f"{name}_low"], out[f"{name}_high"] = round(lo, digits), round(hi, digits)
        return out

    def as_dict(self) -> dict:
        """The stable JSON form (documented in the README)."""
        return {
            "model": self.model_id, "format": self.format_id, "runtime": self.runtime_id, "target": self.target_label,
            "device": self.device_id, "device_count": self.device_count, "layout": self.layout,
            "context": self.context, "concurrency": self.concurrency, "kv_dtype": self.kv_dtype,
            "runs": self.runs, "support_mode": self.support_mode, "support_status": self.support_status, "fits": self.fits, "reason": self.reason or None,
            "file_size_bytes": self.file_size_bytes, "weights_bytes": self.weights_bytes,
            "kv_cache_bytes": self.kv_cache_bytes, "total_memory_bytes": self.total_memory_bytes,
            "usable_memory_bytes": self.usable_memory_bytes, "host_memory_bytes": self.host_bytes,
            "gpu_layers": self.gpu_layers, "cpu_moe_layers": self.cpu_moe_layers,
            "offload_alternative": self.offload_alternative or None, "n_layers": self.n_layers, "parallel": self.parallel,
            "parallel_layout": self.parallel_layout,
            "per_device": [d.as_dict() for d in self.per_device],
            "bits_per_weight": round(self.bits_per_weight, 4),
            "decode_tokens_per_s": round(self.decode_tokens_per_s, 2),
            "decode_tokens_per_s_full_context": round(self.decode_tokens_per_s_full_context, 2),
            "throughput_tokens_per_s": round(self.throughput_tokens_per_s, 2),
            "prefill_tokens_per_s": round(self.prefill_tokens_per_s, 2),
            "prompt_tokens": self.prompt_tokens, "ttft_s": round(self.ttft_s, 4),
            **self._speed_ranges(), "speed_basis": self.speed_basis or None,
            "quality": self.quality, "warnings": self.warnings, "launch": self.launch,
        }
