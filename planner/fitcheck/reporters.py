"""The reports of `planner check`: text, JSON, JUnit XML, GitHub Actions annotations and a Markdown summary."""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from planner.fitcheck.checks import CheckResult, tightest_device, quality_kld, quality_label
from planner.plan import GIB

REPORT_SCHEMA_VERSION = 1
REPORT_FORMATS = ("text", "json", "junit", "github", "markdown")


def _fmt_value(v: Any, unit: str) -> str:
    if v is None:
        return "-"
    if unit in ("label", "tokens") or isinstance(v, str):
        return f"{v}" + ("" if unit == "label" else f" {unit}")
    return f"{v:g} {unit}" if unit != "KLD" else f"{v:.4f}"


def check_lines(checks: list[dict]) -> list[str]:
    """The checks table shared by the text report and --explain, one row per Check.as_dict()."""
    out = [f"  {'':4} {'check':<29}{'value':>16}  {'limit':<18}{'margin':>12}"]
    for c in checks:
        limit = f"{c['op']} {_fmt_value(c['limit'], c['unit'])}" if c["limit"] is not None else "-"
        margin = "-" if c["margin"] is None else (f"{c['margin']:+g}" if not isinstance(c["margin"], str) else c["margin"])
        out.append(f"  {'ok' if c['passed'] else 'FAIL':<4} {c['name']:<29}{_fmt_value(c['value'], c['unit']):>16}  {limit:<18}{margin:>12}")
        if not c["passed"]:
            out.append(f"       {c['message']}")
    return out


def render_text(results: Sequence[CheckResult]) -> str:
    """Human-readable report: one block per deployment, then a summary line."""
    lines: list[str] = []
    for r in results:
        d = r.deployment
        lines.append(f"{'PASS' if r.passed else 'FAIL'} {d.name} ({d.where})")
        lines.append(f"  {r.summary}")
        lines += check_lines([c.as_dict() for c in r.checks])
        if not r.passed:
            lines.append(f"  run `planner check {d.file} --explain {_shell_word(d.name)}` for the breakdown and what would make it pass")
        lines.append("")
    lines.append(summary_line(results))
    return "\n".join(lines) + "\n"


def _shell_word(s: str) -> str:
    return s if re.fullmatch(r"[A-Za-z0-9._/:@+-]+", s) else "'" + s.replace("'", "'\\''") + "'"


def summary_line(results: Sequence[CheckResult]) -> str:
    """'3 deployments checked: 2 passed, 1 failed (name)'."""
    failed = [r.name for r in results if not r.passed]
    n = len(results)
    text = f"{n} deployment{'s' if n != 1 else ''} checked: {n - len(failed)} passed, {len(failed)} failed"
    return text + (f" ({', '.join(failed[:10])}{', ...' if len(failed) > 10 else ''})" if failed else "")


def report_dict(results: Sequence[CheckResult]) -> dict:
    """The documented JSON report."""
    failed = sum(1 for r in results if not r.passed)
    return {"schema_version": REPORT_SCHEMA_VERSION, "passed": failed == 0,
            "summary": {"deployments": len(results), "passed": len(results) - failed, "failed": failed},
            "results": [r.as_dict() for r in results]}


def render_json(results: Sequence[CheckResult]) -> str:
    """JSON report (`results` list; each with name, passed and checks with limit, value, passed, margin)."""
    return json.dumps(report_dict(results), indent=2, default=str) + "\n"


_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml(text: Any) -> str:
    """Text XML 1.0 can carry (control characters would make the report unparseable)."""
    return _XML_BAD.sub("?", str(text))


