"""`planner recommend --eval FILE` through main(argv): measured KL divergence (stored `planner eval` reports, or
measured now from the model's weights with a fake runtime in place of llama.cpp) replaces the table estimate when
ranking, the output and --json say so, and the error paths are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.cli import main
from planner.measure.quality import core
from planner.measure.quality.core import EvalReport, FormatResult, save_report
from planner.measure.reports import model_key, text_sha256
from fake_runtime import fake_runtime
from quantize_models import make_hf_model

PROFILE = "smollm2-135m"
BASE = ["recommend", "-m", PROFILE, "--device", "rtx-4090", "--format", "Q8_0", "--format", "Q4_K_M"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def data_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "data"
    monkeypatch.setenv("PLANNER_DATA_DIR", str(d))
    return d


@pytest.fixture()
def text_file(tmp_path) -> Path:
    p = tmp_path / "my-chats.txt"
    p.write_text("What the model will read in production: questions, answers, some code. " * 30)
    return p


def store(data_dir: Path, spec, text: str, kld: dict[str, float], *, created: str = "2025-01-01T00:00:00Z",
          source: str = "/models/SmolLM2-135M") -> Path:
    """A stored planner eval report as `planner eval` writes it, with chosen KL divergences."""
    rep = EvalReport(source, "my-chats.txt", 64, 3, 93, created=created, text_sha256=text_sha256(text),
                     model={"id": spec.id, "name": spec.name, "key": model_key(spec)})
    rep.results.append(FormatResult("F16", f"{source}/F16.gguf", 300, 16.0, 93, 10.0, 0.1, 0, 0, 0, 1.0, reference=True))
    for i, (fmt, k) in enumerate(kld.items()):
        rep.results.append(FormatResult(fmt, f"{source}/{fmt}.gguf", 100 + i, 6.0, 93, 10.0 * (1 + k), 0.1, k, 5 * k,
                                        k, 0.9))
    return save_report(rep, data_dir / "eval")


def test_stored_measurement_reverses_the_choice(capsys, data_dir, text_file, registry):
    code, out, err = run(capsys, *BASE, "--json")
    assert code == 0, err
    before = json.loads(out)
    assert before["recommended"]["format"] == "Q8_0"  # the table: Q8_0 loses far less than Q4_K_M
    assert before["quality_source"] == "estimated" and before["eval"] is None
    assert before["recommended"]["quality"]["source"] == "estimated"

    # Measured on this model and text, Q8_0 is the worse one: the ranking must follow the measurement.
    store(data_dir, registry.get(PROFILE), text_file.read_text(), {"Q8_0": 0.2, "Q4_K_M": 0.001})
    code, out, err = run(capsys, *BASE, "--eval", str(text_file), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["recommended"]["format"] == "Q4_K_M"
    assert data["quality_source"] == "measured"
    q = data["recommended"]["quality"]
    assert q["source"] == "measured" and q["kld"] == pytest.approx(0.001) and q["text"] == "my-chats.txt"
    assert data["eval"]["text"] == str(text_file) and set(data["eval"]["formats"]) == {"Q8_0", "Q4_K_M"}
    assert data["eval"]["evaluated_now"] == []  # nothing to measure with: stored results only
    alt = {a["format"]: a["quality"] for a in data["alternatives"]}
    assert alt["Q8_0"]["source"] == "measured" and alt["Q8_0"]["kld"] == pytest.approx(0.2)
    assert any("Measured quality loss" in r and "my-chats.txt" in r for r in data["reasons"])


def test_text_output_says_measured(capsys, data_dir, text_file, registry):
    store(data_dir, registry.get(PROFILE), text_file.read_text(), {"Q8_0": 0.2, "Q4_K_M": 0.001})
    code, out, err = run(capsys, *BASE, "--eval", str(text_file))
    assert code == 0, err
    assert "Recommended: Q4_K_M" in out
    assert "Quality of Q4_K_M: measured KLD 0.0010 on my-chats.txt" in out
    assert "(measured)" in out  # the alternatives table marks measured values


def test_plain_recommend_uses_stored_results_unless_no_calibration(capsys, data_dir, text_file, registry):
    store(data_dir, registry.get(PROFILE), text_file.read_text(), {"Q8_0": 0.2, "Q4_K_M": 0.001})
    code, out, err = run(capsys, *BASE, "--json")
    data = json.loads(out)
    assert code == 0 and data["recommended"]["format"] == "Q4_K_M" and data["quality_source"] == "measured"
    assert any("measured KLD" in n and "--no-calibration" in n for n in data["target"]["notes"])
    code, out, err = run(capsys, *BASE, "--json", "--no-calibration")
    data = json.loads(out)
    assert code == 0 and data["recommended"]["format"] == "Q8_0" and data["quality_source"] == "estimated"


def test_newest_report_wins_and_other_texts_do_not_apply(capsys, data_dir, text_file, registry, tmp_path):
    spec = registry.get(PROFILE)
    store(data_dir, spec, text_file.read_text(), {"Q8_0": 0.2, "Q4_K_M": 0.001}, created="2025-01-01T00:00:00Z")
    store(data_dir, spec, text_file.read_text(), {"Q8_0": 0.0005}, created="2025-02-01T00:00:00Z")
    code, out, err = run(capsys, *BASE, "--eval", str(text_file), "--json")
    data = json.loads(out)
    assert code == 0 and data["recommended"]["format"] == "Q8_0"
    assert data["recommended"]["quality"]["kld"] == pytest.approx(0.0005)
    # A different text has no measurement, and nothing to measure with: one clear line, exit 2.
    other = tmp_path / "other.txt"
    other.write_text("A different text entirely, about other things, at some length. " * 20)
    code, out, err = run(capsys, *BASE, "--eval", str(other))
    assert code == 2 and out == ""
    assert err.startswith("planner: error: --eval") and len(err.strip().splitlines()) == 1
    assert "--quantize SOURCE" in err and "planner eval SOURCE --text" in err


def test_reports_of_another_model_do_not_apply(capsys, data_dir, text_file, registry):
    store(data_dir, registry.get("smollm2-360m"), text_file.read_text(), {"Q8_0": 0.2, "Q4_K_M": 0.001})
    code, out, err = run(capsys, *BASE, "--eval", str(text_file))
    assert code == 2 and "no stored planner eval of SmolLM2 135M" in err


def test_eval_error_paths(capsys, data_dir, tmp_path, tiny):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    code, _, err = run(capsys, *BASE, "--eval", str(empty))
    assert code == 2 and "empty" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, *BASE, "--eval", str(tmp_path / "missing.txt"))
    assert code == 2 and "missing.txt" in err
    text = tmp_path / "t.txt"
    text.write_text("Some words to measure the model on. " * 40)
    # SOURCE must hold the model being planned: its KL divergence would be another model's.
    code, _, err = run(capsys, *BASE, "--eval", str(text), "--quantize", str(tiny), "-o", str(tmp_path / "o.gguf"))
    assert code == 1 and "not SmolLM2 135M" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.gguf").exists()


# ---------------------------------------------------------------------------------------------- measured now


# reversed on purpose: the fake 2-bit file is exact
Fake = fake_runtime({"F16": 0.0, "Q2_K": 0.0, "Q4_0": 0.3, "Q8_0": 1.0})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / "tiny"
    make_hf_model(path, vocab=300, layers=1)
    return path


def test_eval_measures_the_candidates_from_the_weights(capsys, data_dir, tiny, text_file, monkeypatch, tmp_path):
    monkeypatch.setattr(core, "_open_llama", Fake)
    argv = ["recommend", "-m", str(tiny), "--device", "rtx-4090", "--format", "Q8_0", "--format", "Q4_0",
            "--format", "Q2_K", "--prefer", "quality", "--json", "--eval-ctx", "64", "--eval-chunks", "2"]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert json.loads(out)["recommended"]["format"] == "Q8_0"  # the table's answer for --prefer quality

    code, out, err = run(capsys, *argv, "--eval", str(text_file))
    assert code == 0, err
    assert "measuring" in err  # progress on stderr
    data = json.loads(out)
    assert sorted(data["eval"]["evaluated_now"]) == ["Q2_K", "Q4_0", "Q8_0"]
    assert data["recommended"]["format"] == "Q2_K" and data["quality_source"] == "measured"
    alt = {a["format"]: a["quality"] for a in data["alternatives"]}
    assert alt["Q2_K"]["kld"] < alt["Q4_0"]["kld"] < alt["Q8_0"]["kld"]
    assert all(q["source"] == "measured" for q in alt.values())
    saved = [Path(p) for p in data["eval"]["saved"]]
    assert saved and all(p.is_file() and p.parent == data_dir / "eval" for p in saved)

    # The next run reuses the stored measurements (nothing is measured again) and writes the measured choice.
    best = tmp_path / "best.gguf"
    code, out, err = run(capsys, *argv, "--eval", str(text_file), "--quantize", str(tiny), "-o", str(best))
    data = json.loads(out)
    assert code == 0 and data["eval"]["evaluated_now"] == [] and data["recommended"]["format"] == "Q2_K"
    assert best.is_file() and "Q2_K" in err


def test_eval_errors_name_recommends_own_options(capsys, data_dir, tiny, text_file, monkeypatch):
    monkeypatch.setattr(core, "_open_llama", Fake)
    base = ["recommend", "-m", str(tiny), "--device", "rtx-4090", "--format", "Q8_0", "--eval", str(text_file)]
    code, _, err = run(capsys, *base, "--eval-ctx", "100000")
    assert code == 2 and "--eval-ctx 100000" in err and "smaller --eval-ctx" in err and "Traceback" not in err
    code, _, err = run(capsys, *base, "--eval-ctx", "4")
    assert code == 2 and "argument --eval-ctx: '4' is out of range; expected a whole number from 8" in err


def test_eval_then_confirm_on_this_machine(capsys, data_dir, tiny, text_file, monkeypatch):
    """--eval ranks by measured quality first; --confirm then benches that ranking's top candidates here."""
    monkeypatch.setattr(core, "_open_llama", Fake)
    argv = ["recommend", "-m", str(tiny), "--format", "Q8_0", "--format", "Q4_0", "--format", "Q2_K",
            "--runtime", "llama.cpp", "--prefer", "quality", "--json", "--eval", str(text_file), "--eval-ctx", "64",
            "--eval-chunks", "2", "--confirm"]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    data = json.loads(out)
    assert data["quality_source"] == "measured" and data["recommended"]["format"] == "Q2_K"
    conf = data["confirm"]
    assert conf["skipped"] is None, conf["skipped"]
    timed = [c["format"] for c in conf["candidates"]]
    assert timed and timed[0] == "Q2_K"  # the candidates come from the quality-ranked recommendation
    assert all(c["measured_decode_tokens_per_s"] for c in conf["candidates"])
