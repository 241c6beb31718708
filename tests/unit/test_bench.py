"""planner.measure.speed and planner.measure.calibration: kernels against float references, shapes, extrapolation, memory
limits, calibration records."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.measure.speed import kernels as K
from planner.measure import calibration
from planner.measure.speed import quant
from planner.measure.speed.runner import (
    ERROR_TOLERANCE, KernelRun, bench_shape, extrapolate, gguf_standin_note, kernels_for_format, run_bench,
)
from planner.measure.speed.shapes import MatmulShape, model_shapes, weights_per_token
from planner.errors import InvalidInputError, PlannerError

TORCH = K.torch_module()
needs_torch = pytest.mark.skipif(TORCH is None, reason="torch is not installed (optional; torch kernels are not tested)")
needs_cuda = pytest.mark.skipif(TORCH is None or not TORCH.cuda.is_available(), reason="needs torch with a CUDA GPU")

# Small fast settings: tiny caches and buffers so every timing is milliseconds.
FAST = dict(llc_bytes=2**20, max_sample_bytes=2 * 2**20, repeat=3, budget_s=0.01)


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PLANNER_DATA_DIR", str(tmp_path / "data"))


def _relerr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ------------------------------------------------------------------------------------------ quantization


def test_int8_roundtrip_and_sqnr():
    w = quant.random_weights(64, 256, seed=3)
    q, s = quant.quantize_int8(w)
    assert q.dtype == np.int8 and s.shape == (64,)
    assert quant.sqnr_db(w, quant.dequantize_int8(q, s)) > 38


def test_int4_layout_and_sqnr():
    w = quant.random_weights(16, 128, seed=4)
    packed, scale, mn = quant.quantize_int4(w, 32)
    assert packed.shape == (16, 64) and scale.shape == (16, 4) and scale.dtype == np.float16
    codes = quant.unpack_int4(packed)
    assert codes.max() <= 15
    assert np.array_equal(packed[:, 0] & 0x0F, codes[:, 0]) and np.array_equal(packed[:, 0] >> 4, codes[:, 1])
    assert quant.sqnr_db(w, quant.dequantize_int4(packed, scale, mn, 32)) > 17
    with pytest.raises(ValueError):
        quant.quantize_int4(w, 48)


def test_bf16_bits_round_to_nearest_even():
    x = np.array([1.0, -2.5, 3.0e-5, 1.0 + 2**-8, 1.0 + 3 * 2**-8], dtype=np.float32)
    back = quant.from_bf16_bits(quant.to_bf16_bits(x))
    assert back[0] == 1.0 and back[1] == -2.5
    assert back[3] == 1.0  # tie rounds to even
    assert back[4] == 1.0 + 2**-6
    assert np.all(np.abs(back - x) <= np.abs(x) * 2**-8)


# ------------------------------------------------------------------------------------------ kernels


@pytest.mark.parametrize("kernel", K.numpy_kernels(), ids=lambda k: k.info.id)
@pytest.mark.parametrize("m", [1, 5, 40])
def test_numpy_kernels_match_references(kernel, m):
    w = quant.random_weights(200, 256, seed=5)
    x = np.random.default_rng(6).standard_normal((m, 256), dtype=np.float32)
    state = kernel.prepare(w, "cpu")
    y = kernel.to_numpy(kernel(state, kernel.make_input(x, "cpu")))
    assert y.shape == (m, 200)
    # exactly the kernel's own (dequantized) weights, up to fp32 summation order ...
    assert _relerr(y, x @ kernel.reference_weight(w).T) < 1e-5
    # ... and the float weights within what its quantization costs
    assert _relerr(y, x @ w.T) < ERROR_TOLERANCE[kernel.info.kernel_class]
    assert kernel.nbytes(state) > 0 and kernel.nbytes(kernel.clone(state)) == kernel.nbytes(state)


def test_numpy_kernels_refuse_other_devices():
    assert K.NumpyInt8().available("cpu") is None
    assert "CPU only" in K.NumpyInt8().available("cuda:0")


def test_quantized_kernels_read_fewer_bytes():
    w = quant.random_weights(128, 512)
    sizes = {k.info.id: k.nbytes(k.prepare(w, "cpu")) for k in K.numpy_kernels()}
    assert sizes["numpy-fp32"] == 128 * 512 * 4
    assert sizes["numpy-bf16"] == 128 * 512 * 2
    assert sizes["numpy-int8"] == 128 * 512 + 128 * 4
    assert sizes["numpy-int4-g32"] == 128 * 512 // 2 + 2 * 2 * 128 * 512 // 32


@needs_torch
@pytest.mark.parametrize("kernel", [pytest.param(k, marks=pytest.mark.real_runtime) if "cpu" in k.devices else k
                                    for k in K.torch_kernels()], ids=lambda k: k.info.id)
def test_torch_kernels_match_references_on_cpu(kernel):
    why = kernel.available("cpu")
    if why:
        pytest.skip(why)
    w = quant.random_weights(128, 256, seed=7)
    x = np.random.default_rng(8).standard_normal((3, 256), dtype=np.float32)
    y = kernel.to_numpy(kernel(kernel.prepare(w, "cpu"), kernel.make_input(x, "cpu")))
    assert _relerr(y, x @ kernel.reference_weight(w).T) < 0.02  # bf16 activations
    assert _relerr(y, x @ w.T) < ERROR_TOLERANCE[kernel.info.kernel_class]


@needs_cuda
@pytest.mark.parametrize("kernel", K.torch_kernels(), ids=lambda k: k.info.id)
def test_torch_kernels_match_references_on_cuda(kernel):
    why = kernel.available("cuda:0")
    if why:
        pytest.skip(why)
    w = quant.random_weights(256, 512, seed=9)
    x = np.random.default_rng(10).standard_normal((1, 512), dtype=np.float32)
    y = kernel.to_numpy(kernel(kernel.prepare(w, "cuda:0"), kernel.make_input(x, "cuda:0")))
    assert _relerr(y, x @ w.T) < ERROR_TOLERANCE[kernel.info.kernel_class]


def test_torch_kernels_say_why_without_torch():
    if TORCH is not None:
        pytest.skip("torch is installed")
    assert "torch is not installed" in K.TorchInt4(128).available("cpu")


def test_time_calls_reports_median_and_range():
    t = K.time_calls(lambda i: sum(range(1000)), lambda: None, repeat=5, budget_s=0.01)
    assert 3 <= t.n <= 5 and t.min_s <= t.median_s <= t.max_s and t.spread >= 0
    assert t.scaled(2).median_s == pytest.approx(2 * t.median_s)


def test_device_strings():
    assert K.device_kind("cpu") == "cpu" and K.device_kind("cuda:1") == "cuda" and K.device_kind("mps") == "mps"
    with pytest.raises(PlannerError):
        K.device_kind("tpu")
    assert K.last_level_cache_bytes("cpu") >= 2**20


def test_copy_bandwidth_is_positive():
    assert K.copy_bandwidth_gb_s("cpu", nbytes=16 * 2**20, repeat=2) > 0.1


# ------------------------------------------------------------------------------------------ shapes


def test_shapes_of_a_dense_model(registry):
    spec = registry.get("llama-3.1-8b")
    got = {s.name: (s.n, s.k, s.count) for s in model_shapes(spec)}
    assert got == {"attn_qkv": (6144, 4096, 32), "attn_output": (4096, 4096, 32), "ffn_gate_up": (28672, 4096, 32),
                   "ffn_down": (4096, 14336, 32), "lm_head": (128256, 4096, 1)}


def test_shapes_of_a_moe_model_count_active_experts(registry):
    spec = registry.get("qwen3-30b-a3b")
    got = {s.name: s for s in model_shapes(spec)}
    k = spec.moe.experts_per_token
    assert got["ffn_gate_up_exps"].count == k * spec.num_layers
    assert got["ffn_gate_up_exps"].n == 2 * spec.moe.expert_intermediate_size
    assert got["ffn_down_exps"].k == spec.moe.expert_intermediate_size


@pytest.mark.parametrize("model", ["llama-3.2-1b", "smollm2-135m", "qwen3-30b-a3b", "deepseek-v3", "gpt-oss-20b"])
def test_shapes_cover_the_cost_models_active_weights(registry, model):
    from planner.cost.model import ModelCost

    try:
        mc = ModelCost(registry.get(model))
    except PlannerError:
        pytest.skip(f"no profile {model}")
    assert weights_per_token(model_shapes(mc.spec, mc.tensors)) == pytest.approx(mc.matmul_params_active)


# ------------------------------------------------------------------------------------------ timing and extrapolation


def test_extrapolate_is_linear_in_counts():
    per = [(16, 1e-3), (16, 2e-3), (1, 5e-3)]
    assert extrapolate(per) == pytest.approx(16e-3 + 32e-3 + 5e-3)
    assert extrapolate([(2 * c, s) for c, s in per]) == pytest.approx(2 * extrapolate(per))


def _layers(kernel, shapes, **kw):
    return [bench_shape(kernel, s, device="cpu", batches=(1,), prompt=8, budget_bytes=2**30, **FAST, **kw)[0]
            for s in shapes]


def test_twice_the_layers_take_twice_the_time(registry):
    spec = registry.get("smollm2-135m")
    small = spec.model_copy(update={"num_layers": 2})
    double = spec.model_copy(update={"num_layers": 4})
    shapes2 = [s for s in model_shapes(small) if s.name != "lm_head"]
    shapes4 = {s.name: s for s in model_shapes(double)}
    kern = K.NumpyInt8()
    layers = _layers(kern, shapes2)
    run2 = KernelRun(kern.info, layers, (1,), 8)
    # the same timings extrapolated to twice the layers: exactly twice the step time
    run4 = KernelRun(kern.info, [type(lr)(**{**lr.__dict__, "shape": shapes4[lr.shape.name]}) for lr in layers], (1,), 8)
    assert run4.decode_step_s() == pytest.approx(2 * run2.decode_step_s())
    assert run4.prefill_s() == pytest.approx(2 * run2.prefill_s())
    assert run4.decode_tokens_per_s() == pytest.approx(run2.decode_tokens_per_s() / 2)


def test_sampled_rows_are_scaled_to_the_whole_shape():
    shape = MatmulShape("lm_head", 4096, 256, 1)
    lr, _ = bench_shape(K.NumpyFP32(), shape, device="cpu", batches=(1,), prompt=0, budget_bytes=2**30,
                        llc_bytes=2**20, max_sample_bytes=256 * 1024, repeat=3, budget_s=0.01)
    assert lr.rows_timed < shape.n and lr.weight_bytes == 4096 * 256 * 4
    assert lr.prefill is None
    assert lr.working_set_bytes >= 2 * 2**20  # rotated past the (given) cache size


def test_the_bench_never_allocates_beyond_its_budget():
    shape = MatmulShape("ffn_up", 100_000, 8192, 1)
    lr, _ = bench_shape(K.NumpyInt8(), shape, device="cpu", batches=(1,), prompt=0, budget_bytes=64 * 2**20,
                        llc_bytes=2**20, max_sample_bytes=2**30, repeat=3, budget_s=0.01)
    assert lr.rows_timed * (16 * 8192 + 8192) <= 64 * 2**20
    with pytest.raises(PlannerError, match="only"):
        bench_shape(K.NumpyInt8(), shape, device="cpu", batches=(1,), prompt=0, budget_bytes=2**20, llc_bytes=2**20)


def test_group_size_adapts_to_row_length():
    lr, note = bench_shape(K.NumpyInt4(128), MatmulShape("attn_output", 64, 576, 1), device="cpu", batches=(1,),
                           prompt=0, budget_bytes=2**30, **FAST)
    assert lr.kernel == "numpy-int4-g64" and "group 64" in note


def test_kernels_for_formats():
    from planner.formats import get_format

    ids = lambda f: [k.info.id for k in kernels_for_format(get_format(f), "cpu")[0]]  # noqa: E731
    assert ids("fp32") == ["numpy-fp32", "torch-fp32"]
    assert ids("bf16") == ["numpy-bf16", "torch-bf16"]
    assert ids("Q8_0") == ["numpy-int8", "torch-int8-weight-only"]
    assert ids("Q4_K_M") == ["numpy-int4-g32", "torch-int4-g32"]
    assert ids("gptq-int4") == ["numpy-int4-g128", "torch-int4-g128"]
    assert ids("w8a8-int8") == ["numpy-int8", "torch-w8a8-int-mm"]
    assert ids("fp8") == ["torch-fp8-scaled-mm"]
    ks = kernels_for_format(get_format("Q4_K_M"), "cpu")[0]
    assert "llama.cpp" in gguf_standin_note(get_format("Q4_K_M"), ks)


def _tiny_bench(registry, catalog, fmt="Q8_0", **kw):
    from planner.cost.model import ModelCost
    from planner.formats import get_format
    from planner.plan import target_from_catalog

    spec = registry.get("smollm2-135m").model_copy(update={"num_layers": 2})
    return run_bench(ModelCost(spec), get_format(fmt), target_from_catalog(catalog.get("cpu-ddr5-dual")),
                     batches=(1, 2), prompt=16, copy_bytes=16 * 2**20, budget_bytes=2**30, **FAST, **kw)


def test_run_bench_json_has_the_documented_fields(registry, catalog):
    res = _tiny_bench(registry, catalog)
    d = res.to_json()
    assert d["device"] == "cpu" and d["copy_bandwidth_gb_s"] > 0
    for layer in d["layers"]:
        for key in ("name", "shape", "kernel", "decode_s", "achieved_gb_s", "fraction_of_copy_bandwidth"):
            assert key in layer
        assert layer["error_vs_float"] < 0.05
    for key in ("decode_tokens_per_s", "prefill_tokens_per_s"):
        assert d[key]["measured"] > 0 and d[key]["predicted"] > 0
    assert d["kernels"][0]["predicted_runtime"] == "llama.cpp"
    assert {b["batch"] for b in d["kernels"][0]["by_batch"]} == {1, 2}
    if TORCH is None:
        assert d["skipped"] and "torch" in d["skipped"][0]["reason"]


def test_run_bench_refuses_when_no_kernel_runs(registry, catalog):
    if TORCH is not None and TORCH.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(PlannerError, match="no kernel"):
        _tiny_bench(registry, catalog, fmt="fp8")


# ------------------------------------------------------------------------------------------ calibration records


def _record(**over):
    base = dict(device_id="cpu-ddr5-dual", backend="cpu", engine="llamacpp", kernel_backend="llamacpp",
                kernel="llama.cpp-q8_0", kernel_class="q8", format_id="Q8_0", model_id="llama-3.2-1b",
                bandwidth_fraction=0.4, compute_fraction=None, layer_overhead_us=None, copy_bandwidth_gb_s=60.0,
                peak_bandwidth_gb_s=89.6, peak_flops=None, measured_at=datetime(2025, 1, 2, tzinfo=timezone.utc),
                planner_version="0.1.0", source="planner bench")
    base.update(over)
    return calibration.record_model()(**base)


def test_records_round_trip_and_replace_by_key(tmp_path):
    path = calibration.save_records([_record()])
    assert path == calibration.calibration_path("cpu-ddr5-dual") and path.is_file()
    cal = calibration.read_calibration("cpu-ddr5-dual")
    assert cal.records[0] == _record()
    calibration.save_records([_record(bandwidth_fraction=0.3), _record(engine="reference", kernel_backend="numpy",
                                                                   kernel="numpy-fp32", kernel_class="float")])
    cal = calibration.read_calibration("cpu-ddr5-dual")
    assert len(cal.records) == 2
    assert {r.bandwidth_fraction for r in cal.records if r.engine == "llamacpp"} == {0.3}
    assert calibration.list_calibrations() == [("cpu-ddr5-dual", path)]
    assert calibration.clear_calibration("cpu-ddr5-dual") == [path]
    assert calibration.read_calibration("cpu-ddr5-dual") is None and calibration.load_calibration("cpu-ddr5-dual") == {}


def test_bench_result_records_validate_and_load(registry, catalog):
    res = _tiny_bench(registry, catalog)
    recs = res.records()
    assert len(recs) == len(res.runs) and all(r.source == "planner bench" for r in recs)
    assert [(r.kernel, r.engine) for r in recs] == [(run.info.id, run.info.engine) for run in res.runs]
    calibration.save_records(recs)
    cal = calibration.load_calibration("cpu-ddr5-dual")
    assert all(v.provenance == "measured" for v in cal.values())


def test_malformed_record_file_names_the_file():
    path = calibration.calibration_path("cpu-ddr5-dual")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("schema_version: 1\ndevice_id: cpu-ddr5-dual\nrecords:\n- device_id: cpu-ddr5-dual\n"
                    "  bandwidth_fraction: 4000\n", encoding="utf-8")
    with pytest.raises(InvalidInputError) as exc:
        calibration.load_calibration("cpu-ddr5-dual")
    assert str(path) in str(exc.value) and "records[0].bandwidth_fraction" in str(exc.value)
    path.write_text("[1, 2", encoding="utf-8")
    with pytest.raises(InvalidInputError, match=str(path)):
        calibration.read_calibration("cpu-ddr5-dual")
    path.write_text("- just a list\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="mapping"):
        calibration.read_calibration("cpu-ddr5-dual")


def test_device_ids_cannot_escape_the_directory():
    with pytest.raises(PlannerError):
        calibration.calibration_path("../../etc/passwd")
    assert calibration.load_calibration("../x") == {}


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.integers(),
                     st.floats(allow_nan=True, allow_infinity=True),
                     st.text(max_size=20))
_record_like = st.fixed_dictionaries(
    {}, optional={k: _scalars for k in ("device_id", "backend", "engine", "kernel_backend", "kernel", "kernel_class",
                                         "bandwidth_fraction", "copy_bandwidth_gb_s", "peak_bandwidth_gb_s",
                                         "measured_at", "planner_version", "source", "surprise")})


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.one_of(_scalars, st.lists(_scalars, max_size=3),
                     st.fixed_dictionaries({}, optional={"schema_version": _scalars, "device_id": _scalars,
                                                         "records": st.one_of(_scalars, st.lists(_record_like, max_size=3))})))
def test_fuzzed_record_files_parse_or_fail_cleanly(doc):
    try:
        cal = calibration.parse_calibration(doc, "fuzz.yaml")
    except InvalidInputError as exc:
        assert "fuzz.yaml" in str(exc)
    else:
        assert cal.schema_version == 1


def test_a_low_bandwidth_record_lowers_the_cost_models_decode(registry, catalog):
    from planner.cost.evaluate import evaluate
    from planner.cost.model import ModelCost
    from planner.formats import get_format
    from planner.plan import target_from_catalog
    from planner.runtimes import get_runtime

    mc = ModelCost(registry.get("llama-3.1-8b"))
    target = target_from_catalog(catalog.get("cpu-ddr5-dual"))
    args = (mc, get_format("Q8_0"), get_runtime("llama.cpp"), target)
    table = evaluate(*args, context=4096).decode_tokens_per_s
    calibration.save_records([_record(bandwidth_fraction=0.4)])
    cal = calibration.load_calibration("cpu-ddr5-dual")
    assert cal[("llamacpp", "cpu")].bandwidth == pytest.approx(0.4) and cal[("llamacpp", "cpu")].provenance == "measured"
    measured = evaluate(*args, context=4096, calibration=cal).decode_tokens_per_s
    assert measured < table * 0.75  # 0.4 of peak against the table's 0.65
    # copy bandwidth (60 GB/s = 0.67 of peak) caps the other engines only where it is below their table figure
    assert ("vllm", "cpu") not in cal


def test_a_reference_record_caps_every_engine(registry, catalog):
    from planner.cost.speed import EFFICIENCY

    cal = calibration.efficiencies([_record(engine="reference", kernel_backend="numpy", kernel="numpy-fp32",
                                        kernel_class="float", bandwidth_fraction=0.1, copy_bandwidth_gb_s=17.92)])
    assert cal[("llamacpp", "cpu")].bandwidth == pytest.approx(0.2)  # copy 17.92 / 89.6
    # not measured: the table's
    assert cal[("llamacpp", "cpu")].layer_overhead_us == EFFICIENCY[("llamacpp", "cpu")].layer_overhead_us
    assert ("llamacpp", "cuda") not in cal
    assert "capped at 0.20" in (calibration.save_records([_record(engine="reference", kernel_backend="numpy",
                                                              kernel="numpy-fp32", kernel_class="float",
                                                              bandwidth_fraction=0.1, copy_bandwidth_gb_s=17.92)])
                                and calibration.describe("cpu-ddr5-dual"))


def test_engine_records_divide_out_the_kernel_class_factor():
    from planner.cost.speed import EFFICIENCY, KERNEL_BANDWIDTH_FACTOR

    cal = calibration.efficiencies([_record(kernel_class="group4", bandwidth_fraction=0.45)])
    assert cal[("llamacpp", "cpu")].bandwidth * KERNEL_BANDWIDTH_FACTOR["group4"] == pytest.approx(0.45)
    # the record measured no compute fraction: the table's stays
    assert math.isclose(cal[("llamacpp", "cpu")].compute, EFFICIENCY[("llamacpp", "cpu")].compute)


# ------------------------------------------------------------------------------------------ recommend --confirm


def test_confirm_is_skipped_for_a_target_that_is_not_this_machine(registry, catalog):
    from planner.measure.confirm_speed import confirm
    from planner.cost.model import ModelCost
    from planner.plan import target_from_catalog
    from planner.recommend import recommend

    mc = ModelCost(registry.get("smollm2-135m"))
    target = target_from_catalog(catalog.get("cpu-ddr5-dual"))
    conf = confirm(recommend(mc, target, context=2048), mc, target)
    assert conf.skipped and "this machine" in conf.skipped and not conf.candidates


def test_confirm_benches_the_top_candidates_and_keeps_the_order_for_stand_in_kernels(registry, catalog, monkeypatch):
    import dataclasses

    from planner.measure.speed import llamacpp

    # without llama-cpp-python, GGUF candidates are timed on numpy/torch kernels that are not llama.cpp's
    monkeypatch.setattr(llamacpp, "llama_cpp_missing_reason", lambda: "llama-cpp-python is not installed")

    from planner.measure.confirm_speed import confirm
    from planner.cost.model import ModelCost
    from planner.formats import get_format
    from planner.plan import target_from_catalog
    from planner.recommend import recommend

    spec = registry.get("smollm2-135m").model_copy(update={"num_layers": 2})
    mc = ModelCost(spec)
    target = dataclasses.replace(target_from_catalog(catalog.get("cpu-ddr5-dual")), origin="probe")
    rec = recommend(mc, target, context=2048, formats=[get_format(f) for f in ("Q8_0", "Q4_K_M")])
    conf = confirm(rec, mc, target, settings={"copy_bytes": 16 * 2**20, "max_sample_bytes": 2 * 2**20,
                                              "budget_s": 0.01, "repeat": 3, "llc_bytes": 2**20})
    assert conf.skipped is None and len(conf.candidates) == 2
    assert all(c.measured_decode and c.kernel_engine in ("reference", "transformers") for c in conf.candidates)
    assert not conf.reranked and conf.order == conf.candidates and "kept the predicted ranking" in conf.reason
    assert conf.to_json()["choice"]["format"] == rec.best.format_id


def test_confirm_reranks_when_each_candidate_ran_its_own_engines_kernels():
    from planner.measure.confirm_speed import Confirmed, decide
    from planner.plan import Plan

    def plan(fmt: str) -> Plan:
        p = Plan("m", fmt, "transformers", "t", "d", 1, 2048, 1, "auto", "cpu")
        p.set_speeds(decode_tokens_per_s=10.0)
        return p

    a = Confirmed(plan("bf16"), "torch-bf16", "transformers", 5.0)
    b = Confirmed(plan("int8"), "torch-int8-weight-only", "transformers", 9.0)
    order, reranked, reason = decide([a, b])
    assert reranked and order == [b, a] and "int8" in reason
    b.kernel_engine = "reference"
    order, reranked, _ = decide([a, b])
    assert not reranked and order == [a, b]