def render_junit(results: Sequence[CheckResult]) -> str:
    """JUnit XML: one testsuite per spec file, one testcase per deployment, a <failure> listing its failed checks."""
    suites: dict[str, list[CheckResult]] = {}
    for r in results:
        suites.setdefault(r.deployment.file, []).append(r)
    root = ET.Element("testsuites", name="planner check", tests=str(len(results)),
                      failures=str(sum(not r.passed for r in results)), errors="0", time="0")
    for file, rs in suites.items():
        suite = ET.SubElement(root, "testsuite", name=_xml(file), tests=str(len(rs)),
                              failures=str(sum(not r.passed for r in rs)), errors="0", skipped="0", time="0")
        for r in rs:
            case = ET.SubElement(suite, "testcase", name=_xml(r.name), classname=_xml(_classname(file)), file=_xml(file),
                                 time="0")
            if r.deployment.line:
                case.set("line", str(r.deployment.line))
            detail = "\n".join(f"{'ok  ' if c.passed else 'FAIL'} {c.name}: {c.message}" for c in r.checks)
            if not r.passed:
                fail = ET.SubElement(case, "failure", message=_xml("; ".join(f"{c.name}: {c.message}" for c in r.failures)),
                                     type="planner.check")
                fail.text = _xml(f"{r.summary}\n{detail}")
            else:
                out = ET.SubElement(case, "system-out")
                out.text = _xml(f"{r.summary}\n{detail}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _classname(file: str) -> str:
    stem = Path(file).with_suffix("").as_posix().strip("./")
    return "planner.check." + re.sub(r"[^A-Za-z0-9_]+", "_", stem or "spec")


def _gh_data(text: str) -> str:
    """Escape an annotation message (GitHub's workflow-command escaping)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_prop(text: str) -> str:
    """Escape an annotation property (file, title): also ':' and ','."""
    return _gh_data(text).replace(":", "%3A").replace(",", "%2C")


def _rel(file: str) -> str:
    """Annotation paths are relative to the workspace (the working directory in Actions)."""
    try:
        p = Path(file)
        return os.path.relpath(p) if p.is_absolute() else p.as_posix()
    except ValueError:  # another drive on Windows
        return file


def render_github(results: Sequence[CheckResult]) -> str:
    """GitHub Actions workflow commands: ::error per failed check, ::notice per passing deployment."""
    lines = []
    for r in results:
        d = r.deployment
        for c in r.failures:
            line = d.line_of(_CHECK_KEYS.get(c.name, f"limits.{c.name}"))
            props = f"file={_gh_prop(_rel(d.file))}" + (f",line={line}" if line else "")
            title = _gh_prop(f"planner check: {d.name}: {c.name}")
            lines.append(f"::error {props},title={title}::{_gh_data(f'{d.name}: {c.message} ({r.summary})')}")
        if r.passed:
            props = f"file={_gh_prop(_rel(d.file))}" + (f",line={d.line}" if d.line else "")
            margins = ", ".join(c.message for c in r.checks)
            lines.append(f"::notice {props},title={_gh_prop(f'planner check: {d.name} passes')}::{_gh_data(f'{r.summary}: {margins}')}")
    lines.append(summary_line(results))
    return "\n".join(lines) + "\n"


# The spec key whose line an annotation points at, per check.
_CHECK_KEYS = {"fits": "name", "context": "context"}


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(results: Sequence[CheckResult]) -> str:
    """A Markdown table (one row per deployment) with the failures listed under it."""
    lines = ["### planner check", "", summary_line(results), "",
             "| | deployment | plan | memory GiB | decode tok/s | TTFT s | quality | failed checks |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        p = r.plan
        mem = dec = ttft = qual = "-"
        if p is not None and p.runs and p.per_device:
            d = tightest_device(p)
            mem = f"{d.total_bytes / GIB:.1f} / {d.usable_bytes / GIB:.1f}"
            dec, ttft = f"{p.decode_tokens_per_s:.1f}", f"{p.ttft_s:.2f}"
            qual = quality_label(quality_kld(p))
        failed = ", ".join(c.name for c in r.failures) or "-"
        lines.append(f"| {'✅' if r.passed else '❌'} | {_md(r.name)} | {_md(r.summary)} | {mem} | {dec} | {ttft} | {qual} | {_md(failed)} |")
    fails = [r for r in results if not r.passed]
    if fails:
        lines += ["", "**Failures**", ""]
        for r in fails:
            for c in r.failures:
                lines.append(f"- `{_md(r.name)}` ({_md(r.deployment.where)}): **{c.name}**: {_md(c.message)}")
    return "\n".join(lines) + "\n"


REPORTERS: dict[str, Callable[[Sequence[CheckResult]], str]] = {
    "text": render_text, "json": render_json, "junit": render_junit, "github": render_github, "markdown": render_markdown,
}
