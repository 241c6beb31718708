"""Helpers shared by the planning commands: model resolution, context checks, loading catalogs."""

from __future__ import annotations

import argparse
from pathlib import Path

from planner.errors import PlannerError


def add_model_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    """--model, --context, --concurrency, --prompt, --allow-context-extension."""
    p.add_argument("--model", "-m", required=required, metavar="MODEL",
                   help="profile id, alias, HF repo id, bare size (70B), or a path to config.json / model dir / .gguf")
    p.add_argument("--context", "-c", type=int, metavar="TOKENS", help="context length per sequence (default: min(8192, model max))")
    p.add_argument("--concurrency", type=int, default=1, metavar="N", help="concurrent sequences (default 1)")
    p.add_argument("--prompt", type=int, default=512, metavar="TOKENS", help="prompt length for prefill speed and TTFT (default 512)")
    p.add_argument("--allow-context-extension", action="store_true", help="allow a context beyond the model's maximum (RoPE scaling)")


def load_model(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """Resolve --model to a ModelCost (the real tensors when a file was given) and a note on how it resolved."""
    from planner.evaluate import ModelCost
    from planner.models.profiles import load_registry

    registry = load_registry(getattr(args, "profiles", []) or [])
    name = args.model
    note = ""
    if Path(name).exists():
        # Only a path needs the file readers (they import numpy/gguf, which cost start-up time).
        from planner.models.readers import resolve_model

        src = resolve_model(name, registry)
        spec = src.spec
        mc = ModelCost(spec, list(src.tensors) if src.tensors else [])
        note = f"read from {src.origin}"
    else:
        spec = registry.get(name)
        mc = ModelCost(spec)
    if spec.reference_for_size and name.strip().upper().rstrip("B").replace(".", "", 1).isdigit():
        note = f"'{name}' resolves to the {spec.name} reference architecture ({spec.hf_repo or spec.id})"
    return mc, note


def check_context(args: argparse.Namespace, max_context: int) -> int:
    """The context to plan for; impossible values are clear errors."""
    ctx = args.context if args.context is not None else min(8192, max_context)
    if ctx <= 0:
        raise PlannerError(f"--context must be a positive number of tokens, got {ctx}")
    if ctx > max_context and not args.allow_context_extension:
        raise PlannerError(f"--context {ctx} is beyond the model's maximum of {max_context} tokens "
                           "(add --allow-context-extension to plan for RoPE scaling)")
    if args.concurrency < 1 or args.concurrency > 100000:
        raise PlannerError(f"--concurrency must be between 1 and 100000, got {args.concurrency}")
    if args.prompt < 1:
        raise PlannerError(f"--prompt must be at least 1 token, got {args.prompt}")
    return ctx


def load_catalog_for(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The built-in hardware catalog merged with --hwdb directories."""
    from planner.hardware.catalog import load_catalog

    return load_catalog(getattr(args, "hwdb", []) or [])


def gib(n: float) -> str:
    """Bytes as GiB with one decimal."""
    return f"{n / 2**30:.1f}"
