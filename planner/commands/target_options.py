"""--device/--count/--ram, --memory/--bandwidth, --snapshot, --nodes: the target options, and the Target they ask for
(default: this machine, probed)."""

from __future__ import annotations

import argparse

from planner.commands.options import (
    MAX_BANDWIDTH_GB_S, MAX_DEVICE_GIB, MAX_DEVICES, MAX_HOST_GIB, MAX_NODES, MAX_TFLOPS, float_in, int_in, nonempty, path_arg,
    size_in,
)
from planner.errors import PlannerError
from planner.hardware.catalog import Catalog, get_fabric, load_fabrics, parse_memory
from planner.hardware.targets import DEFAULT_MANUAL_BANDWIDTH_GB_S, manual_device, target_from_host, tflops_per_bandwidth
from planner.plan import GIB, Target, target_from_catalog


def add_target_options(p: argparse.ArgumentParser) -> None:
    """--device/--count/--ram, --memory/--bandwidth, --snapshot: what to plan for (default: this machine)."""
    g = p.add_argument_group("target (default: this machine, probed)")
    g.add_argument("--device", type=nonempty, metavar="ID", help="catalog device id or name, e.g. h100-sxm, rtx-4090, m3-max-128gb")
    g.add_argument("--count", type=int_in(1, MAX_DEVICES), default=1, metavar="N", help="number of identical devices (default 1)")
    g.add_argument("--ram", type=size_in(MAX_HOST_GIB), metavar="SIZE", help="host RAM available for offloaded layers, e.g. 64GiB")
    g.add_argument("--memory", type=size_in(MAX_DEVICE_GIB), metavar="SIZE", help="plan for a device with this much memory, e.g. 24GiB")
    g.add_argument("--bandwidth", type=float_in(0, MAX_BANDWIDTH_GB_S, lo_open=True), metavar="GB/S", help="with --memory: its memory bandwidth in GB/s")
    g.add_argument("--tflops", type=float_in(0, MAX_TFLOPS, lo_open=True), metavar="TFLOPS",
                   help="with --memory: its dense FP16/BF16 tensor TFLOPS (prefill speed); without it, assumed from "
                        "the bandwidth at the catalog GPUs' median FLOPs per byte")
    g.add_argument("--snapshot", type=path_arg, metavar="FILE", help="plan for the machine a `planner probe --raw` snapshot describes")
    g.add_argument("--nodes", type=int_in(1, MAX_NODES), default=1, metavar="N", help="identical nodes of --count devices each (multi-node plans)")
    g.add_argument("--fabric", type=nonempty, metavar="ID", help="inter-node fabric: ib-ndr, ib-hdr, roce-400g, eth-100g, eth-10g ... (default ib-ndr)")
    g.add_argument("--no-measure", action="store_true",
                   help="planning for this machine's CPU: do not measure its memory bandwidth (assume it instead); "
                        "the measurement is taken once and cached, `planner probe --measure` refreshes it")
    g.add_argument("--expert-parallel", action="store_true", help="MoE across nodes: shard experts over every GPU instead of pipeline stages")


def resolve_target(args: argparse.Namespace, catalog: Catalog) -> Target:
    """The Target the command line asks for (option ranges were checked while parsing)."""
    nodes = getattr(args, "nodes", 1)
    fabric = None
    if nodes > 1 or getattr(args, "fabric", None):
        fabric = get_fabric(getattr(args, "fabric", None) or "ib-ndr", load_fabrics())
    multi = {"nodes": nodes, "fabric": fabric, "expert_parallel": bool(getattr(args, "expert_parallel", False))}
    ram = int(parse_memory(args.ram) * GIB) if getattr(args, "ram", None) else None
    if getattr(args, "tflops", None) is not None and not args.memory:
        raise PlannerError("--tflops describes a device given by --memory (catalog devices have their own figures)")
    if args.memory:
        tflops, compute_note = getattr(args, "tflops", None), ""
        if tflops is None:
            bandwidth = args.bandwidth if args.bandwidth is not None else DEFAULT_MANUAL_BANDWIDTH_GB_S
            ratio, n = tflops_per_bandwidth(catalog)
            tflops = bandwidth * ratio
            compute_note = (f"compute unknown (--tflops): assumed {tflops:.0f} TFLOPS FP16, the median FLOPs per byte of "
                            f"{n} catalog GPUs (sm80+) times {bandwidth:g} GB/s")
        dev = manual_device(parse_memory(args.memory), args.bandwidth, tflops)
        t = target_from_catalog(dev, args.count, ram, **multi)
        notes = ("custom device: kernels and features assumed like an sm80 GPU",) + (
            (compute_note,) if compute_note else ()) + (
            () if args.bandwidth is not None else (f"bandwidth unknown: assumed {DEFAULT_MANUAL_BANDWIDTH_GB_S:g} GB/s",))
        return Target(t.device, t.count, t.usable_bytes, ram, origin="manual", notes=notes, **multi)
    if args.device:
        return target_from_catalog(catalog.get(args.device), args.count, ram, **multi)
    if nodes > 1:
        raise PlannerError("--nodes needs --device (the node's GPU) and --count (GPUs per node)")
    # lazy: --device/--memory plans never read the probe (NVML, sysfs) nor this machine's bandwidth cache
    from planner.hardware import membw, probe

    snap = probe.load_snapshot(args.snapshot) if args.snapshot else probe.read_raw(catalog=catalog)
    host = probe.interpret(snap, catalog)
    # A snapshot describes another machine: only this one is measured, and only when it plans on its CPU.
    measured = None if args.snapshot or getattr(args, "no_measure", False) else membw.for_host(host)
    return target_from_host(host, origin="snapshot" if args.snapshot else "probe", ram_override=ram, measured=measured)
