"""`planner check`: check the deployments of spec files against their limits, for CI (exit 0 pass, 1 fail, 2 invalid)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from planner.commands.options import add_catalog_dirs
from planner.errors import InvalidInputError, PlannerError, close_matches
from planner.fitcheck import (
    REPORT_FORMATS, REPORTERS, Checker, explain_data, load_specs, render_explain, render_markdown, summary_line,
)
from planner.models.profiles import load_registry
from planner.yamlio import atomic_write_text


def add_parser(sub) -> None:  # type: ignore[no-untyped-def]
    """Register the subcommand."""
    p = sub.add_parser(
        "check", help="check deployments in spec files against memory, speed and quality limits (for CI)",
        description="Cost every deployment of the spec files and check it against its limits. "
                    "Exit 0 when all pass, 1 when any fails, 2 for an invalid spec or an unknown model or device. "
                    "See docs/check.md.")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="deployment spec file(s), e.g. deploy.yaml")
    p.add_argument("--format", dest="report_format", choices=REPORT_FORMATS, default="text",
                   help="report format (default text); github writes workflow annotations and, when "
                        "GITHUB_STEP_SUMMARY is set, a Markdown table there")
    p.add_argument("--json", action="store_true", help="same as --format json")
    p.add_argument("--output", "-o", type=Path, metavar="FILE", help="write the report to FILE (atomically) instead of stdout")
    p.add_argument("--explain", metavar="NAME",
                   help="show one deployment's full memory breakdown and what would make it pass (text, or JSON with --format json)")
    add_catalog_dirs(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    fmt = "json" if args.json else args.report_format
    deployments = load_specs(args.files)
    checker = _checker(args)
    if args.explain is not None:
        return _explain(args, fmt, deployments, checker)
    results = checker.check_all(deployments)
    report = REPORTERS[fmt](results)
    _emit(args, report)
    if args.output:
        print(f"planner check: {summary_line(results)}; report written to {args.output}", file=sys.stderr)
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if fmt == "github" and summary_file:
        try:
            with open(summary_file, "a", encoding="utf-8") as fh:  # Actions reads the whole file after the step
                fh.write(render_markdown(results) + "\n")
        except OSError as exc:
            # The annotations already carry the verdict; a missing summary must not change the exit code.
            print(f"planner: warning: cannot append to GITHUB_STEP_SUMMARY ({summary_file}): {exc.strerror}", file=sys.stderr)
    return 0 if all(r.passed for r in results) else 1


def _checker(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from planner.commands.common import load_catalog_for

    return Checker(catalog=load_catalog_for(args), registry=load_registry(args.profiles or []))


def _explain(args: argparse.Namespace, fmt: str, deployments, checker) -> int:  # type: ignore[no-untyped-def]
    if fmt not in ("text", "json"):
        raise InvalidInputError(f"--explain prints text or JSON, not {fmt}")
    match = [d for d in deployments if d.name == args.explain]
    if not match:
        near = close_matches(args.explain, [d.name for d in deployments])
        hint = f"; did you mean: {', '.join(near)}?" if near else ""
        files = ", ".join(str(f) for f in args.files)
        raise InvalidInputError(f"{files}: no deployment named '{args.explain}'{hint}")
    (result,) = checker.check_all(match)
    data = explain_data(result, checker)
    _emit(args, json.dumps(data, indent=2, default=str) + "\n" if fmt == "json" else render_explain(data))
    return 0 if result.passed else 1


def _emit(args: argparse.Namespace, text: str) -> None:
    if args.output:
        try:
            atomic_write_text(args.output, text)
        except OSError as exc:
            raise PlannerError(f"{args.output}: cannot write the report ({exc.strerror or exc})") from None
    else:
        sys.stdout.write(text)
