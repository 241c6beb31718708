"""planner.fitcheck: the spec schema and its errors, evaluation against limits, what-if suggestions, reporters, fuzzing."""

from __future__ import annotations

import dataclasses
import json
import re
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.errors import InvalidInputError, PlannerError
from planner.cost.evaluate import evaluate
from planner.fitcheck.checks import Checker, plan_checks
from planner.fitcheck.explain import explain_data, render_explain, what_would_pass
from planner.fitcheck.reporters import render_github, render_json, render_junit, render_markdown, render_text
from planner.fitcheck.spec import (
    _NAME_RE, DEFAULT_PROMPT_TOKENS, QUALITY_LABELS, DeployFile, DeploymentEntry, DeviceTarget, Limits, Settings,
    load_specs, parse_spec, schema_json,
)
from planner.formats import get_format
from planner.plan import target_from_catalog
from planner.runtimes import get_runtime

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "deploy"
ANNOTATION = re.compile(r"^::(error|warning|notice) file=[^,:]+(,line=\d+)?,title=[^:]*::.+$")


def spec(text: str, path: str = "deploy.yaml"):
    return parse_spec(textwrap.dedent(text), path)


def error_of(text: str, path: str = "deploy.yaml") -> str:
    with pytest.raises(InvalidInputError) as e:
        spec(text, path)
    return str(e.value)


@pytest.fixture(scope="module")
def checker(catalog, registry):
    return Checker(catalog=catalog, registry=registry)


ONE = """\
deployments:
  - name: a
    model: llama-3.1-8b
    target: {device: rtx-4090}
    runtime: llama.cpp
    format: Q4_K_M
"""


# ---------------------------------------------------------------------------------------------- schema


def test_committed_schema_is_not_stale():
    from planner.schemas import render

    committed = ROOT / "planner" / "data" / "deploy.schema.json"  # the source tree's, also when the package is installed
    assert committed.read_text() == render(schema_json()), \
        "planner/data/deploy.schema.json is stale: run python -m planner.schemas"


def test_every_schema_field_is_documented():
    for model in (DeployFile, Settings, DeploymentEntry, Limits, DeviceTarget):
        for name, f in model.model_fields.items():
            assert f.description, f"{model.__name__}.{name} has no description"


def test_quality_labels_follow_the_quality_model():
    from planner.cost.quality import Quality

    seen = [Quality(k, 0, "").label for k in (0.0, 0.005, 0.02, 0.05, 0.2, 1.0)]
    assert seen == list(QUALITY_LABELS)
    assert set(Limits.model_fields["max_quality_loss"].annotation.__args__[0].__args__) == set(QUALITY_LABELS)


def test_example_spec_validates_against_the_json_schema():
    jsonschema = pytest.importorskip("jsonschema")
    data = yaml.safe_load((ROOT / "examples" / "deploy.yaml").read_text())
    jsonschema.validate(data, json.loads((ROOT / "planner" / "data" / "deploy.schema.json").read_text()))


def test_example_spec_passes(checker):
    results = checker.check_all(load_specs([ROOT / "examples" / "deploy.yaml"]))
    assert len(results) >= 3
    failing = {r.name: [c.message for c in r.failures] for r in results if not r.passed}
    assert not failing, f"examples/deploy.yaml must keep passing: {failing}"


# --------------------------------------------------------------------------------------------- parsing


def test_minimal_spec_and_defaults():
    (d,) = spec(ONE)
    assert d.name == "a" and d.model == "llama-3.1-8b" and d.target == DeviceTarget(device="rtx-4090")
    assert d.format == "Q4_K_M" and d.runtime == "llama.cpp" and d.context is None
    assert d.concurrency == 1 and d.prompt_tokens == DEFAULT_PROMPT_TOKENS and d.limits == Limits()
    assert d.line == 2 and d.file == "deploy.yaml"


