"""Fidelity of `planner quantize` on the architectures beyond Llama/Qwen (Mixtral, Qwen3-MoE, Gemma 2, Gemma 3,
Phi-3): tiny random transformers models (tests/quantize_models.make_arch_model: hidden 256, 2 layers) converted to
F16, Q8_0 and Q4_K_M, run by real llama.cpp (llama-cpp-python, in planner.native's child process) on 32 token ids
and compared with transformers' float32 logits of the same model. Not a test (tests/unit/test_quantize_archs.py
holds the bounds); this prints the numbers those bounds were set from.

Columns: KLD = mean KL divergence of llama.cpp's next-token distribution from transformers'; max |dlogit|; the
tensor bytes written against the cost model's prediction (`planner estimate`); wall seconds of the conversion.

Usage: python benchmarks/quantize_archs.py [--kinds mixtral,gemma3 ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# Python puts this script's folder first on sys.path, where benchmarks/kernels.py would shadow the `kernels`
# package that transformers imports.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

FORMATS = ("f16", "q8_0", "q4_k_m")
TOKENS = list(range(3, 35))
EXPERTS = {"qwen3moe": 4, "mixtral": 8}


def main() -> None:
    """Print one row per architecture and format."""
    from native_jobs import JOB
    from quantize_models import ARCH_KINDS, make_arch_model

    import torch

    from planner.measure.quality.metrics import mean_kl
    from planner.native import Worker
    from planner.quantize.pipeline import quantize_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", default=",".join(k for k in ARCH_KINDS if k != "phi3-longrope"))
    args = ap.parse_args()
    print(f"{'model':<10} {'format':<7} {'KLD':>9} {'max|dlogit|':>12} {'bytes':>10} {'predicted':>10} {'s':>6}")
    with tempfile.TemporaryDirectory() as tmp, Worker(JOB) as w:
        for kind in args.kinds.split(","):
            src = Path(tmp) / kind.replace("phi3", "p3") / "tiny"  # see test_quantize_archs: llama.cpp's Phi-3 name rule
            src.parent.mkdir()
            model = make_arch_model(src, kind, experts=EXPERTS.get(kind, 4))
            with torch.no_grad():
                ref = model(input_ids=torch.tensor([TOKENS])).logits[0].numpy()
            for fmt in FORMATS:
                out = src.parent / f"{fmt}.gguf"
                res = quantize_model(src, fmt, out)
                _, (got,) = w.call("logits", {"paths": [str(out)]}, [np.asarray(TOKENS, dtype=np.int32)],
                                   doing="running llama.cpp")
                print(f"{kind:<10} {fmt:<7} {mean_kl(ref, got):9.2e} {np.abs(got - ref).max():12.4f} "
                      f"{res.tensor_bytes:10d} {res.predicted_tensor_bytes:10d} {res.seconds:6.2f}")


if __name__ == "__main__":
    main()
