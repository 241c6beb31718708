"""Resource exhaustion from user files: YAML alias bombs, over-long integers and huge values in messages (issue #16)."""

from __future__ import annotations

import json
import struct
import time
import tracemalloc
from pathlib import Path

import pytest

from planner.cli import main
from planner.errors import InvalidInputError, preview
from planner.yamlio import MAX_ALIAS_EXPANSION, load_json, parse_yaml



def _benchmark(name: str):  # type: ignore[no-untyped-def]
    """A benchmarks/ script loaded by path: benchmarks/ never goes on sys.path, where its kernels.py would shadow the
    `kernels` package transformers imports."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bomb_text = _benchmark("yaml_bomb").bomb_text  # the benchmark's own bomb, so test and numbers agree

BIG = "7" * 4400  # past Python's 4300-digit int-string limit
LLAMA_CONFIG = {"architectures": ["LlamaForCausalLM"], "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48,
                "max_position_embeddings": 256}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(argv)
    return rc, capsys.readouterr().err


@pytest.fixture
def bomb(tmp_path: Path) -> Path:
    p = tmp_path / "deploy.yaml"
    p.write_text(bomb_text(9), encoding="utf-8")
    return p


def test_alias_bomb_spec_is_refused_fast_and_small(bomb: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The 9x9 bomb took ~60 s and 3 GB before; now one line, exit 2, well under a second and a few MB."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        rc, err = _run(["check", str(bomb)], capsys)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rc == 2
    assert err.startswith(f"planner: error: {bomb}:1:1: invalid YAML: aliases expand the document by ")
    assert "alias bomb" in err and len(err.splitlines()) == 1
    assert elapsed < 5  # < 1 s on a quiet machine (benchmarks/yaml_bomb.py); slack for a loaded CI host
    assert peak < 100 * 2**20


@pytest.mark.parametrize("reader", ["hwdb", "profiles", "calibration"])
def test_alias_bomb_in_every_yaml_reader(reader: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Catalogs, profiles and calibration records go through the same bounded loader."""
    monkeypatch.setenv("PLANNER_NO_CACHE", "1")
    if reader == "calibration":
        monkeypatch.setenv("PLANNER_DATA_DIR", str(tmp_path / "data"))
        f = tmp_path / "data" / "calibration" / "rtx-4090.yaml"
        argv = ["calibration", "show", "rtx-4090"]
        text = bomb_text(9, key="records", head="schema_version: 1\ndevice_id: rtx-4090\n")
    else:
        f = tmp_path / reader / "bomb.yaml"
        argv = ["recommend", "--model", "70B", "--device", "rtx-4090", f"--{reader}", str(f.parent)]
        text = bomb_text(9, key="devices" if reader == "hwdb" else "models")  # in the list the reader validates
    f.parent.mkdir(parents=True)
    f.write_text(text, encoding="utf-8")
    t0 = time.perf_counter()
    rc, err = _run(argv, capsys)
    assert time.perf_counter() - t0 < 5
    assert rc == 2 and f"{f}:1:1: invalid YAML: aliases expand the document" in err


def test_aliases_below_the_bound_still_load() -> None:
    """Reusing a block through aliases (as profiles/deepseek.yaml does) stays allowed; merge keys too."""
    text = "base: &b {a: 1, b: [1, 2]}\nx: *b\ny: {<<: *b, c: 3}\nz: [*b, *b]\n"
    doc = parse_yaml(text, "f.yaml")
    assert doc["x"] == doc["z"][1] == {"a": 1, "b": [1, 2]} and doc["y"] == {"a": 1, "b": [1, 2], "c": 3}
    # Just over the bound: one list aliased enough times to add MAX_ALIAS_EXPANSION + a few nodes.
    n = MAX_ALIAS_EXPANSION // 10 + 1
    big = "l: &l [" + ", ".join(["0"] * 9) + "]\nm: [" + ", ".join(["*l"] * n) + "]\n"
    with pytest.raises(InvalidInputError, match=r"f\.yaml:1:1: invalid YAML: aliases expand the document by 10010 "):
        parse_yaml(big, "f.yaml")


@pytest.mark.parametrize("text", ["a: &a [1, *a]", "a: &a {k: *a}", "- &x [[*x]]"])
def test_recursive_alias_is_refused(text: str) -> None:
    with pytest.raises(InvalidInputError, match=r"f\.yaml:\d+:\d+: invalid YAML: .*recursive alias"):
        parse_yaml(text, "f.yaml")


@pytest.mark.parametrize("literal", [BIG, "-" + BIG, "0x" + "f" * 4000, "0b" + "1" * 4400, "1" + ":30" * 3000])
def test_yaml_integer_too_long(literal: str) -> None:
    with pytest.raises(InvalidInputError, match=r"^f\.yaml:2:4: invalid YAML: integer literal too long"):
        parse_yaml(f"a: 1\nb: {literal}\n", "f.yaml")


