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

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from planner.cost.placement import fabric_link
from planner.formats import gguf_main_type, lattice_iquant

if TYPE_CHECKING:
    from planner.cost.model import FormatLayout, ModelCost
    from planner.formats import WeightFormat
    from planner.hardware.catalog import DeviceSpec
    from planner.plan import Plan, Target
    from planner.runtimes import Runtime


@dataclass(frozen=True)
class Efficiency:
    """Achievable fractions of peak for one engine on one backend."""

    bandwidth: float  # fraction of peak memory bandwidth a decode GEMV reaches
    compute: float  # fraction of peak tensor throughput a prefill GEMM reaches
    layer_overhead_us: float  # fixed cost per layer per decode step
    provenance: str  # 'assumed' or 'calibrated'
    # fixed cost per decode step outside the layers: the engine's scheduler, sampling, detokenization and the
    # Python between steps (zero for llama.cpp, whose per-layer cost was calibrated with it folded in)
    step_overhead_us: float = 0.0


# (engine, backend) -> Efficiency. Engines: llamacpp, vllm, sglang, trtllm, tgi, exllamav2, mlx, transformers.
EFFICIENCY: dict[tuple[str, str], Efficiency] = {
    ("llamacpp", "cuda"): Efficiency(0.80, 0.37, 9.0, "calibrated"),
    ("llamacpp", "rocm"): Efficiency(0.65, 0.30, 14.0, "assumed"),
    ("llamacpp", "metal"): Efficiency(0.78, 0.55, 9.0, "calibrated"),
    ("llamacpp", "vulkan"): Efficiency(0.65, 0.30, 14.0, "assumed"),
    ("llamacpp", "sycl"): Efficiency(0.55, 0.25, 18.0, "assumed"),
    # CPU: per-layer cost (thread sync) 200 us, fitted to SmolLM2-135M Q4_1 on a 2-core x86 VM (measured in this
    # project) with a per-core GB/s decode rate. Beside the GEMV cap below, 100 us would fit that model (predicted /
    # measured 0.77 -> 1.06, benchmarks/measured_bandwidth.py) and the cpu_perf.csv decode rows (median 17 -> 12 %),
    # but not the MoE expert-offload rows of benchmarks/moe_offload.py (median 15 -> 36 %), whose 8-16-thread desktops
    # pay more per barrier than 2 threads do: a cost that grows with threads, which one constant cannot hold; kept at
    # 200. Bandwidth 0.70: the bandwidth-bound rows of benchmarks/data/cpu_perf.csv reach
    # 0.56-0.65 (EPYC 9554, 64 threads), >= 0.68 (M4 Pro, 10 threads) and 0.81 (Snapdragon X Elite) of the catalog
    # peak; the thread-limited rows are set by CPU_GEMV_PEAK_FRACTION below. Compute (prefill) 0.40 of the int8 peak
    # of prefill_peak_flops, calibrated on the 2024+ prompt rows of cpu_perf.csv (median error 11 %, was 28 % at the
    # 0.30 first fitted to SmolLM2-135M, whose prompt time is mostly not matmuls); the 2-vCPU VM's own Llama-3.2-1B
    # and -8B rows (benchmarks/data/cpu_measured.csv) reach 0.55-0.65, its cores being faster than the assumed
    # 2.5 GHz, and are under-predicted by about a third; the 2023 builds' F16 rows (M1 Max, M3) are over-predicted.
    ("llamacpp", "cpu"): Efficiency(0.70, 0.40, 200.0, "calibrated"),
    # vLLM, TensorRT-LLM, ExLlamaV2 and MLX: fitted with `python benchmarks/engines.py --fit` to the published rows of
    # benchmarks/data/engine_perf.csv (vLLM 0.7.2 single-stream latencies on A6000/A100/H100 for 8B/32B/70B in bf16,
    # FP8, W8A8 and W4A16; TensorRT-LLM's performance tables; ExLlamaV2's README tables on 3090 Ti/4090; mlx-lm
    # threads on M2 Ultra/M3 Max); held-out errors in the README. The per-step cost is the engine's scheduler, sampling
    # and Python between steps: about 1.4 ms in vLLM 0.7 (its V0 engine), which is why an 8B model on an H100 decodes
    # at ~135 tok/s in bf16 rather than the ~200 its weights' bandwidth allows.
    ("vllm", "cuda"): Efficiency(0.86, 0.65, 25.0, "calibrated", step_overhead_us=1400.0),
    ("vllm", "rocm"): Efficiency(0.70, 0.45, 25.0, "assumed", step_overhead_us=1400.0),  # CUDA's per-step cost assumed
    ("vllm", "cpu"): Efficiency(0.55, 0.40, 25.0, "assumed", step_overhead_us=1400.0),
    # SGLang runs the same classes of kernels as vLLM (Marlin, FlashInfer, CUTLASS FP8) and no published single-stream
    # rows are in benchmarks/data yet: vLLM's calibrated constants, marked assumed (ranked behind vLLM at equal speed).
    ("sglang", "cuda"): Efficiency(0.86, 0.65, 25.0, "assumed", step_overhead_us=1400.0),
    ("sglang", "rocm"): Efficiency(0.70, 0.45, 25.0, "assumed", step_overhead_us=1400.0),
    ("sglang", "cpu"): Efficiency(0.55, 0.40, 25.0, "assumed", step_overhead_us=1400.0),
    # TensorRT-LLM: fitted to its FP8/FP16 tables (mostly large batches, where the per-step cost is amortised);
    # the bandwidth fraction sits at the fit's physical bound (0.93 of peak).
    ("trtllm", "cuda"): Efficiency(0.93, 0.60, 0.2, "calibrated", step_overhead_us=1000.0),
    # TGI: Marlin / FlashInfer kernels like vLLM, with a Rust router; no published rows here (assumed a little slower).
    ("tgi", "cuda"): Efficiency(0.80, 0.55, 25.0, "assumed", step_overhead_us=1500.0),
    ("tgi", "rocm"): Efficiency(0.65, 0.40, 25.0, "assumed", step_overhead_us=1500.0),
    # ExLlamaV2: fitted to its README tables (batch 1, GPTQ and EXL2 on a 3090 Ti and a 4090); its kernels are capped
    # per SM (UNIT_RATE_GB_S), which is why the 3090 Ti (84 SMs) is closer to the 4090 (128 SMs) than bandwidth says.
    ("exllamav2", "cuda"): Efficiency(0.93, 0.45, 27.5, "calibrated", step_overhead_us=120.0),
    ("exllamav2", "rocm"): Efficiency(0.65, 0.30, 27.5, "assumed", step_overhead_us=120.0),
    # MLX: fitted to mlx-lm runs (Llama 3.3 70B 4-bit on an M3 Max at 260-24k prompt tokens, Llama 3 70B bf16 and
    # Mistral 7B 4-bit on an M2 Ultra): 4-bit decode reaches ~0.84 of the catalog bandwidth, prefill ~0.75 of FP16.
    ("mlx", "metal"): Efficiency(0.93, 0.75, 0.0, "calibrated"),
    # mlx[cuda] is young: assumed below Metal's fraction, with a Python generate loop per step like vLLM's (assumed).
    ("mlx", "cuda"): Efficiency(0.70, 0.45, 10.0, "assumed", step_overhead_us=1400.0),
    # transformers decodes eagerly: each decoder layer dispatches ~15 kernels from Python at ~15-20 us each, so a
    # CPU-bound ~250 us per layer (assumed; cf. gpt-fast's eager baseline and the HF docs' torch.compile speed-ups),
    # which keeps bf16 transformers behind llama.cpp F16 at batch 1.
    ("transformers", "cuda"): Efficiency(0.55, 0.45, 250.0, "assumed"),
    ("transformers", "rocm"): Efficiency(0.45, 0.35, 300.0, "assumed"),
    ("transformers", "metal"): Efficiency(0.45, 0.30, 300.0, "assumed"),
    ("transformers", "cpu"): Efficiency(0.35, 0.30, 100.0, "assumed"),
    ("transformers", "sycl"): Efficiency(0.40, 0.30, 300.0, "assumed"),
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
    # vLLM's batch-1 GEMMs, fitted with benchmarks/engines.py: Marlin W4A16 streams ~10.7 GB/s per SM (so an H100's
    # 132 SMs reach ~1.4 TB/s, 42 % of HBM peak, not the 80 % a plain bandwidth model gives), CUTLASS FP8 ~16.8, INT8
    # W8A8 ~12; bf16 GEMVs are not capped. SGLang and TGI share these kernel classes (assumed).
    ("vllm", "cuda"): {"q8": 12.0, "fp8": 16.8, "group4": 10.7, "fp4": 10.7},
    ("sglang", "cuda"): {"q8": 12.0, "fp8": 16.8, "group4": 10.7, "fp4": 10.7},
    ("tgi", "cuda"): {"q8": 12.0, "fp8": 16.8, "group4": 10.7, "fp4": 10.7},
    # TensorRT-LLM: FP8 fitted to its tables (16.8); its INT8/INT4 weight-only kernels are assumed at vLLM's rates.
    ("trtllm", "cuda"): {"q8": 12.0, "fp8": 16.8, "group4": 10.7, "fp4": 10.7},
    # ExLlamaV2's GPTQ/EXL2 kernels, fitted to its README tables (9.35 GB/s per SM); 6-8 bit EXL2 assumed alike.
    ("exllamav2", "cuda"): {"group4": 9.35, "q8": 9.35},
    # mlx[cuda]'s quantized matmuls: assumed no better per SM than Marlin's (no published rows).
    ("mlx", "cuda"): {"q8": 12.0, "group4": 10.7, "fp4": 10.7},
}
# Fraction of peak bandwidth at which decode attention reads the KV cache. Attention kernels at batch 1 are less
# efficient than weight GEMVs, on Metal much less: llama.cpp 2024 builds lose ~5.5 ms per extra 0.5 GB of KV on an
# M2 Ultra (calibrated on the tg512..tg8192 rows of benchmarks/data/llamacpp_perf.csv); others assumed.
# TensorRT-LLM decodes whole batches at once, and its batched attention kernels read each sequence's paged KV cache
# in large coalesced tiles: 0.75 of peak, calibrated against the long-output rows of its tables in
# benchmarks/data/engine_perf.csv (Llama-2-7B, whose full-head KV cache is 5x the weights' bytes per step at batch
# 112, was under-predicted by a third at 0.5).
KV_READ_FRACTION: dict[tuple[str, str], float] = {("llamacpp", "metal"): 0.15, ("llamacpp", "cuda"): 0.6,
                                                  ("trtllm", "cuda"): 0.75}
