"""`planner tui`: browse hardware and models and see what fits where, in the terminal."""

from __future__ import annotations

import argparse
from typing import Any

from planner.commands.options import MAX_CONCURRENCY, MAX_CONTEXT_TOKENS, add_catalog_dirs, int_in, nonempty
from planner.hardware.catalog import load_catalog
from planner.models.profiles import load_registry
from planner.tui.app import create_app


def add_parser(sub) -> None:  # type: ignore[no-untyped-def]
    """Register the subcommand."""
    p = sub.add_parser("tui", help="interactive terminal UI: devices, models, what fits where",
                       description="Browse the hardware catalog and the model profiles, and see every format x runtime "
                                   "for a model on a device with memory, speed, quality and a launch command.")
    p.add_argument("--model", "-m", type=nonempty, metavar="MODEL", help="model to start with (profile id, alias or size like 70B)")
    p.add_argument("--device", type=nonempty, metavar="ID", help="catalog device to start with (default: this machine once probed)")
    # the TUI's device and node pickers offer 1..64 (a screen of choices)
    p.add_argument("--count", type=int_in(1, 64), default=1, metavar="N", help="number of devices (default 1)")
    p.add_argument("--context", "-c", type=int_in(1, MAX_CONTEXT_TOKENS), metavar="TOKENS", help="context length to start with")
    p.add_argument("--concurrency", type=int_in(1, MAX_CONCURRENCY), default=1, metavar="N", help="concurrent sequences (default 1)")
    p.add_argument("--nodes", type=int_in(1, 64), default=1, metavar="N", help="identical nodes of --count devices each (default 1)")
    p.add_argument("--fabric", type=nonempty, metavar="ID", help="inter-node fabric with --nodes: ib-ndr, roce-400g, eth-100g ... (default ib-ndr)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--snapshot", type=nonempty, metavar="FILE", help="show the machine a `planner probe --raw` snapshot describes instead of probing")
    g.add_argument("--no-probe", action="store_true", help="do not probe this machine (catalog devices only)")
    add_catalog_dirs(p)
    p.set_defaults(func=run)


def host_provider(catalog: Any, snapshot: str | None = None):  # type: ignore[no-untyped-def]
    """A callable the app runs in a worker: probe this machine (or read a snapshot) and interpret it."""

    def provide() -> Any:
        # lazy: the probe module (about 0.1 s to import) loads in the app's worker, after the first screen is drawn
        from planner.hardware import probe

        raw = probe.load_snapshot(snapshot) if snapshot else probe.read_raw(catalog=catalog)
        return probe.interpret(raw, catalog)

    return provide


def run(args: argparse.Namespace) -> int:
    """Load the data (no probing here: the app probes in a worker), then run the app until the user quits."""
    catalog = load_catalog(args.hwdb)
    registry = load_registry(args.profiles)
    provider = None if args.no_probe else host_provider(catalog, args.snapshot)

    from planner.measure.reports import load_reports

    # Stored planner eval results: the fit view ranks and shows measured KL divergence for the models they cover.
    app = create_app(catalog, registry, provider, model=args.model, device=args.device, count=args.count,
                     context=args.context, concurrency=args.concurrency, eval_reports=load_reports(),
                     nodes=args.nodes, fabric=args.fabric)
    app.run()
    return 0
