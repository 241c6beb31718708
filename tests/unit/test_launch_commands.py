"""Every launch command recommend can emit, parsed against the engines' documented CLIs (planner/data/engine_flags.json):
no unknown module, subcommand, flag, environment variable or config key, and a model path in a format the engine
loads."""

from __future__ import annotations

import ast
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from planner.cost.model import ModelCost
from planner.formats import FORMATS, exl2_format
from planner.plan import target_from_catalog
from planner.recommend import recommend

CLI = json.loads((Path(__file__).resolve().parents[2] / "planner" / "data" / "engine_flags.json").read_text())
_COMMANDS = sorted((k for k in CLI if not k.startswith("_")), key=lambda k: -len(k.split()))
_ENV = re.compile(r"^([A-Z_][A-Z0-9_]*)=(\S*)$")

TARGETS = [("cpu-ddr5-dual", 1), ("rtx-4090", 1), ("rtx-3090", 2), ("m3-max", 1), ("h100-sxm", 8), ("mi300x", 1)]
MODELS = ["gpt-oss-120b", "deepseek-v3", "llama-3.1-8b", "llama-3.1-70b", "qwen3-30b-a3b", "gemma-3-27b", "mixtral-8x7b"]


def _format(fid: str):
    if fid in FORMATS:
        return FORMATS[fid]
    m = re.fullmatch(r"exl2-(\d+(?:\.\d+)?)bpw", fid)
    assert m, fid
    return exl2_format(float(m.group(1)))


def _family_of_path(path: str, plan, model) -> str:
    """The weight format a model argument names: a .gguf file, the released checkpoint (quantized on load for
    fp8/bnb), or a directory the planner's quantizer names after the format."""
    fmt = _format(plan.format_id)
    if path.endswith(".gguf") or fmt.family == "gguf":
        assert fmt.family == "gguf" and path.endswith(f"-{fmt.id}.gguf"), f"{path} is not the {fmt.id} GGUF file"
        return "gguf"
    if model.hf_repo and path == model.hf_repo:
        assert fmt.family in ("float", "fp8", "bnb"), f"{path} is the release, not {fmt.id}"
        return fmt.family
    assert path.rstrip("/").endswith(f"-{fmt.id}"), f"{path} does not name format {fmt.id}"
    return fmt.family