KV_READ_FRACTION_DEFAULT = 0.5
# llama.cpp prompt processing of quantized weights runs slower than F16 GEMM (dequantization / MMQ), calibrated.
QUANT_PREFILL_FACTOR = 0.8
# GGUF served by engines other than llama.cpp (vLLM, SGLang) runs through slower, "highly experimental and
# under-optimized" kernels (vLLM docs/features/quantization/gguf.md); assumed factor on bandwidth efficiency.
FOREIGN_GGUF_FACTOR = 0.6
# Per-layer link latency of one all-reduce for tensor parallelism. NVLink: 12 us, calibrated against the
# tensor-parallel rows of benchmarks/data/engine_perf.csv: TensorRT-LLM's batch-1 TTFT of Llama-2-70B on 4 H100s
# wants more than the earlier assumed 8 us, vLLM's single-stream TP 2/4 latencies no more than ~12 (at 20 their
# median error rises from 3.6 to 5.2 %). PCIe and Infinity Fabric assumed.
ALLREDUCE_LATENCY_US = {"nvlink": 12.0, "pcie": 25.0, "infinity_fabric": 10.0}
# Bandwidth term of the same all-reduces: a ring all-reduce moves 2(n-1)/n of the message through each GPU's link
# (NCCL docs, "Performance" / busbw), at this fraction of the link's one-way bandwidth (NVLink 4: 900 GB/s both ways,
# 450 each). NCCL's own ceiling is ~0.82 (370 of 450 GB/s busbw, protocol overhead, NVIDIA/nccl-tests issue #212),
# reached only above ~256 MB; a decode step's all-reduces carry batch x hidden x 2 bytes (a few MB), so 0.5,
# calibrated against the TP 2/4/8 rows of TensorRT-LLM's tables (benchmarks/engines.py; 0.7 over-predicted its
# 8-GPU Llama-3.1-405B / Qwen3-235B rows by 25-55 %).
ALLREDUCE_BUS_FRACTION = 0.5
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
# Decode on a CPU at batch 1 runs one dequantize-and-dot GEMV per weight matrix (vec_dot_q*_q8 / repacked gemv): each
# weight is decoded and multiplied once per token, so below the memory system's limit its time is the weights' work
# at a fraction of the cores' int8 peak (prefill_peak_flops: cores, ISA). A few threads cannot saturate a
# many-channel server, and a low-bit file does not decode faster than its cores can unpack it. Fractions of that peak
# (llama.cpp, tg at batch 1), calibrated on the thread-limited rows of benchmarks/data/cpu_perf.csv (M4 Pro Q4_0
# t=1..2: 0.18-0.19, M2 Max Q5_0 t=2..4: 0.14-0.15) and on benchmarks/data/cpu_measured.csv (a 2-vCPU AVX2 VM,
# Llama-3.2-1B shapes in real llama.cpp: legacy and K-quants and IQ4 0.17-0.23, the lattice i-quants 0.09-0.14:
# their codebook lookups and sign tables cost more per weight than unpacking a uniform grid).
CPU_GEMV_PEAK_FRACTION = 0.20
CPU_GEMV_LATTICE_FRACTION = 0.14
# Cores assumed for a CPU target whose core count is unknown.
CPU_DEFAULT_CORES = 8
PCIE_GB_S = {3: 15.75, 4: 31.5, 5: 63.0, 6: 126.0}  # x16, one direction (PCI-SIG)
RPC_HOP_US = 1000.0  # assumed: llama.cpp RPC round trip (serialisation + TCP) per remote host per token
LAYER_SPLIT_HOP_US = 200.0  # calibrated (llama.cpp 2024 builds, 2-6 GPUs): sync + activation copy per GPU boundary per token
UBATCH = 512  # llama.cpp default micro-batch (-ub)
N_BATCH = 2048  # llama.cpp's default logical batch (-b): the micro-batches one decode call pipelines


