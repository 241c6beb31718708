"""Peer comparison (not a test): the same targets through planner and through llmfit, side by side.

    python benchmarks/peers.py [--top 3]

llmfit (https://github.com/AlexsJones/llmfit, `pip install llmfit`) is the best-known peer installable from the package
index; its `fit --json` ranks models for a machine and `plan MODEL --json` sizes one model. Skips (exit 0) when it is
not installed. For each target it prints, for planner and for llmfit: the top models that fit (chosen quantization,
predicted decode tok/s, memory), and for Llama 3.1 70B whether it fits, at which quantization and speed.

Targets are described to llmfit with its overrides (--memory for GPU memory, --ram, or a bundled --profile); llmfit
has no notion of several GPUs, so 2x H100 is given as 160 GB of GPU memory (flagged in the table).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (label, planner target flags, llmfit global flags, note)
TARGETS = [
    ("this CPU box", [], [], "both probe this machine"),
    ("RTX 3060 12 GB + 64 GB RAM", ["--device", "rtx-3060-12gb", "--ram", "64GiB"], ["--memory", "12G", "--ram", "64G"], ""),
    ("RTX 4090 + 64 GB RAM", ["--device", "rtx-4090", "--ram", "64GiB"], ["--memory", "24G", "--ram", "64G"],
     "llmfit --profile nvidia-rtx-4090 plans CPU-only in 1.1.17, so its overrides are used"),
    ("M3 Max 128 GB", ["--device", "m3-max-128gb"], ["--profile", "apple-m3-max-128gb"], ""),
    ("2x H100 SXM", ["--device", "h100-sxm", "--count", "2"], ["--memory", "160G", "--ram", "512G"],
     "llmfit: one 160 GB GPU (no multi-GPU model)"),
    ("DGX Spark", ["--device", "dgx-spark"], ["--memory", "128G", "--ram", "128G"], "llmfit: a 128 GB GPU"),
]
LLMFIT_70B = "meta-llama/Llama-3.1-70B-Instruct"


def planner_json(argv: list[str]) -> dict:
    """Run planner in-process and parse its JSON."""
    from planner.cli import main

    buf = io.StringIO()
    with redirect_stdout(buf):
        main(argv)
    return json.loads(buf.getvalue())


def llmfit_json(exe: str, argv: list[str]) -> dict | None:
    """Run llmfit and parse its JSON; None when it fails (the reason goes to stderr)."""
    env = {**os.environ, "NO_COLOR": "1"}
    try:
        out = subprocess.run([exe, *argv], capture_output=True, text=True, timeout=120, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"  llmfit {' '.join(argv)}: {exc}", file=sys.stderr)
        return None
    if out.returncode != 0:
        msg = [ln for ln in out.stderr.splitlines() if "GLIBC" not in ln]
        print(f"  llmfit {' '.join(argv)}: exit {out.returncode}: {' '.join(msg)[:200]}", file=sys.stderr)
        return None
    try:
        return json.loads(out.stdout)
    except ValueError:
        return None


def main() -> int:
    """Print one table per target, then the 70B comparison."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", type=int, default=3)
    args = ap.parse_args()
    exe = shutil.which("llmfit") or str(Path(sys.executable).with_name("llmfit"))
    if not Path(exe).exists():
        print("llmfit is not installed (pip install llmfit): skipped")
        return 0
    rows_70b = []
    for label, pflags, lflags, note in TARGETS:
        print(f"\n### {label}" + (f" ({note})" if note else ""))
        print("| # | planner model | quant | tok/s | GiB | llmfit model | quant | tok/s | GB | fit |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        mine = planner_json(["recommend", *pflags, "--json", "--top", str(args.top)])["ranked"]
        theirs = (llmfit_json(exe, [*lflags, "fit", "--json", "-n", str(args.top)]) or {}).get("models", [])
        for i in range(args.top):
            a = mine[i] if i < len(mine) else None
            b = theirs[i] if i < len(theirs) else None
            left = (f"{a['model']} | {a['plan']['format']} | {a['plan']['decode_tokens_per_s']:.1f} | "
                    f"{a['plan']['memory_bytes'] / 2**30:.1f}") if a else "- | - | - | -"
            right = (f"{b['name']} | {b.get('best_quant') or '-'} | {b.get('estimated_tps') or 0:.1f} | "
                     f"{b.get('memory_required_gb') or 0:.1f} | {b.get('fit_level')}") if b else "- | - | - | - | -"
            print(f"| {i + 1} | {left} | {right} |")
        p70 = planner_json(["recommend", "--model", "70B", *pflags, "--json"])
        rec = p70.get("recommended")
        l70 = llmfit_json(exe, [*lflags, "plan", LLMFIT_70B, "--context", "8192", "--json"]) or {}
        cur = l70.get("current") or {}
        rows_70b.append((label, rec, l70.get("quantization"), cur))
    print("\n### Llama 3.1 70B, context 8,192")
    print("| target | planner: fits | format | tok/s | llmfit: fit | quant | mode | tok/s |")
    print("|---|---|---|---|---|---|---|---|")
    for label, rec, quant, cur in rows_70b:
        left = (f"yes | {rec['format']} | {rec['decode_tokens_per_s']:.1f}" if rec else "no | - | -")
        right = (f"{cur.get('fit_level', '-')} | {quant or '-'} | {cur.get('run_mode', '-')} | "
                 f"{cur.get('estimated_tps') or 0:.1f}") if cur else "- | - | - | -"
        print(f"| {label} | {left} | {right} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
