"""The cost model: KV cache formulas, runtime rules, placement, fit, speed monotonicity, quality."""

from __future__ import annotations

import pytest

from planner.cost.evaluate import evaluate
from planner.cost.model import ModelCost
from planner.formats import get_format
from planner.models.spec import MLASpec, ModelSpec
from planner.plan import GIB, Target, target_from_catalog
from planner.runtimes import get_runtime


def spec(**kw) -> ModelSpec:
    base = dict(id="t", name="t", family="t", architecture="llama", vocab_size=32000, hidden_size=4096, num_layers=32,
                num_heads=32, num_kv_heads=8, intermediate_size=14336, max_context=131072, params_published=1,
                params_source="test")
    base.update(kw)
    return ModelSpec(**base)


def test_gqa_kv_cache_matches_hand_computation():
    # Llama-3-8B shape: 2 (K,V) x 8 heads x 128 dims x 32 layers x 2 bytes = 131072 bytes per token.
    mc = ModelCost(spec())
    assert mc.kv_bytes(8192, "f16") == 131072 * 8192
    assert mc.kv_bytes(8192, "q8_0") == pytest.approx(131072 * 8192 * 34 / 64)  # 34-byte blocks of 32 values
    assert mc.kv_bytes(1000, "f16", sequences=4) == 4 * 131072 * 1000


def test_mla_kv_cache_stores_the_latent_only():
    m = spec(num_layers=61, num_heads=128, num_kv_heads=128, hidden_size=7168,
             mla=MLASpec(q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128))
    mc = ModelCost(m)
    assert mc.kv_bytes(1, "f16") == 61 * (512 + 64) * 2  # DeepSeek-V3: 70,272 bytes per token
    full = mc.kv_bytes(1, "f16", mla_aware=False)
    assert full == 61 * 128 * (128 + 64 + 128) * 2  # what a runtime without MLA caches


def test_sliding_window_layers_are_capped():
    m = spec(sliding_window=4096, global_every=6, num_layers=12)  # Gemma-3-like: 5 local, 1 global
    mc = ModelCost(m)
    per_layer_token = 2 * 8 * 128 * 2
    expected = per_layer_token * (2 * 32768 + 10 * 4096)  # 2 global layers hold all tokens, 10 hold the window
    assert mc.kv_bytes(32768, "f16") == expected
    assert mc.kv_bytes(1000, "f16") == per_layer_token * 12 * 1000


@pytest.mark.parametrize("device,fmt,runtime,mode", [
    ("rtx-3090", "fp8", "vllm", "weight_only"),  # no FP8 tensor cores on sm86: Marlin W8A16
    ("rtx-4090", "fp8", "vllm", "native"),
    ("m3-max", "awq-int4", "vllm", "no"),
    ("m3-max", "awq-int4", "mlx", "native"),
    ("v100-sxm2-32gb", "bf16", "vllm", "no"),
    ("v100-sxm2-32gb", "bf16", "transformers", "no"),
    ("m2-ultra", "Q4_K_M", "llama.cpp", "native"),
    ("mi300x", "awq-int4", "vllm", "no"),
    ("h100-sxm", "Q4_K_M", "mlx", "no"),
    ("rtx-4090", "TQ1_0", "llama.cpp", "no"),
])
def test_runtime_rules_follow_the_reference_facts(catalog, device, fmt, runtime, mode):
    assert get_runtime(runtime).support(get_format(fmt), catalog.get(device)).mode == mode


def test_multi_gpu_never_pools_memory(catalog, registry):
    mc = ModelCost(registry.get("llama-3.1-70b"))
    one = target_from_catalog(catalog.get("rtx-4090"), 1)
    two = target_from_catalog(catalog.get("rtx-4090"), 2)
    p1 = evaluate(mc, get_format("Q4_K_M"), get_runtime("llama.cpp"), one, context=8192)
    p2 = evaluate(mc, get_format("Q4_K_M"), get_runtime("llama.cpp"), two, context=8192)
    assert not p1.fits and p2.fits
    assert len(p2.per_device) == 2
    for d in p2.per_device:  # each GPU holds its own share within its own memory
        assert d.total_bytes <= d.usable_bytes < 24 * GIB
    tp = evaluate(mc, get_format("awq-int4"), get_runtime("vllm"), two, context=8192)
    assert tp.layout == "tensor-parallel" and len(tp.per_device) == 2
    assert tp.per_device[0].weights_bytes == pytest.approx(tp.weights_bytes / 2, rel=0.01)


