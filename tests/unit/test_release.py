"""Quality relative to a quantized release (planner.cost.release): gpt-oss MXFP4 experts, DeepSeek FP8."""

from __future__ import annotations

import pytest

from planner.cost.evaluate import evaluate
from planner.cost.model import ModelCost
from planner.cost.release import release_effect
from planner.formats import get_format
from planner.models.readers.hf_config import spec_from_hf_config
from planner.plan import target_from_catalog
from planner.recommend import explain, recommend
from planner.runtimes import RUNTIMES

GIB = 1024**3


def _plan(mc: ModelCost, fmt: str, runtime: str, catalog, device: str = "h200", count: int = 1):
    target = target_from_catalog(catalog.get(device), count)
    return evaluate(mc, get_format(fmt), RUNTIMES[runtime], target, context=4096)


@pytest.mark.parametrize("model", ["gpt-oss-20b", "gpt-oss-120b", "deepseek-v3", "deepseek-r1"])
def test_bundled_quantized_releases_state_their_precision_with_a_source(registry, model: str) -> None:
    spec = registry.get(model)
    assert spec.native_dtype in ("mxfp4", "float8_e4m3")
    assert spec.native_dtype_source and spec.native_dtype_source.startswith("https://huggingface.co/")


def test_gpt_oss_released_format_is_lossless_and_up_conversion_gains_nothing(registry, catalog) -> None:
    mc = ModelCost(registry.get("gpt-oss-20b"))
    mx, q8, bf16 = (_plan(mc, f, rt, catalog) for f, rt in (("mxfp4", "vllm"), ("Q8_0", "llama.cpp"), ("bf16", "vllm")))
    assert mx.quality["kld"] == 0 and "keeps it exactly" in mx.quality["release"]
    # BF16 stores the MXFP4 values exactly: no loss, no gain, more memory
    assert bf16.quality["kld"] == 0 and bf16.weights_bytes > mx.weights_bytes + 20 * GIB
    assert "gains nothing" in bf16.quality["release"] and "GiB more" in bf16.quality["release"]
    # Q8_0 re-rounds the experts at more bits: never better than the release, and bigger
    assert q8.quality["kld"] >= mx.quality["kld"] and q8.weights_bytes > mx.weights_bytes
    assert "gains nothing" in q8.quality["release"]


def test_gpt_oss_down_conversion_loses_and_gguf_mxfp4_moe_loses_only_on_its_q8_attention(registry, catalog) -> None:
    mc = ModelCost(registry.get("gpt-oss-20b"))
    q4 = _plan(mc, "IQ4_XS", "llama.cpp", catalog)
    nv = _plan(mc, "nvfp4", "vllm", catalog)
    moe = _plan(mc, "MXFP4_MOE", "llama.cpp", catalog)
    assert q4.quality["kld"] > 0.005 and "loses against the release" in q4.quality["release"]
    assert nv.quality["kld"] > 0.005 and "loses against the release" in nv.quality["release"]  # 4-bit, other scales
    # 2880-wide expert rows do not fit 256-wide K-quant blocks: Q4_K_M stores them as Q5_0, more bits than released
    assert "gains nothing" in _plan(mc, "Q4_K_M", "llama.cpp", catalog).quality["release"]
    eff = release_effect(mc.spec, get_format("MXFP4_MOE"), mc.tensors)
    assert eff is not None and eff.kept_share == 1.0 and 0 < eff.requant_share < 0.2  # attention + embeddings only
    assert 0 < moe.quality["kld"] < q4.quality["kld"] / 3  # only the Q8_0 share is re-quantized
    # ...at Q8_0, so it loses less than the Q8_0 file, which also re-rounds the experts
    q8 = _plan(mc, "Q8_0", "llama.cpp", catalog)
    assert moe.quality["kld"] < q8.quality["kld"] / 5 and "as Q8_0" in moe.quality["note"]


def test_deepseek_fp8_release(registry, catalog) -> None:
    mc = ModelCost(registry.get("deepseek-v3"))
    fp8 = _plan(mc, "fp8", "vllm", catalog, count=8)
    bf16 = _plan(mc, "bf16", "vllm", catalog, count=8)
    q4 = _plan(mc, "Q4_K_M", "llama.cpp", catalog, count=8)
    assert fp8.quality["kld"] == 0 and "keeps it exactly" in fp8.quality["release"]
    assert bf16.quality["kld"] == 0 and "gains nothing" in bf16.quality["release"]
    assert bf16.weights_bytes > 1.8 * fp8.weights_bytes
    assert q4.quality["kld"] > 0.005 and "loses against the release" in q4.quality["release"]


def test_a_bf16_release_is_not_adjusted(registry) -> None:
    mc = ModelCost(registry.get("llama-3-8b"))
    assert release_effect(mc.spec, get_format("Q8_0"), mc.tensors) is None


def _small_moe(quant: dict) -> dict:
    return {"architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "vocab_size": 4096, "hidden_size": 256,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
            "intermediate_size": 256, "num_local_experts": 8, "experts_per_token": 2, "num_experts_per_tok": 2,
            "sliding_window": 128, "layer_types": ["sliding_attention", "full_attention"],
            "max_position_embeddings": 4096, "attention_bias": True, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "quantization_config": quant}


def test_a_checkpoint_read_with_mxfp4_or_fp8_config_is_rated_against_its_release(catalog) -> None:
    spec = spec_from_hf_config(_small_moe({"quant_method": "mxfp4"}), "/models/tiny-oss/config.json")
    assert spec.native_dtype == "mxfp4" and "quantization_config" in (spec.native_dtype_source or "")
    mc = ModelCost(spec)
    assert _plan(mc, "mxfp4", "vllm", catalog).quality["kld"] == 0
    assert _plan(mc, "Q4_K_M", "llama.cpp", catalog).quality["kld"] > 0
    fp8 = spec_from_hf_config({**_small_moe({"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]})},
                              "/models/tiny-fp8/config.json")
    assert fp8.native_dtype == "float8_e4m3"
    eff = release_effect(fp8, get_format("bf16"), ModelCost(fp8).tensors)
    assert eff is not None and eff.upcast_share == 1.0 and eff.extra_bytes > 0 and eff.gains_nothing


def test_recommend_gpt_oss_120b_on_h100_keeps_mxfp4_and_says_so(registry, catalog) -> None:
    mc = ModelCost(registry.get("gpt-oss-120b"))
    target = target_from_catalog(catalog.get("h100-sxm"))
    for prefer in ("balanced", "quality"):
        rec = recommend(mc, target, context=8192, prefer=prefer)
        # either MXFP4 deployment keeps the release (vLLM's mxfp4, llama.cpp's MXFP4_MOE); which is faster is the
        # speed model's call (vLLM's constants are calibrated on its 0.7 engine's per-step cost)
        assert rec.best.format_id in ("mxfp4", "MXFP4_MOE")
        up = [p for p in rec.plans if p.fits and "gains nothing" in p.quality.get("release", "")]
        assert up and all(rec.plans.index(p) > rec.plans.index(rec.best) for p in up)
        reasons = " ".join(explain(rec.best, rec.plans, prefer))
        assert f"released in MXFP4 (routed experts): {rec.best.format_id} keeps it exactly" in reasons
        assert "gains nothing" in reasons