# Device classes (catalog `architecture`) whose published rows each calibrated engine was fitted on: a plan on one of
# them is "calibrated on this device class", elsewhere "calibrated elsewhere" (the constants travel, less surely).
CALIBRATED_ON: dict[tuple[str, str], frozenset[str]] = {
    ("llamacpp", "cuda"): frozenset({"turing", "ampere", "ada", "hopper"}),  # benchmarks/data/llamacpp_perf.csv
    ("llamacpp", "metal"): frozenset({"apple-m1", "apple-m2", "apple-m3", "apple-m4"}),
    ("llamacpp", "cpu"): frozenset({"apple-m2", "apple-m4", "zen4", "haswell", "cpu"}),  # benchmarks/data/cpu_perf.csv
    ("vllm", "cuda"): frozenset({"ampere", "hopper"}),  # A6000, A100, H100 (engine_perf.csv)
    ("trtllm", "cuda"): frozenset({"ampere", "hopper"}),  # A100, H100, H200
    ("exllamav2", "cuda"): frozenset({"ampere", "ada"}),  # 3090 Ti, 4090
    ("mlx", "metal"): frozenset({"apple-m2", "apple-m3"}),  # M2 Ultra, M3 Max
}
# Relative half-width w of a speed's 10-90 % band, v / (1 + w) .. v x (1 + w), one for decode-side speeds (decode,
# full-context decode, aggregate throughput) and one for prefill-side ones (prefill, TTFT): the one table every view
# reads (Plan.speed_range; `recommend`'s text, JSON and model ranking, and the TUI). Calibrated on the device class:
# the engine's p90 |error| on its published rows of that metric, from
# - llama.cpp: `python benchmarks/accuracy.py` (README "Accuracy"): decode one GPU 21.0 % (93 rows), Apple GPU 16.9 %
#   (31), CPU 36.8 % (20); prefill one GPU 72.3 % (73 rows; Apple has no separate prefill table, so the same), CPU
#   47.3 % (9) (the 2-vCPU VM's own rows, benchmarks/data/cpu_measured.csv: decode 23.1 %, prefill 36.9 %, 19 each);
# - serving engines: `python benchmarks/engines.py`, columns "decode p90" (decode tok/s, single-stream request latency,
#   static-batch and max-load throughput) and "prefill p90" (prefill tok/s, TTFT): vLLM 12.9 % (216 rows) / none,
#   TensorRT-LLM 31.0 % (85) / 22.2 % (8), ExLlamaV2 10.1 % (28) / none, MLX 10.5 % (7) / 7.1 % (7).
# None: no published rows of that metric, so UNTESTED_WIDTH (assumed). Measured here: assumed 10 % (run-to-run and
# workload spread). Calibrated elsewhere: twice the engine's p90, at least 30 % (assumed). Assumed constants: 60 %
# (assumed: the assumed constants these replaced were off by up to 1.9x, e.g. vLLM W4A16 on an H100).
SPEED_P90: dict[tuple[str, str], tuple[float, float | None]] = {  # (engine, backend) -> (decode, prefill)
    ("llamacpp", "cuda"): (0.21, 0.72), ("llamacpp", "metal"): (0.17, 0.72), ("llamacpp", "cpu"): (0.37, 0.47),
    ("vllm", "cuda"): (0.13, None), ("trtllm", "cuda"): (0.31, 0.22), ("exllamav2", "cuda"): (0.10, None),
    ("mlx", "metal"): (0.11, 0.07),
}
MEASURED_WIDTH, ELSEWHERE_MIN_WIDTH, ASSUMED_WIDTH, UNTESTED_WIDTH = 0.10, 0.30, 0.60, 0.30
BASES = ("measured here", "calibrated on this device class", "calibrated elsewhere", "assumed")
WEAK_BASES = frozenset({"calibrated elsewhere", "assumed"})


