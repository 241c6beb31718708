"""Speed: decode from bytes read per token over achievable bandwidth, prefill from FLOPs over achievable compute.

Decode of one token reads every active weight once (k/E of the routed experts, one row of the token embedding)
plus the KV cache written so far; it is memory-bound at batch 1, with a fixed per-layer cost (kernel launches,
synchronisation) that dominates small models on fast GPUs. Prefill is compute-bound: 2 FLOPs per active weight
per token plus attention, over the tensor throughput the format's kernels use.

The efficiency constants below are named per engine and backend. 'assumed' ones are engineering estimates;
'calibrated' ones were fitted once against benchmarks/data/llamacpp_perf.csv (see benchmarks/accuracy.py) and are
replaced by measured ones from `planner bench` when the user has calibration records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import dataclass

if TYPE_CHECKING:
    from planner.hardware.catalog import DeviceSpec



@dataclass(frozen=True)
class Efficiency:
    """Achievable fractions of peak for one engine on one backend."""

    bandwidth: float  # fraction of peak memory bandwidth a decode GEMV reaches
    compute: float  # fraction of peak tensor throughput a prefill GEMM reaches
    layer_overhead_us: float  # fixed cost per layer per decode step
    provenance: str  # 'assumed' or 'calibrated'


# (engine, backend) -> Efficiency. Engines: llamacpp, vllm, sglang, trtllm, tgi, exllamav2, mlx, transformers.
EFFICIENCY: dict[tuple[str, str], Efficiency] = {
    ("llamacpp", "cuda"): Efficiency(0.80, 0.37, 9.0, "calibrated"),
    ("llamacpp", "rocm"): Efficiency(0.65, 0.30, 14.0, "assumed"),
    ("llamacpp", "metal"): Efficiency(0.78, 0.55, 9.0, "calibrated"),
    ("llamacpp", "vulkan"): Efficiency(0.65, 0.30, 14.0, "assumed"),
    ("llamacpp", "sycl"): Efficiency(0.55, 0.25, 18.0, "assumed"),
    # CPU: fitted to SmolLM2-135M Q4_1 on a 2-core x86 VM (about 115 tok/s decode, 340 tok/s prefill, measured in
    # this project) and the Apple M3 CPU rows of benchmarks/data/llamacpp_perf.csv; per-layer cost is thread sync.
    # Bandwidth 0.70: the bandwidth-bound rows of benchmarks/data/cpu_perf.csv reach 0.56-0.65 (EPYC 9554, 64
    # threads), >= 0.68 (M4 Pro, 10 threads) and 0.81 (Snapdragon X Elite) of the catalog peak; the thread-limited
    # rows are set by CPU_CORE_DECODE_GB_S below.
    ("llamacpp", "cpu"): Efficiency(0.70, 0.30, 200.0, "calibrated"),
    ("vllm", "cuda"): Efficiency(0.80, 0.60, 4.0, "assumed"),
    ("vllm", "rocm"): Efficiency(0.70, 0.45, 6.0, "assumed"),
    ("vllm", "cpu"): Efficiency(0.55, 0.40, 4.0, "assumed"),
    ("sglang", "cuda"): Efficiency(0.80, 0.60, 4.0, "assumed"),
    ("sglang", "rocm"): Efficiency(0.70, 0.45, 6.0, "assumed"),
    ("sglang", "cpu"): Efficiency(0.55, 0.40, 4.0, "assumed"),
    ("trtllm", "cuda"): Efficiency(0.80, 0.60, 4.0, "assumed"),  # no reference rows: assumed equal to vLLM
    ("tgi", "cuda"): Efficiency(0.75, 0.55, 5.0, "assumed"),
    ("tgi", "rocm"): Efficiency(0.65, 0.40, 7.0, "assumed"),
    ("exllamav2", "cuda"): Efficiency(0.80, 0.45, 8.0, "assumed"),
    ("exllamav2", "rocm"): Efficiency(0.65, 0.30, 12.0, "assumed"),
    ("mlx", "metal"): Efficiency(0.80, 0.55, 8.0, "assumed"),
    ("mlx", "cuda"): Efficiency(0.70, 0.45, 10.0, "assumed"),
    ("transformers", "cuda"): Efficiency(0.55, 0.45, 40.0, "assumed"),
    ("transformers", "rocm"): Efficiency(0.45, 0.35, 50.0, "assumed"),
    ("transformers", "metal"): Efficiency(0.45, 0.30, 60.0, "assumed"),
    ("transformers", "cpu"): Efficiency(0.35, 0.30, 20.0, "assumed"),
    ("transformers", "sycl"): Efficiency(0.40, 0.30, 50.0, "assumed"),
}
_FALLBACK = Efficiency(0.5, 0.3, 20.0, "assumed")

# Kernel-class factors on the engine's bandwidth efficiency: dequantizing i-quant and k-quant GEMVs do more work
# per byte than plain F16/Q8_0 ones (assumed, then checked in benchmarks/accuracy.py).
KERNEL_BANDWIDTH_FACTOR = {"float": 1.0, "q8": 1.0, "legacy4": 0.95, "kquant": 0.92, "iquant": 0.80, "group4": 0.90, "fp8": 1.0, "fp4": 0.9}
# Decode GEMV throughput per compute unit (NVIDIA SM, Apple GPU core) in GB/s of weights streamed. Dequantizing
# kernels are limited by the bytes each unit keeps in flight, so GPUs with many GB/s per unit (A100, H100, M1 Max)
# reach a smaller fraction of their peak bandwidth than GeForce cards. Calibrated on llama.cpp 2024+ builds.
UNIT_RATE_GB_S: dict[tuple[str, str], dict[str, float]] = {
    ("llamacpp", "cuda"): {"float": 9.0, "q8": 8.0, "legacy4": 7.0, "kquant": 6.5, "iquant": 5.5, "fp4": 6.5},
    ("llamacpp", "metal"): {"float": 9.0, "q8": 7.5, "legacy4": 6.5, "kquant": 5.5, "iquant": 4.5, "fp4": 5.5},
}
# Fraction of peak bandwidth at which decode attention reads the KV cache. Attention kernels at batch 1 are less
# efficient than weight GEMVs, on Metal much less: llama.cpp 2024 builds lose ~5.5 ms per extra 0.5 GB of KV on an
# M2 Ultra (calibrated on the tg512..tg8192 rows of benchmarks/data/llamacpp_perf.csv); others assumed.
KV_READ_FRACTION: dict[tuple[str, str], float] = {("llamacpp", "metal"): 0.15, ("llamacpp", "cuda"): 0.6}
KV_READ_FRACTION_DEFAULT = 0.5
# llama.cpp prompt processing of quantized weights runs slower than F16 GEMM (dequantization / MMQ), calibrated.
QUANT_PREFILL_FACTOR = 0.8
# GGUF served by engines other than llama.cpp (vLLM, SGLang) runs through slower, "highly experimental and
# under-optimized" kernels (vLLM docs/features/quantization/gguf.md); assumed factor on bandwidth efficiency.
FOREIGN_GGUF_FACTOR = 0.6
# Per-layer link latency of one all-reduce for tensor parallelism (assumed: NCCL small-message latency).
ALLREDUCE_LATENCY_US = {"nvlink": 8.0, "pcie": 25.0, "infinity_fabric": 10.0}
# Bandwidth term of the same all-reduces: a ring all-reduce moves 2(n-1)/n of the message through each GPU's link
# (NCCL docs, "Performance" / busbw), at this fraction of the link's one-way bandwidth (NVLink 4: 900 GB/s both ways,
# 450 each). Assumed, and checked against TensorRT-LLM's published TP tables in benchmarks/multinode.py.
ALLREDUCE_BUS_FRACTION = 0.7
# Fallback compute for CPU targets without a sourced TFLOPS figure: cores x 2.5 GHz x 32 FLOP/cycle (AVX2 FMA).
CPU_FLOPS_PER_CORE = 2.5e9 * 32
# llama.cpp's CPU kernels multiply quantized weights with int8-quantized activations (vec_dot_q*_q8): about twice the
# fp32 FMA rate per core with plain AVX2 / NEON (VPMADDUBSW + VPMADDWD pairs; assumed).
CPU_INT8_SPEEDUP = 2.0
# With an int8 dot-product extension the rate follows from the instruction: multiply-adds per 32-bit lane, against
# one for an fp32 FMA of the same width. AVX-512 VNNI VPDPBUSD and AVX-VNNI: 4 (Intel SDM); Arm SDOT (FEAT_DotProd):
# 4; Arm SMMLA (FEAT_I8MM): a 2x8 by 8x2 int8 product per 128 bits, 32 multiply-adds against FMLA's 4, so 8. The
# CPU target's `cpu_isa` (catalog, or probed flags) picks the best it has; llama.cpp uses them where its kernels for
# the type do (the compute efficiency covers the rest).
CPU_INT8_RATIO_BY_ISA = {"i8mm": 8.0, "avx512_vnni": 4.0, "avx_vnni": 4.0, "dotprod": 4.0}
# ggml types whose llama.cpp CPU kernels have an SMMLA (I8MM) path: the 2x2-tile vec_dot for Q4_0, Q4_1 and Q8_0 with
# int8 activations (llama.cpp PR #4966, and #5780's AArch64 GEMM for Q4_0/Q8_0); the other types use SDOT.
I8MM_GGML_TYPES = frozenset({"Q4_0", "Q4_1", "Q8_0"})
# Decode GEMV rate of one CPU core (one llama.cpp thread) in GB/s of weights streamed through the dequantize-and-dot
# kernels (vec_dot_q*_q8 / repacked gemv). Below the memory system's limit decode scales with threads, so a few
# threads cannot saturate a many-channel server. Calibrated on benchmarks/data/cpu_perf.csv (llama-bench thread
# sweeps: M4 Pro Q4_0 tg64 t=1..10, M2 Max Q5_0 tg128 t=2..8, Snapdragon X Elite Q4_0 t=4..10) and the 2-core VM.
CPU_CORE_DECODE_GB_S = 20.0
# Cores assumed for a CPU target whose core count is unknown.
CPU_DEFAULT_CORES = 8


def cpu_int8_ratio(device: DeviceSpec, main_type: str | None = None) -> float:
    """int8 dot-product rate over the fp32 FMA rate on a CPU: its best int8 extension (CPU_INT8_RATIO_BY_ISA) that
    llama.cpp's kernels for the weights' type use (I8MM only for I8MM_GGML_TYPES)."""
    if main_type in ("F32", "F16", "BF16"):  # 16-bit files run float kernels (2x fp32 with ARM/x86 half support)
        return CPU_INT8_SPEEDUP
    isa = set(getattr(device, "cpu_isa", None) or ())
    if main_type not in I8MM_GGML_TYPES:
        isa.discard("i8mm")
    return max([CPU_INT8_RATIO_BY_ISA[i] for i in isa if i in CPU_INT8_RATIO_BY_ISA], default=CPU_INT8_SPEEDUP)


def efficiency(engine: str, backend: str, calibration: dict | None = None) -> Efficiency:
    """The efficiency for an engine on a backend (a measured calibration record overrides the table)."""
    if calibration and (engine, backend) in calibration:
        return calibration[(engine, backend)]
    return EFFICIENCY.get((engine, backend), _FALLBACK)


def unit_capped_bandwidth(bandwidth_b_s: float, device: DeviceSpec, engine: str, kclass: str) -> float:
    """Bandwidth a decode GEMV reaches: the engine's fraction of peak, capped by per-compute-unit throughput."""
    rates = UNIT_RATE_GB_S.get((engine, device.backend))
    if not rates or not device.gpu_cores or kclass not in rates:
        return bandwidth_b_s
    return min(bandwidth_b_s, device.gpu_cores * rates[kclass] * 1e9)


