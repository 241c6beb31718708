"""Every runtime as data: which formats it loads on which hardware, what it does with the rest, its KV-cache
dtypes, multi-GPU modes, memory overheads and launch command.

Facts come from each runtime's docs and code as summarised, with commits, in benchmarks/data/runtime_compat.csv
(vLLM docs/features/quantization README 'Supported Hardware' table, ggml supports_op per backend, Ollama docs,
mlx-lm, TGI launcher, TensorRT-LLM support matrix, ExLlamaV2 README).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from planner.errors import NotFoundError, close_matches, normalize_name
from planner.formats import WeightFormat

if TYPE_CHECKING:
    from planner.hardware.catalog import DeviceSpec

Mode = Literal["native", "weight_only", "dequantized", "no"]
MultiGPU = Literal["none", "layer", "tensor"]


@dataclass(frozen=True)
class FormatRule:
    """What a runtime does with formats matching `formats` (family names or format ids) on `backends`."""

    formats: tuple[str, ...]
    backends: tuple[str, ...]
    mode: Mode
    min_cc: float = 0.0
    max_cc: float = 99.0  # exclusive upper bound, for rules such as 'weight-only below sm89'
    note: str = ""
    source: str = ""
    dequant_to: str | None = None  # dtype the weights become in memory when mode == 'dequantized'
    single_device: bool = False  # the runtime cannot split this format over several GPUs

    def matches(self, fmt: WeightFormat, device: DeviceSpec) -> bool:
        """Whether the rule covers this format on this device."""
        # rtn-* checkpoints are GPTQ's layout made without calibration: whatever loads GPTQ loads them
        family = "gptq" if fmt.family == "rtn" else fmt.family
        if family not in self.formats and fmt.id not in self.formats:
            return False
        if device.backend not in self.backends:
            return False
        if device.backend == "cuda":
            return self.min_cc <= device.cc < self.max_cc
        return True


@dataclass(frozen=True)
class Support:
    """The verdict for one (runtime, format, device): mode plus the reason shown to the user."""

    mode: Mode
    reason: str
    dequant_to: str | None = None
    single_device: bool = False

    @property
    def runs(self) -> bool:
        """Whether the runtime can run the format there at all."""
        return self.mode != "no"


@dataclass(frozen=True)
class Runtime:
    """One inference runtime."""

    id: str
    name: str
    engine: Literal["llamacpp", "vllm", "sglang", "trtllm", "tgi", "exllamav2", "mlx", "transformers"]
    rules: tuple[FormatRule, ...]
    kv_dtypes: tuple[str, ...]
    multi_gpu: MultiGPU
    aliases: tuple[str, ...] = ()
    gpu_memory_fraction: float | None = None  # vLLM-style budget of total GPU memory
    cuda_context_gib: float = 0.4  # per process per GPU (pytorch#107667/#109888: 0.3-0.5 GB with lazy loading)
    cuda_graph_gib: float = 0.0  # CUDA-graph pools
    weights_on_host: tuple[str, ...] = ()  # tensors the runtime keeps in host RAM (llama.cpp: token_embd)
    default_context: int | None = None  # what the runtime uses when the user gives none
    launch: str = ""
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def support(self, fmt: WeightFormat, device: DeviceSpec) -> Support:
        """Whether and how this runtime runs `fmt` on `device` (first matching rule wins)."""
        for rule in self.rules:
            if rule.matches(fmt, device):
                why = rule.note or f"{self.name} {'runs' if rule.mode != 'no' else 'does not run'} {fmt.id} on {device.backend}"
                return Support(rule.mode, why, rule.dequant_to, rule.single_device)
        where = device.backend + (f" sm{device.compute_capability}" if device.compute_capability else "")
        return Support("no", f"{self.name} does not load {fmt.id} ({fmt.family}) on {where}")


_GGUF = ("gguf",)
_ALL_LLAMACPP_BACKENDS = ("cuda", "rocm", "metal", "cpu", "vulkan", "sycl")
_LLAMACPP_RULES = (
    FormatRule(("TQ1_0", "TQ2_0"), ("cuda", "rocm"), "no", note="ternary types have no CUDA/HIP matmul (ops fall back to CPU)",
               source="ggml-cuda supports_op MUL_MAT type list"),
    FormatRule(("TQ1_0",), ("metal", "vulkan"), "no", note="no TQ1_0 kernel on this backend", source="ggml-metal.metal; ggml-vulkan supports_op"),
    FormatRule(_GGUF, ("cuda",), "native", min_cc=5.0, source="ggml-cuda (default arch list from 5.0)"),
    FormatRule(_GGUF, ("rocm", "metal", "cpu", "vulkan", "sycl"), "native", source="ggml backends supports_op"),
)
_MLX_GGUF = FormatRule(("Q4_0", "Q4_1", "Q8_0"), ("metal",), "native", note="MLX keeps Q4_0/Q4_1/Q8_0 GGUF quantized",
                       source="mlx-lm GGUF loading docs")

RUNTIMES: dict[str, Runtime] = {}


def _add(rt: Runtime) -> None:
    RUNTIMES[rt.id] = rt


_add(Runtime(
    "llama.cpp", "llama.cpp", "llamacpp", _LLAMACPP_RULES,
    kv_dtypes=("f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl"), multi_gpu="layer",
    aliases=("llamacpp", "llama-server", "llama-cpp"), weights_on_host=("token_embd.weight",),
    cuda_context_gib=0.3,
    launch="llama-server -m {gguf} -ngl {ngl} -c {context} -np {concurrency} -fa on{kv_flags}{split_flags} --host 0.0.0.0 --port 8080",
    source="ggml-org/llama.cpp tools/server/README.md; src/llama-model.cpp (input layer kept on CPU)",
    notes=("A quantized V cache needs flash attention (-fa on).",),
))
_add(Runtime(
    "ollama", "Ollama", "llamacpp", tuple(r for r in _LLAMACPP_RULES if "sycl" not in r.backends or r.mode == "no")
    + (FormatRule(_GGUF, ("rocm", "metal", "cpu", "vulkan"), "native", source="ollama docs/gpu.mdx"),),
    kv_dtypes=("f16", "q8_0", "q4_0"), multi_gpu="layer", aliases=("ollama-run",), weights_on_host=("token_embd.weight",),
    cuda_context_gib=0.3, default_context=4096,
    # Server settings are environment variables of `ollama serve`; num_ctx in the Modelfile sets the model's context.
    launch="OLLAMA_NUM_PARALLEL={concurrency} OLLAMA_FLASH_ATTENTION=1{ollama_kv} ollama serve &\n"
           "printf 'FROM ./{gguf}\\nPARAMETER num_ctx {context}\\n' > Modelfile && ollama create {name} -f Modelfile && ollama run {name}",
    source="ollama docs/faq.mdx, docs/context-length.mdx, envconfig/config.go",
    notes=("Default context depends on VRAM: <24 GiB 4k, 24-48 GiB 32k, >=48 GiB 256k; set OLLAMA_CONTEXT_LENGTH.",
           "Quantized KV cache is global (OLLAMA_KV_CACHE_TYPE) and needs flash attention."),
))
_add(Runtime(
    "lmstudio", "LM Studio", "llamacpp",
    (FormatRule(("mlx",), ("metal",), "native", note="LM Studio's mlx-engine runs MLX models", source="lmstudio-ai/docs"),)
    + tuple(r for r in _LLAMACPP_RULES if "sycl" not in r.backends),
    kv_dtypes=("f16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"), multi_gpu="layer",
    aliases=("lm-studio", "lms"), weights_on_host=("token_embd.weight",), cuda_context_gib=0.3,
    launch="lms load {model} --context-length {context} --gpu max",
    source="lmstudio-ai/docs (llm-load-model-config.md)",
))
_add(Runtime(
    "koboldcpp", "KoboldCpp", "llamacpp", tuple(r for r in _LLAMACPP_RULES if "sycl" not in r.backends),
    kv_dtypes=("f16", "q8_0", "q4_0"), multi_gpu="layer", aliases=("kobold",), weights_on_host=("token_embd.weight",),
    cuda_context_gib=0.3,
    launch="koboldcpp --model {gguf} --gpulayers {ngl} --contextsize {context} --flashattention{kobold_kv}",
    source="LostRuins/koboldcpp README (llama.cpp fork; --quantkv 1=q8, 2=q4 needs --flashattention)",
))
_add(Runtime(
    "vllm", "vLLM", "vllm",
    (
        FormatRule(("float",), ("cuda",), "no", max_cc=7.5, note="vLLM needs compute capability 7.5+ (Volta dropped)", source="vLLM install docs"),
        FormatRule(("bf16",), ("cuda",), "no", max_cc=8.0, note="BF16 needs sm80+; use --dtype half", source="TransformerEngine support matrix; vLLM"),
        FormatRule(("float",), ("cuda", "rocm", "cpu"), "native", source="vLLM docs"),
        FormatRule(("gptq", "awq"), ("cuda",), "native", min_cc=7.5, note="Marlin kernels on sm75+ (Machete on sm90)", source="vLLM quantization README table"),
        FormatRule(("awq",), ("cpu",), "native", source="vLLM quantization README table (x86 CPU)"),
        FormatRule(("gptq",), ("cpu",), "native", source="vLLM quantization README table (x86 CPU)"),
        FormatRule(("bnb",), ("cuda",), "native", min_cc=7.5, note="bitsandbytes in-flight or pre-quantized", source="vLLM docs bnb.md"),
        FormatRule(("fp8",), ("cuda",), "native", min_cc=8.9, note="native FP8 W8A8 on sm89+", source="vLLM fp8.md"),
        FormatRule(("fp8",), ("cuda",), "weight_only", min_cc=7.5, max_cc=8.9,
                   note="no FP8 tensor cores below sm89: weight-only W8A16 via FP8 Marlin (memory saved, fp16 compute)", source="vLLM fp8.md"),
        FormatRule(("fp8",), ("rocm",), "native", note="FP8 on MI300-class GPUs", source="vLLM fp8.md"),
        FormatRule(("w8a8",), ("cuda",), "native", min_cc=7.5, source="vLLM int8.md"),
        FormatRule(("w8a8",), ("cpu",), "native", source="vLLM quantization README table"),
        FormatRule(("w8a16",), ("cuda",), "native", min_cc=8.0, note="compressed-tensors W8A16 via Marlin", source="vLLM compressed-tensors"),
        FormatRule(("mxfp4",), ("cuda",), "native", min_cc=9.0, note="Triton MXFP4 MoE on sm90+", source="vLLM mxfp4"),
        FormatRule(("mxfp4",), ("cuda",), "weight_only", min_cc=8.0, max_cc=9.0, note="Marlin weight-only MXFP4 below sm90", source="vLLM mxfp4"),
        FormatRule(("mxfp4",), ("rocm",), "native", source="vLLM mxfp4 (Triton)"),
        FormatRule(("nvfp4",), ("cuda",), "native", min_cc=10.0, source="vLLM NVFP4 (compressed-tensors / ModelOpt)"),
        FormatRule(("nvfp4",), ("cuda",), "weight_only", min_cc=7.5, max_cc=10.0, note="FP4 Marlin weight-only below Blackwell", source="vLLM"),
        FormatRule(("gguf",), ("cuda",), "native", min_cc=7.5, note="GGUF in vLLM is experimental and slower; single file only", source="vLLM gguf.md"),
        FormatRule(("gguf",), ("rocm",), "native", note="GGUF in vLLM is experimental", source="vLLM quantization README table"),
    ),
    kv_dtypes=("auto", "fp8_e4m3", "fp8_e5m2"), multi_gpu="tensor", aliases=("vllm-serve",), gpu_memory_fraction=0.9,
    cuda_context_gib=0.5, cuda_graph_gib=0.5,
    launch="vllm serve {hf_model} --max-model-len {context} --max-num-seqs {concurrency} --tensor-parallel-size {tp}{quant_flag}{kv_flag} --gpu-memory-utilization 0.9",
    source="vllm docs/features/quantization/README.md; vllm/config/cache.py (gpu_memory_utilization 0.9/0.92)",
    notes=("gpu_memory_utilization is a fraction of total GPU memory and includes the KV cache.",),
))
_add(Runtime(
    "sglang", "SGLang", "sglang",
    (
        FormatRule(("float",), ("cuda",), "no", max_cc=7.5, note="SGLang targets sm75+"),
        FormatRule(("bf16",), ("cuda",), "no", max_cc=8.0, note="BF16 needs sm80+"),
        FormatRule(("float", "gptq", "awq", "w8a8"), ("cuda",), "native", source="SGLang quantization.md"),
        FormatRule(("float",), ("rocm", "cpu"), "native", source="SGLang docs (ROCm, Xeon AMX)"),
        FormatRule(("fp8",), ("cuda",), "native", min_cc=8.9, source="SGLang Fp8Config"),
        FormatRule(("fp8",), ("cuda",), "weight_only", min_cc=8.0, max_cc=8.9, note="Marlin FP8 weight-only below sm89", source="SGLang Fp8Config"),
        FormatRule(("fp8",), ("rocm",), "native", source="SGLang AMD guide (DeepSeek-V3 FP8 on MI300X)"),
        FormatRule(("mxfp4",), ("cuda",), "native", min_cc=8.0, source="SGLang Mxfp4Config"),
        FormatRule(("nvfp4",), ("cuda",), "native", min_cc=10.0, source="SGLang modelopt_fp4"),
        FormatRule(("gguf",), ("cuda",), "native", note="--load-format gguf", source="SGLang server_arguments.md"),
    ),
    kv_dtypes=("auto", "fp8_e4m3", "fp8_e5m2"), multi_gpu="tensor", gpu_memory_fraction=0.88, cuda_context_gib=0.5, cuda_graph_gib=0.5,
    launch="python -m sglang.launch_server --model-path {hf_model} --tp {tp} --context-length {context}{sglang_kv}",
    source="sgl-project/sglang docs/advanced_features/quantization.md, server_arguments.md",
))
_add(Runtime(
    "tensorrt-llm", "TensorRT-LLM", "trtllm",
    (
        FormatRule(("float", "fp8", "gptq", "awq", "w8a8", "w8a16", "nvfp4", "mxfp4"), ("cuda",), "no", max_cc=8.0,
                   note="TensorRT-LLM supports Ampere and newer only", source="TRT-LLM support matrix"),
        FormatRule(("float",), ("cuda",), "native", source="TRT-LLM support matrix"),
        FormatRule(("fp8",), ("cuda",), "native", min_cc=8.9, source="TRT-LLM support matrix (FP8 W8A8 sm89+)"),
        FormatRule(("gptq", "awq"), ("cuda",), "native", min_cc=8.0, max_cc=10.0, note="W4A16 AWQ/GPTQ on Ampere-Hopper", source="TRT-LLM support matrix"),
        FormatRule(("w8a8", "w8a16"), ("cuda",), "native", min_cc=8.0, note="INT8 SmoothQuant / weight-only (TensorRT backend)", source="TRT-LLM precision.md"),
        FormatRule(("nvfp4", "mxfp4"), ("cuda",), "native", min_cc=10.0, source="TRT-LLM support matrix"),
    ),
    kv_dtypes=("auto", "fp8", "int8"), multi_gpu="tensor", aliases=("trtllm", "trt-llm"), cuda_context_gib=0.5, cuda_graph_gib=0.5,
    gpu_memory_fraction=None,
    launch="trtllm-serve {hf_model} --backend pytorch --tp_size {tp} --max_seq_len {context} --max_batch_size {concurrency} --kv_cache_free_gpu_memory_fraction 0.9",
    source="NVIDIA/TensorRT-LLM docs (support matrix, reference/memory.md)",
    notes=("The KV cache takes 0.9 of the memory left free after weights and buffers.",),
))
_add(Runtime(
    "tgi", "Hugging Face TGI", "tgi",
    (
        FormatRule(("float",), ("cuda",), "native", min_cc=7.5, source="TGI docs (optimized on H100/A100/A10G/T4)"),
        FormatRule(("float",), ("rocm",), "native", source="TGI installation_amd.md"),
        FormatRule(("gptq",), ("cuda",), "native", min_cc=8.0, source="TGI (ExLlama/Marlin kernels sm80+)"),
        FormatRule(("gptq",), ("cuda",), "weight_only", min_cc=7.5, max_cc=8.0, note="Triton GPTQ fallback below sm80", source="TGI launcher"),
        FormatRule(("awq",), ("cuda",), "native", source="TGI --quantize awq"),
        FormatRule(("bnb",), ("cuda",), "native", note="bitsandbytes quantizes on load and is much slower than fp16", source="TGI launcher"),
        FormatRule(("fp8",), ("cuda",), "native", min_cc=9.0, source="TGI launcher ('fp8 works on H100 and above')"),
        FormatRule(("fp8",), ("cuda",), "weight_only", min_cc=8.0, max_cc=9.0, note="FP8 Marlin weight-only below sm90", source="TGI fp8.py"),
        FormatRule(("exl2",), ("cuda",), "native", note="EXL2 in TGI: no tensor parallelism", source="TGI launcher",
                   single_device=True),
        FormatRule(("w8a16",), ("cuda",), "native", note="EETQ int8 weight-only", source="TGI --quantize eetq"),
    ),
    kv_dtypes=("auto", "fp8_e4m3fn", "fp8_e5m2"), multi_gpu="tensor", aliases=("text-generation-inference",),
    gpu_memory_fraction=1.0, cuda_context_gib=0.5, cuda_graph_gib=0.3,
    launch="text-generation-launcher --model-id {hf_model} --num-shard {tp} --max-total-tokens {context}{tgi_quant}",
    source="huggingface/text-generation-inference docs (launcher.md, conceptual/quantization.md); maintenance mode since 2026",
))
_add(Runtime(
    "exllamav2", "ExLlamaV2 / TabbyAPI", "exllamav2",
    (
        FormatRule(("exl2", "gptq-int4"), ("cuda",), "native", min_cc=6.0, source="turboderp/exllamav2 README (wheels sm60-sm120)"),
        FormatRule(("exl2", "gptq-int4"), ("rocm",), "native", source="exllamav2 ROCm wheels"),
    ),
    kv_dtypes=("fp16", "q8", "q6", "q4"), multi_gpu="layer", aliases=("exllama", "tabbyapi", "exl2"), cuda_context_gib=0.4,
    launch="python -m exllamav2.server --model_dir {hf_model} --max_seq_len {context} --cache_mode {exl_kv} --gpu_split auto",
    source="turboderp/exllamav2 README; theroyallab/tabbyAPI config",
))
_add(Runtime(
    "mlx", "MLX (mlx-lm)", "mlx",
    (
        FormatRule(("mlx", "float"), ("metal",), "native", source="ml-explore/mlx-lm"),
        FormatRule(("awq", "gptq"), ("metal",), "native", note="mlx-lm repacks AWQ/GPTQ weights to MLX format", source="mlx_lm/utils.py"),
        FormatRule(("mxfp4", "nvfp4"), ("metal",), "native", source="mlx-lm --q-mode mxfp4/nvfp4"),
        _MLX_GGUF,
        FormatRule(("gguf",), ("metal",), "dequantized", dequant_to="fp16", note="MLX casts other GGUF quant types to float16",
                   source="mlx-lm GGUF loading"),
        FormatRule(("mlx", "float"), ("cuda",), "native", min_cc=7.5, note="mlx[cuda] on Linux", source="mlx install docs"),
    ),
    kv_dtypes=("fp16",), multi_gpu="none", aliases=("mlx-lm", "mlx_lm"), cuda_context_gib=0.0,
    launch="mlx_lm.server --model {hf_model} --port 8080",
    source="ml-explore/mlx-lm README; mlx_lm.server has no --kv-bits",
))
_add(Runtime(
    "transformers", "Hugging Face transformers", "transformers",
    (
        FormatRule(("bf16",), ("cuda",), "no", max_cc=8.0, note="BF16 needs sm80+; load in float16"),
        FormatRule(("float",), ("cuda", "rocm", "metal", "cpu", "sycl"), "native", source="transformers docs"),
        FormatRule(("gptq", "awq"), ("cuda", "rocm"), "native", source="transformers quantization overview"),
        FormatRule(("bnb",), ("cuda",), "native", source="transformers quantization overview"),
        FormatRule(("fp8",), ("cuda",), "native", min_cc=8.9, source="transformers FBGEMM_FP8 / fine-grained FP8"),
        FormatRule(("gguf",), ("cuda", "cpu", "metal"), "dequantized", dequant_to="fp32",
                   note="transformers dequantizes GGUF to fp32 at load", source="transformers gguf.md"),
    ),
    kv_dtypes=("auto",), multi_gpu="layer", aliases=("hf", "hf-transformers", "accelerate"), cuda_context_gib=0.5,
    launch="python -c \"from transformers import pipeline; pipeline('text-generation', model='{hf_model}', device_map='auto')\"",
    source="huggingface/transformers docs/source/en/quantization/overview.md",
))


def get_runtime(name: str) -> Runtime:
    """Resolve a runtime by id or alias (case- and punctuation-insensitive)."""
    key = normalize_name(name)
    for rt in RUNTIMES.values():
        if key == normalize_name(rt.id) or key in (normalize_name(a) for a in rt.aliases) or key == normalize_name(rt.name):
            return rt
    raise NotFoundError("runtime", name, close_matches(name, list(RUNTIMES)))


def runtimes_for(fmt: WeightFormat, device: DeviceSpec, only: Sequence[str] = ()) -> list[tuple[Runtime, Support]]:
    """Runtimes that can run `fmt` on `device`, with how."""
    out = []
    for rt in RUNTIMES.values():
        if only and rt.id not in only:
            continue
        s = rt.support(fmt, device)
        if s.runs:
            out.append((rt, s))
    return out