def _split_shell(text: str) -> list[tuple[str, object]]:
    """The launch text as ('cmd', words) and ('yaml'|'printf', payload) items, skipping comments."""
    out: list[tuple[str, object]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        heredoc = re.fullmatch(r"cat > (\S+) <<'EOF'", line)
        if heredoc:
            body = []
            while lines[i].strip() != "EOF":
                body.append(lines[i])
                i += 1
            i += 1
            out.append(("yaml", (heredoc.group(1), yaml.safe_load("\n".join(body)))))
            continue
        for part in re.split(r"\s*&&\s*|\s+&$", line):
            if not part.strip():
                continue
            words = shlex.split(part)
            if words[0] == "printf":
                assert words[-2] == ">", part
                out.append(("printf", (words[-1], words[1].replace("\\n", "\n"))))
                continue
            out.append(("cmd", words))
    return out


def _check_command(words: list[str], plan, model, seen_models: list[str]) -> str:
    """Checks one command against engine_flags.json; returns its key."""
    env = []
    while words and _ENV.match(words[0]):
        env.append(_ENV.match(words[0]).group(1))
        words = words[1:]
    key = next((k for k in _COMMANDS if words[: len(k.split())] == k.split()), None)
    assert key is not None, f"unknown command/module/subcommand: {' '.join(words[:4])}"
    spec = CLI[key]
    assert set(env) <= set(spec.get("env", [])), (key, env)
    rest = words[len(key.split()):]
    if key == "python -c":
        tree = ast.parse(rest[0])
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module in spec["imports"] and {a.name for a in node.names} <= set(spec["imports"][node.module])
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg in ("model", "gguf_file") and isinstance(kw.value, ast.Constant):
                        if kw.arg == "gguf_file" or not any(k.arg == "gguf_file" for k in node.keywords):
                            seen_models.append(kw.value.value)
        return key
    flags = [w for w in rest if w.startswith("-") and not re.fullmatch(r"-\d+(\.\d+)?", w)]
    unknown = set(flags) - set(spec["flags"])
    assert not unknown, f"{key}: undocumented flags {sorted(unknown)}"
    arg = spec.get("model_arg")
    if arg == "positional":
        assert rest and not rest[0].startswith("-"), f"{key}: no model argument"
        seen_models.append(rest[0])
    elif arg and arg.startswith("-"):
        assert arg in rest, f"{key}: no {arg}"
        seen_models.append(rest[rest.index(arg) + 1])
    return key


def _check_launch(plan, model) -> set[str]:
    """Parses a plan's launch text; returns the command keys it uses."""
    keys: set[str] = set()
    models: list[str] = []
    files: dict[str, object] = {}
    for kind, item in _split_shell(plan.launch):
        if kind == "cmd":
            keys.add(_check_command(item, plan, model, models))
        else:
            name, payload = item
            files[name] = (kind, payload)
    if "ollama create" in keys:
        kind, text = files["Modelfile"]
        spec = CLI["ollama create"]
        for line in text.strip().splitlines():
            word, *args = line.split()
            assert word in spec["modelfile_keywords"], line
            if word == "PARAMETER":
                assert args[0] in spec["modelfile_parameters"], line
            if word == "FROM":
                models.append(args[0].removeprefix("./"))
    if "python main.py" in keys:
        kind, cfg = files["config.yml"]
        spec = CLI["python main.py"]
        for section, values in cfg.items():
            assert section in spec["config_keys"], section
            assert set(values) <= set(spec["config_keys"][section]), (section, set(values) - set(spec["config_keys"][section]))
        for dotted, allowed in spec["config_values"].items():
            section, k = dotted.split(".")
            assert cfg[section].get(k) in allowed, (dotted, cfg[section].get(k))
        models.append(cfg["model"]["model_name"])
    serving = [k for k in keys if CLI[k].get("loads")]
    assert serving, f"no serving command in {plan.launch!r}"
    assert models, f"no model argument in {plan.launch!r}"
    family = None
    for path in models:
        family = _family_of_path(path, plan, model)
    for k in serving:
        assert family in CLI[k]["loads"], f"{k} cannot load {family} ({plan.format_id}): {plan.launch}"
    return keys


@pytest.fixture(scope="module")
def sweep(catalog, registry):
    """recommend over models x targets; every plan that runs, with its launch text rendered."""
    out = []
    for mid in MODELS:
        spec = registry.get(mid)
        mc = ModelCost(spec)
        for did, count in TARGETS:
            rec = recommend(mc, target_from_catalog(catalog.get(did), count), context=8192)
            out += [(spec, p) for p in rec.plans if p.runs]
    return out


def test_every_emitted_command_uses_the_documented_cli(sweep):
    used: set[str] = set()
    runtimes: set[str] = set()
    for spec, plan in sweep:
        try:
            used |= _check_launch(plan, spec)
        except AssertionError as exc:
            raise AssertionError(f"{spec.id} {plan.format_id} {plan.runtime_id} on {plan.target_label}: {exc}") from exc
        runtimes.add(plan.runtime_id)
    # the sweep reaches every engine's command (so a broken template cannot hide behind an untested runtime)
    assert {"llama-server", "ollama create", "lms load", "koboldcpp", "vllm serve", "python -m sglang.launch_server",
            "trtllm-serve", "text-generation-launcher", "python main.py", "mlx_lm.server", "python -c"} <= used, used
    assert "vllm-cpu" in runtimes


def test_the_checker_catches_bad_commands(sweep):
    """The parser is not vacuous: an invented flag, module, or a model path in the wrong format fails."""
    spec, plan = next((s, p) for s, p in sweep if p.runtime_id == "vllm" and p.format_id == "awq-int4")
    good = plan.launch
    for bad in (good + " --no-such-flag", good.replace("vllm serve", "vllm launch"),
                good.replace("-awq-int4", "-Q4_K_M.gguf")):
        plan._launch = bad
        with pytest.raises(AssertionError):
            _check_launch(plan, spec)
    plan._launch = "python -m exllamav2.server --model_dir ./x"
    with pytest.raises(AssertionError, match="unknown command"):
        _check_launch(plan, spec)
    plan._launch = good


def test_gpu_flags_never_reach_a_cpu_machine(sweep):
    for spec, plan in sweep:
        if plan.device_id.startswith("cpu-"):
            assert "--gpu-memory-utilization" not in plan.launch, plan.launch
            if plan.runtime_id == "vllm-cpu":
                assert plan.launch.startswith("# vLLM's CPU backend") and "\nVLLM_CPU_KVCACHE_SPACE=" in plan.launch
            if plan.runtime_id == "sglang":
                assert "--device cpu" in plan.launch


def test_on_the_fly_quantization_only_for_checkpoints_that_need_it(sweep):
    """--quantization fp8 quantizes a 16-bit release on load; an FP8 release (DeepSeek-V3) says so in its config."""
    fp8 = {(s.id, p.runtime_id): p.launch for s, p in sweep if p.format_id == "fp8" and p.runtime_id in ("vllm", "sglang")}
    assert "--quantization fp8" not in fp8[("deepseek-v3", "vllm")]
    assert "--quantization fp8" not in fp8[("deepseek-v3", "sglang")]
    assert "--quantization fp8" in fp8[("llama-3.1-70b", "vllm")]
    assert "--quantization fp8" in fp8[("llama-3.1-70b", "sglang")]
