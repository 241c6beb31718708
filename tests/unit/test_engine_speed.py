"""Serving-engine speeds: calibrated mechanisms (per-SM kernel caps, per-step cost), speed bases and bands, ranking
ties, and MXFP4/NVFP4 sized from their block layouts on any model."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from planner.cost.evaluate import evaluate
from planner.cost.model import ModelCost
from planner.cost.speed import BASES, EFFICIENCY, speed_basis
from planner.formats import GGML_TYPES, get_format
from planner.hardware.catalog import load_catalog
from planner.hardware.targets import manual_device
from planner.models.profiles import load_registry
from planner.plan import GIB, target_from_catalog
from planner.recommend import rank
from planner.runtimes import get_runtime

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


@pytest.fixture(scope="module")
def mc8():
    return ModelCost(load_registry().get("llama-3.1-8b"))


def _plan(mc, fmt, runtime, device, cat, **kw):
    dev = device if not isinstance(device, str) else cat.get(device)
    return evaluate(mc, get_format(fmt), get_runtime(runtime), target_from_catalog(dev), context=4096, **kw)


def test_vllm_w4a16_on_h100_is_capped_per_sm_not_by_hbm(mc8, cat):
    """Marlin W4A16 at batch 1 streams far below an H100's HBM peak (the per-SM cap), unlike bf16."""
    h100 = cat.get("h100-sxm")
    awq, bf16 = _plan(mc8, "awq-int4", "vllm", h100, cat), _plan(mc8, "bf16", "vllm", h100, cat)
    awq_bytes = mc8.layout(get_format("awq-int4")).sum_active
    bf16_bytes = mc8.layout(get_format("bf16")).sum_active
    step = EFFICIENCY[("vllm", "cuda")].step_overhead_us * 1e-6
    awq_gb_s = awq_bytes / (1 / awq.decode_tokens_per_s - step) / 1e9
    bf16_gb_s = bf16_bytes / (1 / bf16.decode_tokens_per_s - step) / 1e9
    assert awq_gb_s < 0.6 * h100.mem_bandwidth_gb_s < bf16_gb_s
    # still faster than bf16 overall: a third of the bytes
    assert awq.decode_tokens_per_s > bf16.decode_tokens_per_s


def test_transformers_bf16_slower_than_llamacpp_f16(mc8, cat):
    """Eager transformers pays a per-layer dispatch cost that llama.cpp's graph does not."""
    for dev in ("h100-sxm", "rtx-4090", "a100-80gb-sxm"):
        hf = _plan(mc8, "bf16", "transformers", dev, cat).decode_tokens_per_s
        lc = _plan(mc8, "F16", "llama.cpp", dev, cat).decode_tokens_per_s
        assert 0 < hf < lc, dev


def test_vllm_sglang_trtllm_do_not_share_all_constants():
    vllm, sglang, trt = (EFFICIENCY[(e, "cuda")] for e in ("vllm", "sglang", "trtllm"))
    assert vllm.provenance == "calibrated" and trt.provenance == "calibrated" and sglang.provenance == "assumed"
    assert (vllm.bandwidth, vllm.step_overhead_us) != (trt.bandwidth, trt.step_overhead_us)


def test_speed_basis_by_device_class(cat):
    assert speed_basis("vllm", cat.get("h100-sxm"))[0] == "calibrated on this device class"
    assert speed_basis("vllm", cat.get("rtx-4090"))[0] == "calibrated elsewhere"  # fitted on Ampere/Hopper only
    assert speed_basis("sglang", cat.get("h100-sxm"))[0] == "assumed"
    assert speed_basis("vllm", manual_device(24, 936))[0] == "calibrated elsewhere"
    # weaker basis, wider band
    widths = [speed_basis("vllm", cat.get(d))[1] for d in ("h100-sxm", "rtx-4090")] + [speed_basis("sglang", cat.get("h100-sxm"))[1]]
    assert widths == sorted(widths) and widths[0] < widths[-1]


def test_measured_calibration_is_measured_here(cat):
    from planner.cost.speed import Efficiency

    cal = {("vllm", "cuda"): Efficiency(0.7, 0.5, 10.0, "measured")}
    basis, width = speed_basis("vllm", cat.get("h100-sxm"), cal)
    assert basis == "measured here" and width < speed_basis("vllm", cat.get("h100-sxm"))[1]


def test_plan_json_has_bands_around_every_speed(mc8, cat):
    d = _plan(mc8, "fp8", "sglang", "h100-sxm", cat, concurrency=4).as_dict()
    assert d["speed_basis"] in BASES
    for name in ("decode_tokens_per_s", "decode_tokens_per_s_full_context", "throughput_tokens_per_s",
                 "prefill_tokens_per_s", "ttft_s"):
        assert 0 < d[f"{name}_low"] < d[name] < d[f"{name}_high"], name


