"""--force never deletes what planner did not write: every writer (quantize, recommend --quantize, eval's cached
files, bench's stand-in files) is run against a directory holding a user's files, which must come through
byte-identical; --force still replaces planner's own outputs. Through main(argv) on a tiny real HF model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.cli import main
from planner.measure.quality import core
from planner.outputs import MARKER, check_output, remove_created, why_not_replaceable
from fake_runtime import fake_runtime
from quantize_models import make_hf_model, needs_torch

Fake = fake_runtime({"F16": 0.0, "Q8_0": 0.05, "Q4_0": 0.6})


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root (and root itself) with its bytes; None for a directory."""
    out: dict[str, bytes | None] = {".": None}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = None if p.is_dir() else p.read_bytes()
    return out


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".partial" in p.name or ".old-" in p.name)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / "tiny"
    make_hf_model(path, vocab=300, layers=1)
    return path


@pytest.fixture()
def foreign(tmp_path) -> Path:
    """A user's directory: a notes file, a binary file and a subdirectory, none written by planner."""
    d = tmp_path / "models"
    (d / "sub").mkdir(parents=True)
    (d / "notes.txt").write_text("my notes\n")
    (d / "other-model.gguf").write_bytes(b"GGUF" + bytes(range(256)))
    (d / "sub" / "keep.bin").write_bytes(os.urandom(64))
    return d


# ---------------------------------------------------------------------------------------------- every writer


@pytest.mark.parametrize("fmt", ["Q8_0", "bf16", "gptq-int4"])
@pytest.mark.parametrize("force", [True, False])
def test_quantize_onto_a_foreign_directory_is_refused(capsys, model, foreign, fmt, force):
    before = snapshot(foreign)
    code, out, err = run(capsys, "quantize", str(model), "-f", fmt, "-o", str(foreign), *(["--force"] * force))
    assert code == 2, err
    line = err.strip().splitlines()[-1]
    assert str(foreign) in line and "refusing to replace it" in line and "Traceback" not in err
    assert ("single file" in line) if fmt == "Q8_0" else (f"planner did not write (no {MARKER})" in line)
    assert snapshot(foreign) == before and leftovers(foreign.parent) == []


def test_recommend_quantize_onto_a_foreign_directory_is_refused(capsys, model, foreign):
    before = snapshot(foreign)
    code, _, err = run(capsys, "recommend", "-m", str(model), "--device", "rtx-4090", "--format", "Q8_0",
                       "--quantize", str(model), "-o", str(foreign), "--force")
    assert code == 2 and str(foreign) in err and "refusing to replace it" in err
    assert snapshot(foreign) == before and leftovers(foreign.parent) == []


def test_recommend_quantize_force_replaces_its_own_output(capsys, model, tmp_path):
    out = tmp_path / "best.gguf"
    argv = ["recommend", "-m", str(model), "--device", "rtx-4090", "--format", "Q8_0", "--quantize", str(model),
            "-o", str(out)]
    assert run(capsys, *argv)[0] == 0 and out.read_bytes()[:4] == b"GGUF"
    code, _, err = run(capsys, *argv)
    assert code == 1 and "--force" in err
    assert run(capsys, *argv, "--force")[0] == 0 and out.read_bytes()[:4] == b"GGUF"


def test_eval_never_replaces_a_directory_in_its_cache(capsys, model, foreign, monkeypatch):
    """A directory (with a user's files) where eval would write a quantized file: refused, left as it was."""
    monkeypatch.setattr(core, "_open_llama", Fake)
    target = core.cache_root() / "models" / core.fingerprint(model) / f"{core.REFERENCE_FORMAT}.gguf"
    target.parent.mkdir(parents=True, exist_ok=True)
    foreign.rename(target)
    before = snapshot(target)
    code, _, err = run(capsys, "eval", str(model), "--formats", "Q8_0", "--ctx", "64", "--chunks", "1", "--no-save")
    assert code == 2 and str(target) in err and "refusing to replace it" in err and "eval's cache" in err
    assert snapshot(target) == before and leftovers(target.parent) == []


def test_eval_in_a_cache_holding_a_users_files_keeps_them(capsys, model, foreign, monkeypatch):
    """PLANNER_CACHE_DIR set to a user's directory: eval adds its files and deletes none of the user's."""
    monkeypatch.setattr(core, "_open_llama", Fake)
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(foreign))
    before = snapshot(foreign)
    code, _, err = run(capsys, "eval", str(model), "--formats", "Q8_0", "--ctx", "64", "--chunks", "1", "--no-save")
    assert code == 0, err
    after = snapshot(foreign)
    assert {k: after[k] for k in before} == before
    assert any(k.endswith("Q8_0.gguf") for k in after)