def test_defaults_merge_and_null_drops_a_default_limit():
    deps = load_specs([FIX / "defaults.yaml"])
    q4, q8 = deps
    assert q4.model == q8.model == "llama-3.1-8b" and q4.runtime == "llama.cpp"
    assert q4.limits.min_headroom_pct == 50 and q4.limits.max_ttft_s == 5
    assert q8.limits.min_headroom_pct is None and q8.limits.max_ttft_s == 5 and q8.context == 65536


def test_target_local_and_format_auto_by_default():
    (d,) = spec("""
        deployments:
          - {name: here, model: llama-3.2-3b, target: local}
    """)
    assert d.target == "local" and d.format == "auto"


def test_model_path_is_read_relative_to_the_spec_file(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "config.json").write_text("{}")
    text = "deployments:\n  - {name: m, model: models/config.json, target: {device: rtx-4090}}\n"
    (d,) = parse_spec(text, tmp_path / "deploy.yaml")
    assert d.model == str(tmp_path / "models" / "config.json")
    (d,) = parse_spec(text.replace("models/config.json", "meta-llama/Llama-3.1-8B"), tmp_path / "deploy.yaml")
    assert d.model == "meta-llama/Llama-3.1-8B"  # not a path there: left for the profile lookup


@pytest.mark.parametrize("body,expected", [
    ("  - {name: a, model: m, target: {device: x}, context: lots}", r"deploy.yaml:2: deployments\[0\].context: Input should be a valid integer \(got 'lots'\)"),
    ("  - {name: a, model: m, target: {device: x, count: true}}", r"deploy.yaml:2: deployments\[0\].target.count: Input should be a valid integer"),
    ("  - {name: a, model: m, target: {device: x, count: 0}}", r"deployments\[0\].target.count: Input should be greater than or equal to 1"),
    ("  - {name: a, model: m, target: remote}", r"deployments\[0\].target: Input should be 'local'"),
    ("  - {name: a, model: m, target: {device: x}, contxt: 1}", r"deployments\[0\].contxt: unknown field \(did you mean: context"),
    ("  - {name: a, model: m, target: {device: x}, limits: {max_ttft: 1}}", r"deployments\[0\].limits.max_ttft: unknown field \(did you mean: max_ttft_s"),
    ("  - {name: a, model: m, target: {device: x}, limits: {min_headroom_pct: 100}}", r"limits.min_headroom_pct: Input should be less than 100"),
    ("  - {name: a, model: m, target: {device: x}, limits: {max_quality_loss: meh}}", r"limits.max_quality_loss: Input should be 'lossless'"),
    ("  - {model: m, target: {device: x}}", r"deployments\[0\].name: required field is missing"),
    ("  - {name: a, target: {device: x}}", r"deploy.yaml:2: deployments\[0\].model: required field is missing \(set it here or under defaults\)"),
    ("  - {name: \"a\\tb\", model: m, target: {device: x}}", r"deployments\[0\].name: String should match pattern"),
    ("  - {name: 7, model: m, target: {device: x}}", r"deployments\[0\].name: Input should be a valid string"),
    ("  - name: a\n    model: m\n    model: n\n    target: {device: x}", r"deploy.yaml:4: deployments\[0\]: duplicate key 'model'"),
    ("  - {name: a, model: m, target: {device: x}}\n  - {name: a, model: m, target: {device: x}}", r"deploy.yaml:3: deployments\[1\].name: duplicate name 'a'"),
])
def test_invalid_specs_name_file_line_and_field(body, expected):
    msg = error_of("deployments:\n" + body + "\n")
    assert re.search(expected, msg), msg


def test_every_problem_is_reported_at_once_in_file_order():
    msg = error_of("""\
        deployments:
          - name: a
            model: m
            target: {device: x}
            contxt: 1
            limits: {max_ttft: 1, min_decode_tokens_per_s: fast}
    """)
    lines = msg.splitlines()
    assert len(lines) == 3 and lines[0].startswith("deploy.yaml:5:") and all(ln.startswith("deploy.yaml:6:") for ln in lines[1:])