def cpu_capped_bandwidth(bandwidth_b_s: float, device: DeviceSpec, kclass: str) -> float:
    """Bandwidth CPU decode reaches: the memory system's achievable share, capped by cores x per-core GEMV rate."""
    cores = device.cpu_cores or CPU_DEFAULT_CORES
    per_core = CPU_CORE_DECODE_GB_S * KERNEL_BANDWIDTH_FACTOR.get(kclass, 0.9) * 1e9
    return min(bandwidth_b_s, cores * per_core)


def kernel_class(format_family: str, compute: str, ggml_types: set[str]) -> str:
    """Which kernel family decodes the format: float, q8, legacy4, kquant, iquant, group4, fp8, fp4."""
    if format_family == "float" or compute in ("fp16", "bf16", "fp32"):
        return "float"
    if format_family == "gguf":
        if any(t.startswith("IQ") for t in ggml_types):
            return "iquant"
        if any(t.endswith("_K") for t in ggml_types):
            return "kquant"
        if "Q8_0" in ggml_types and not any(t in ggml_types for t in ("Q4_0", "Q4_1", "Q5_0", "Q5_1")):
            return "q8"
        return "legacy4"
    if compute == "fp8":
        return "fp8"
    if compute == "fp4":
        return "fp4"
    return "q8" if compute == "int8" else "group4"


