"""`planner probe`: show this machine (or a saved snapshot) as the planner sees it."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

from planner.commands import options

if TYPE_CHECKING:
    from planner.hardware.probe import Host

GIB = 2**30


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `probe` and its options."""
    p = subparsers.add_parser(
        "probe",
        help="show this machine's GPUs, memory and CPU as the planner sees them",
        description="Probe this machine (NVML, Apple silicon, AMD, CPU, RAM) and match its devices to the catalog.",
    )
    options.add_json(p)
    p.add_argument("--raw", action="store_true", help="print the raw snapshot (attach it to bug reports; plan from it with --snapshot)")
    p.add_argument("--snapshot", metavar="FILE", help="interpret a snapshot saved with 'planner probe --raw' instead of probing")
    p.add_argument("--measure", action="store_true",
                   help="measure this machine's memory read bandwidth now (under a second) and cache it for CPU plans")
    options.add_catalog_dirs(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Probe (or load a snapshot), then print the raw snapshot, the Host as JSON, or a table."""
    # Imported here so that `planner --help` and other commands do not pay for pydantic models and psutil.
    from planner.hardware import probe

    if args.measure and args.snapshot:
        from planner.errors import InvalidInputError

        raise InvalidInputError("--measure measures this machine; a --snapshot describes another one (use one of them)")
    snapshot = probe.load_snapshot(args.snapshot) if args.snapshot else probe.read_raw()
    if args.raw:
        options.print_json(snapshot)
        return 0
    from planner.hardware.catalog import load_catalog

    host = probe.interpret(snapshot, load_catalog(args.hwdb))
    bandwidth = None if args.snapshot else _bandwidth(host, args.measure)
    if args.json:
        doc = host.model_dump(mode="json")
        if bandwidth is not None:
            doc["memory_read_bandwidth"] = {**dataclasses.asdict(bandwidth[0]), "measured_now": bandwidth[1]}
        options.print_json(doc)
    else:
        render(host, title=f"snapshot {args.snapshot}" if args.snapshot else "this machine")
        if bandwidth is not None:
            m, now = bandwidth
            options.console().print(f"Memory read bandwidth: {m.describe()}" + (" (just now)" if now else " (cached)"),
                                    soft_wrap=True)
    return 0


def _bandwidth(host: Host, measure: bool):  # type: ignore[no-untyped-def]
    """(ReadBandwidth, measured now) for this machine: measured with --measure, else the cached one; None if neither."""
    from planner.hardware import membw

    cpu = host.cpu
    if not measure:
        key = membw.machine_key(cpu.model, cpu.physical_cores or cpu.usable_cores or cpu.logical_cores, host.ram_total_bytes)
        hit = membw.cached(key)
        return (hit, False) if hit is not None else None
    return membw.local_bandwidth(cpu.model, cpu.physical_cores, cpu.usable_cores or cpu.logical_cores,
                                 host.ram_total_bytes, host.ram_available_bytes, refresh=True)


def render(host: Host, title: str = "this machine") -> None:
    """Print the host as a rich table plus CPU, RAM, source and warning lines."""
    from rich.table import Table

    con = options.console()
    table = Table(title=f"Devices on {title}" + (f" ({host.platform})" if host.platform else ""), title_justify="left")
    for col, just in (("#", "right"), ("device", "left"), ("catalog id", "left"), ("memory", "right"),
                      ("usable now", "right"), ("link", "left"), ("notes", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for dev in host.gpus:
        notes = []
        if dev.mig_profile:
            notes.append(f"MIG {dev.mig_profile}")
        if dev.compute_capability:
            notes.append(f"sm {dev.compute_capability}")
        if dev.gfx_target:
            notes.append(dev.gfx_target)
        if dev.gpu_cores:
            notes.append(f"{dev.gpu_cores} GPU cores")
        if dev.unified:
            notes.append("unified memory")
        if "mem_bandwidth_gb_s" in dev.spec.unverified:
            notes.append("bandwidth unknown")
        link = []
        if dev.pcie_gen:
            link.append(f"PCIe {dev.pcie_gen}" + (f" x{dev.pcie_width}" if dev.pcie_width else ""))
        if dev.nvlink_active_links:
            link.append(f"NVLink x{dev.nvlink_active_links}")
        table.add_row(
            str(dev.index), dev.name, dev.catalog_id or "[yellow]not in catalog[/]", _gib(dev.memory_total_bytes),
            _gib(dev.memory_usable_bytes), ", ".join(link), ", ".join(notes),
        )
    if host.gpus:
        con.print(table)
    else:
        con.print("[bold]No GPU[/]: plans run on the CPU only.")
    cpu = host.cpu
    cores = f"{cpu.physical_cores or '?'} cores / {cpu.logical_cores or '?'} threads"
    if cpu.usable_cores and cpu.logical_cores and cpu.usable_cores < cpu.logical_cores:
        cores += f" ({cpu.usable_cores} usable)"
    con.print(f"CPU: {cpu.model or 'unknown'} ({cpu.arch or '?'}), {cores}; ISA: {' '.join(cpu.isa) or 'none detected'}"
              + (f"; catalog {cpu.catalog_id}" if cpu.catalog_id else ""))
    ram = f"RAM: {_gib(host.ram_total_bytes)} total, {_gib(host.ram_available_bytes)} available"
    if host.cgroup_memory_limit_bytes is not None:
        ram += f" (container limit; machine has {_gib(host.ram_physical_bytes)})"
    if host.swap_total_bytes:
        ram += f", swap {_gib(host.swap_total_bytes)}"
    con.print(ram)
    if host.gpu_usable_bytes is not None:
        con.print(f"GPU share of unified memory: {_gib(host.gpu_usable_bytes)} ({host.gpu_usable_source})")
    if host.driver_version:
        con.print(f"NVIDIA driver {host.driver_version}" + (f", CUDA {host.cuda_driver_version}" if host.cuda_driver_version else ""))
    if host.interconnect:
        con.print(f"GPU interconnect: {host.interconnect}")
    parts = []
    for name, status in host.sources.items():
        state = "ok" if status.ok else "absent" if status.absent else "[red]failed[/]"
        parts.append(f"{name} {state}")
    con.print("Sources: " + ", ".join(parts), style="dim")
    for warning in host.warnings:
        con.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)


def _gib(n: int | None) -> str:
    """Bytes as 'N.N GiB'."""
    return "?" if n is None else f"{n / GIB:.1f} GiB"
