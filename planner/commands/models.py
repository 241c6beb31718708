"""`planner models`: list the bundled model profiles, or show one with its tensor inventory summary."""

from __future__ import annotations

import argparse

from planner.commands.options import add_catalog_dirs, add_json, console, print_json


def add_parser(sub) -> None:  # type: ignore[no-untyped-def]
    """Register the subcommand."""
    p = sub.add_parser("models", help="list model profiles, or show one")
    p.add_argument("action", nargs="?", choices=["list", "show", "validate"], default="list")
    p.add_argument("target", nargs="?", metavar="MODEL|DIR", help="model for 'show' (id, alias, size, path); directory for 'validate'")
    p.add_argument("--family", help="only this family (substring of the family name)")
    add_catalog_dirs(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from planner.models.inventory import count_active_params, count_params
    from planner.models.profiles import load_registry, parse_profile_files

    if args.action == "validate":
        from pathlib import Path

        from planner.paths import data_dir
        from planner.yamlio import load_yaml_dir

        path = Path(args.target) if args.target else data_dir("profiles")
        models = parse_profile_files(load_yaml_dir(path))
        console().print(f"{path}: {len(models)} profiles, all valid") if not args.json else print_json({"path": str(path), "valid": True, "models": len(models)})
        return 0
    if args.action == "show":
        from planner.commands.common import load_model
        from planner.errors import PlannerError

        if not args.target:
            raise PlannerError("models show needs a model, e.g. `planner models show llama-3.1-8b`")
        args.model = args.target
        mc, note = load_model(args)
        data = mc.spec.model_dump(mode="json")
        data["params_computed"] = count_params(mc.spec, mc.tensors)
        data["active_params_computed"] = count_active_params(mc.spec, mc.tensors)
        data["n_tensors"] = len(mc.tensors)
        if args.json:
            print_json(data)
        else:
            con = console()
            if note:
                con.print(f"[dim]{note}[/dim]")
            for k, v in data.items():
                if v not in (None, [], {}):
                    con.print(f"[bold]{k:28}[/bold] {v}")
        return 0
    reg = load_registry(args.profiles)
    models = [m for m in reg if not args.family or args.family.lower() in m.family.lower()]
    rows = []
    for m in models:
        total = count_params(m)
        rows.append({"id": m.id, "name": m.name, "family": m.family, "architecture": m.architecture, "params": total,
                     "active_params": count_active_params(m) if m.moe else total, "max_context": m.max_context,
                     "hf_repo": m.hf_repo, "reference_for_size": m.reference_for_size,
                     "notes": ", ".join(x for x in ("MoE" if m.moe else "", "MLA" if m.mla else "",
                                                      "SWA" if m.sliding_window else "", f"GQA {m.gqa_ratio}" if m.gqa_ratio > 1 else "") if x)})
    if args.json:
        print_json(rows)
        return 0
    from rich.table import Table

    t = Table(header_style="bold")
    for col in ("id", "family", "params", "active", "context", "size", "architecture"):
        t.add_column(col, justify="right" if col in ("params", "active", "context") else "left")
    for r in rows:
        t.add_row(r["id"], r["family"], f"{r['params'] / 1e9:.2f}B", f"{r['active_params'] / 1e9:.2f}B", f"{r['max_context']:,}",
                  r["reference_for_size"] or "", r["notes"])
    console().print(t)
    console().print(f"{len(rows)} profiles")
    return 0
