"""`planner catalog`: list, show and validate hardware catalog entries."""

from __future__ import annotations

import argparse
from pathlib import Path

from planner.commands.options import MAX_DEVICE_GIB, add_catalog_dirs, add_json, console, float_in, print_json

_SORT_KEYS = {"memory": lambda d: d.memory_gib, "bandwidth": lambda d: d.mem_bandwidth_gb_s, "name": lambda d: d.name.lower(),
              "year": lambda d: d.launch_year, "id": lambda d: d.id, "fp16": lambda d: d.peak_fp16_tflops or 0}


def add_parser(sub) -> None:  # type: ignore[no-untyped-def]
    """Register the subcommand."""
    p = sub.add_parser("catalog", help="list, show or validate hardware catalog entries")
    p.add_argument("action", nargs="?", choices=["list", "show", "validate"], default="list")
    p.add_argument("target", nargs="?", metavar="ID|DIR", help="device id for 'show', directory for 'validate'")
    p.add_argument("--vendor", help="only this vendor (nvidia, amd, apple, intel, qualcomm, generic)")
    p.add_argument("--kind", choices=["dedicated", "unified", "system"], help="only this memory kind")
    p.add_argument("--min-memory", type=float_in(0, MAX_DEVICE_GIB), metavar="GIB", help="only devices with at least this much memory")
    p.add_argument("--sort", choices=sorted(_SORT_KEYS), default="memory", help="sort key (default memory)")
    p.add_argument("--unverified", action="store_true", help="only devices with figures no source confirms")
    p.add_argument("--variants", action="store_true", help="include every memory configuration (e.g. m3-max-128gb)")
    add_catalog_dirs(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from planner.hardware.catalog import load_catalog, validate_catalog_dir

    if args.action == "validate":
        from planner.paths import data_dir

        path = Path(args.target) if args.target else data_dir("hwdb")
        devices = validate_catalog_dir(path)
        if args.json:
            print_json({"path": str(path), "valid": True, "devices": len(devices)})
        else:
            console().print(f"{path}: {len(devices)} devices, all valid")
        return 0
    catalog = load_catalog(args.hwdb)
    if args.action == "show":
        if not args.target:
            from planner.errors import PlannerError

            raise PlannerError("catalog show needs a device id, e.g. `planner catalog show rtx-4090`")
        d = catalog.get(args.target)
        data = d.model_dump(mode="json")
        if args.json:
            print_json(data)
        else:
            con = console()
            for k, v in data.items():
                if v in (None, [], {}):
                    continue
                mark = " [yellow](unverified)[/yellow]" if k in d.unverified else ""
                con.print(f"[bold]{k:22}[/bold] {v}{mark}")
        return 0
    from planner.hardware.catalog import memory_variant_ids

    variants = memory_variant_ids(catalog)
    devices = [d for d in catalog if _keep(d, args, variants)]
    devices.sort(key=_SORT_KEYS[args.sort], reverse=args.sort in ("memory", "bandwidth", "year", "fp16"))
    if args.json:
        print_json([d.model_dump(mode="json") for d in devices])
        return 0
    from rich.table import Table

    t = Table(header_style="bold")
    for col in ("id", "name", "vendor", "memory GiB", "kind", "GB/s", "FP16 TFLOPS", "FP8", "CC", "year"):
        t.add_column(col, justify="right" if col in ("memory GiB", "GB/s", "FP16 TFLOPS", "FP8", "year") else "left")
    for d in devices:
        t.add_row(d.id, d.name, d.vendor, f"{d.memory_gib:g}", d.memory_kind, f"{d.mem_bandwidth_gb_s:g}",
                  f"{d.peak_fp16_tflops:g}" if d.peak_fp16_tflops else "-", f"{d.peak_fp8_tflops:g}" if d.peak_fp8_tflops else "-",
                  d.compute_capability or d.gfx_target or "-", str(d.launch_year) + (" *" if d.unverified else ""))
    con = console()
    con.print(t)
    from planner.hardware.catalog import catalog_summary

    total = catalog_summary(catalog)
    everything = len(devices) == (len(catalog) if args.variants else len(catalog) - len(variants))
    shown = total if everything else f"{len(devices)} listed; catalog: {total}"
    con.print(shown + ("; * = has unverified figures (catalog --unverified)" if any(d.unverified for d in devices) else ""))
    return 0


def _keep(d, args: argparse.Namespace, variants: set[str]) -> bool:  # type: ignore[no-untyped-def]
    if args.vendor and d.vendor != args.vendor.lower():
        return False
    if args.kind and d.memory_kind != args.kind:
        return False
    if args.min_memory and d.memory_gib < args.min_memory:
        return False
    if args.unverified and not d.unverified:
        return False
    # memory configurations are listed with --variants (or when filtering by memory, where they matter)
    return bool(args.variants or args.min_memory or d.id not in variants)