def test_bench_work_directory_keeps_a_file_it_did_not_write(capsys, foreign, monkeypatch):
    """bench removes only its own stand-in files: a file that appears in its work directory survives, and the
    user's files in the cache directory are untouched (llama.cpp's timing is replaced by a stub)."""
    from planner.measure.speed import llamacpp
    from planner.measure.speed.kernels import Timing

    monkeypatch.setenv("PLANNER_CACHE_DIR", str(foreign))
    before = snapshot(foreign)
    seen: list[Path] = []

    def fake_time_file(path: Path, **_kw):  # type: ignore[no-untyped-def]
        assert path.is_file() and path.read_bytes()[:4] == b"GGUF"
        seen.append(path)
        (path.parent / "dropped-by-user.txt").write_text("mine")
        t = Timing(0.01, 0.01, 0.01, 3)
        return t, t

    monkeypatch.setattr(llamacpp, "llama_cpp_missing_reason", lambda: None)
    monkeypatch.setattr(llamacpp, "time_file", fake_time_file)
    code, _, err = run(capsys, "bench", "--model", "smollm2-135m", "--format", "Q8_0", "--kernel", "llama.cpp",
                       "--quick", "--prompt", "16", "--catalog-device", "cpu-ddr5-dual", "--json")
    assert code == 0, err
    assert seen and not any(p.exists() for p in seen)  # its stand-ins are gone
    work = seen[0].parent
    assert (work / "dropped-by-user.txt").read_text() == "mine"
    after = snapshot(foreign)
    assert {k: after[k] for k in before} == before


# ---------------------------------------------------------------------------------------------- planner's own outputs


def test_force_replaces_a_gguf_file_planner_wrote(capsys, model, tmp_path):
    out = tmp_path / "m.gguf"
    assert run(capsys, "quantize", str(model), "-f", "Q8_0", "-o", str(out), "--json")[0] == 0
    q8 = out.read_bytes()
    code, _, err = run(capsys, "quantize", str(model), "-f", "Q4_0", "-o", str(out), "--force", "--json")
    assert code == 0, err
    assert out.read_bytes()[:4] == b"GGUF" and len(out.read_bytes()) < len(q8)
    assert leftovers(tmp_path) == []


@pytest.mark.real_runtime
@needs_torch
def test_force_replaces_a_directory_planner_wrote(capsys, model, tmp_path):
    out = tmp_path / "gptq"
    assert run(capsys, "quantize", str(model), "-f", "bf16", "-o", str(out), "--json")[0] == 0
    marker = json.loads((out / MARKER).read_text())
    assert marker["format"] == "bf16" and set(marker["files"]) | {MARKER} == {p.name for p in out.iterdir()}
    code, _, err = run(capsys, "quantize", str(model), "-f", "gptq-int4", "-o", str(out), "--force", "--json")
    assert code == 0, err
    marker = json.loads((out / MARKER).read_text())
    assert marker["format"] == "gptq-int4" and "quantize_config.json" in marker["files"]
    assert set(marker["files"]) | {MARKER} == {p.name for p in out.iterdir()}
    assert leftovers(tmp_path) == []


