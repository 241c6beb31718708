"""Turning what the user said (a catalog device, raw numbers, a probe snapshot, or nothing: this machine) into a Target."""

from __future__ import annotations

import argparse
from planner.commands.options import (
    MAX_BANDWIDTH_GB_S, MAX_DEVICE_GIB, MAX_DEVICES, MAX_HOST_GIB, MAX_NODES, float_in, int_in, nonempty, path_arg, size_in,
)
from planner.errors import PlannerError
from planner.hardware.catalog import Catalog, parse_memory
from planner.plan import GIB, Target, system_usable_bytes, target_from_catalog


def add_target_options(p: argparse.ArgumentParser) -> None:
    """--device/--count/--ram, --memory/--bandwidth, --snapshot: what to plan for (default: this machine)."""
    g = p.add_argument_group("target (default: this machine, probed)")
    g.add_argument("--device", type=nonempty, metavar="ID", help="catalog device id or name, e.g. h100-sxm, rtx-4090, m3-max-128gb")
    g.add_argument("--count", type=int_in(1, MAX_DEVICES), default=1, metavar="N", help="number of identical devices (default 1)")
    g.add_argument("--ram", type=size_in(MAX_HOST_GIB), metavar="SIZE", help="host RAM available for offloaded layers, e.g. 64GiB")
    g.add_argument("--memory", type=size_in(MAX_DEVICE_GIB), metavar="SIZE", help="plan for a device with this much memory, e.g. 24GiB")
    g.add_argument("--bandwidth", type=float_in(0, MAX_BANDWIDTH_GB_S, lo_open=True), metavar="GB/S", help="with --memory: its memory bandwidth in GB/s")
    g.add_argument("--snapshot", type=path_arg, metavar="FILE", help="plan for the machine a `planner probe --raw` snapshot describes")
    g.add_argument("--nodes", type=int_in(1, MAX_NODES), default=1, metavar="N", help="identical nodes of --count devices each (multi-node plans)")
    g.add_argument("--fabric", type=nonempty, metavar="ID", help="inter-node fabric: ib-ndr, ib-hdr, roce-400g, eth-100g, eth-10g ... (default ib-ndr)")
    g.add_argument("--expert-parallel", action="store_true", help="MoE across nodes: shard experts over every GPU instead of pipeline stages")


def manual_device(memory_gib: float, bandwidth_gb_s: float | None):  # type: ignore[no-untyped-def]
    """A device described only by its memory and bandwidth (treated as a CUDA GPU of compute capability 8.0)."""
    from planner.hardware.schema import DeviceSpec

    return DeviceSpec.model_validate({
        "id": "custom", "name": f"custom device ({memory_gib:g} GiB)", "vendor": "nvidia", "backend": "cuda",
        "architecture": "unknown", "compute_capability": "8.0", "memory_gib": memory_gib, "memory_type": "unknown",
        "memory_kind": "dedicated", "mem_bandwidth_gb_s": 500.0 if bandwidth_gb_s is None else bandwidth_gb_s, "launch_year": 2024,
        "source": "user input (--memory/--bandwidth)", "unverified": [] if bandwidth_gb_s is not None else ["mem_bandwidth_gb_s"],
    })


# Assumed when a probed CPU's memory bandwidth is unknown: DDR5-5600 dual channel (2 x 64 bit x 5600 MT/s).
DEFAULT_CPU_BANDWIDTH_GB_S = 89.6


def cpu_device(model_name: str, cores: int | None, ram_total_bytes: int,  # type: ignore[no-untyped-def]
               isa: list[str] | None = None):
    """A CPU target for a probed machine: its RAM and ISA flags, with an assumed dual-channel DDR5 bandwidth."""
    from planner.hardware.schema import CPU_ISA_NAMES, DeviceSpec

    return DeviceSpec.model_validate({
        "cpu_isa": [i for i in (isa or []) if i in CPU_ISA_NAMES],
        "id": "local-cpu", "name": model_name or "local CPU", "vendor": "generic", "backend": "cpu", "architecture": "cpu",
        "memory_gib": max(ram_total_bytes / GIB, 0.001), "memory_type": "system RAM", "memory_kind": "system",
        "mem_bandwidth_gb_s": DEFAULT_CPU_BANDWIDTH_GB_S, "cpu_cores": cores or None, "launch_year": 2024,
        "source": "probe (memory); bandwidth assumed DDR5-5600 dual channel", "unverified": ["mem_bandwidth_gb_s"],
    })


