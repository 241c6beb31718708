"""The checkpoints `planner quantize` writes, opened by the runtimes' own loaders on CPU and compared with planner's
own dequantization of the same files:

- GPTQ (gptq-int4 with act-order, rtn-int4): transformers + optimum + gptqmodel (its `gptq_torch` CPU kernel);
- AWQ (awq-int4, AutoAWQ GEMM layout): transformers + gptqmodel (its CPU AWQ kernel);
- NF4: transformers + bitsandbytes' CPU backend (Linear4bit);
- FP8: transformers + compressed-tensors (decompressed on load: CPUs have no FP8 matmul), weights compared;
- MLX 4/8-bit: mlx-lm's `load` on Linux (mlx[cpu]).

Each runs the loader's model on the same tokens as transformers running planner's dequantized float32 weights
(planner.measure.quality.dequant, what `planner eval` measures) and requires the same logits up to the runtime's
compute precision.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from planner.formats import get_format  # noqa: E402
from planner.measure.quality.dequant import write_dequantized  # noqa: E402
from planner.quantize.config import config_for  # noqa: E402
from planner.quantize.pipeline import quantize_model  # noqa: E402
from quantize_models import make_hf_model  # noqa: E402

SAMPLE = (Path(__file__).resolve().parents[2] / "planner" / "data" / "eval_sample.txt").read_text()[:2000]
TOKENS = [list(range(3, 67))]


def _have(*mods: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in mods)


def _why(*mods: str) -> str:
    missing = [m for m in mods if importlib.util.find_spec(m) is None]
    return f"{', '.join(missing)} not installed (pip install '.[dev]')"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A 2-block Llama whose rows all fit group 128 (so every block linear is quantized)."""
    d = tmp_path_factory.mktemp("loaders") / "llama"
    make_hf_model(d, hidden=256, intermediate=512, layers=2, heads=4, kv_heads=2, vocab=512, dtype="BF16")
    return d


def _written(tiny: Path, fmt: str, tmp: Path) -> tuple[Path, "torch.Tensor"]:
    """The checkpoint in `fmt` and transformers' logits of planner's dequantized weights on TOKENS."""
    from transformers import AutoModelForCausalLM

    out = tmp / fmt
    quantize_model(tiny, fmt, out, calib=SAMPLE)
    plain = tmp / f"{fmt}-dequantized"
    write_dequantized(out, config_for(get_format(fmt)), plain)
    ref = AutoModelForCausalLM.from_pretrained(plain, dtype=torch.float32)
    with torch.no_grad():
        return out, ref(torch.tensor(TOKENS)).logits


def _close(got: "torch.Tensor", ref: "torch.Tensor", rel: float, top1: float) -> None:
    diff = float((got.float() - ref).abs().max())
    assert diff <= rel * float(ref.abs().max()), (diff, float(ref.abs().max()))
    agree = float((got.argmax(-1) == ref.argmax(-1)).float().mean())
    assert agree >= top1, agree


GPTQ_MODS = ("transformers", "optimum", "gptqmodel")


@pytest.mark.real_runtime
@pytest.mark.skipif(not _have(*GPTQ_MODS), reason=_why(*GPTQ_MODS))
@pytest.mark.parametrize("fmt", ["gptq-int4", "rtn-int4"])
def test_gptq_loads_in_transformers_gptqmodel(tiny, tmp_path, fmt):
    from transformers import AutoModelForCausalLM, GPTQConfig

    out, ref = _written(tiny, fmt, tmp_path)
    # gptq_torch: gptqmodel's pure-torch CPU kernel (the ATen int4 kernel it picks by default mis-handles
    # act-order g_idx at these sizes); it reads qweight/qzeros/scales/g_idx as written
    model = AutoModelForCausalLM.from_pretrained(out, device_map="cpu", dtype=torch.float32,
                                                 quantization_config=GPTQConfig(bits=4, backend="gptq_torch"))
    layer = model.model.layers[0].mlp.down_proj
    assert type(layer).__module__.startswith("gptqmodel"), type(layer)
    with torch.no_grad():
        got = model(torch.tensor(TOKENS)).logits
    _close(got, ref, 0.01, 0.98)  # the kernel computes in fp16


