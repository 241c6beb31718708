"""Helpers shared by the planning commands: the model options and the note on how --model resolved, context checks,
loading catalogs."""

from __future__ import annotations

import argparse

from planner.commands.options import MAX_CONCURRENCY, MAX_CONTEXT_TOKENS, int_in, nonempty
from planner.cost.model import ModelCost
from planner.errors import PlannerError
from planner.formats import get_format
from planner.hardware.catalog import load_catalog
from planner.models.profiles import load_registry
from planner.models.resolve import resolve


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


def load_model(args: argparse.Namespace) -> tuple[ModelCost, str]:
    """Resolve --model (planner.models.resolve) to a ModelCost (the real tensors when files were read) and a note on
    how it resolved. A pre-quantized checkpoint is planned as it is stored: recommend compares only its format(s)
    unless --format is given."""
    registry = load_registry(getattr(args, "profiles", []) or [])
    name = args.model
    model = resolve(name, registry, online=getattr(args, "online", False))
    note = "" if model.origin is None else f"read from {model.origin}" + _plan_as_stored(args, model.stored_formats)
    if model.spec.reference_for_size and name.strip().upper().rstrip("B").replace(".", "", 1).isdigit():
        note = f"'{name}' resolves to the {model.spec.name} reference architecture ({model.spec.hf_repo or model.spec.id})"
    return ModelCost(model.spec, model.tensors), note


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
    return load_catalog(getattr(args, "hwdb", []) or [])


def gib(n: float) -> str:
    """Bytes as GiB with one decimal."""
    return f"{n / 2**30:.1f}"
