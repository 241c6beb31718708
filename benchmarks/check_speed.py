"""How long `planner check` takes for a spec of 100 deployments (not a test: prints times).

The spec mixes 10 models, 8 devices, GGUF / AWQ / GPTQ / FP8 / MLX formats, pinned and unpinned runtimes, contexts
and limits. Printed: the library time (load the spec, resolve, evaluate, render JSON; catalogs already loaded), the
whole command in this process (`main([...])`, catalogs included), and a fresh `python -m planner.cli check` process
(interpreter start and imports included). `--auto N` adds N `format: auto` deployments, which run recommend's full
search (every format x runtime) each and so cost far more than a pinned format.

Usage: python benchmarks/check_speed.py [--deployments 100] [--auto 0] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from planner.cli import main  # noqa: E402
from planner.fitcheck.checks import Checker  # noqa: E402
from planner.fitcheck.reporters import render_json  # noqa: E402
from planner.fitcheck.spec import load_specs  # noqa: E402

MODELS = ["llama-3.1-8b", "llama-3.1-70b", "qwen2.5-7b", "qwen2.5-32b", "mistral-nemo-12b", "gemma-2-9b", "phi-4",
          "qwen3-30b-a3b", "mixtral-8x7b", "llama-3.2-3b"]
# (device, count, runtime or None, formats)
TARGETS = [
    ("rtx-4090", 1, "llama.cpp", ["Q4_K_M", "Q5_K_M", "Q8_0", "IQ4_XS"]),
    ("rtx-3090", 2, "llama.cpp", ["Q4_K_M", "Q6_K"]),
    ("a100-80gb-sxm", 2, "vllm", ["awq-int4", "gptq-int4", "fp16"]),
    ("h100-sxm", 1, None, ["fp8", "awq-int4", "Q4_K_M"]),
    ("l40s", 1, "vllm", ["awq-int4", "fp8"]),
    ("m3-max-128gb", 1, "mlx", ["mlx-4bit", "mlx-8bit"]),
    ("rtx-4060-ti-16gb", 1, None, ["Q4_K_M", "IQ3_M"]),
    ("mi300x", 1, "vllm", ["fp16", "fp8"]),
]


def make_spec(n: int, auto: int) -> dict:
    """A spec with `n` pinned-format deployments and `auto` format-auto ones."""
    deps = []
    combos = itertools.cycle(itertools.product(MODELS, TARGETS))
    for i in range(n):
        model, (device, count, runtime, fmts) = next(combos)
        dep = {"name": f"d{i:03d}", "model": model, "target": {"device": device, "count": count},
               "format": fmts[i % len(fmts)], "context": [4096, 8192, 16384, 32768][i % 4],
               "concurrency": [1, 1, 4, 8][(i // 4) % 4],
               "limits": {"min_headroom_pct": 5, "min_decode_tokens_per_s": 5, "max_ttft_s": 10, "max_quality_loss": "large"}}
        if runtime:
            dep["runtime"] = runtime
        deps.append(dep)
    for j in range(auto):
        model, (device, count, _, _) = next(combos)
        deps.append({"name": f"auto{j:03d}", "model": model, "target": {"device": device, "count": count}, "format": "auto",
                     "limits": {"min_decode_tokens_per_s": 5}})
    return {"version": 1, "deployments": deps}


def main_() -> None:
    """Write the spec, time it three ways, print the times."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deployments", type=int, default=100)
    ap.add_argument("--auto", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "deploy.yaml"
        spec.write_text(yaml.safe_dump(make_spec(a.deployments, a.auto), sort_keys=False))
        total = a.deployments + a.auto
        checker = Checker()
        _ = checker.catalog, checker.registry  # catalogs loaded once, outside the library timing
        lib = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            results = Checker(checker.catalog, checker.registry).check_all(load_specs([spec]))
            render_json(results)
            lib.append(time.perf_counter() - t)
        passed = sum(r.passed for r in results)
        cmd = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                rc = main(["check", str(spec), "--format", "json"])
            cmd.append(time.perf_counter() - t)
        proc = []
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        for _ in range(a.repeat):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "planner.cli", "check", str(spec), "--format", "json"], env=env,
                           stdout=subprocess.DEVNULL, check=False)
            proc.append(time.perf_counter() - t)
    print(f"{total} deployments ({a.deployments} pinned format, {a.auto} format: auto), {passed} pass, exit code {rc}")
    print(f"  library (spec -> results -> JSON): best {min(lib):.3f} s   ({min(lib) / total * 1000:.1f} ms per deployment)")
    print(f"  main(['check', ...]) in-process:   best {min(cmd):.3f} s   (catalogs loaded from the cache)")
    print(f"  python -m planner.cli check:       best {min(proc):.3f} s   (interpreter start and imports included)")


if __name__ == "__main__":
    main_()
