"""`planner check` through main([...]): exit codes, every report format parsed back, --output, --explain, GitHub."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.cli import main
from planner.commands import check as check_cmd

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "deploy"
PASS, FAIL, EXAMPLE = str(FIX / "pass.yaml"), str(FIX / "fail.yaml"), str(ROOT / "examples" / "deploy.yaml")
ANNOTATION = re.compile(r"^::(error|warning|notice) file=[^,:]+(,line=\d+)?,title=[^:]*::.+$")


def check_parser() -> argparse.ArgumentParser:
    """A parser with just the check subcommand, to test that documented command lines use real flags."""
    parser = argparse.ArgumentParser(prog="planner")
    check_cmd.add_parser(parser.add_subparsers(dest="command"))
    return parser


@pytest.fixture(autouse=True)
def _no_step_summary(monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["check", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_passing_spec_exits_0(capsys):
    code, out, err = run(capsys, PASS)
    assert code == 0 and err == ""
    assert "2 deployments checked: 2 passed, 0 failed" in out


def test_failing_spec_exits_1(capsys):
    code, out, _ = run(capsys, FAIL)
    assert code == 1 and "FAIL too-big-70b" in out and "PASS ok-8b" in out


def test_example_spec_passes_in_every_format(capsys):
    for fmt in ("text", "json", "junit", "github", "markdown"):
        code, out, _ = run(capsys, EXAMPLE, "--format", fmt)
        assert code == 0, (fmt, out)


@pytest.mark.parametrize("name,expected", [
    ("invalid_types.yaml", r"invalid_types.yaml:4: deployments\[0\].target.count: Input should be a valid integer"),
    ("invalid_unknown_key.yaml", r"invalid_unknown_key.yaml:6: deployments\[0\].contxt: unknown field"),
    ("invalid_missing.yaml", r"invalid_missing.yaml:5: deployments\[1\].name: required field is missing"),
    ("invalid_syntax.yaml", r"invalid_syntax.yaml:5:11: invalid YAML"),
    ("empty.yaml", r"empty.yaml: empty deployment spec"),
    ("unknown_model.yaml", r"unknown_model.yaml:3: deployment 'mystery-model': model: unknown model 'llama-9.9-8b'"),
    ("unknown_device.yaml", r"unknown_device.yaml:4: deployment 'mystery-device': target: unknown device 'rtx-9999'"),
])
def test_invalid_specs_exit_2_with_a_clear_message(capsys, name, expected):
    code, out, err = run(capsys, str(FIX / name))
    assert code == 2 and out == ""
    first = err.splitlines()[0]
    assert first.startswith("planner: error: ") and re.search(expected, first), err
    assert "Traceback" not in err


def test_directory_and_missing_file_exit_2(capsys):
    code, _, err = run(capsys, str(FIX))
    assert code == 2 and f"{FIX}: is a directory" in err
    code, _, err = run(capsys, str(FIX / "missing.yaml"))
    assert code == 2 and "missing.yaml: no such deployment spec file" in err


def test_an_invalid_file_among_valid_ones_still_exits_2(capsys):
    code, out, err = run(capsys, PASS, str(FIX / "unknown_device.yaml"))
    assert code == 2 and out == "" and "rtx-9999" in err


def test_several_files_are_checked_together(capsys):
    code, out, _ = run(capsys, PASS, FAIL, "--format", "json")
    data = json.loads(out)
    assert code == 1 and data["summary"] == {"deployments": 5, "passed": 3, "failed": 2}


def test_json_format(capsys):
    code, out, _ = run(capsys, FAIL, "--format", "json")
    data = json.loads(out)
    assert code == 1 and data["passed"] is False
    by = {r["name"]: r for r in data["results"]}
    assert by["ok-8b"]["passed"] is True and by["too-slow-8b"]["passed"] is False
    slow = {c["name"]: c for c in by["too-slow-8b"]["checks"]}["min_decode_tokens_per_s"]
    assert slow["passed"] is False and slow["limit"] == 500 and slow["value"] < 500 and slow["margin"] < 0
    code2, out2, _ = run(capsys, FAIL, "--json")
    assert code2 == 1 and json.loads(out2)["summary"] == data["summary"]


def test_junit_format(capsys):
    code, out, _ = run(capsys, FAIL, "--format", "junit")
    root = ET.fromstring(out)
    assert code == 1 and root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert suite.get("tests") == str(len(cases)) == "3" and suite.get("failures") == "2"
    assert sum(c.find("failure") is not None for c in cases) == 2


def test_github_format_and_step_summary(capsys, tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code, out, _ = run(capsys, FAIL, "--format", "github")
    notes = [ln for ln in out.splitlines() if ln.startswith("::")]
    assert code == 1 and notes and all(ANNOTATION.match(ln) for ln in notes)
    assert sum(ln.startswith("::error ") for ln in notes) == 3
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "| ❌ | too-big-70b |" in text and "| ✅ | ok-8b |" in text


def test_step_summary_only_for_github_format(capsys, tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    run(capsys, PASS, "--format", "json")
    assert not summary.exists()


def test_markdown_format(capsys):
    code, out, _ = run(capsys, PASS, "--format", "markdown")
    assert code == 0 and "| deployment |" in out and out.count("| ✅ |") == 2


def test_output_is_written_atomically(capsys, tmp_path):
    target = tmp_path / "reports" / "check.xml"
    code, out, err = run(capsys, FAIL, "--format", "junit", "--output", str(target))
    assert code == 1 and out == "" and "report written to" in err
    ET.parse(target)
    assert [p.name for p in target.parent.iterdir()] == ["check.xml"]  # no temp file left behind


def test_explain_shows_breakdown_and_fixes(capsys):
    code, out, _ = run(capsys, FAIL, "--explain", "too-big-70b")
    assert code == 1
    for part in ("Memory (", "weights", "KV cache", "compute", "overhead", "usable", "What would make it pass:", "rtx-4090"):
        assert part in out, part
    code, out, _ = run(capsys, FAIL, "--explain", "ok-8b", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["passed"] is True and data["memory"]["per_device"] and data["what_would_pass"] == []


def test_explain_unknown_name_and_wrong_format(capsys):
    code, _, err = run(capsys, FAIL, "--explain", "too-big-7b")
    assert code == 2 and "no deployment named 'too-big-7b'; did you mean: too-big-70b" in err
    code, _, err = run(capsys, FAIL, "--explain", "ok-8b", "--format", "junit")
    assert code == 2 and "--explain prints text or JSON" in err


def test_local_target(capsys, monkeypatch, catalog, tmp_path):
    from planner.fitcheck import checks
    from planner.hardware import probe
    from planner.plan import target_from_catalog

    monkeypatch.setattr(probe, "local_host", lambda _catalog: object())
    monkeypatch.setattr(checks, "target_from_host", lambda host, origin="probe", ram_override=None:
                        target_from_catalog(catalog.get("rtx-4090")))
    path = tmp_path / "local.yaml"
    path.write_text((FIX / "pass.yaml").read_text().replace("target: {device: rtx-4090}", "target: local"))
    code, out, _ = run(capsys, str(path), "--format", "json")
    assert code == 0 and json.loads(out)["results"][0]["device"] == "rtx-4090"


# ------------------------------------------------------------------------------------- shipped files


def test_github_workflow_installs_and_runs_the_check():
    wf = yaml.safe_load((ROOT / "examples" / "github-workflow.yml").read_text())
    runs = [s.get("run", "") for job in wf["jobs"].values() for s in job["steps"]]
    assert any("pip install" in r for r in runs)
    assert "planner check examples/deploy.yaml --format github" in runs
    parser = check_parser()
    for r in runs:
        if r.startswith("planner "):
            argv = shlex.split(r.split("||")[0])[1:]
            parser.parse_args(argv)  # the flags exist
            assert Path(ROOT / argv[1]).is_file()


def test_commands_in_docs_parse():
    text = (ROOT / "docs" / "check.md").read_text()
    cmds = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("planner check ")]
    assert len(cmds) >= 4
    parser = check_parser()
    for c in cmds:
        parser.parse_args(shlex.split(c)[1:])


# ------------------------------------------------------------------------------------------------ fuzzing


@settings(max_examples=25, deadline=10_000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # runs check end to end
@given(st.one_of(st.text(max_size=200), st.integers(0, len((FIX / "pass.yaml").read_text())).map(
    lambda n: (FIX / "pass.yaml").read_text()[:n])))
def test_fuzz_main_never_crashes(tmp_path_factory, capsys, text):
    path = tmp_path_factory.mktemp("fuzz") / "deploy.yaml"
    path.write_text(text, encoding="utf-8")
    code = main(["check", str(path), "--format", "json"])
    _, err = capsys.readouterr()
    assert code in (0, 1, 2) and "internal error" not in err and "Traceback" not in err