class SpeedWidths(NamedTuple):
    """Relative half-widths of the 10-90 % bands of decode-side and prefill-side speeds."""

    decode: float
    prefill: float


def speed_basis(engine: str, device: DeviceSpec, calibration: dict | None = None) -> tuple[str, SpeedWidths]:
    """What the engine's speed constants on this device rest on (one of BASES), and the bands' relative widths."""
    key = (engine, device.backend)
    if calibration and key in calibration and calibration[key].provenance == "measured":
        return BASES[0], SpeedWidths(MEASURED_WIDTH, MEASURED_WIDTH)
    if EFFICIENCY.get(key, _FALLBACK).provenance != "calibrated":
        return BASES[3], SpeedWidths(ASSUMED_WIDTH, ASSUMED_WIDTH)
    dec, pre = SPEED_P90.get(key, (None, None))
    p90 = SpeedWidths(UNTESTED_WIDTH if dec is None else dec, UNTESTED_WIDTH if pre is None else pre)
    if device.architecture in CALIBRATED_ON.get(key, frozenset()):
        return BASES[1], p90
    return BASES[2], SpeedWidths(*(max(2 * w, ELSEWHERE_MIN_WIDTH) for w in p90))


def pcie_gb_s(dev: DeviceSpec) -> float:
    """One-direction x16 bandwidth of the device's host link, GB/s (PCIe 4 when the catalog does not say)."""
    return PCIE_GB_S.get(dev.pcie_gen or 4, PCIE_GB_S[4])


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