def test_equal_speeds_rank_calibrated_first_whatever_the_input_order(mc8, cat):
    """vLLM and SGLang predict the same speed (shared kernel classes): the calibrated one wins, in any order."""
    plans = [_plan(mc8, "fp8", rt, "h100-sxm", cat) for rt in ("sglang", "vllm", "tgi")]
    assert plans[0].decode_tokens_per_s == pytest.approx(plans[1].decode_tokens_per_s)
    orders = set()
    for seed in range(4):
        shuffled = plans[:]
        random.Random(seed).shuffle(shuffled)
        orders.add(tuple(p.runtime_id for p in rank(shuffled, "balanced", None)))
    assert len(orders) == 1
    order = orders.pop()
    assert order.index("vllm") < order.index("sglang")


@pytest.mark.parametrize("model", ["llama-3.1-8b", "qwen2.5-7b"])
def test_mxfp4_on_a_dense_model_is_sized_from_its_blocks(model):
    """Every block linear of a dense model in 32-weight MXFP4 blocks (17 bytes each); norms and embeddings stay."""
    mc = ModelCost(load_registry().get(model))
    fmt = get_format("mxfp4")
    mx = GGML_TYPES["MXFP4"]
    assert mx.layout.block_bits == 32 * 4 + 8 and mx.layout.block_weights == 32
    quantized = [a for a in fmt.assignments(mc.spec, mc.tensors) if a.encoding is mx]
    linears = [t for t in mc.tensors if t.layer is not None and t.is_matrix]
    assert len(quantized) == len(linears)
    for a in quantized:
        assert a.nbytes == a.tensor.n_elements // 32 * 17
    lay = mc.layout(fmt)
    bf16 = mc.layout(get_format("bf16"))
    assert lay.sum_layers < 0.3 * bf16.sum_layers  # 4.25 bits against 16


def test_mxfp4_on_moe_keeps_experts_only_and_dense_is_not_lossless(cat):
    reg = load_registry()
    oss = ModelCost(reg.get("gpt-oss-20b"))
    mx = GGML_TYPES["MXFP4"]
    for a in get_format("mxfp4").assignments(oss.spec, oss.tensors):
        assert (a.encoding is mx) == (a.tensor.role.endswith("_exps") and a.tensor.is_matrix), a.tensor.name
    mc = ModelCost(reg.get("llama-3.1-8b"))
    p = evaluate(mc, get_format("mxfp4"), get_runtime("vllm"), target_from_catalog(cat.get("h100-sxm")), context=4096)
    assert p.quality["label"] != "lossless" and p.bits_per_weight < 8
    assert p.weights_bytes < 7 * GIB


def test_engine_perf_rows_resolve_and_carry_sources(cat):
    """Every published row names a profile, a catalog device, a format and a source (benchmarks/engines.py reads them)."""
    reg = load_registry()
    rows = list(csv.DictReader(open(ROOT / "benchmarks" / "data" / "engine_perf.csv", encoding="utf-8")))
    assert len(rows) > 100
    for r in rows:
        assert r["source"].startswith("https://"), r
        reg.get(r["model"])
        cat.get(r["device"])
        get_format(r["format"])
        assert float(r["value"]) > 0


def test_decode_and_prefill_bands_come_from_speed_p90_per_metric(mc8, cat):
    from planner.cost.speed import SPEED_P90, UNTESTED_WIDTH

    # llama.cpp on an H100 is calibrated on its device class: decode and prefill take their own p90s
    p = _plan(mc8, "Q4_K_M", "llama.cpp", "h100-sxm", cat)
    dec, pre = SPEED_P90[("llamacpp", "cuda")]
    assert p.speed_basis == "calibrated on this device class"
    assert p.speed_width("decode_tokens_per_s") == dec and p.speed_width("throughput_tokens_per_s") == dec
    assert p.speed_width("prefill_tokens_per_s") == pre and p.speed_width("ttft_s") == pre and pre != dec
    lo, hi = p.speed_range("prefill_tokens_per_s")
    assert lo == pytest.approx(p.prefill_tokens_per_s / (1 + pre)) and hi == pytest.approx(p.prefill_tokens_per_s * (1 + pre))
    # vLLM has no published prefill rows: its prefill band is the untested width, its decode band its p90
    v = _plan(mc8, "fp8", "vllm", "h100-sxm", cat)
    assert SPEED_P90[("vllm", "cuda")][1] is None
    assert v.speed_width("prefill_tokens_per_s") == UNTESTED_WIDTH
    assert v.speed_width("decode_tokens_per_s") == SPEED_P90[("vllm", "cuda")][0]
