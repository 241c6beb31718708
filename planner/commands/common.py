"""Helpers shared by the planning commands: model resolution, context checks, loading catalogs."""

from __future__ import annotations

import argparse
from pathlib import Path

from planner.commands.options import MAX_CONCURRENCY, MAX_CONTEXT_TOKENS, int_in, nonempty
from planner.errors import NotFoundError, PlannerError


def add_model_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    """--model, --online, --context, --concurrency, --prompt, --allow-context-extension."""
    p.add_argument("--model", "-m", required=required, metavar="MODEL", type=nonempty,
                   help="profile id, alias, bare size (70B), Hugging Face repo id (ORG/NAME[@REV][:QUANT]; local HF cache, "
                        "or the Hub with --online), or a path to config.json / model dir / .gguf")
    add_online_option(p)
    p.add_argument("--context", "-c", type=int_in(1, MAX_CONTEXT_TOKENS), metavar="TOKENS",
                   help="context length per sequence (default: min(8192, model max))")
    p.add_argument("--concurrency", type=int_in(1, MAX_CONCURRENCY), default=1, metavar="N", help="concurrent sequences (default 1)")
    # a prompt longer than any context could not be prefilled in one sequence
    p.add_argument("--prompt", type=int_in(1, MAX_CONTEXT_TOKENS), default=512, metavar="TOKENS",
                   help="prompt length for prefill speed and TTFT (default 512)")
    p.add_argument("--allow-context-extension", action="store_true", help="allow a context beyond the model's maximum (RoPE scaling)")


def add_online_option(p: argparse.ArgumentParser) -> None:
    """--online: a repo id that is neither a profile nor in the local HF cache may be read from the Hub."""
    p.add_argument("--online", action="store_true",
                   help="read a Hugging Face repo that is neither a bundled profile nor in the local HF cache from the Hub "
                        "(config and file headers only, cached; also PLANNER_ONLINE=1; HF_TOKEN for gated repos)")