def cpu_gemv_fraction(main_type: str | None) -> float:
    """Share of the CPU's int8 peak a batch-1 llama.cpp GEMV reaches for a file whose bulk type is `main_type`."""
    return CPU_GEMV_LATTICE_FRACTION if main_type and lattice_iquant(main_type) else CPU_GEMV_PEAK_FRACTION


def host_gemv_flops(main_type: str | None) -> float:
    """Ops/s a GPU machine's host CPU (not in the catalog: CPU_DEFAULT_CORES of the fallback core, plain int8) reaches
    in the batch-1 GEMVs of the layers or experts it keeps in RAM, for a file whose bulk type is `main_type`."""
    return CPU_DEFAULT_CORES * CPU_FLOPS_PER_CORE * CPU_INT8_SPEEDUP * cpu_gemv_fraction(main_type)


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


def rates(mc: ModelCost, lay: FormatLayout, fmt: WeightFormat, engine: str, dev, target: Target, mode: str,  # type: ignore[no-untyped-def]
           calibration: dict | None) -> tuple:
    """Per (format, engine, device) constants of the speed model: efficiency, achievable bandwidths, peak FLOP/s, the
    KV read fraction, and the batch-1 GEMV ops/s of the CPU that holds weights in RAM."""
    eff = efficiency(engine, dev.backend, calibration)
    kclass = kernel_class(fmt.family, "fp16" if mode == "dequantized" else fmt.compute, lay.ggml_types)
    bw = dev.mem_bandwidth_gb_s * 1e9 * eff.bandwidth * KERNEL_BANDWIDTH_FACTOR.get(kclass, 0.9)
    bw = unit_capped_bandwidth(bw, dev, engine, kclass)
    if fmt.family == "gguf" and engine != "llamacpp":
        bw *= FOREIGN_GGUF_FACTOR
    host_eff = efficiency("llamacpp", "cpu", calibration).bandwidth
    host_bw = (dev.mem_bandwidth_gb_s if target.is_cpu else target.host_bandwidth_gb_s) * 1e9 * host_eff
    main = gguf_main_type(fmt)
    peak = prefill_peak_flops(dev, engine, fmt.family, fmt.compute, mode, main)
    # the batch-1 GEMV rate of the CPU that holds weights in RAM: the target's own cores, or a GPU machine's host
    gemv = peak * cpu_gemv_fraction(main) if target.is_cpu else host_gemv_flops(main)
    return eff, bw, host_bw, peak, KV_READ_FRACTION.get((engine, dev.backend), KV_READ_FRACTION_DEFAULT), gemv


