"""The runtime support matrix: every verdict comes from a sourced rule, and the engines' documented limits hold."""

from __future__ import annotations

import csv
import re

import pytest

from planner.cost.evaluate import evaluate
from planner.cost.model import ModelCost
from planner.formats import FORMATS, exl2_format, get_format
from planner.models.readers.hf_config import ARCHITECTURES, _no_moe
from planner.plan import target_from_catalog
from planner.recommend import default_formats, recommend
from planner.runtimes import RUNTIMES, SUPPORT_CSV, arch_id, get_runtime, load_support_rules

# A source names a page (URL) or a file at a commit (hex id after '@').
_PINNED = re.compile(r"https?://|@ ?[0-9a-f]{7,40}\b")


def _devices(catalog):
    """One catalog device per (backend, compute capability): every hardware class a rule can be asked about."""
    seen = {}
    for d in catalog:
        seen.setdefault((d.backend, d.compute_capability), d)
    return list(seen.values())


def _archs(registry):
    """Every architecture id the profiles and the config.json reader can produce, with a model for each."""
    out = {}
    for spec in registry:
        out.setdefault(arch_id(spec), spec)
    return out


def _all_formats():
    return list(FORMATS.values()) + [exl2_format(b) for b in (3.0, 4.0, 5.0, 6.0, 8.0)]


