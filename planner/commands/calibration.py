"""`planner calibration list|show|clear [DEVICE]`: the measured records `planner bench --save` wrote."""

from __future__ import annotations

import argparse

from planner.commands.options import add_json, console, print_json
from planner.errors import InvalidInputError, PlannerError
from planner.measure import calibration


def add_parser(sub) -> None:  # type: ignore[no-untyped-def]
    """Register the subcommand."""
    p = sub.add_parser("calibration", help="list, show or clear measured calibration records",
                       description="Calibration records are what `planner bench --save` measured on a device; "
                                   "recommend and estimate use them for that device unless --no-calibration.")
    p.add_argument("action", choices=["list", "show", "clear", "schema"],
                   help="list devices with records, show records, delete them, or print the files' JSON schema")
    p.add_argument("device", nargs="?", metavar="DEVICE", help="device id (default: every device)")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    if args.action == "schema":
        print_json(calibration.file_model().model_json_schema())
        return 0
    if args.action == "clear":
        removed = calibration.clear_calibration(args.device)
        if args.json:
            print_json({"removed": [str(p) for p in removed]})
        elif removed:
            for p in removed:
                console().print(f"removed {p}")
        else:
            console().print(f"no calibration records{f' for {args.device}' if args.device else ''} in {calibration.calibration_dir()}")
        return 0
    if args.action == "list":
        return _list(args)
    return _show(args)


def _list(args: argparse.Namespace) -> int:
    rows, bad = [], 0
    entries = calibration.list_calibrations()
    if args.device:
        entries = [(d, p) for d, p in entries if d == args.device]
    for device_id, path in entries:
        try:
            cal = calibration.read_calibration(device_id)
        except InvalidInputError as exc:
            bad += 1
            rows.append({"device": device_id, "file": str(path), "records": None, "latest": None, "error": str(exc)})
            continue
        latest = max((r.measured_at for r in cal.records), default=None) if cal else None
        rows.append({"device": device_id, "file": str(path), "records": len(cal.records) if cal else 0,
                     "latest": latest.isoformat() if latest else None, "error": None})
    if args.json:
        print_json({"directory": str(calibration.calibration_dir()), "devices": rows})
    else:
        con = console()
        if not rows:
            con.print(f"no calibration records in {calibration.calibration_dir()} (run `planner bench --save`)")
        for r in rows:
            if r["error"]:
                con.print(f"[red]{r['device']}: {r['error']}[/red]")
            else:
                con.print(f"{r['device']}: {r['records']} record(s), latest {r['latest']}  [dim]{r['file']}[/dim]")
    return 2 if bad else 0


def _show(args: argparse.Namespace) -> int:
    from planner.cost.speed import efficiency

    ids = [args.device] if args.device else [d for d, _ in calibration.list_calibrations()]
    out = []
    for device_id in ids:
        cal = calibration.read_calibration(device_id)
        if cal is None:
            raise PlannerError(f"no calibration records for '{device_id}' in {calibration.calibration_dir()}")
        effs = calibration.efficiencies(list(cal.records))
        out.append({
            "device": device_id, "file": str(calibration.calibration_path(device_id)),
            "records": [r.model_dump(mode="json") for r in cal.records],
            "efficiencies": [{"engine": e, "backend": b, "bandwidth": round(v.bandwidth, 4), "compute": round(v.compute, 4),
                              "layer_overhead_us": v.layer_overhead_us, "provenance": v.provenance,
                              "table_bandwidth": efficiency(e, b).bandwidth} for (e, b), v in sorted(effs.items())],
        })
    if args.json:
        print_json({"devices": out})
        return 0
    from rich.table import Table

    con = console()
    if not out:
        con.print(f"no calibration records in {calibration.calibration_dir()} (run `planner bench --save`)")
    for d in out:
        con.print(f"[bold]{d['device']}[/bold]  [dim]{d['file']}[/dim]")
        t = Table(header_style="bold")
        for col in ("engine", "kernel", "class", "format", "bw fraction", "compute fraction", "copy GB/s", "peak GB/s", "measured"):
            t.add_column(col)
        for r in d["records"]:
            t.add_row(r["engine"], r["kernel"], r["kernel_class"], r["format_id"] or "-", f"{r['bandwidth_fraction']:.3f}",
                      f"{r['compute_fraction']:.3f}" if r["compute_fraction"] is not None else "-",
                      f"{r['copy_bandwidth_gb_s']:.1f}", f"{r['peak_bandwidth_gb_s']:g}", r["measured_at"])
        con.print(t)
        if d["efficiencies"]:
            e = Table(title="what the cost model uses (bandwidth fraction: table -> measured)", title_justify="left",
                      header_style="bold")
            for col in ("engine", "backend", "bandwidth", "compute", "layer overhead us"):
                e.add_column(col)
            for v in d["efficiencies"]:
                e.add_row(v["engine"], v["backend"], f"{v['table_bandwidth']:.2f} -> {v['bandwidth']:.3f}",
                          f"{v['compute']:.3f}", f"{v['layer_overhead_us']:g}")
            con.print(e)
        else:
            con.print("[dim]the records are above the table's figures: the cost model is unchanged[/dim]")
    return 0