def test_partial_offload_needs_host_ram_and_is_slower(catalog, registry):
    mc = ModelCost(registry.get("llama-3.1-70b"))
    dev = catalog.get("rtx-4090")
    no_ram = target_from_catalog(dev)
    with_ram = target_from_catalog(dev, 1, host_ram_bytes=128 * GIB)
    p = evaluate(mc, get_format("Q4_K_M"), get_runtime("llama.cpp"), no_ram, context=8192)
    assert not p.fits and "--ram" in p.reason
    q = evaluate(mc, get_format("Q4_K_M"), get_runtime("llama.cpp"), with_ram, context=8192)
    assert q.fits and q.layout == "partial-offload" and 0 < q.gpu_layers < 80
    assert q.host_bytes > 10 * GIB
    assert q.decode_tokens_per_s < 10  # most layers stream from system RAM


def test_longer_context_costs_memory_and_speed(catalog, registry):
    mc = ModelCost(registry.get("llama-3.1-8b"))
    t = target_from_catalog(catalog.get("h100-sxm"))
    short = evaluate(mc, get_format("Q4_K_M"), get_runtime("llama.cpp"), t, context=4096)
    long = evaluate(mc, get_format("Q4_K_M"), get_runtime("llama.cpp"), t, context=65536)
    assert long.kv_cache_bytes == 16 * short.kv_cache_bytes
    assert long.decode_tokens_per_s_full_context < short.decode_tokens_per_s_full_context


def test_smaller_formats_decode_faster_on_a_bandwidth_bound_gpu(catalog, registry):
    mc = ModelCost(registry.get("llama-3.1-8b"))
    t = target_from_catalog(catalog.get("rtx-4090"))
    speeds = [evaluate(mc, get_format(f), get_runtime("llama.cpp"), t, context=4096).decode_tokens_per_s
              for f in ("F16", "Q8_0", "Q4_K_M")]
    assert speeds[0] < speeds[1] < speeds[2]


def test_moe_decode_reads_only_active_experts(catalog, registry):
    moe = ModelCost(registry.get("qwen3-30b-a3b"))
    dense = ModelCost(registry.get("qwen3-32b"))
    t = target_from_catalog(catalog.get("h100-sxm"))
    pm = evaluate(moe, get_format("Q4_K_M"), get_runtime("llama.cpp"), t, context=4096)
    pd = evaluate(dense, get_format("Q4_K_M"), get_runtime("llama.cpp"), t, context=4096)
    assert abs(pm.weights_bytes / pd.weights_bytes - 1) < 0.15  # similar size on disk ...
    assert pm.decode_tokens_per_s > 2 * pd.decode_tokens_per_s  # ... but ~3B of 30B read per token


def test_unified_memory_uses_the_gpu_share(catalog, registry):
    dev = catalog.get("m3-max-128gb")
    t = target_from_catalog(dev)
    assert t.usable_bytes[0] == int(dev.memory_bytes * dev.gpu_usable_fraction)


def test_vllm_budget_is_a_fraction_of_total_memory(catalog, registry):
    mc = ModelCost(registry.get("llama-3.1-8b"))
    t = target_from_catalog(catalog.get("h100-sxm"))
    p = evaluate(mc, get_format("bf16"), get_runtime("vllm"), t, context=8192)
    assert p.per_device[0].usable_bytes == int(0.9 * catalog.get("h100-sxm").memory_bytes)


def test_quality_orders_formats(registry):
    from planner.cost.quality import expected_quality

    mc = ModelCost(registry.get("llama-3.1-8b"))
    q = {f: expected_quality(get_format(f), mc).kld for f in ("Q8_0", "Q4_K_M", "Q2_K", "fp16", "awq-int4")}
    assert q["fp16"] == 0 < q["Q8_0"] < q["Q4_K_M"] < q["Q2_K"]
    assert q["Q8_0"] < q["awq-int4"] < q["Q2_K"]


def test_tensor_parallel_must_divide_heads(catalog, registry):
    mc = ModelCost(registry.get("llama-3.1-8b"))
    t = target_from_catalog(catalog.get("rtx-4090"), 3)
    p = evaluate(mc, get_format("awq-int4"), get_runtime("vllm"), t, context=4096)
    assert not p.runs and "divide" in p.reason


