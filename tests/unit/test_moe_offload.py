"""MoE expert offload in llama.cpp (--n-cpu-moe): placement, speed mechanism, choice against the layer split, flags."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import pytest

from planner.cost.evaluate import evaluate
from planner.cost.model import ModelCost
from planner.cost.offload import (
    OP_OFFLOAD_MIN_BATCH, expert_bytes_per_layer, place_expert_offload, predict_offload_speeds,
)
from planner.formats import get_format
from planner.plan import GIB, target_from_catalog
from planner.recommend import explain, recommend
from planner.runtimes import get_runtime

FLAGS = json.loads((Path(__file__).resolve().parents[2] / "planner" / "data" / "engine_flags.json").read_text())


@pytest.fixture(scope="module")
def oss120(registry):
    return ModelCost(registry.get("gpt-oss-120b"))


def _target(catalog, ram_gib=96, host_gb_s=None, device="rtx-4090"):
    t = target_from_catalog(catalog.get(device), 1, host_ram_bytes=ram_gib * GIB)
    return dataclasses.replace(t, host_bandwidth_gb_s=host_gb_s) if host_gb_s else t


def _forced(plan, mc, fmt_id, target, n, prompt=None):
    """The same candidate with exactly n layers' experts in RAM, speeds computed."""
    fmt, rt = get_format(fmt_id), get_runtime("llama.cpp")
    lay = mc.layout(fmt)
    p = dataclasses.replace(plan, per_device=[], warnings=[], offload_alternative={}, _speeds=None, speed_fn=None,
                            prompt_tokens=prompt or plan.prompt_tokens)
    assert place_expert_offload(p, mc, lay, fmt, rt, target, plan.kv_dtype, True, cpu_layers=n)
    predict_offload_speeds(p, mc, lay, fmt, rt, target, plan.kv_dtype, "native", None)
    return p


def test_gpt_oss_120b_on_a_4090_gets_expert_offload_faster_than_the_layer_split(catalog, oss120):
    p = evaluate(oss120, get_format("MXFP4_MOE"), get_runtime("llama.cpp"), _target(catalog), context=8192)
    assert p.fits and p.layout == "expert-offload"
    n = p.cpu_moe_layers
    assert 0 < n < oss120.spec.num_layers and p.gpu_layers == oss120.spec.num_layers
    alt = p.offload_alternative
    assert alt["layout"] == "partial-offload" and 0 < alt["gpu_layers"] < oss120.spec.num_layers
    assert p.decode_tokens_per_s > alt["decode_tokens_per_s"] > 0  # both predicted, the faster kept
    assert any("layer split" in w and "--n-cpu-moe" in w for w in p.warnings)  # the note shows both predictions
    argv = shlex.split(p.launch)
    assert argv[argv.index("-ngl") + 1] == "999" and argv[argv.index("--n-cpu-moe") + 1] == str(n)
    known = set(FLAGS["llama-server"]["flags"])
    assert {a for a in argv if a.startswith("-")} <= known


def test_expert_offload_memory_is_the_first_n_layers_experts_and_n_is_minimal(catalog, oss120):
    t = _target(catalog)
    p = evaluate(oss120, get_format("MXFP4_MOE"), get_runtime("llama.cpp"), t, context=8192)
    lay = oss120.layout(get_format("MXFP4_MOE"))
    exps = expert_bytes_per_layer(oss120, get_format("MXFP4_MOE"))
    n = p.cpu_moe_layers
    ram_experts = sum(exps.resident[:n])
    assert p.host_bytes == ram_experts + lay.embed_bytes  # the token embedding stays on the host too
    gpu = p.per_device[0]
    assert gpu.weights_bytes == lay.sum_layers - ram_experts + lay.head_bytes
    assert gpu.kv_cache_bytes == p.kv_cache_bytes  # the whole KV cache stays on the GPU
    assert gpu.total_bytes <= gpu.usable_bytes
    # one layer fewer in RAM overflows the GPU: N is the fewest that fit
    fewer = _forced(p, oss120, "MXFP4_MOE", t, n - 1)
    assert fewer.per_device[0].total_bytes > fewer.per_device[0].usable_bytes
    # routed experts are most of gpt-oss-120b: 128 experts x 3 matrices x 2880 x 2880 per layer, MXFP4 (4.25 bits)
    assert exps.resident[0] == pytest.approx(128 * 3 * 2880 * 2880 * 4.25 / 8, rel=0.01)