@pytest.mark.parametrize("text,expected", [
    ("", "empty deployment spec"),
    ("# only a comment\n", "empty deployment spec"),
    ("- name: a\n", "expected a mapping with a 'deployments' list at the top level, got list"),
    ("deployments: []\n", "deployments: List should have at least 1 item"),
    ("deployments:\n  - name: a\n    target: {device: x\n", "deploy.yaml:4:"),
    ("version: 2\ndeployments: []\n", "version: Input should be 1"),
])
def test_malformed_files(text, expected):
    assert expected in error_of(text)


def test_names_are_unique_over_files(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(ONE)
    b.write_text(ONE)
    with pytest.raises(InvalidInputError, match=r"b.yaml:2: name: duplicate deployment name 'a' \(also in .*a.yaml:2\)"):
        load_specs([a, b])


def test_directory_and_missing_file():
    with pytest.raises(InvalidInputError, match="is a directory"):
        load_specs([FIX])
    with pytest.raises(InvalidInputError, match="no such deployment spec file"):
        load_specs([FIX / "nope.yaml"])


# ------------------------------------------------------------------------------------------- evaluation


def test_pinned_deployment_uses_the_library_evaluate(checker, catalog, registry):
    """One cost model: the check's plan is exactly what evaluate() gives for the same inputs."""
    (d,) = spec(ONE.replace("format: Q4_K_M", "format: Q4_K_M\n    context: 16384\n    concurrency: 2\n    prompt_tokens: 900"))
    (r,) = checker.check_all([d])
    from planner.cost.model import ModelCost

    ref = evaluate(ModelCost(registry.get("llama-3.1-8b")), get_format("Q4_K_M"), get_runtime("llama.cpp"),
                   target_from_catalog(catalog.get("rtx-4090")), context=16384, concurrency=2, prompt_tokens=900)
    assert r.plan.as_dict() == ref.as_dict()
    assert r.passed and [c.name for c in r.checks] == ["fits", "context"]


def test_checks_report_value_limit_margin(checker):
    (d,) = spec(ONE.rstrip() + """
    limits:
      min_headroom_pct: 10
      max_memory_gib: 20
      min_decode_tokens_per_s: 50
      min_throughput_tokens_per_s: 50
      max_ttft_s: 2
      max_quality_kld: 0.05
      max_quality_loss: noticeable
    """)
    (r,) = checker.check_all([d])
    by = {c.name: c for c in r.checks}
    assert set(by) == {"fits", "context", *Limits.model_fields}
    p = r.plan
    assert by["min_decode_tokens_per_s"].value == round(p.decode_tokens_per_s, 2)
    assert by["max_ttft_s"].value == round(p.ttft_s, 4)
    assert by["max_quality_kld"].value == pytest.approx(p.quality["kld"], abs=1e-5)
    assert by["max_quality_loss"].value == p.quality["label"] in ("small", "noticeable")
    for c in r.checks:
        assert c.passed and c.margin is not None and c.margin >= 0, c


def test_failing_limits_have_negative_margins_and_a_fit_failure_is_a_check(checker):
    results = checker.check_all(load_specs([FIX / "fail.yaml"]))
    verdicts = {r.name: r.passed for r in results}
    assert verdicts == {"ok-8b": True, "too-big-70b": False, "too-slow-8b": False}
    big = next(r for r in results if r.name == "too-big-70b")
    assert [c.name for c in big.failures] == ["fits", "min_headroom_pct"]
    slow = next(r for r in results if r.name == "too-slow-8b")
    (c,) = slow.failures
    assert c.name == "min_decode_tokens_per_s" and c.margin < 0 and "below the minimum" in c.message


def test_plan_that_does_not_run_fails_every_check():
    checks = plan_checks(None, Limits(max_ttft_s=1), max_context=8192, allow_context_extension=False, context=4096,
                         reason="no runtime runs it")
    assert [(c.name, c.passed) for c in checks] == [("fits", False), ("context", True), ("max_ttft_s", False)]
    assert "no runtime runs it" in checks[0].message


def test_context_beyond_the_model_maximum(checker):
    (d,) = spec(ONE.replace("llama-3.1-8b", "llama-2-7b") + "    context: 8192\n")
    (r,) = checker.check_all([d])
    ctx = next(c for c in r.checks if c.name == "context")
    assert not ctx.passed and ctx.limit == 4096 and "allow_context_extension" in ctx.message
    (r,) = checker.check_all([dataclasses.replace(d, allow_context_extension=True)])
    assert next(c for c in r.checks if c.name == "context").passed


def test_runtime_omitted_takes_a_runtime_that_runs_the_format(checker):
    (d,) = spec(ONE.replace("    runtime: llama.cpp\n", ""))
    (r,) = checker.check_all([d])
    assert r.passed and r.plan.format_id == "Q4_K_M" and "runtime" in r.chosen


def test_format_auto_takes_a_recommendation_that_meets_the_limits(checker):
    (d,) = spec("""
        deployments:
          - name: auto
            model: llama-3.1-8b
            target: {device: rtx-3060-12gb}
            format: auto
            context: 8192
            limits: {max_quality_loss: negligible, min_decode_tokens_per_s: 20}
    """)
    (r,) = checker.check_all([d])
    assert r.passed, [c.message for c in r.failures]
    assert QUALITY_LABELS.index(r.plan.quality["label"]) <= QUALITY_LABELS.index("negligible")
    (r,) = checker.check_all([dataclasses.replace(d, limits=Limits(min_decode_tokens_per_s=100000))])
    assert not r.passed and r.plan is not None  # the best plan is shown with its failures


@pytest.mark.parametrize("field,value,line,expected", [
    ("model", "llama-9.9-8b", 3, "model: unknown model 'llama-9.9-8b'"),
    ("format", "Q4_K_Q", 6, "format: unknown format 'Q4_K_Q'"),
    ("runtime", "vllmm", 5, "runtime: unknown runtime 'vllmm'"),
    ("kv_dtype", "fp88", 2, "kv_dtype: unknown KV cache dtype 'fp88'"),  # not in the file: the deployment's line
    ("format", "exl2-9bpw", 6, "format: EXL2 bits per weight must be between 2.0 and 8.0"),
])
def test_unknown_names_are_spec_errors_naming_the_field(checker, field, value, line, expected):
    (d,) = spec(ONE)
    d = dataclasses.replace(d, **{field: value})
    with pytest.raises(InvalidInputError) as e:
        checker.check_all([d])
    assert e.value.exit_code == 2
    assert str(e.value).startswith(f"deploy.yaml:{line}: deployment 'a': {expected}"), str(e.value)


def test_unknown_device_names_the_target_line(checker):
    (d,) = spec(ONE.replace("rtx-4090", "rtx-4900"))
    with pytest.raises(InvalidInputError, match=r"deploy.yaml:4: deployment 'a': target: unknown device 'rtx-4900'; did you mean: rtx-4090"):
        checker.check_all([d])


def test_local_target_uses_the_probed_host(catalog, registry):
    host = target_from_catalog(catalog.get("rtx-3090"))
    (d,) = spec("deployments:\n  - {name: here, model: llama-3.1-8b, target: local, format: Q4_K_M, runtime: llama.cpp}\n")
    (r,) = Checker(catalog, registry, host_target=host).check_all([d])
    assert r.passed and r.plan.device_id == "rtx-3090"


def test_a_failed_probe_is_not_a_spec_error(catalog, registry, monkeypatch):
    from planner.hardware import probe

    def no_probe(_catalog):
        raise PlannerError("the probe found no GPU and could not read the RAM size; use --device")

    monkeypatch.setattr(probe, "local_host", no_probe)
    (d,) = spec("deployments:\n  - {name: here, model: llama-3.1-8b, target: local}\n")
    with pytest.raises(PlannerError) as e:
        Checker(catalog, registry).check_all([d])
    assert e.value.exit_code == 1 and "deployment 'here': target: the probe found no GPU" in str(e.value)


# ---------------------------------------------------------------------------------------------- explain


def test_what_would_pass_suggestions_do_pass(checker):
    deps = {d.name: d for d in load_specs([FIX / "fail.yaml"])}
    (r,) = checker.check_all([deps["too-big-70b"]])
    ways = what_would_pass(r, checker)
    kinds = {k for s in ways for k in s.change}
    assert {"format", "target"} <= kinds
    more = [s for s in ways if s.change.get("target", {}).get("device") == "rtx-4090"]
    assert more and more[0].change["target"]["count"] > 1
    for s in ways:
        change = dict(s.change)
        if "target" in change:
            change["target"] = DeviceTarget(**change["target"])
        (again,) = checker.check_all([dataclasses.replace(deps["too-big-70b"], **change)])
        assert again.passed, (s.text, [c.message for c in again.failures])


def test_shorter_context_is_suggested_when_it_is_enough(checker):
    (d,) = spec("""
        deployments:
          - name: long
            model: llama-3.1-8b
            target: {device: rtx-4060-ti-8gb}
            runtime: llama.cpp
            format: Q4_K_M
            context: 131072
    """)
    (r,) = checker.check_all([d])
    assert not r.passed
    ctx = [s for s in what_would_pass(r, checker) if "context" in s.change]
    assert ctx and ctx[0].change["context"] < 131072 and ctx[0].change["context"] % 256 == 0
    (ok,) = checker.check_all([dataclasses.replace(d, context=ctx[0].change["context"])])
    (over,) = checker.check_all([dataclasses.replace(d, context=ctx[0].change["context"] + 256)])
    assert ok.passed and not over.passed


def test_explain_data_has_the_breakdown(checker):
    deps = {d.name: d for d in load_specs([FIX / "fail.yaml"])}
    (r,) = checker.check_all([deps["too-slow-8b"]])
    data = explain_data(r, checker)
    (dev,) = data["memory"]["per_device"]
    assert dev["total_bytes"] == dev["weights_bytes"] + dev["kv_cache_bytes"] + dev["activations_bytes"] + dev["overhead_bytes"]
    text = render_explain(data)
    assert "weights" in text and "KV cache" in text and "What would make it pass:" in text


# --------------------------------------------------------------------------------------------- reporters


@pytest.fixture(scope="module")
def mixed(checker):
    return checker.check_all(load_specs([FIX / "pass.yaml", FIX / "fail.yaml"]))


def test_json_report(mixed):
    data = json.loads(render_json(mixed))
    assert data["passed"] is False and data["summary"] == {"deployments": 5, "passed": 3, "failed": 2}
    for res in data["results"]:
        assert {"name", "passed", "checks", "file", "line", "plan"} <= set(res)
        assert res["passed"] == all(c["passed"] for c in res["checks"])
        for c in res["checks"]:
            assert {"name", "limit", "value", "passed", "margin"} <= set(c)


def test_junit_report_parses(mixed):
    root = ET.fromstring(render_junit(mixed))
    assert root.tag == "testsuites" and root.get("tests") == "5" and root.get("failures") == "2"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [str(FIX / "pass.yaml"), str(FIX / "fail.yaml")]
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert cases["too-big-70b"].find("failure") is not None and cases["ok-8b"].find("failure") is None
    assert "min_headroom_pct" in cases["too-big-70b"].find("failure").get("message")


def test_github_annotations(mixed):
    lines = render_github(mixed).splitlines()
    notes = [ln for ln in lines if ln.startswith("::")]
    assert notes and all(ANNOTATION.match(ln) for ln in notes), notes
    errors = [ln for ln in notes if ln.startswith("::error")]
    assert len(errors) == 3  # fits + headroom of too-big-70b, decode of too-slow-8b
    assert any(",line=22," in ln and "min_decode_tokens_per_s" in ln for ln in errors)  # the limit's own line
    assert lines[-1].startswith("5 deployments checked")


def test_markdown_table(mixed):
    md = render_markdown(mixed)
    rows = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert len(rows) == 1 + 5 and md.count("❌") == 2


def test_text_report(mixed):
    text = render_text(mixed)
    assert text.count("PASS ") == 3 and text.count("FAIL ") >= 2 and "--explain too-big-70b" in text


def test_reporters_escape_awkward_names(checker):
    name = 'a <b> & "c", d: 100% | e'
    (d,) = spec(ONE.replace("name: a", f"name: '{name}'"))
    (r,) = checker.check_all([dataclasses.replace(d, limits=Limits(min_decode_tokens_per_s=1e5))])
    assert ET.fromstring(render_junit([r])).find(".//testcase").get("name") == name
    err = next(ln for ln in render_github([r]).splitlines() if ln.startswith("::error"))
    assert ANNOTATION.match(err) and "%2C" in err.split("::")[1] and "%3A" in err.split("::")[1]
    assert json.loads(render_json([r]))["results"][0]["name"] == name
    assert "\\|" in render_markdown([r])


# ------------------------------------------------------------------------------------------------ fuzzing

FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])  # a hang fails
VALID = (FIX / "pass.yaml").read_text()
KEYS = st.sampled_from(["deployments", "defaults", "version", "name", "model", "target", "device", "count", "ram_gib",
                        "nodes", "fabric", "expert_parallel", "replicas",
                        "runtime", "format", "context", "concurrency", "kv_dtype", "prompt_tokens", "limits",
                        "min_headroom_pct", "max_quality_loss", "max_ttft_s", "allow_context_extension"])