def test_cpu_decode_is_core_bound_with_few_threads_and_bandwidth_bound_with_all(catalog, registry):
    # A 12-channel EPYC: 4 threads cannot saturate its memory (decode scales with threads), all 96 cores can
    # (more threads add nothing); a dual-channel desktop saturates with few cores.
    mc = ModelCost(registry.get("llama-3.1-8b"))
    epyc = catalog.get("cpu-epyc-genoa-12ch")

    def decode(dev, threads):
        t = target_from_catalog(dev.model_copy(update={"cpu_cores": threads}))
        return evaluate(mc, get_format("Q4_K_M"), get_runtime("llama.cpp"), t, context=4096).decode_tokens_per_s

    few, double, half_cores, all_cores = decode(epyc, 4), decode(epyc, 8), decode(epyc, 48), decode(epyc, 96)
    assert double > 1.6 * few  # core-bound: twice the threads, nearly twice the speed
    assert all_cores == pytest.approx(half_cores, rel=0.02)  # bandwidth-bound: more cores add nothing
    assert all_cores > 3 * few
    desktop = catalog.get("cpu-ddr5-dual")
    assert decode(desktop, 16) == pytest.approx(decode(desktop, 8), rel=0.02)  # 89.6 GB/s: saturated by 8 cores
    assert decode(desktop, 16) < 0.3 * all_cores  # and far below the 12-channel server


def test_cpu_decode_cannot_outrun_the_cores_unpacking_the_weights(registry):
    """On a 2-vCPU AVX2 machine (the one benchmarks/data/cpu_measured.csv was measured on) decode is bound by the
    cores' work per weight, not by the bytes: a lattice i-quant, fewest bytes, decodes slowest per weight (measured
    8B: IQ2_XXS 2.4, Q4_K_M 3.8 tok/s), and no file decodes a token faster than its prompt rate processes one."""
    from planner.cost.speed import CPU_GEMV_LATTICE_FRACTION, CPU_GEMV_PEAK_FRACTION, prefill_peak_flops
    from planner.formats import FORMATS, gguf_main_type
    from planner.hardware.targets import cpu_device
    from planner.measure.calibration import measured_caps

    dev = cpu_device("AMD EPYC", 2, 24 * 2**30, ["avx2", "fma"], measured_read_gb_s=32.8)
    target = target_from_catalog(dev)
    cal = measured_caps({}, 32.8, dev.mem_bandwidth_gb_s, "cpu")
    mc = ModelCost(registry.get("llama-3.1-8b"))
    rt = get_runtime("llama.cpp")
    plans = {f: evaluate(mc, get_format(f), rt, target, context=1024, prompt_tokens=512, calibration=cal)
             for f, fm in FORMATS.items() if fm.family == "gguf"}
    plans = {f: p for f, p in plans.items() if p.runs}
    assert {"Q8_0", "Q4_K_M", "IQ2_XXS", "IQ4_XS"} <= set(plans)
    for f, p in plans.items():
        assert p.decode_tokens_per_s < p.prefill_tokens_per_s, f
        fmt = get_format(f)
        frac = CPU_GEMV_LATTICE_FRACTION if f.startswith(("IQ1", "IQ2", "IQ3")) else CPU_GEMV_PEAK_FRACTION
        gemv = prefill_peak_flops(dev, "llamacpp", fmt.family, fmt.compute, "native", gguf_main_type(fmt)) * frac
        assert p.decode_tokens_per_s * 2 * mc.matmul_params_active <= gemv * 1.0001, f
    assert plans["IQ2_XXS"].decode_tokens_per_s < plans["Q4_K_M"].decode_tokens_per_s
    assert plans["IQ4_XS"].decode_tokens_per_s == pytest.approx(plans["Q4_K_M"].decode_tokens_per_s, rel=0.1)


def test_layers_left_in_ram_decode_no_faster_than_the_host_cores_unpack_them(catalog, registry):
    """A 70B model split between a 12 GB GPU and a server's 12-channel RAM (460.8 GB/s): the RAM no longer limits
    the host's share of each token, its cores' GEMV rate (an assumed 8-core host) does."""
    import dataclasses

    from planner.cost.speed import host_gemv_flops
    from planner.formats import gguf_main_type

    mc = ModelCost(registry.get("llama-3.1-70b"))
    t = dataclasses.replace(target_from_catalog(catalog.get("rtx-3060-12gb")), host_bandwidth_gb_s=460.8)
    for f in ("Q4_K_M", "IQ2_XXS"):
        p = evaluate(mc, get_format(f), get_runtime("llama.cpp"), t, context=4096)
        assert p.layout == "partial-offload" and p.gpu_layers < mc.spec.num_layers, f
        host_ops = 2 * mc.matmul_params_active * (1 - p.gpu_layers / mc.spec.num_layers)
        assert p.decode_tokens_per_s * host_ops <= host_gemv_flops(gguf_main_type(get_format(f))) * 1.0001, f