def load_model(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """Resolve --model to a ModelCost (the real tensors when files were read) and a note on how it resolved.

    Order: an existing path; a bundled profile (id, alias, size); a Hugging Face repo id from the local HF cache, the
    planner's cache of earlier Hub reads, or the Hub itself with --online. A pre-quantized checkpoint (AWQ, GPTQ,
    a GGUF quant) is planned as it is stored: recommend compares only its format(s) unless --format is given.
    """
    from planner.cost.model import ModelCost
    from planner.models.profiles import load_registry

    registry = load_registry(getattr(args, "profiles", []) or [])
    name = args.model
    note = ""
    from planner.paths import path_exists

    if path_exists(Path(name)):
        # Only a path or a repo id needs the file readers (they import numpy/gguf, which cost start-up time).
        from planner.models.hub import gguf_label, planner_format
        from planner.models.readers import resolve_model

        src = resolve_model(name, registry)
        spec = src.spec
        mc = _model_cost(src)
        fmt = planner_format(src.quantization, gguf_label(Path(name).name) if name.lower().endswith(".gguf") else None)
        if (src.quantization or {}).get("method") == "gguf":
            # plan the file by its own tensor table, not by the mix rules of its file type
            from planner.formats import stored_gguf_format

            tensor_bytes = sum(_ggml_bytes(t, src.tensor_dtypes) for t in src.tensors or [])
            header = src.file_bytes - tensor_bytes if src.file_bytes and src.file_bytes > tensor_bytes else None
            stored = stored_gguf_format(fmt, dict(src.tensor_dtypes or {}), Path(name).name, header)
            fmt = stored if stored is not None else fmt
        note = f"read from {src.origin}" + _plan_as_stored(args, [fmt] if fmt else [])
    else:
        try:
            spec = registry.get(name)
            mc = ModelCost(spec)
        except NotFoundError as exc:
            from planner.models.hub import is_repo_ref, resolve_repo

            if not is_repo_ref(name):
                raise
            hub = resolve_repo(name, online=getattr(args, "online", False), candidates=exc.candidates)
            spec = hub.source.spec
            mc = _model_cost(hub.source)
            note = f"read from {hub.source.origin}" + _plan_as_stored(args, _stored_hub_formats(hub, mc))
    if spec.reference_for_size and name.strip().upper().rstrip("B").replace(".", "", 1).isdigit():
        note = f"'{name}' resolves to the {spec.name} reference architecture ({spec.hf_repo or spec.id})"
    return mc, note


def _stored_hub_formats(hub, mc) -> list:  # type: ignore[no-untyped-def]
    """The formats of a Hub checkpoint (ids, or WeightFormat objects); each read GGUF quant becomes an exact
    as-stored format (its tensor table and its real file size), so every quant in the repo is compared by its real
    bytes."""
    from planner.formats import stored_gguf_format

    out = []
    for v in hub.variants:
        if not v.header_read:
            continue
        tensor_bytes = sum(_ggml_bytes(t, v.tensor_dtypes) for t in mc.tensors)
        header = v.file_bytes - tensor_bytes if v.file_bytes and tensor_bytes and v.file_bytes > tensor_bytes else None
        fmt = stored_gguf_format(v.label, dict(v.tensor_dtypes), f"{hub.repo}:{v.label}", header) if mc.tensors else None
        out.append(fmt if fmt is not None else v.planner_format)
    # one per id, in first-seen order; a repeated id keeps its last format, as the registry once did
    return list({getattr(f, "id", f): f for f in out if f}.values()) or hub.formats_in_repo


def _ggml_bytes(t, dtypes) -> int:  # type: ignore[no-untyped-def]
    """Bytes of a read GGUF tensor in its stored type (0 when the type is unknown)."""
    from planner.formats import GGML_TYPES

    typ = GGML_TYPES.get(str((dtypes or {}).get(t.name, "")).upper())
    return typ.nbytes(t.shape) if typ is not None else 0


def _model_cost(src):  # type: ignore[no-untyped-def]
    """A ModelCost from read files: GGUF and float tensors as read; packed checkpoints (GPTQ qweight, AWQ, MLX,
    bitsandbytes, FP8 scales) by the spec's own inventory, since their stored shapes are not the weights' shapes."""
    from planner.cost.model import ModelCost

    quant = src.quantization or {}
    real = src.tensors if src.tensors and (not quant or quant.get("method") == "gguf") else []
    return ModelCost(src.spec, list(real))


def _plan_as_stored(args: argparse.Namespace, stored: list) -> str:
    """Plan a pre-quantized checkpoint in the format(s) it is stored in (ids, or as-stored WeightFormat objects,
    which go into --format's list as they are); the note says so."""
    if not stored:
        return ""
    ids = [getattr(f, "id", f) for f in stored]
    shown = ", ".join(ids)
    formats = getattr(args, "formats", None)
    if isinstance(formats, list):  # recommend: compare the stored format(s) unless the user chose
        if formats:
            return f"; stored as {shown}"
        formats.extend(stored)
        return f"; stored as {shown}: planned as it is (add --format to compare other formats)"
    fmt = getattr(args, "format", None)
    if isinstance(fmt, str):  # estimate: one format was chosen
        from planner.formats import get_format

        if get_format(fmt).id not in ids:
            return f"; stored as {shown}: --format {fmt} plans a re-quantized copy"
    return f"; stored as {shown}"


def check_context(args: argparse.Namespace, max_context: int) -> int:
    """The context to plan for; a context beyond the model's is an error unless extension is allowed (the ranges of
    --context, --concurrency and --prompt are checked while parsing)."""
    ctx = args.context if args.context is not None else min(8192, max_context)
    if ctx > max_context and not args.allow_context_extension:
        raise PlannerError(f"--context {ctx} is beyond the model's maximum of {max_context} tokens "
                           "(add --allow-context-extension to plan for RoPE scaling)")
    return ctx


def load_catalog_for(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The built-in hardware catalog merged with --hwdb directories."""
    from planner.hardware.catalog import load_catalog

    return load_catalog(getattr(args, "hwdb", []) or [])


def gib(n: float) -> str:
    """Bytes as GiB with one decimal."""
    return f"{n / 2**30:.1f}"