def resolve_target(args: argparse.Namespace, catalog: Catalog) -> Target:
    """The Target the command line asks for (option ranges were checked while parsing)."""
    nodes = getattr(args, "nodes", 1)
    fabric = None
    if nodes > 1 or getattr(args, "fabric", None):
        from planner.hardware.catalog import get_fabric, load_fabrics

        fabric = get_fabric(getattr(args, "fabric", None) or "ib-ndr", load_fabrics())
    multi = {"nodes": nodes, "fabric": fabric, "expert_parallel": bool(getattr(args, "expert_parallel", False))}
    ram = int(parse_memory(args.ram) * GIB) if getattr(args, "ram", None) else None
    if args.memory:
        dev = manual_device(parse_memory(args.memory), args.bandwidth)
        t = target_from_catalog(dev, args.count, ram, **multi)
        notes = ("custom device: compute assumed like an sm80 GPU",) + (() if args.bandwidth is not None else ("bandwidth unknown: assumed 500 GB/s",))
        return Target(t.device, t.count, t.usable_bytes, ram, origin="manual", notes=notes, **multi)
    if args.device:
        return target_from_catalog(catalog.get(args.device), args.count, ram, **multi)
    if nodes > 1:
        raise PlannerError("--nodes needs --device (the node's GPU) and --count (GPUs per node)")
    from planner.hardware import probe

    snap = probe.load_snapshot(args.snapshot) if args.snapshot else probe.read_raw()
    host = probe.interpret(snap, catalog)
    return target_from_host(host, origin="snapshot" if args.snapshot else "probe", ram_override=ram)


def target_from_host(host, origin: str = "probe", ram_override: int | None = None) -> Target:  # type: ignore[no-untyped-def]
    """Plan for a probed host: its largest group of identical GPUs with their free memory, else its CPU and RAM."""
    notes = list(getattr(host, "warnings", []) or [])
    ram_avail = ram_override or getattr(host, "ram_available_bytes", None)
    gpus = list(getattr(host, "gpus", []) or [])
    if gpus:
        groups: dict[str, list] = {}
        for g in gpus:
            groups.setdefault(g.spec.id, []).append(g)
        best = max(groups.values(), key=lambda gs: sum(x.memory_total_bytes for x in gs))
        dev = best[0].spec
        if len(groups) > 1:
            notes.append(f"mixed GPUs: planning for the {len(best)}x {dev.name}; others are left out")
        # memory_usable_bytes: free VRAM, or for unified memory the GPU limit capped by the RAM available now.
        usable = [int(g.memory_usable_bytes) for g in best]
        notes.append(f"planning for this machine: {len(best)}x {dev.name}, free memory as probed")
        return Target(dev, len(best), tuple(usable), ram_avail, origin=origin, notes=tuple(notes))
    cpu = getattr(host, "cpu", None)
    total = int(getattr(host, "ram_total_bytes", 0) or 0)
    if total <= 0:
        raise PlannerError("the probe found no GPU and could not read the RAM size; use --device")
    cores = getattr(cpu, "physical_cores", None) or getattr(cpu, "logical_cores", None)
    cpu_dev = cpu_device(getattr(cpu, "model", "") or "", cores, total, list(getattr(cpu, "isa", None) or []))
    avail = int(ram_avail or total)
    usable = min(avail, system_usable_bytes(total))
    notes.append(f"planning for this CPU ({cpu_dev.name}, {cores or '?'} cores) and its RAM; memory bandwidth assumed "
                 f"{DEFAULT_CPU_BANDWIDTH_GB_S:g} GB/s (dual-channel DDR5); `planner bench --model MODEL --format Q4_K_M "
                 "--save` measures this machine and later plans use it")
    return Target(cpu_dev, 1, (max(usable, 0),), avail, cpu_dev.mem_bandwidth_gb_s, origin=origin, notes=tuple(notes))
