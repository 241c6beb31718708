"""`planner models`: list the bundled model profiles, or show one with its tensor inventory summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from planner.commands.common import add_online_option, load_model
from planner.commands.options import add_catalog_dirs, add_json, console, print_json
from planner.errors import PlannerError
from planner.models.inventory import count_active_params, count_params
from planner.models.profiles import load_registry, parse_profile_files
from planner.paths import data_dir
from planner.yamlio import load_yaml_dir


def add_parser(sub) -> None:  # type: ignore[no-untyped-def]
    """Register the subcommand."""
    p = sub.add_parser("models", help="list model profiles, or show one")
    p.add_argument("action", nargs="?", choices=["list", "show", "inspect", "validate"], default="list")
    p.add_argument("target", nargs="?", metavar="MODEL|DIR",
                   help="model for 'show' (id, alias, size, path, ORG/NAME); ORG/NAME[@REV][:QUANT] or a path for 'inspect' "
                        "(what was read: files, headers, quantization, every quant of a GGUF repo); directory for 'validate'")
    p.add_argument("--family", help="only this family (substring of the family name)")
    add_online_option(p)
    add_catalog_dirs(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    if args.action == "validate":
        path = Path(args.target) if args.target else data_dir("profiles")
        models = parse_profile_files(load_yaml_dir(path))
        console().print(f"{path}: {len(models)} profiles, all valid") if not args.json else print_json({"path": str(path), "valid": True, "models": len(models)})
        return 0
    if args.action == "inspect":
        return _inspect(args)
    if args.action == "show":
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
                     "notes": m.architecture_notes()})
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


def _inspect(args: argparse.Namespace) -> int:
    """`models inspect ORG/NAME`: what was read for a repo (or path): where from, files, headers, quantization."""
    if not args.target:
        raise PlannerError("models inspect needs a repo id or a path, e.g. `planner models inspect Qwen/Qwen3-8B --online`")
    data = inspect_data(args.target, args.online, args.profiles)
    if args.json:
        print_json(data)
        return 0
    _render_inspect(data)
    return 0


def inspect_data(target: str, online: bool, profile_dirs: list) -> dict:  # type: ignore[type-arg]
    """The JSON of `models inspect`: a path's files, a repo's files (local HF cache / planner cache / Hub), or a profile."""
    # lazy: the Hub client and the file readers import numpy, gguf and pydantic (~0.5 s); `models list` needs none
    from planner.models.hub import NotAvailableOffline, cache_path, gguf_label, parse_repo_ref, planner_format, resolve_repo
    from planner.models.readers import ModelSource, load_model_source

    hub = None
    ref = parse_repo_ref(target)
    if Path(target).exists():
        src = load_model_source(Path(target))
        resolved, location = "path", str(Path(target).resolve())
    elif ref is not None:
        # A repo id is inspected from its files even when a bundled profile has the same name: that is the point.
        try:
            hub = resolve_repo(target, online=online)
        except NotAvailableOffline as exc:
            try:
                spec = load_registry(profile_dirs).get(target)
            except PlannerError:
                raise exc from None
            raise NotAvailableOffline(f"{exc}; the bundled profile '{spec.id}' has this name: `planner models show {spec.id}`") from None
        src, resolved, location = hub.source, hub.where, hub.location
    else:
        spec = load_registry(profile_dirs).get(target)
        src, resolved, location = ModelSource(spec, None, origin=f"profile {spec.id}"), "profile", f"profile {spec.id}"
    spec = src.spec
    dtype_counts: dict[str, int] = {}
    for d in src.tensor_dtypes.values():
        dtype_counts[d] = dtype_counts.get(d, 0) + 1
    fmt = hub.planner_format if hub is not None else planner_format(
        src.quantization, gguf_label(Path(target).name) if target.lower().endswith(".gguf") else None)
    quant = dict(src.quantization) if src.quantization else None
    data = {
        "model": target, "resolved": resolved, "location": location,
        "repo": hub.repo if hub else spec.hf_repo, "revision": hub.revision if hub else None, "sha": hub.sha if hub else None,
        "kind": hub.kind if hub else None, "origin": src.origin,
        "spec": {k: v for k, v in spec.model_dump(mode="json").items() if k in _SPEC_KEYS},
        "params": count_params(spec), "active_params": count_active_params(spec) if spec.moe else count_params(spec),
        "quantization": quant, "planner_format": fmt, "pre_quantized": bool(quant),
        "file_bytes": src.file_bytes, "n_tensors": len(src.tensors) if src.tensors is not None else None,
        "tensor_dtypes": dict(sorted(dtype_counts.items(), key=lambda kv: -kv[1])),
        "selected": hub.selected if hub else None,
        "variants": [{"label": v.label, "files": list(v.files), "file_bytes": v.file_bytes, "planner_format": v.planner_format,
                      "file_type": v.file_type, "tensor_types": v.tensor_types, "header_read": v.header_read}
                     for v in (hub.variants if hub else ())],
        "notes": list(hub.notes) if hub else [],
        "cache_file": str(cache_path(hub.repo, hub.revision)) if hub and hub.where in ("hub", "hub-cache") else None,
        "requests": hub.requests if hub else 0, "bytes_read": hub.bytes_read if hub else 0,
    }
    return data


_SPEC_KEYS = ("id", "name", "family", "architecture", "hf_repo", "vocab_size", "hidden_size", "num_layers", "num_heads",
              "num_kv_heads", "head_dim", "intermediate_size", "max_context", "native_dtype", "sliding_window", "moe", "mla")
_WHERE = {"path": "files on disk", "profile": "bundled profile", "hf-cache": "local Hugging Face cache",
          "hub": "the Hugging Face Hub (now cached)", "hub-cache": "planner cache of an earlier Hub read (offline)"}


def _render_inspect(data: dict) -> None:  # type: ignore[type-arg]
    from rich.table import Table

    con = console()
    s = data["spec"]
    con.print(f"[bold]{data['model']}[/bold]: {_WHERE.get(data['resolved'], data['resolved'])}")
    con.print(f"[dim]{data['origin']}[/dim]")
    rows = [
        ("location", data["location"]), ("commit", data["sha"]), ("kind", data["kind"]),
        ("architecture", f"{s['architecture']} ({s['family']}), {s['num_layers']} layers, hidden {s['hidden_size']}, "
                         f"{s['num_heads']} heads / {s['num_kv_heads']} KV heads, vocab {s['vocab_size']:,}"),
        ("max context", f"{s['max_context']:,} tokens"),
        ("parameters", _count(data["params"]) + (f" ({_count(data['active_params'])} active)" if s.get("moe") else "")),
        ("stored as", _stored(data)),
        ("planner format", data["planner_format"] or ("-" if data["quantization"] else f"none (not pre-quantized; {s['native_dtype']})")),
        ("file bytes", f"{data['file_bytes']:,} ({data['file_bytes'] / 2**30:.2f} GiB)" if data["file_bytes"] else None),
        ("tensors", f"{data['n_tensors']} ({', '.join(f'{k} {v}' for k, v in data['tensor_dtypes'].items())})" if data["n_tensors"] else None),
        ("cache file", data["cache_file"]),
        ("network", f"{data['requests']} requests, {data['bytes_read']:,} bytes" if data["resolved"] == "hub" else None),
    ]
    for k, v in rows:
        if v:
            con.print(f"[bold]{k:15}[/bold] {v}", soft_wrap=True)
    for n in data["notes"]:
        con.print(f"[yellow]! {n}[/yellow]")
    if data["variants"]:
        t = Table(title="Quants in the repo", title_justify="left", header_style="bold")
        for col in ("quant", "planner format", "GiB", "files", "tensor types"):
            t.add_column(col, justify="right" if col == "GiB" else "left")
        for v in data["variants"]:
            mark = " *" if v["label"] == data["selected"] else ""
            types = ", ".join(f"{k} {n}" for k, n in sorted((v["tensor_types"] or {}).items(), key=lambda kv: -kv[1])) or "(header not read)"
            t.add_row(v["label"] + mark, v["planner_format"] or "-", f"{v['file_bytes'] / 2**30:.2f}" if v["file_bytes"] else "?",
                      str(len(v["files"])), types)
        con.print(t)
        con.print("[dim]* the quant described above; pick another with ORG/NAME:QUANT[/dim]")


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.2f}M"


def _stored(data: dict) -> str:  # type: ignore[type-arg]
    q = data["quantization"]
    if not q:
        return ""
    if q.get("method") == "gguf":
        return f"GGUF, file type {q.get('file_type') or '?'}"
    parts = [str(q.get("method"))]
    if q.get("bits"):
        parts.append(f"{q['bits']}-bit")
    if q.get("group_size"):
        parts.append(f"group {q['group_size']}")
    if q.get("quant_type"):
        parts.append(str(q["quant_type"]))
    return ", ".join(parts)