def test_cpu_prompt_rate_follows_the_int8_extension_llamacpp_uses(catalog):
    """I8MM (Arm SMMLA) runs Q4_0/Q8_0 at twice the SDOT rate; K-quants use SDOT; 16-bit files neither."""
    from planner.cost.speed import CPU_INT8_SPEEDUP, prefill_peak_flops
    from planner.formats import gguf_main_type

    def as_cpu(isa: list[str]):  # the M4 planned as its CPU, as llama.cpp -ngl 0 runs it
        return catalog.get("m4").model_copy(update={"backend": "cpu", "peak_fp32_tflops": None, "cpu_isa": isa})

    def peak(dev, fmt_id: str) -> float:  # type: ignore[no-untyped-def]
        f = get_format(fmt_id)
        return prefill_peak_flops(dev, "llamacpp", f.family, f.compute, "native", gguf_main_type(f))

    assert "i8mm" in catalog.get("m4").cpu_isa and "i8mm" not in catalog.get("m1").cpu_isa  # FEAT_I8MM from M2
    m4, plain = as_cpu(list(catalog.get("m4").cpu_isa)), as_cpu([])
    base = peak(plain, "Q4_0")
    assert peak(m4, "Q4_0") == pytest.approx(base * 8.0 / CPU_INT8_SPEEDUP)  # SMMLA: 32 MACs per 128 bits
    assert peak(m4, "Q4_K_M") == pytest.approx(base * 4.0 / CPU_INT8_SPEEDUP)  # SDOT: 16
    assert peak(m4, "F16") == pytest.approx(peak(plain, "F16"))


def test_probed_cpu_flags_reach_the_local_cpu_target(catalog, registry):
    """A captured snapshot's /proc/cpuinfo flags (AVX-512 VNNI) make the local CPU target's prompt rate faster."""
    import dataclasses
    import json
    from pathlib import Path

    from planner.hardware import probe
    from planner.hardware.targets import target_from_host

    snap = json.loads((Path(__file__).parent.parent / "fixtures" / "snapshots" / "nvml-no-devices.json").read_text())
    target = target_from_host(probe.interpret(snap, catalog).model_copy(update={"gpus": []}))
    assert target.device.id == "local-cpu" and "avx512_vnni" in target.device.cpu_isa
    bare = dataclasses.replace(target, device=target.device.model_copy(update={"cpu_isa": []}))
    mc = ModelCost(registry.get("llama-3.1-8b"))
    fmt, rt = get_format("Q4_K_M"), get_runtime("llama.cpp")
    fast = evaluate(mc, fmt, rt, target, context=4096).prefill_tokens_per_s
    slow = evaluate(mc, fmt, rt, bare, context=4096).prefill_tokens_per_s
    assert fast == pytest.approx(2 * slow, rel=0.05)  # VNNI: 4 int8 MACs per lane against the assumed 2


def test_llamacpp_layer_split_pipelines_a_long_prompt(catalog, registry):
    """Two GPUs in a layer split pipeline a 2048-token prompt's four 512-token micro-batches: (4 + 1) stage times
    instead of 4 x 2, so 1.6x one GPU's prompt rate; a single micro-batch (512 tokens) gains nothing."""
    mc = ModelCost(registry.get("llama-3.1-8b"))
    fmt, rt = get_format("Q4_K_M"), get_runtime("llama.cpp")
    one, two = (target_from_catalog(catalog.get("rtx-4090"), n) for n in (1, 2))

    def rate(target: Target, prompt: int) -> float:
        plan = evaluate(mc, fmt, rt, target, context=8192, prompt_tokens=prompt)
        assert plan.fits and plan.layout == ("layer-split" if target.count > 1 else "single")
        return plan.prefill_tokens_per_s

    assert rate(two, 512) == pytest.approx(rate(one, 512), rel=0.05)
    assert rate(two, 2048) / rate(one, 2048) == pytest.approx(8 / 5, rel=0.05)