def prefill_peak_flops(device: DeviceSpec, engine: str, format_family: str, compute: str, support_mode: str,
                       main_type: str | None = None) -> float:
    """Peak FLOP/s the format's prefill kernels can use on the device (`main_type`: a GGUF file's bulk ggml type)."""
    d = device
    if d.backend == "cpu":
        base = d.peak_fp32_tflops * 1e12 if d.peak_fp32_tflops else (d.cpu_cores or 8) * CPU_FLOPS_PER_CORE
        quantized = compute not in ("fp16", "bf16", "fp32")
        return base * (cpu_int8_ratio(d, main_type) if quantized else 1.0)
    fp16 = d.peak_fp16_tflops or d.peak_bf16_tflops or (d.peak_fp32_tflops or 10.0)
    if d.backend == "metal":
        return (d.peak_fp16_tflops or d.peak_fp32_tflops or 5.0) * 1e12
    if support_mode in ("weight_only", "dequantized"):
        return fp16 * 1e12
    if engine == "llamacpp":
        # llama.cpp's F16 GEMMs accumulate in FP16 (full rate on GeForce); quantized ones pay for dequantization.
        acc16 = d.peak_fp16_acc16_tflops or fp16
        quantized = format_family == "gguf" and compute not in ("fp16", "bf16", "fp32")
        return acc16 * 1e12 * (QUANT_PREFILL_FACTOR if quantized else 1.0)
    if compute == "fp8" and d.peak_fp8_tflops:
        return d.peak_fp8_tflops * 1e12
    if compute == "fp4" and d.peak_fp4_tflops:
        return d.peak_fp4_tflops * 1e12
    if compute == "int8" and format_family == "w8a8" and d.peak_int8_tops:
        return d.peak_int8_tops * 1e12
    return fp16 * 1e12