def test_every_csv_rule_names_a_pinned_source():
    with open(SUPPORT_CSV, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows
    for n, row in enumerate(rows, start=2):
        assert row["runtime"] in RUNTIMES, f"line {n}: unknown runtime {row['runtime']}"
        assert _PINNED.search(row["source"]), f"line {n}: source has no URL or commit: {row['source']}"


def test_a_malformed_rule_file_is_refused(tmp_path):
    bad = tmp_path / "rules.csv"
    bad.write_text(SUPPORT_CSV.read_text().splitlines()[0] + "\nvllm,format,gguf,,cuda,,,native,full,,,,\n")
    with pytest.raises(ValueError, match="line 2"):
        load_support_rules(bad)


def test_hf_config_architectures_all_have_rules(registry):
    """The config.json reader's architectures map onto ids the rules name (no '*' fallback needed for them)."""
    named = {a for rules in load_support_rules()[1].values() for r in rules for a in r.archs if a != "*"}
    # arch_id's rule: GGUF 'llama' with experts is Mixtral
    produced = {("mixtral" if a.moe is not _no_moe and a.gguf == "llama" else a.gguf) for a in ARCHITECTURES.values()}
    assert produced <= named, produced - named
    assert set(_archs(registry)) <= named


def test_every_runtime_format_architecture_verdict_has_a_sourced_rule(catalog, registry):
    """Walk every (runtime, format, architecture) on every class of device: each verdict comes from rules with
    pinned sources, never from a fall-through."""
    archs = set(_archs(registry)) | {"some-future-arch"}
    fmts = _all_formats()
    devices = _devices(catalog)
    n = 0
    for rt in RUNTIMES.values():
        for dev in devices:
            for fmt in fmts:
                base = rt.support(fmt, dev)
                assert base.sources, f"{rt.id} {fmt.id} {dev.id}: no format rule matched ({base.reason})"
                for arch in archs:
                    v = rt.support(fmt, dev, arch)
                    assert v.sources and all(_PINNED.search(s) for s in v.sources), (rt.id, fmt.id, dev.id, arch, v)
                    n += 1
    assert n > 10_000


def _dev(catalog, did):
    return catalog.get(did)


@pytest.mark.parametrize("runtime,fmt,device,arch,expect", [
    # vLLM's GGUF path is experimental, and its loader has no name map for gpt-oss or Mixtral
    ("vllm", "Q5_K_M", "h100-sxm", "deepseek2", "partial"),
    ("vllm", "Q4_K_M", "h100-sxm", "gpt-oss", "no"),
    ("vllm", "MXFP4_MOE", "h100-sxm", "gpt-oss", "no"),
    ("vllm", "Q4_K_M", "h100-sxm", "mixtral", "no"),
    ("vllm", "mxfp4", "h100-sxm", "gpt-oss", "full"),
    ("vllm", "awq-int4", "h100-sxm", "llama", "full"),
    # ExLlamaV2 (and TGI's EXL2 path) does not implement gpt-oss, DeepSeek or Qwen3
    ("exllamav2", "exl2-4bpw", "rtx-4090", "gpt-oss", "no"),
    ("exllamav2", "exl2-4bpw", "rtx-4090", "deepseek2", "no"),
    ("exllamav2", "exl2-4bpw", "rtx-4090", "qwen3", "no"),
    ("exllamav2", "exl2-4bpw", "rtx-4090", "llama", "full"),
    ("tgi", "exl2-4bpw", "h100-sxm", "gpt-oss", "no"),
    ("tgi", "fp16", "h100-sxm", "qwen3moe", "partial"),  # transformers fallback
    ("tgi", "awq-int4", "h100-sxm", "qwen3moe", "no"),
    # no GPU vLLM on a CPU: its CPU backend is its own runtime
    ("vllm", "bf16", "cpu-ddr5-dual", "llama", "no"),
    ("vllm-cpu", "bf16", "cpu-ddr5-dual", "llama", "full"),
    ("vllm-cpu", "Q4_K_M", "cpu-ddr5-dual", "llama", "no"),
    # MLX: MLX-format checkpoints on Apple silicon; AWQ only by repacking (recent mlx-lm); never on NVIDIA
    ("mlx", "mlx-4bit", "m3-max", "llama", "full"),
    ("mlx", "awq-int4", "m3-max", "llama", "partial"),
    ("mlx", "Q4_0", "m3-max", "llama", "no"),
    ("mlx", "mlx-4bit", "rtx-4090", "llama", "no"),
    ("mlx", "fp16", "h100-sxm", "llama", "no"),
    # TensorRT-LLM's PyTorch backend lists its models; Command-R is not among them
    ("tensorrt-llm", "fp8", "h100-sxm", "command-r", "no"),
    ("tensorrt-llm", "fp8", "h100-sxm", "deepseek2", "full"),
    ("llama.cpp", "Q4_K_M", "rtx-4090", "some-future-arch", "full"),
])
def test_documented_limits(catalog, runtime, fmt, device, arch, expect):
    v = get_runtime(runtime).support(get_format(fmt), _dev(catalog, device), arch)
    got = "no" if not v.runs else v.status
    assert got == expect, v.reason


def test_partial_support_warns_and_ranks_behind_full_support(catalog, registry):
    """DeepSeek-V3 Q4_K_M on 8x H100: vLLM's experimental GGUF path predicts faster than llama.cpp, yet the fully
    supported llama.cpp plan ranks first and the vLLM plan says why in its warnings."""
    mc = ModelCost(registry.get("deepseek-v3"))
    t = target_from_catalog(catalog.get("h100-sxm"), 8)
    rec = recommend(mc, t, context=8192, formats=[get_format("Q4_K_M")],
                    runtimes=[get_runtime("vllm"), get_runtime("llama.cpp")])
    by_rt = {p.runtime_id: p for p in rec.plans if p.fits}
    assert set(by_rt) == {"vllm", "llama.cpp"}
    assert by_rt["vllm"].decode_tokens_per_s > by_rt["llama.cpp"].decode_tokens_per_s  # speed alone would pick vLLM
    assert by_rt["vllm"].support_status == "partial"
    assert any("experimental" in w for w in by_rt["vllm"].warnings)
    assert rec.best is not None and rec.best.runtime_id == "llama.cpp"
    assert by_rt["vllm"].as_dict()["support_status"] == "partial"


def test_recommend_never_plans_what_the_engine_cannot_run(catalog, registry):
    """The wrong answers of issue #19: no EXL2 for gpt-oss, no GPU vLLM on a CPU box, no MLX on NVIDIA."""
    oss = recommend(ModelCost(registry.get("gpt-oss-120b")), target_from_catalog(catalog.get("h100-sxm"), 1),
                    context=8192)
    assert not [p for p in oss.plans if p.runs and p.format_id.startswith("exl2")]
    cpu = recommend(ModelCost(registry.get("llama-3.1-8b")), target_from_catalog(catalog.get("cpu-ddr5-dual"), 1),
                    context=8192)
    assert not [p for p in cpu.plans if p.runs and p.runtime_id == "vllm"]
    assert all("--gpu-memory-utilization" not in p.launch for p in cpu.plans if p.runs)
    gpu = recommend(ModelCost(registry.get("llama-3.1-8b")), target_from_catalog(catalog.get("rtx-4090"), 1),
                    context=8192)
    assert not [p for p in gpu.plans if p.runs and p.runtime_id == "mlx"]


def test_evaluate_refuses_an_architecture_with_the_rule_reason(catalog, registry):
    mc = ModelCost(registry.get("gpt-oss-120b"))
    p = evaluate(mc, exl2_format(4.0), get_runtime("exllamav2"), target_from_catalog(catalog.get("rtx-4090"), 1),
                 context=4096)
    assert not p.runs and "gpt-oss" in p.reason


def test_default_formats_cover_the_walk():
    """The walk above covers at least every format recommend considers by default."""
    ids = {f.id for f in _all_formats()}
    assert {f.id for f in default_formats("bfloat16")} <= ids


@pytest.mark.parametrize("runtime,kv,device,expect", [
    ("llama.cpp", "q8_0", "rtx-4090", "full"),
    ("llama.cpp", "q5_1", "rtx-4090", "partial"),  # needs a GGML_CUDA_FA_ALL_QUANTS build
    ("llama.cpp", "q5_1", "m3-max", "full"),
    ("llama.cpp", "iq4_nl", "m3-max", "no"),  # no Metal flash-attention kernel for it
    ("vllm", "fp8_e5m2", "mi300x", "no"),  # ROCm: e4m3 only
    ("vllm", "fp8_e4m3", "mi300x", "full"),
    ("sglang", "fp8_e4m3", "mi300x", "no"),
    ("tgi", "fp8_e5m2", "mi300x", "no"),
    ("exllamav2", "q4", "rtx-4090", "full"),
    ("mlx", "q8", "m3-max", "no"),
])
def test_kv_cache_rules(catalog, runtime, kv, device, expect):
    v = get_runtime(runtime).kv_support(kv, catalog.get(device))
    assert ("no" if not v.runs else v.status) == expect, v.reason
    if v.runs:
        assert v.sources and all(_PINNED.search(s) for s in v.sources)


def test_every_offered_kv_dtype_has_a_sourced_rule_on_every_backend(catalog):
    for rt in RUNTIMES.values():
        assert rt.kv_dtypes, rt.id
        for dev in _devices(catalog):
            for kv in rt.kv_dtypes:
                v = rt.kv_support(kv, dev)
                assert v.sources and all(_PINNED.search(s) for s in v.sources), (rt.id, kv, dev.id)


def test_a_kv_dtype_the_backend_lacks_is_refused_with_its_reason(catalog, registry):
    p = evaluate(ModelCost(registry.get("llama-3.1-8b")), get_format("fp16"), get_runtime("vllm"),
                 target_from_catalog(catalog.get("mi300x"), 1), context=4096, kv_dtype="fp8_e5m2")
    assert not p.runs and "e4m3" in p.reason


@pytest.mark.parametrize("runtime,arch,dtype,expect", [
    # vLLM's bitsandbytes loader refuses an already-quantized release (quant_method fp8 / mxfp4)
    ("vllm", "deepseek2", "float8_e4m3", "no"),
    ("vllm", "gpt-oss", "mxfp4", "no"),
    ("tgi", "deepseek2", "float8_e4m3", "no"),
    # a BF16 release: the MoE experts load through get_expert_mapping; DeepSeek MLA and gpt-oss are unverified
    ("vllm", "deepseek2", "bfloat16", "partial"),
    ("vllm", "gpt-oss", "bfloat16", "partial"),
    ("vllm", "qwen3moe", "bfloat16", "full"),
    ("vllm", "mixtral", "bfloat16", "full"),
])
def test_bitsandbytes_on_moe_releases(catalog, runtime, arch, dtype, expect):
    s = get_runtime(runtime).support(get_format("nf4"), catalog.get("h100-sxm"), arch, dtype)
    assert s.sources and all(_PINNED.search(src) for src in s.sources)
    if expect == "no":
        assert not s.runs and "BF16 copy" in s.reason and dtype in s.reason
    else:
        assert s.runs and s.status == expect
    # without a release dtype only the architecture rules apply
    assert get_runtime(runtime).support(get_format("nf4"), catalog.get("h100-sxm"), arch).runs


def test_deepseek_v3_is_never_planned_as_bitsandbytes_from_its_fp8_release(catalog, registry):
    """Issue 19: recommend picked nf4 under vLLM for DeepSeek-V3 on 8 H100s, a command vLLM refuses on the FP8 release."""
    mc = ModelCost(registry.get("deepseek-v3"))
    rec = recommend(mc, target_from_catalog(catalog.get("h100-sxm"), 8), context=8192)
    assert rec.best is not None and rec.best.format_id != "nf4"
    for p in rec.plans:
        if p.format_id == "nf4" and p.runtime_id in ("vllm", "tgi"):
            assert not p.runs and "BF16 copy" in p.reason
    assert "--quantization bitsandbytes" not in rec.best.launch


def test_a_checkpoint_rule_with_a_load_mode_is_refused(tmp_path):
    bad = tmp_path / "rules.csv"
    bad.write_text(SUPPORT_CSV.read_text().splitlines()[0]
                   + "\nvllm,checkpoint,float8_e4m3,bnb,,,,dequantized,full,,,,https://example.org/x\n")
    with pytest.raises(ValueError, match="line 2: a checkpoint rule"):
        load_support_rules(bad)