LEAVES = (st.none() | st.booleans() | st.integers(-10, 10**9) | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
          | st.text(max_size=12))
TREES = st.recursive(LEAVES, lambda c: st.lists(c, max_size=4) | st.dictionaries(KEYS | st.text(max_size=6), c, max_size=6),
                     max_leaves=12)


def outcome(text: str) -> str:
    """'ok' or 'invalid' are the only acceptable outcomes; anything else propagates and fails the test."""
    try:
        parse_spec(text, "fuzz.yaml")
    except InvalidInputError as exc:
        assert str(exc).startswith("fuzz.yaml"), str(exc)
        return "invalid"
    return "ok"


@FUZZ
@given(st.text())
def test_fuzz_arbitrary_text(text):
    outcome(text)


@FUZZ
@given(st.integers(0, len(VALID)))
def test_fuzz_truncated_valid_spec(n):
    outcome(VALID[:n])


@FUZZ
@given(TREES)
def test_fuzz_yaml_structures(tree):
    outcome(yaml.safe_dump(tree))


@settings(FUZZ, max_examples=150)
@given(st.dictionaries(KEYS, TREES, max_size=8))
def test_fuzz_deployment_entries(entry):
    outcome(yaml.safe_dump({"deployments": [entry]}))


NAMES = st.text(min_size=1, max_size=200).filter(lambda s: re.fullmatch(_NAME_RE, s) is not None)


@settings(FUZZ, max_examples=100, deadline=10_000)  # costs a deployment per example
@given(st.sampled_from(["model", "format", "runtime", "kv_dtype", "device"]), NAMES)
def test_fuzz_names_resolve_or_give_a_planner_error(checker, field, value):
    """Any name the schema lets through resolves, or fails with a PlannerError naming the deployment."""
    (d,) = spec(ONE)
    d = dataclasses.replace(d, target=DeviceTarget(device=value)) if field == "device" else dataclasses.replace(d, **{field: value})
    try:
        checker.check_all([d])
    except PlannerError as exc:
        assert "deployment 'a'" in str(exc)