def test_decode_reads_only_active_experts_from_ram_and_prefill_streams_them_over_pcie(catalog, oss120):
    t = _target(catalog)
    base = evaluate(oss120, get_format("MXFP4_MOE"), get_runtime("llama.cpp"), t, context=8192)
    n = base.cpu_moe_layers
    more = _forced(base, oss120, "MXFP4_MOE", t, n + 6)
    assert more.decode_tokens_per_s < base.decode_tokens_per_s
    fast_ram = _forced(base, oss120, "MXFP4_MOE", dataclasses.replace(t, host_bandwidth_gb_s=400.0), n)
    assert fast_ram.decode_tokens_per_s > base.decode_tokens_per_s
    # per token only k/E of the RAM experts are read: far less time than reading them all at RAM bandwidth
    exps = expert_bytes_per_layer(oss120, get_format("MXFP4_MOE"))
    all_at_ram_bw = sum(exps.resident[:n]) / (t.host_bandwidth_gb_s * 1e9)
    assert 1 / base.decode_tokens_per_s < all_at_ram_bw / 5
    # a big prompt copies the RAM experts over PCIe once per 512-token micro-batch: 4 micro-batches take ~4x one
    one = _forced(base, oss120, "MXFP4_MOE", t, n, prompt=512)
    four = _forced(base, oss120, "MXFP4_MOE", t, n, prompt=2048)
    assert four.prefill_tokens_per_s == pytest.approx(one.prefill_tokens_per_s, rel=0.15)
    pcie_floor = sum(exps.resident[:n]) / 31.5e9  # PCIe 4 x16, one direction
    assert 512 / one.prefill_tokens_per_s >= pcie_floor
    # below ggml's op-offload batch the CPU multiplies the experts itself: no PCIe copy for a tiny prompt
    tiny = _forced(base, oss120, "MXFP4_MOE", t, n, prompt=OP_OFFLOAD_MIN_BATCH - 1)
    assert tiny.ttft_s < pcie_floor


def test_ram_too_small_or_unknown_is_the_reason(catalog, oss120):
    small = evaluate(oss120, get_format("MXFP4_MOE"), get_runtime("llama.cpp"), _target(catalog, ram_gib=16),
                     context=8192)
    assert not small.fits and "system RAM" in small.reason
    unknown = evaluate(oss120, get_format("MXFP4_MOE"), get_runtime("llama.cpp"),
                       target_from_catalog(catalog.get("rtx-4090")), context=8192)
    assert not unknown.fits and "--ram" in unknown.reason


def test_dense_models_and_other_runtimes_keep_the_layer_split(catalog, registry, oss120):
    dense = ModelCost(registry.get("llama-3.1-70b"))
    p = evaluate(dense, get_format("Q4_K_M"), get_runtime("llama.cpp"), _target(catalog), context=8192)
    assert p.layout == "partial-offload" and p.cpu_moe_layers is None and "--n-cpu-moe" not in p.launch
    o = evaluate(oss120, get_format("MXFP4_MOE"), get_runtime("ollama"), _target(catalog), context=8192)
    assert o.layout == "partial-offload" and not o.offload_alternative
    # a MoE model that fits the GPU whole stays there
    small = ModelCost(registry.get("qwen3-30b-a3b"))
    q = evaluate(small, get_format("Q4_K_M"), get_runtime("llama.cpp"), _target(catalog), context=8192)
    assert q.layout == "single" and q.cpu_moe_layers is None


def test_qwen3_30b_q8_on_a_4090_offloads_experts(catalog, registry):
    mc = ModelCost(registry.get("qwen3-30b-a3b"))
    p = evaluate(mc, get_format("Q8_0"), get_runtime("llama.cpp"), _target(catalog, ram_gib=64), context=8192)
    assert p.fits and p.layout == "expert-offload"
    assert p.decode_tokens_per_s > p.offload_alternative["decode_tokens_per_s"]


def test_offloaded_plan_text_names_gpu_and_ram_parts(catalog, oss120):
    rec = recommend(oss120, _target(catalog), context=8192, formats=[get_format("MXFP4_MOE")],
                    runtimes=[get_runtime("llama.cpp")])
    assert rec.best is not None and rec.best.layout == "expert-offload"
    first = explain(rec.best, rec.plans, "balanced")[0]
    assert "GPU part" in first and "RAM part" in first and "fits:" not in first
    ram = float(first.split("RAM part ")[1].split(" GiB")[0])
    assert ram == pytest.approx(rec.best.host_bytes / GIB, abs=0.05)
    d = rec.best.as_dict()
    assert d["cpu_moe_layers"] == rec.best.cpu_moe_layers and d["offload_alternative"]["layout"] == "partial-offload"


def test_a_decode_batch_of_32_sequences_copies_the_ram_experts_over_pcie(catalog, oss120):
    t = _target(catalog)
    base = evaluate(oss120, get_format("MXFP4_MOE"), get_runtime("llama.cpp"), t, context=4096)
    n = base.cpu_moe_layers
    below = _forced(dataclasses.replace(base, concurrency=OP_OFFLOAD_MIN_BATCH - 1), oss120, "MXFP4_MOE", t, n)
    at = _forced(dataclasses.replace(base, concurrency=OP_OFFLOAD_MIN_BATCH), oss120, "MXFP4_MOE", t, n)
    exps = expert_bytes_per_layer(oss120, get_format("MXFP4_MOE"))
    # ggml runs the step's expert matmuls on the GPU once 32 tokens share them: every RAM expert crosses PCIe
    assert 1 / at.decode_tokens_per_s >= sum(exps.resident[:n]) / 31.5e9
    assert at.throughput_tokens_per_s < below.throughput_tokens_per_s
