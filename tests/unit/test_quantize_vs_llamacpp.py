"""planner quantize against llama.cpp's own quantizer (llama_model_quantize, what llama-quantize runs) on the same F16
GGUF: the same ggml type for every tensor, and the same reconstruction error within a small margin."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader, LlamaFileType
from gguf.quants import dequantize

from planner.quantize.pipeline import quantize_model
from planner.quantize.primitives import sqnr_db

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from quantize_models import make_hf_model  # noqa: E402

needs_llama = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                 reason="llama-cpp-python is not installed (pip install '.[llamacpp]')")

# in a child process: a native crash fails the test instead of killing pytest
_LLAMA_QUANT = """
import ctypes, sys, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = int(sys.argv[3]); p.nthread = 1
sys.exit(1 if llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)) else 0)
"""


@pytest.fixture(scope="module")
def f16(tmp_path_factory) -> Path:
    """A random 8-layer Llama with 256-multiple rows (so no type falls back), as an F16 GGUF."""
    d = tmp_path_factory.mktemp("vsllama")
    make_hf_model(d / "hf", hidden=256, intermediate=512, layers=8, heads=4, kv_heads=2, vocab=512, seed=3)
    out = d / "f16.gguf"
    quantize_model(d / "hf", "F16", out, threads=1)
    return out


@pytest.mark.real_runtime
@needs_llama
@pytest.mark.parametrize("ftype", ["Q4_K_M", "IQ4_XS", "Q8_0"])
def test_same_types_and_error_as_llama_cpp_quantizer(f16, tmp_path, ftype):
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    quantize_model(f16, ftype, ours, threads=2)
    subprocess.run([sys.executable, "-c", _LLAMA_QUANT, str(f16), str(theirs), str(int(LlamaFileType[f"MOSTLY_{ftype}"]))],
                   check=True, capture_output=True)
    ref = {t.name: t for t in GGUFReader(f16).tensors}
    a = {t.name: t for t in GGUFReader(ours).tensors}
    b = {t.name: t for t in GGUFReader(theirs).tensors}
    assert {n: t.tensor_type.name for n, t in a.items()} == {n: t.tensor_type.name for n, t in b.items()}
    if ftype == "IQ4_XS":  # without an imatrix llama.cpp gives the first eighth of ffn_down Q5_K; the rest stays IQ4_XS
        assert b["blk.0.ffn_down.weight"].tensor_type.name == "Q5_K"
        assert b["blk.1.ffn_down.weight"].tensor_type.name == "IQ4_XS"
    if ftype == "Q8_0":  # no scale search, ties rounded away from zero as ggml's roundf: llama-quantize's own bytes
        assert all(np.array_equal(np.asarray(t.data), np.asarray(b[n].data)) for n, t in a.items())
    for name, t in a.items():
        if t.tensor_type.name in ("F32", "F16"):
            continue
        x = dequantize(np.asarray(ref[name].data), ref[name].tensor_type).reshape(-1)
        ya = dequantize(np.asarray(t.data), t.tensor_type).reshape(-1)
        yb = dequantize(np.asarray(b[name].data), b[name].tensor_type).reshape(-1)
        # the k-quants search sparser scale grids than llama.cpp (primitives._SEARCH): within 0.15 dB of it
        assert sqnr_db(x, ya) > sqnr_db(x, yb) - 0.15, (name, t.tensor_type.name)