def test_json_integer_too_long(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text('{"a": %s}' % BIG, encoding="utf-8")
    with pytest.raises(InvalidInputError, match=rf"^{p}: invalid JSON: integer literal too long"):
        load_json(p)


def _big_int_case(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], Path]:
    """A file of each kind with one 4400-digit integer, and the planner command that reads it."""
    monkeypatch.setenv("PLANNER_NO_CACHE", "1")
    if kind == "deploy.yaml":
        f = tmp_path / "deploy.yaml"
        f.write_text(f"deployments:\n  - name: a\n    model: 70B\n    target: {{device: rtx-4090, count: {BIG}}}\n")
        return ["check", str(f)], f
    if kind == "config.json":
        f = tmp_path / "m" / "config.json"
        f.parent.mkdir()
        f.write_text(json.dumps(LLAMA_CONFIG)[:-1] + f', "rope_theta": {BIG}}}')
        return ["recommend", "--model", str(f.parent), "--device", "rtx-4090"], f
    if kind == "snapshot":
        f = tmp_path / "snap.json"
        f.write_text('{"snapshot_version": 1, "memory": {"total_bytes": %s}}' % BIG)
        return ["probe", "--snapshot", str(f)], f
    if kind == "safetensors":
        d = tmp_path / "st"
        d.mkdir()
        (d / "config.json").write_text(json.dumps(LLAMA_CONFIG))
        header = ('{"a": {"dtype": "F32", "shape": [%s], "data_offsets": [0, 4]}}' % BIG).encode()
        f = d / "model.safetensors"
        f.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
        return ["recommend", "--model", str(d), "--device", "rtx-4090"], f
    if kind in ("hwdb", "profiles"):
        f = tmp_path / kind / "x.yaml"
        f.parent.mkdir()
        f.write_text(f"{'devices' if kind == 'hwdb' else 'models'}:\n  - id: x\n    memory_gib: {BIG}\n")
        return ["recommend", "--model", "70B", "--device", "rtx-4090", f"--{kind}", str(f.parent)], f
    assert kind == "calibration"
    monkeypatch.setenv("PLANNER_DATA_DIR", str(tmp_path / "data"))
    f = tmp_path / "data" / "calibration" / "rtx-4090.yaml"
    f.parent.mkdir(parents=True)
    f.write_text(f"schema_version: 1\ndevice_id: rtx-4090\nrecords: [{BIG}]\n")
    return ["calibration", "show", "rtx-4090"], f


@pytest.mark.parametrize("kind", ["deploy.yaml", "config.json", "snapshot", "safetensors", "hwdb", "profiles",
                                  "calibration"])
def test_integer_over_4300_digits_is_exit_2_naming_the_file(kind: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Was exit 3 ('internal error: ValueError: Exceeds the limit (4300 digits)') for every one of these."""
    argv, f = _big_int_case(kind, tmp_path, monkeypatch)
    rc, err = _run(argv, capsys)
    assert rc == 2, err
    assert err.startswith(f"planner: error: {f}") and "integer literal too long" in err
    assert len(err.splitlines()) == 1 and "internal error" not in err


def test_huge_value_in_a_spec_error_is_shown_as_a_bounded_prefix(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A wrong-typed value of 200k nodes is quoted as a short prefix, not repr()'d whole."""
    f = tmp_path / "deploy.yaml"
    rows = "[" + ", ".join(["[" + ", ".join(["'lol'"] * 200) + "]"] * 1000) + "]"
    f.write_text(f"deployments:\n  - name: a\n    model: 70B\n    context: {rows}\n    target: {{device: rtx-4090}}\n"
                 f"    {'k' * 1000}: 1  # libyaml's longest simple key is 1024\n")
    rc, err = _run(["check", str(f)], capsys)
    assert rc == 2
    lines = err.splitlines()
    assert any("deployments[0].context: Input should be a valid integer (got [['lol', 'lol'" in line for line in lines)
    assert any("unknown field" in line and "kkk'..." in line for line in lines)
    assert max(len(line) for line in lines) < 400


def test_preview_never_renders_a_value_whole() -> None:
    nested: list = ["x"]
    for _ in range(40):  # 9**40 leaves if rendered: only the first items of the first levels are looked at
        nested = [nested] * 9
    assert len(preview(nested)) <= 80
    assert preview(10**5000) == "<integer of 16610 bits>"
    assert preview("a" * 10_000, 20).endswith("...") and len(preview("a" * 10_000, 20)) == 20
    assert preview({"k": [1, 2]}) == "{'k': [1, 2]}"
    assert preview(float("nan")) == "nan" and preview(None) == "None"