def predict_speeds(plan: Plan, mc: ModelCost, lay: FormatLayout, fmt: WeightFormat, runtime: Runtime, target: Target, kv: str,
           mode: str, calibration: dict | None) -> None:
    """Decode tokens/s (batch 1 and at full context), aggregate throughput, prefill tokens/s and TTFT."""
    m = mc.spec
    dev = target.device
    engine = runtime.engine
    key = ("rates", fmt.id, mode, engine, dev.id, dev.backend, dev.cpu_cores, target.is_cpu, target.host_bandwidth_gb_s,
           calibration is None)
    if calibration is None:  # the table's constants: the same for every plan of this format, engine and device
        got = mc.memo(key, lambda: rates(mc, lay, fmt, engine, dev, target, mode, None))
    else:
        got = rates(mc, lay, fmt, engine, dev, target, mode, calibration)
    eff, bw, host_bw, peak_flops_raw, kv_fraction, host_gemv = got
    n = m.num_layers
    tp = (plan.parallel or {}).get("tensor_parallel", target.count if plan.layout == "tensor-parallel" else 1)
    if plan.layout in ("layer-split", "rpc-layer-split", "partial-offload", "cpu", "single"):
        tp = 1
    gpu_layers = plan.gpu_layers if plan.gpu_layers is not None else n
    if plan.layout == "cpu":
        gpu_layers = 0
    offloaded = range(gpu_layers, n) if plan.layout in ("partial-offload", "cpu") else range(0)
    mla_aware = engine != "transformers"

    gpu_range = range(0, n) if not offloaded else range(0, gpu_layers)
    if offloaded:
        w_gpu = lay.cum_active[gpu_layers]
        w_host = lay.sum_active - w_gpu
    else:
        w_gpu, w_host = lay.sum_active, 0.0

    peak_flops = peak_flops_raw * eff.compute
    fixed_step = n * eff.layer_overhead_us * 1e-6 + eff.step_overhead_us * 1e-6
    allreduce_s_per_token = 0.0
    if tp > 1:
        link = "nvlink" if dev.nvlink_gb_s else ("infinity_fabric" if dev.infinity_fabric_gb_s else "pcie")
        fixed_step += 2 * n * ALLREDUCE_LATENCY_US[link] * 1e-6
        # two all-reduces of each token's 16-bit hidden state per layer (after attention and after the MLP)
        one_way_gb_s = {"nvlink": (dev.nvlink_gb_s or 0) / 2, "infinity_fabric": (dev.infinity_fabric_gb_s or 0) / 2,
                        "pcie": pcie_gb_s(dev)}[link]
        allreduce_s_per_token = (2 * n * 2 * (tp - 1) / tp * m.hidden_size * 2
                                 / (one_way_gb_s * 1e9 * ALLREDUCE_BUS_FRACTION))
    fab_lat, fab_bw = fabric_link(target)
    hidden_bytes = m.hidden_size * 2  # one token's activations in 16-bit
    par = plan.parallel or {}
    pp, ep = par.get("pipeline_parallel", 1), par.get("expert_parallel", 1)
    if plan.layout == "layer-split":
        fixed_step += (target.count - 1) * LAYER_SPLIT_HOP_US * 1e-6
    elif plan.layout == "rpc-layer-split":
        # in-node hops as a layer split, plus one RPC round trip over the network per extra node
        fixed_step += (target.count - 1) * target.nodes * LAYER_SPLIT_HOP_US * 1e-6
        fixed_step += (target.nodes - 1) * (RPC_HOP_US * 1e-6 + fab_lat + hidden_bytes / fab_bw)
    elif pp > 1:
        fixed_step += (pp - 1) * (fab_lat + hidden_bytes / fab_bw)
    if ep > 1 and m.moe is not None:
        # dispatch and combine all-to-all per MoE layer; tokens cross the fabric (k experts per token)
        moe_layers = m.num_layers - m.moe.first_dense_layers
        fixed_step += 2 * moe_layers * (fab_lat + m.moe.experts_per_token * hidden_bytes / fab_bw)

    kv_weight = bw / (dev.mem_bandwidth_gb_s * 1e9 * kv_fraction) if plan.layout != "cpu" else 1.0

    def step_time(position: int, batch: int) -> float:
        """Seconds for one decode step of `batch` sequences at `position` tokens of context."""
        act_frac = 1.0
        if m.moe is not None and batch > 1:  # more distinct experts are touched by a batch
            k, e = m.moe.experts_per_token, m.moe.num_experts
            act_frac = (1 - (1 - k / e) ** batch) / (k / e)
        # KV reads are charged at the attention kernels' lower effective bandwidth, expressed as extra bytes.
        gpu_bytes = w_gpu * act_frac + batch * kv_weight * mc.kv_bytes(position, kv, 1, gpu_range if offloaded else None, mla_aware)
        host_bytes = w_host * act_frac + (batch * mc.kv_bytes(position, kv, 1, offloaded, mla_aware) if offloaded else 0.0)
        head = lay.head_active_bytes
        if offloaded and plan.layout == "partial-offload":
            host_bytes += head
        else:
            gpu_bytes += head
        if plan.layout == "cpu":
            t = (gpu_bytes + host_bytes) / host_bw
        else:  # the host's share of the weights, at its memory's rate or its cores' unpacking rate
            host_ops = 2 * mc.matmul_params_active * batch * w_host / lay.sum_active if w_host else 0.0
            t = gpu_bytes / tp / bw + max(host_bytes / host_bw, host_ops / host_gemv)
        flops = 2 * mc.matmul_params_active * batch
        if plan.layout == "cpu" and batch == 1:  # a GEMV: the cores' unpacking rate
            t = max(t, flops / host_gemv)
        else:
            t = max(t, flops / (peak_flops * tp))
        return t + fixed_step + batch * allreduce_s_per_token

    pos = plan.prompt_tokens
    t1 = step_time(pos, 1)
    decode = 1.0 / t1
    full = 1.0 / step_time(plan.context, 1)
    throughput = decode
    # data-parallel replicas each decode their own share of the sequences; the fullest one sets the pace
    seqs = math.ceil(plan.concurrency / par.get("data_parallel", 1))
    if seqs > 1:
        tb = step_time(pos, seqs)
        throughput = seqs / tb
        decode = 1.0 / tb
        if pp > 1 and seqs >= pp:
            # pipeline stages work on different micro-batches of concurrency/pp sequences at once
            micro = math.ceil(seqs / pp)
            throughput = seqs / step_time(pos, micro)
    throughput *= plan.concurrency / seqs
    # Prefill: FLOPs of the prompt over achievable compute, with a floor of re-reading the weights per micro-batch.
    p = max(plan.prompt_tokens, 1)
    flops = p * (2 * mc.matmul_params_active + mc.attn_flops_per_token(p))
    peak = peak_flops
    gpu_frac = gpu_layers / n if plan.layout == "partial-offload" else (0.0 if plan.layout == "cpu" else 1.0)
    t_compute = flops * gpu_frac / (peak * tp) + p * allreduce_s_per_token
    if plan.layout == "layer-split" and engine == "llamacpp":
        # llama.cpp pipelines the micro-batches of one batch through the GPUs' layer ranges (PR #6017: -b 2048 split
        # into -ub 512 micro-batches, in flight at once): k of them over g stages take (k + g - 1) stage times, not k x g.
        k, g = min(math.ceil(p / UBATCH), N_BATCH // UBATCH), target.count
        t_compute *= (k + g - 1) / (k * g)
    if pp > 1 or plan.layout == "rpc-layer-split":  # the prompt's activations cross each stage boundary once
        hops = pp - 1 if pp > 1 else target.nodes - 1
        t_compute += hops * (fab_lat + p * hidden_bytes / fab_bw)
    if gpu_frac < 1:
        cpu_peak = (prefill_peak_flops(dev, "llamacpp", "gguf", "int8", "native", gguf_main_type(fmt)) if target.is_cpu
                    else CPU_DEFAULT_CORES * CPU_FLOPS_PER_CORE)
        cpu_peak *= efficiency("llamacpp", "cpu", calibration).compute
        host_w = lay.sum_layers - lay.cum_layers[gpu_layers] + lay.head_bytes
        pcie = pcie_gb_s(dev) * 1e9
        # llama.cpp streams offloaded weights to the GPU for large batches, else computes them on the CPU.
        t_host = min(flops * (1 - gpu_frac) / cpu_peak, math.ceil(p / UBATCH) * host_w / pcie) if not target.is_cpu \
            else flops / cpu_peak
        t_compute += t_host
    weight_reads = math.ceil(p / UBATCH) * lay.sum_active / tp / bw if plan.layout != "cpu" else 0.0
    t_prefill = max(t_compute, weight_reads) + n * eff.layer_overhead_us * 1e-6 * math.ceil(p / UBATCH)
    basis, widths = speed_basis(engine, dev, calibration)
    plan.set_speeds(decode_tokens_per_s=decode, decode_tokens_per_s_full_context=full, throughput_tokens_per_s=throughput,
                    prefill_tokens_per_s=p / t_prefill, ttft_s=t_prefill + t1, speed_width=widths.decode,
                    speed_width_prefill=widths.prefill)
    plan.speed_basis_value = basis
