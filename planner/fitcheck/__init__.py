"""CI fit checks (`planner check`): the deployment spec, checking each deployment against its limits, the reporters.

- spec.py: the spec file's pydantic schema (committed as planner/data/deploy.schema.json) and loading spec files
  into Deployments, every problem reported as `file:line: field: message`;
- checks.py: Checker costs each deployment with evaluate() / recommend() and turns every limit into a Check;
- reporters.py: text, JSON, JUnit XML, GitHub annotations and Markdown;
- explain.py: `--explain`, the memory breakdown and the spec changes that would make a deployment pass.

This module names what the CLI and the schema generator use.
"""

from __future__ import annotations

from planner.fitcheck.checks import Checker
from planner.fitcheck.explain import explain_data, render_explain
from planner.fitcheck.reporters import REPORT_FORMATS, REPORTERS, render_markdown, summary_line
from planner.fitcheck.spec import load_specs, schema_json

__all__ = ["REPORTERS", "REPORT_FORMATS", "Checker", "explain_data", "load_specs", "render_explain", "render_markdown",
           "schema_json", "summary_line"]