def test_force_replaces_an_empty_directory(capsys, model, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    code, _, err = run(capsys, "quantize", str(model), "-f", "nf4", "-o", str(out), "--force", "--json")
    assert code == 0, err
    assert (out / "model.safetensors").is_file() and leftovers(tmp_path) == []


@pytest.mark.parametrize("extra", ["file", "subdir", "symlink"])
def test_planner_directory_with_something_added_is_refused(capsys, model, tmp_path, extra):
    out = tmp_path / "nf4"
    assert run(capsys, "quantize", str(model), "-f", "nf4", "-o", str(out), "--json")[0] == 0
    name = {"file": "README.md", "subdir": "checkpoints", "symlink": "link"}[extra]
    if extra == "file":
        (out / name).write_text("written by the user\n")
    elif extra == "subdir":
        (out / name).mkdir()
        (out / name / "x.bin").write_bytes(b"x")
    else:
        (out / name).symlink_to(tmp_path)
    before = snapshot(out)
    code, _, err = run(capsys, "quantize", str(model), "-f", "nf4", "-o", str(out), "--force")
    assert code == 2 and str(out) in err and f"holds files planner did not write ({name})" in err
    assert snapshot(out) == before and leftovers(tmp_path) == []


def test_file_output_onto_a_planner_directory_is_refused(capsys, model, tmp_path):
    out = tmp_path / "m"
    assert run(capsys, "quantize", str(model), "-f", "bf16", "-o", str(out), "--json")[0] == 0
    before = snapshot(out)
    code, _, err = run(capsys, "quantize", str(model), "-f", "Q8_0", "-o", str(out), "--force")
    assert code == 2 and "single file" in err and str(out / "NAME.gguf") in err
    assert snapshot(out) == before


def test_directory_output_onto_a_file_is_refused(capsys, model, tmp_path):
    out = tmp_path / "weights"
    out.write_bytes(b"a user's file")
    code, _, err = run(capsys, "quantize", str(model), "-f", "bf16", "-o", str(out), "--force")
    assert code == 2 and "is a file, and this output is a directory" in err and out.read_bytes() == b"a user's file"


@pytest.mark.parametrize("fmt", ["Q8_0", "bf16"])
def test_symlink_as_output_is_refused(capsys, model, tmp_path, fmt):
    """Symbolic links are never replaced (nor followed): the link and what it points to stay as they were."""
    target = tmp_path / "real.gguf"
    assert run(capsys, "quantize", str(model), "-f", "Q8_0", "-o", str(target), "--json")[0] == 0
    data = target.read_bytes()
    link = tmp_path / "link"
    link.symlink_to(target)
    code, _, err = run(capsys, "quantize", str(model), "-f", fmt, "-o", str(link), "--force")
    assert code == 2 and str(link) in err and "symbolic link" in err
    assert link.is_symlink() and os.readlink(link) == str(target) and target.read_bytes() == data
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    code, _, err = run(capsys, "quantize", str(model), "-f", fmt, "-o", str(dangling), "--force")
    assert code == 2 and "symbolic link" in err and dangling.is_symlink()
    assert not (tmp_path / "nowhere").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt", ["Q8_0", "bf16"])
def test_missing_parent_directory_is_refused(capsys, model, tmp_path, fmt):
    out = tmp_path / "no" / "such" / "m.gguf"
    code, _, err = run(capsys, "quantize", str(model), "-f", fmt, "-o", str(out), "--force")
    assert code == 2 and str(out.parent) in err and "no such directory" in err
    assert not (tmp_path / "no").exists()


def test_a_foreign_partial_name_is_not_deleted(capsys, model, foreign):
    """OUT.partial is planner's scratch name; a user's directory there is refused, not removed."""
    partial = foreign.with_name("out.partial")
    foreign.rename(partial)
    before = snapshot(partial)
    code, _, err = run(capsys, "quantize", str(model), "-f", "bf16", "-o", str(partial.with_name("out")))
    assert code == 2 and str(partial) in err and "move it away" in err
    assert snapshot(partial) == before and not partial.with_name("out").exists()


# ---------------------------------------------------------------------------------------------- the rule itself


def test_remove_created_keeps_what_it_did_not_create(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "a.gguf").write_bytes(b"mine")
    (work / "user.txt").write_text("theirs")
    assert remove_created(work, ["a.gguf", "b.gguf"]) is False
    assert sorted(p.name for p in work.iterdir()) == ["user.txt"]
    (work / "user.txt").unlink()
    assert remove_created(work, []) is True and not work.exists()


def _planner_dir(tmp_path: Path, marker: bytes) -> Path:
    d = tmp_path / "out"
    d.mkdir(exist_ok=True)
    (d / "model.safetensors").write_bytes(b"x")
    (d / MARKER).write_bytes(marker)
    return d


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(marker=st.one_of(
    st.binary(max_size=200),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                 lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                 max_leaves=20).map(lambda v: json.dumps(v).encode()),
    st.lists(st.text(max_size=12), max_size=6).map(lambda fs: json.dumps({"files": fs}).encode()),
))
def test_any_marker_never_lets_a_foreign_file_go(tmp_path, marker):
    """Whatever the marker holds (garbage, any JSON, any names), a directory with a file outside the planner's
    list is never replaceable, and reading the marker never raises."""
    d = _planner_dir(tmp_path, marker)
    (d / "user-notes.txt").write_text("mine")
    try:
        files = json.loads(marker).get("files")
    except (ValueError, AttributeError):
        files = None
    why = why_not_replaceable(d, "dir")
    if isinstance(files, list) and "user-notes.txt" in files and "model.safetensors" in files:
        return  # the marker claims the file: planner's own word, as for a file it wrote
    assert why is not None
    with pytest.raises(Exception) as exc:
        check_output(d, "dir", force=True)
    assert getattr(exc.value, "exit_code", None) == 2 and (d / "user-notes.txt").read_text() == "mine"
