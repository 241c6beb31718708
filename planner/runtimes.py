"""Every runtime as data: which formats it loads on which hardware, which model architectures it runs, what it
does with the rest, its KV-cache dtypes, multi-GPU modes, memory overheads and launch command.

The support rules live in planner/data/runtime_support.csv, one row per rule, each with its source (a docs page or
a source file at a commit); see planner/data/README.md. Format rules say whether a runtime loads a format on a
backend / compute capability; architecture rules say whether it runs a model architecture (optionally only for
some formats, e.g. vLLM's GGUF loader). A rule's status is 'full' or 'partial' (experimental, version-dependent):
partial support still runs, but the plan carries a warning and ranks behind fully supported paths.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from planner.errors import NotFoundError, close_matches, normalize_name
from planner.formats import WeightFormat

if TYPE_CHECKING:
    from planner.hardware.catalog import DeviceSpec
    from planner.models.spec import ModelSpec

Mode = Literal["native", "weight_only", "dequantized", "no"]
Status = Literal["full", "partial"]
MultiGPU = Literal["none", "layer", "tensor"]

SUPPORT_CSV = Path(__file__).resolve().parent / "data" / "runtime_support.csv"
_MODES = ("native", "weight_only", "dequantized", "no")
_STATUSES = ("full", "partial")


@dataclass(frozen=True)
class FormatRule:
    """What a runtime does with formats matching `formats` (family names or format ids) on `backends` ('*': any)."""

    formats: tuple[str, ...]
    backends: tuple[str, ...]
    mode: Mode
    min_cc: float = 0.0
    max_cc: float = 99.0  # exclusive upper bound, for rules such as 'weight-only below sm89'
    note: str = ""
    source: str = ""
    dequant_to: str | None = None  # dtype the weights become in memory when mode == 'dequantized'
    single_device: bool = False  # the runtime cannot split this format over several GPUs
    status: Status = "full"

    def matches(self, fmt: WeightFormat, device: DeviceSpec) -> bool:
        """Whether the rule covers this format on this device."""
        # rtn-* checkpoints are GPTQ's layout made without calibration: whatever loads GPTQ loads them
        family = "gptq" if fmt.family == "rtn" else fmt.family
        if "*" not in self.formats and family not in self.formats and fmt.id not in self.formats:
            return False
        if "*" not in self.backends and device.backend not in self.backends:
            return False
        if device.backend == "cuda":
            return self.min_cc <= device.cc < self.max_cc
        return True


@dataclass(frozen=True)
class ArchRule:
    """Whether a runtime runs model architectures `archs` ('*' for any), optionally only for `formats`."""

    archs: tuple[str, ...]
    mode: Literal["native", "no"]
    source: str
    formats: tuple[str, ...] = ()  # empty: every format
    status: Status = "full"
    note: str = ""
    # a 'checkpoint' rule: only for models whose published checkpoint has one of these dtypes (ModelSpec.native_dtype),
    # e.g. a loader that refuses an already-quantized (FP8, MXFP4) release; empty for an architecture rule
    checkpoints: tuple[str, ...] = ()

    def matches(self, arch: str, fmt: WeightFormat, native_dtype: str | None = None) -> bool:
        """Whether the rule covers this architecture in this format (and, for a checkpoint rule, this release dtype)."""
        if self.formats and fmt.family not in self.formats and fmt.id not in self.formats:
            return False
        if self.checkpoints and native_dtype not in self.checkpoints:
            return False
        return "*" in self.archs or arch in self.archs


@dataclass(frozen=True)
class KVRule:
    """Whether a runtime offers KV-cache dtypes `dtypes` on `backends` ('*': any)."""

    dtypes: tuple[str, ...]
    backends: tuple[str, ...]
    mode: Literal["native", "no"]
    source: str
    status: Status = "full"
    note: str = ""

    def matches(self, dtype: str, backend: str) -> bool:
        """Whether the rule covers this dtype on this backend."""
        return dtype in self.dtypes and ("*" in self.backends or backend in self.backends)


@dataclass(frozen=True)
class Support:
    """The verdict for one (runtime, format, device[, architecture]): mode plus the reason shown to the user."""

    mode: Mode
    reason: str
    dequant_to: str | None = None
    single_device: bool = False
    status: Status = "full"
    sources: tuple[str, ...] = ()  # the rules the verdict came from; empty only when no rule matched

    @property
    def runs(self) -> bool:
        """Whether the runtime can run the format there at all."""
        return self.mode != "no"

    @property
    def partial(self) -> bool:
        """Whether the support is experimental or version-dependent (a plan warning, ranked behind full support)."""
        return self.runs and self.status == "partial"


def arch_id(spec: ModelSpec) -> str:
    """The architecture id support rules name: the GGUF architecture, except Mixtral (GGUF 'llama' with experts),
    which engines implement separately from Llama."""
    if spec.architecture == "llama" and spec.moe is not None:
        return "mixtral"
    return spec.architecture


def _split(cell: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in cell.split("|") if x.strip())


def load_support_rules(path: Path = SUPPORT_CSV) -> tuple[dict[str, list[FormatRule]], dict[str, list[ArchRule]],
                                                            dict[str, list[KVRule]]]:
    """Read runtime_support.csv into format, architecture and KV-cache rules per runtime id, in file order (first
    match wins)."""
    fmt_rules: dict[str, list[FormatRule]] = {}
    arch_rules: dict[str, list[ArchRule]] = {}
    kv_rules: dict[str, list[KVRule]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for n, row in enumerate(csv.DictReader(fh), start=2):
            where = f"{path.name}: line {n}"
            mode, status, source = row["mode"], row["status"] or "full", row["source"].strip()
            if mode not in _MODES or status not in _STATUSES or not source:
                raise ValueError(f"{where}: expected mode in {_MODES}, status in {_STATUSES} and a source")
            if row["kind"] == "format":
                fmt_rules.setdefault(row["runtime"], []).append(FormatRule(
                    _split(row["match"]), _split(row["backends"]), mode,  # type: ignore[arg-type]
                    float(row["min_cc"] or 0.0), float(row["max_cc"] or 99.0), row["note"], source,
                    row["dequant_to"] or None, row["single_device"] == "1", status))  # type: ignore[arg-type]
            elif row["kind"] == "arch":
                if mode not in ("native", "no"):
                    raise ValueError(f"{where}: an architecture rule is 'native' or 'no'")
                arch_rules.setdefault(row["runtime"], []).append(ArchRule(
                    _split(row["match"]), mode, source, _split(row["formats"]), status, row["note"]))  # type: ignore[arg-type]
            elif row["kind"] == "checkpoint":
                # in file order with the architecture rules (first match wins), for any architecture
                if mode not in ("native", "no"):
                    raise ValueError(f"{where}: a checkpoint rule is 'native' or 'no'")
                arch_rules.setdefault(row["runtime"], []).append(ArchRule(
                    ("*",), mode, source, _split(row["formats"]), status, row["note"],  # type: ignore[arg-type]
                    checkpoints=_split(row["match"])))
            elif row["kind"] == "kv":
                if mode not in ("native", "no"):
                    raise ValueError(f"{where}: a KV-cache rule is 'native' or 'no'")
                kv_rules.setdefault(row["runtime"], []).append(KVRule(
                    _split(row["match"]), _split(row["backends"]), mode, source, status, row["note"]))  # type: ignore[arg-type]
            else:
                raise ValueError(f"{where}: kind: expected 'format', 'arch', 'checkpoint' or 'kv', found {row['kind']!r}")
    return fmt_rules, arch_rules, kv_rules


_FORMAT_RULES, _ARCH_RULES, _KV_RULES = load_support_rules()


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
    arch_rules: tuple[ArchRule, ...] = ()
    kv_rules: tuple[KVRule, ...] = ()

    def support(self, fmt: WeightFormat, device: DeviceSpec, arch: str | None = None,
                native_dtype: str | None = None) -> Support:
        """Whether and how this runtime runs `fmt` on `device` (first matching format rule wins), and with `arch`
        given, whether it runs that model architecture in that format, from a release in `native_dtype` (first
        matching architecture or checkpoint rule wins)."""
        verdict = self._format_support(fmt, device)
        if not verdict.runs or arch is None:
            return verdict
        rule = next((r for r in self.arch_rules if r.matches(arch, fmt, native_dtype)), None)
        if rule is None:
            return Support("no", f"{self.name}: no support rule covers architecture {arch}")
        sources = verdict.sources + (rule.source,)
        if rule.mode == "no":
            what = f"a {native_dtype} release" if rule.checkpoints else arch
            return Support("no", f"{self.name} does not run {what} in {fmt.id}: {rule.note or 'not supported'}",
                           sources=sources)
        status: Status = "partial" if "partial" in (verdict.status, rule.status) else "full"
        reason = verdict.reason
        if rule.status == "partial":
            reason = f"{reason}; {rule.note}" if verdict.status == "partial" else rule.note
        return Support(verdict.mode, reason, verdict.dequant_to, verdict.single_device, status, sources)

    def _format_support(self, fmt: WeightFormat, device: DeviceSpec) -> Support:
        for rule in self.rules:
            if rule.matches(fmt, device):
                why = rule.note or f"{self.name} {'runs' if rule.mode != 'no' else 'does not run'} {fmt.id} on {device.backend}"
                return Support(rule.mode, why, rule.dequant_to, rule.single_device, rule.status, (rule.source,))
        where = device.backend + (f" sm{device.compute_capability}" if device.compute_capability else "")
        return Support("no", f"{self.name} does not load {fmt.id} ({fmt.family}) on {where}")

    def kv_support(self, dtype: str, device: DeviceSpec) -> Support:
        """Whether this runtime offers KV-cache dtype `dtype` (its own name for it) on `device`."""
        rule = next((r for r in self.kv_rules if r.matches(dtype, device.backend)), None)
        if rule is None:
            return Support("no", f"{self.name} offers KV cache dtypes {', '.join(self.kv_dtypes)}, not {dtype}")
        why = rule.note or f"{self.name} {'offers' if rule.mode == 'native' else 'has no'} a {dtype} KV cache"
        return Support(rule.mode, why, status=rule.status, sources=(rule.source,))


def _rules(rid: str) -> dict:
    """The format, architecture and KV-cache rules of runtime `rid` from runtime_support.csv, as Runtime keyword
    arguments; its KV dtypes are those its any-backend KV rules offer, in file order (the first is the default)."""
    kv = tuple(_KV_RULES.get(rid, ()))
    dtypes = tuple(dict.fromkeys(d for r in kv if "*" in r.backends and r.mode == "native" for d in r.dtypes))
    return {"rules": tuple(_FORMAT_RULES.get(rid, ())), "arch_rules": tuple(_ARCH_RULES.get(rid, ())),
            "kv_rules": kv, "kv_dtypes": dtypes}


RUNTIMES: dict[str, Runtime] = {}


def _add(rt: Runtime) -> None:
    RUNTIMES[rt.id] = rt


# Launch templates: each engine's documented CLI, checked flag by flag against planner/data/engine_flags.json
# (which pins the version and source of every module, subcommand and flag). planner.launch fills the fields.
_add(Runtime(
    "llama.cpp", "llama.cpp", "llamacpp", **_rules("llama.cpp"),
    multi_gpu="layer",
    aliases=("llamacpp", "llama-server", "llama-cpp"), weights_on_host=("token_embd.weight",),
    cuda_context_gib=0.3,
    launch="llama-server -m {gguf} -ngl {ngl} -c {context} -np {concurrency} -fa on{kv_flags}{split_flags} --host 0.0.0.0 --port 8080",
    source="ggml-org/llama.cpp tools/server/README.md; src/llama-model.cpp (input layer kept on CPU)",
    notes=("A quantized V cache needs flash attention (-fa on).",),
))
_add(Runtime(
    "ollama", "Ollama", "llamacpp", **_rules("ollama"),
    multi_gpu="layer", aliases=("ollama-run",), weights_on_host=("token_embd.weight",),
    cuda_context_gib=0.3, default_context=4096,
    # Server settings are environment variables of `ollama serve`; num_ctx in the Modelfile sets the model's context.
    launch="OLLAMA_NUM_PARALLEL={concurrency} OLLAMA_FLASH_ATTENTION=1{ollama_kv} ollama serve &\n"
           "printf 'FROM ./{gguf}\\nPARAMETER num_ctx {context}\\n' > Modelfile && ollama create {name} -f Modelfile && ollama run {name}",
    source="ollama docs/faq.mdx, docs/context-length.mdx, envconfig/config.go",
    notes=("Default context depends on VRAM: <24 GiB 4k, 24-48 GiB 32k, >=48 GiB 256k; set OLLAMA_CONTEXT_LENGTH.",
           "Quantized KV cache is global (OLLAMA_KV_CACHE_TYPE) and needs flash attention."),
))
_add(Runtime(
    "lmstudio", "LM Studio", "llamacpp", **_rules("lmstudio"),
    multi_gpu="layer",
    aliases=("lm-studio", "lms"), weights_on_host=("token_embd.weight",), cuda_context_gib=0.3,
    launch="lms load {model} --context-length {context} --parallel {concurrency} --gpu max && lms server start --port 1234",
    source="lmstudio-ai/lms src/subcommands/load.ts, server.ts; lmstudio-ai/docs (llm-load-model-config.md)",
))
_add(Runtime(
    "koboldcpp", "KoboldCpp", "llamacpp", **_rules("koboldcpp"),
    multi_gpu="layer", aliases=("kobold",), weights_on_host=("token_embd.weight",),
    cuda_context_gib=0.3,
    launch="koboldcpp --model {gguf}{kobold_backend} --gpulayers {ngl} --contextsize {context} --flashattention{kobold_kv}{kobold_multiuser}",
    source="LostRuins/koboldcpp README (llama.cpp fork; --quantkv 1=q8, 2=q4 needs --flashattention)",
))
_add(Runtime(
    "vllm", "vLLM", "vllm", **_rules("vllm"),
    multi_gpu="tensor", aliases=("vllm-serve",), gpu_memory_fraction=0.9,
    cuda_context_gib=0.5, cuda_graph_gib=0.5,
    launch="vllm serve {hf_model}{tokenizer_flag} --max-model-len {context} --max-num-seqs {concurrency} --tensor-parallel-size {tp}{quant_flag}{kv_flag} --gpu-memory-utilization 0.9",
    source="vllm docs/features/quantization/README.md; vllm/config/cache.py (gpu_memory_utilization 0.9/0.92)",
    notes=("gpu_memory_utilization is a fraction of total GPU memory and includes the KV cache.",),
))
_add(Runtime(
    # vLLM's CPU backend is its own build (x86 AVX-512 / ARM), with the KV cache sized by VLLM_CPU_KVCACHE_SPACE
    # (GiB) instead of a GPU memory fraction; its own rules and label so a CPU plan never shows a GPU command.
    "vllm-cpu", "vLLM (CPU backend)", "vllm", **_rules("vllm-cpu"),
    multi_gpu="none", aliases=("vllm-cpu-backend",), gpu_memory_fraction=None,
    cuda_context_gib=0.0, cuda_graph_gib=0.0,
    launch="# vLLM's CPU backend: its own build (https://docs.vllm.ai/en/latest/getting_started/installation/cpu.html)\n"
           "VLLM_CPU_KVCACHE_SPACE={kv_space_gib} vllm serve {hf_model} --max-model-len {context} --max-num-seqs {concurrency} --dtype {cpu_dtype}",
    source="vllm-project/vllm docs/getting_started/installation/cpu.md (VLLM_CPU_KVCACHE_SPACE, default 4 GiB)",
    notes=("vLLM's CPU backend is a separate build (pip wheel or Docker image for CPU).",),
))
_add(Runtime(
    "sglang", "SGLang", "sglang", **_rules("sglang"),
    multi_gpu="tensor", gpu_memory_fraction=0.88, cuda_context_gib=0.5, cuda_graph_gib=0.5,
    launch="python -m sglang.launch_server --model-path {hf_model} --tp {tp} --context-length {context}{sglang_load}{sglang_kv}{sglang_device}",
    source="sgl-project/sglang docs/advanced_features/quantization.md, server_arguments.md",
))
_add(Runtime(
    "tensorrt-llm", "TensorRT-LLM", "trtllm", **_rules("tensorrt-llm"),
    multi_gpu="tensor", aliases=("trtllm", "trt-llm"), cuda_context_gib=0.5, cuda_graph_gib=0.5,
    gpu_memory_fraction=None,
    launch="trtllm-serve {hf_model} --backend pytorch --tp_size {tp} --max_seq_len {context} --max_batch_size {concurrency} --kv_cache_free_gpu_memory_fraction 0.9",
    source="NVIDIA/TensorRT-LLM docs (support matrix, reference/memory.md)",
    notes=("The KV cache takes 0.9 of the memory left free after weights and buffers.",),
))
_add(Runtime(
    "tgi", "Hugging Face TGI", "tgi", **_rules("tgi"),
    multi_gpu="tensor", aliases=("text-generation-inference",),
    gpu_memory_fraction=1.0, cuda_context_gib=0.5, cuda_graph_gib=0.3,
    launch="text-generation-launcher --model-id {hf_model} --num-shard {tp} --max-total-tokens {context}{tgi_quant}{tgi_kv}",
    source="huggingface/text-generation-inference docs (launcher.md, conceptual/quantization.md); maintenance mode since 2026",
))
_add(Runtime(
    # ExLlamaV2 has no server of its own: TabbyAPI serves it, configured by config.yml (model_dir + model_name).
    "exllamav2", "ExLlamaV2 / TabbyAPI", "exllamav2", **_rules("exllamav2"),
    multi_gpu="layer", aliases=("exllama", "tabbyapi", "exl2"), cuda_context_gib=0.4,
    launch="# in a TabbyAPI checkout (theroyallab/tabbyAPI), with the model directory inside it\n"
           "cat > config.yml <<'EOF'\nnetwork:\n  host: 0.0.0.0\n  port: 5000\nmodel:\n  model_dir: .\n  model_name: {exl_name}\n"
           "  backend: exllamav2\n  max_seq_len: {context}\n  cache_mode: {exl_kv}\n  max_batch_size: {concurrency}\n"
           "{exl_split}EOF\npython main.py --config config.yml",
    source="theroyallab/tabbyAPI config_sample.yml, common/config_models.py; turboderp/exllamav2 README",
))
_add(Runtime(
    "mlx", "MLX (mlx-lm)", "mlx", **_rules("mlx"),
    multi_gpu="none", aliases=("mlx-lm", "mlx_lm"), cuda_context_gib=0.0,
    launch="mlx_lm.server --model {hf_model} --host 127.0.0.1 --port 8080",
    source="ml-explore/mlx-lm README; mlx_lm.server has no --kv-bits",
))
_add(Runtime(
    "transformers", "Hugging Face transformers", "transformers", **_rules("transformers"),
    multi_gpu="layer", aliases=("hf", "hf-transformers", "accelerate"), cuda_context_gib=0.5,
    launch="python -c \"{tf_load}\"",
    source="huggingface/transformers docs/source/en/quantization/overview.md",
))


def get_runtime(name: str) -> Runtime:
    """Resolve a runtime by id or alias (case- and punctuation-insensitive)."""
    key = normalize_name(name)
    for rt in RUNTIMES.values():
        if key == normalize_name(rt.id) or key in (normalize_name(a) for a in rt.aliases) or key == normalize_name(rt.name):
            return rt
    raise NotFoundError("runtime", name, close_matches(name, list(RUNTIMES)))


def runtimes_for(fmt: WeightFormat, device: DeviceSpec, only: Sequence[str] = (),
                 arch: str | None = None, native_dtype: str | None = None) -> list[tuple[Runtime, Support]]:
    """Runtimes that can run `fmt` on `device` (and architecture `arch`, released in `native_dtype`, when given)."""
    out = []
    for rt in RUNTIMES.values():
        if only and rt.id not in only:
            continue
        s = rt.support(fmt, device, arch, native_dtype)
        if s.runs:
            out.append((rt, s))
    return out
