"""Copy-pasteable launch commands for each runtime, filled from a plan."""

from __future__ import annotations

from typing import TYPE_CHECKING

from planner.formats import WeightFormat
from planner.plan import Plan, Target
from planner.runtimes import Runtime

if TYPE_CHECKING:
    from planner.models.spec import ModelSpec

_VLLM_QUANT = {"fp8": " --quantization fp8", "bnb": " --quantization bitsandbytes", "gguf": ""}
_TGI_QUANT = {"gptq": " --quantize gptq", "awq": " --quantize awq", "bnb": " --quantize bitsandbytes-nf4",
              "fp8": " --quantize fp8", "exl2": " --quantize exl2", "w8a16": " --quantize eetq"}


def artifact_name(model: ModelSpec, fmt: WeightFormat) -> str:
    """The file or directory name `planner quantize` gives this model in this format."""
    if fmt.family == "gguf":
        return f"{model.id}-{fmt.id}.gguf"
    if fmt.family == "float" or (fmt.family in ("fp8", "bnb") and model.hf_repo):  # quantized on load
        return model.hf_repo or model.id
    return f"./{model.id}-{fmt.id}"


def launch_command(plan: Plan, model: ModelSpec, fmt: WeightFormat, runtime: Runtime, target: Target) -> str:
    """The command that starts `runtime` serving this plan."""
    kv = plan.kv_dtype
    ngl = plan.gpu_layers if plan.gpu_layers is not None else 999
    if plan.layout == "cpu":
        ngl = 0
    elif plan.gpu_layers == model.num_layers:
        ngl = 999
    kv_flags = f" -ctk {kv} -ctv {kv}" if kv not in ("f16", "auto") else ""
    split = " -sm layer" if plan.layout == "layer-split" else ""
    fields = {
        "gguf": artifact_name(model, fmt), "ngl": ngl, "context": plan.context * (plan.concurrency if runtime.engine == "llamacpp" else 1),
        "concurrency": plan.concurrency, "kv_flags": kv_flags, "split_flags": split, "name": model.id,
        "ollama_kv": f" OLLAMA_KV_CACHE_TYPE={kv}" if kv != "f16" else "",
        "kobold_kv": {"q8_0": " --quantkv 1", "q4_0": " --quantkv 2"}.get(kv, ""),
        "model": artifact_name(model, fmt), "hf_model": artifact_name(model, fmt),
        "tp": target.count if plan.layout == "tensor-parallel" else 1,
        "quant_flag": _VLLM_QUANT.get(fmt.family, ""), "kv_flag": f" --kv-cache-dtype {kv}" if kv != "auto" else "",
        "sglang_kv": f" --kv-cache-dtype {kv}" if kv != "auto" else "",
        "tgi_quant": _TGI_QUANT.get(fmt.family, ""), "exl_kv": {"fp16": "FP16", "q8": "Q8", "q6": "Q6", "q4": "Q4"}.get(kv, "FP16"),
    }
    cmd = runtime.launch.format(**fields)
    if runtime.id == "ollama":
        cmd = f"echo 'FROM ./{artifact_name(model, fmt)}' > Modelfile && " + cmd
    return cmd