@pytest.mark.real_runtime
@pytest.mark.skipif(not _have("transformers", "gptqmodel"), reason=_why("transformers", "gptqmodel"))
def test_awq_loads_in_transformers_gptqmodel(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    out, ref = _written(tiny, "awq-int4", tmp_path)
    model = AutoModelForCausalLM.from_pretrained(out, device_map="cpu", dtype=torch.float32)
    layer = model.model.layers[0].self_attn.q_proj
    assert type(layer).__module__.startswith("gptqmodel") and "Awq" in type(layer).__name__, type(layer)
    with torch.no_grad():
        got = model(torch.tensor(TOKENS)).logits
    _close(got, ref, 0.02, 0.98)


@pytest.mark.real_runtime
@pytest.mark.skipif(not _have("transformers", "bitsandbytes"), reason=_why("transformers", "bitsandbytes"))
def test_nf4_loads_in_bitsandbytes_cpu(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    out, ref = _written(tiny, "nf4", tmp_path)
    model = AutoModelForCausalLM.from_pretrained(out, device_map="cpu", dtype=torch.float32)
    assert type(model.model.layers[0].mlp.down_proj).__name__ == "Linear4bit"
    with torch.no_grad():
        got = model(torch.tensor(TOKENS)).logits
    _close(got, ref, 0.03, 0.95)  # bitsandbytes computes in the checkpoint's bfloat16


@pytest.mark.real_runtime
@pytest.mark.skipif(not _have("transformers", "compressed_tensors"), reason=_why("transformers", "compressed_tensors"))
def test_fp8_loads_in_compressed_tensors(tiny, tmp_path):
    """compressed-tensors keeps the weights as float8_e4m3fn with weight_scale and dequantizes in the forward (which
    also quantizes activations to FP8, per token, as the config asks): the loaded e4m3 values times the loaded
    scales must be planner's dequantized weights exactly, and the model must run."""
    from transformers import AutoModelForCausalLM

    from planner.measure.quality.dequant import _Checkpoint

    out, _ = _written(tiny, "fp8", tmp_path)
    model = AutoModelForCausalLM.from_pretrained(out, device_map="cpu", dtype=torch.float32)
    plain = _Checkpoint(tmp_path / "fp8-dequantized")
    mods = dict(model.named_modules())
    checked = 0
    for name in plain.raw:
        if not name.endswith("proj.weight"):
            continue
        ours = plain.floats(name)
        mod = mods[name[: -len(".weight")]]
        assert mod.weight.dtype == torch.float8_e4m3fn and tuple(mod.weight_scale.shape) == (ours.shape[0], 1)
        got = (mod.weight.detach().float() * mod.weight_scale.detach().float()).numpy()
        np.testing.assert_allclose(got, ours, rtol=1e-6, atol=0, err_msg=name)
        checked += 1
    assert checked == 14
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor(TOKENS)).logits).all()


@pytest.mark.real_runtime
@pytest.mark.skipif(not _have("mlx", "mlx_lm", "transformers"), reason=_why("mlx", "mlx_lm", "transformers"))
@pytest.mark.parametrize("fmt", ["mlx-4bit", "mlx-8bit"])
def test_mlx_loads_in_mlx_lm(tiny, tmp_path, fmt):
    import mlx.core as mx
    from mlx_lm import load

    out, ref = _written(tiny, fmt, tmp_path)
    model, _tok = load(str(out))
    got = torch.from_numpy(np.array(model(mx.array(np.array(TOKENS))).astype(mx.float32)))
    _close(got, ref, 0.01, 0.98)
