"""Copy-pasteable launch commands for each runtime, filled from a plan."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import TYPE_CHECKING

from planner.formats import WeightFormat
from planner.plan import GIB, Plan, Target
from planner.runtimes import Runtime

if TYPE_CHECKING:
    from planner.models.spec import ModelSpec

_VLLM_QUANT = {"fp8": " --quantization fp8", "bnb": " --quantization bitsandbytes", "gguf": ""}
# KoboldCpp runs on the CPU unless a GPU backend is named (koboldcpp.py --usecublas / --usevulkan); Metal is
# automatic on macOS. Its ROCm fork keeps the --usecublas flag (hipBLAS).
_KOBOLD_BACKEND = {"cuda": " --usecublas", "rocm": " --usecublas", "vulkan": " --usevulkan"}
_TGI_QUANT = {"gptq": " --quantize gptq", "awq": " --quantize awq", "bnb": " --quantize bitsandbytes-nf4",
              "fp8": " --quantize fp8", "exl2": " --quantize exl2", "w8a16": " --quantize eetq"}


def artifact_name(model: ModelSpec, fmt: WeightFormat) -> str:
    """The file or directory name `planner quantize` gives this model in this format."""
    if fmt.family == "gguf":
        return f"{model.id}-{fmt.id}.gguf"
    if fmt.family == "float" or (fmt.family in ("fp8", "bnb") and model.hf_repo):  # quantized on load
        return model.hf_repo or model.id
    return f"./{model.id}-{fmt.id}"


def released_as(model: ModelSpec, fmt: WeightFormat) -> bool:
    """Whether the model's released checkpoint already is in `fmt` (an FP8 release served as fp8): the engines read
    the quantization from its config, so no on-the-fly --quantization flag."""
    return fmt.family == "fp8" and model.native_dtype == "float8_e4m3"


def launch_command(plan: Plan, model: ModelSpec, fmt: WeightFormat, runtime: Runtime, target: Target) -> str:
    """The command that starts `runtime` serving this plan (a per-node script when it spans nodes)."""
    if target.replicas > 1:
        return replicated_launch(plan, model, fmt, runtime, target)
    if target.nodes > 1:
        return multinode_launch(plan, model, fmt, runtime, target)
    kv = plan.kv_dtype
    ngl = plan.gpu_layers if plan.gpu_layers is not None else 999
    if plan.layout == "cpu":
        ngl = 0
    elif plan.gpu_layers == model.num_layers:
        ngl = 999
    kv_flags = f" -ctk {kv} -ctv {kv}" if kv not in ("f16", "auto") else ""
    split = " -sm layer" if plan.layout == "layer-split" else ""
    if plan.layout == "expert-offload":  # -ngl 999 with the first N layers' routed experts in RAM (planner.cost.offload)
        split = f" --n-cpu-moe {plan.cpu_moe_layers}"
    fields = {
        "gguf": artifact_name(model, fmt), "ngl": ngl, "context": plan.context * (plan.concurrency if runtime.id in ("llama.cpp", "koboldcpp") else 1),
        "concurrency": plan.concurrency, "kv_flags": kv_flags, "split_flags": split, "name": model.id,
        "ollama_kv": f" OLLAMA_KV_CACHE_TYPE={kv}" if kv != "f16" else "",
        "kobold_kv": {"q8_0": " --quantkv 1", "q4_0": " --quantkv 2"}.get(kv, ""),
        "model": artifact_name(model, fmt), "hf_model": artifact_name(model, fmt),
        "tp": target.count if plan.layout == "tensor-parallel" else 1,
        "quant_flag": "" if released_as(model, fmt) else _VLLM_QUANT.get(fmt.family, ""), "kv_flag": f" --kv-cache-dtype {kv}" if kv != "auto" else "",
        "sglang_kv": f" --kv-cache-dtype {kv}" if kv != "auto" else "",
        "tgi_quant": _TGI_QUANT.get(fmt.family, ""), "exl_kv": {"fp16": "FP16", "q8": "Q8", "q6": "Q6", "q4": "Q4"}.get(kv, "FP16"),
        "tgi_kv": f" --kv-cache-dtype {kv}" if kv != "auto" else "",
        # vLLM's GGUF docs: pass the base model's tokenizer, converting the GGUF one is slow and unreliable
        "tokenizer_flag": f" --tokenizer {model.hf_repo}" if fmt.family == "gguf" and model.hf_repo else "",
        # SGLang's quantization docs: a pre-quantized checkpoint needs no --quantization (the config says it)
        "sglang_load": " --load-format gguf" if fmt.family == "gguf" else (
            " --quantization fp8" if fmt.family == "fp8" and not released_as(model, fmt) else ""),
        # vLLM CPU backend: KV cache space in GiB (VLLM_CPU_KVCACHE_SPACE), at least the planned cache
        "kv_space_gib": max(1, math.ceil(plan.kv_cache_bytes / GIB)),
        "exl_name": artifact_name(model, fmt).removeprefix("./"),
        "exl_split": "  gpu_split_auto: true\n" if target.count > 1 else "",
        "kobold_backend": _KOBOLD_BACKEND.get(target.device.backend, ""),
        "kobold_multiuser": f" --multiuser {plan.concurrency}" if plan.concurrency > 1 else "",
        "cpu_dtype": "float32" if fmt.id == "fp32" else "bfloat16",
        "sglang_device": " --device cpu" if target.is_cpu else "",
        # transformers reads GGUF through from_pretrained(gguf_file=...) (docs/source/en/gguf.md), not a pipeline path
        "tf_load": (f"from transformers import AutoModelForCausalLM; AutoModelForCausalLM.from_pretrained('.', "
                    f"gguf_file='{artifact_name(model, fmt)}', device_map='auto')" if fmt.family == "gguf" else
                    f"from transformers import pipeline; pipeline('text-generation', model='{artifact_name(model, fmt)}', "
                    "device_map='auto')"),
    }
    cmd = runtime.launch.format(**fields)
    return cmd


def multinode_launch(plan: Plan, model: ModelSpec, fmt: WeightFormat, runtime: Runtime, target: Target) -> str:
    """A launch script for a plan spanning several nodes: one block per node role, plus NCCL settings."""
    par = plan.parallel
    tp, pp, ep, nodes = par.get("tensor_parallel", 1), par.get("pipeline_parallel", 1), par.get("expert_parallel", 1), target.nodes
    mdl = artifact_name(model, fmt)
    kv = plan.kv_dtype
    nccl = _nccl_env(target)
    if runtime.engine == "vllm":
        q = ("" if released_as(model, fmt) else _VLLM_QUANT.get(fmt.family, "")) + (f" --kv-cache-dtype {kv}" if kv != "auto" else "")
        if ep > 1:
            common = (f"vllm serve {mdl} --tensor-parallel-size {tp} --data-parallel-size {nodes} --data-parallel-size-local 1 "
                      f"--enable-expert-parallel --data-parallel-address <head-ip> --data-parallel-rpc-port 13345 "
                      f"--max-model-len {plan.context}{q}")
            return "\n".join([f"# every node: {nccl}", f"# node 0: {common}",
                              *(f"# node {r}: {common} --headless --data-parallel-start-rank {r}" for r in range(1, nodes))])
        return "\n".join([
            f"# every node: {nccl}",
            "# node 0: ray start --head --port 6379",
            *(f"# node {r}: ray start --address <head-ip>:6379 --block" for r in range(1, nodes)),
            f"# node 0: vllm serve {mdl} --tensor-parallel-size {tp} --pipeline-parallel-size {pp} "
            f"--distributed-executor-backend ray --max-model-len {plan.context} --max-num-seqs {plan.concurrency}{q}",
        ])
    if runtime.engine == "sglang":
        par_flags = f"--tp {tp}" + (f" --pp-size {pp}" if pp > 1 else "") + (f" --ep-size {ep}" if ep > 1 else "")
        kvf = f" --kv-cache-dtype {kv}" if kv != "auto" else ""
        return "\n".join([f"# every node: {nccl}"] + [
            f"# node {r}: python -m sglang.launch_server --model-path {mdl} {par_flags} --nnodes {nodes} --node-rank {r} "
            f"--dist-init-addr <head-ip>:5000 --context-length {plan.context}{kvf}" for r in range(nodes)])
    if runtime.engine == "trtllm":
        hosts = ",".join(f"<node{r}>:{target.count}" for r in range(nodes))
        par_flags = f"--tp_size {tp} --pp_size {pp}" + (f" --ep_size {ep}" if ep > 1 else "")
        return "\n".join([f"# every node: {nccl}",
                          f"# node 0: mpirun -np {target.count * nodes} -H {hosts} trtllm-llmapi-launch trtllm-serve {mdl} "
                          f"--backend pytorch {par_flags} --max_seq_len {plan.context} --max_batch_size {plan.concurrency}"])
    if runtime.engine == "llamacpp":
        workers = ",".join(f"<node{r}>:50052" for r in range(1, nodes))
        return "\n".join([*(f"# node {r}: rpc-server -H 0.0.0.0 -p 50052" for r in range(1, nodes)),
                          f"# node 0: llama-server -m {mdl} --rpc {workers} -ngl 999 -c {plan.context} -fa on"])
    return ""


# Default HTTP ports: vllm serve 8000, sglang.launch_server 30000, trtllm-serve 8000, llama-server 8080 (each
# engine's server argument docs); replicas packed on one node as independent servers count up from these.
_PORT = {"vllm": 8000, "sglang": 30000, "trtllm": 8000, "llamacpp": 8080}


def _nccl_env(target: Target) -> str:
    """The environment NCCL and Gloo need across nodes: the InfiniBand HCA unless the fabric is Ethernet."""
    ib = "NCCL_IB_HCA=mlx5 " if target.fabric is None or target.fabric.kind != "ethernet" else ""
    return f"export {ib}NCCL_SOCKET_IFNAME=<iface> GLOO_SOCKET_IFNAME=<iface>"


def replicated_launch(plan: Plan, model: ModelSpec, fmt: WeightFormat, runtime: Runtime, target: Target) -> str:
    """Data-parallel replicas: vLLM's --data-parallel-size, SGLang's --dp-size plus its router, or (TensorRT-LLM,
    llama.cpp, and replicas that span nodes) independent servers behind a load balancer."""
    dp, rpn, g = target.replicas, target.replicas_per_node, target.count
    one = dataclasses.replace(target, replicas=1, replicas_per_node=1)
    seqs = -(-plan.concurrency // dp)
    par = {k: v for k, v in plan.parallel.items() if k not in ("data_parallel", "replicas_per_node")}
    replica = dataclasses.replace(plan, concurrency=seqs, parallel=par, launch_fn=None, _launch=None)
    base = launch_command(replica, model, fmt, runtime, one)
    port = _PORT.get(runtime.engine, 8000)
    nccl = _nccl_env(target)
    if target.nodes > 1:
        # each replica is its own multi-node deployment on its own nodes, its head serving HTTP
        lines, urls = [], []
        for r in range(dp):
            first = r * target.nodes
            block = re.sub(r"# node (\d+)", lambda m: f"# node {first + int(m.group(1))}", base)
            block = re.sub(r"<node(\d+)>", lambda m: f"<node{first + int(m.group(1))}>", block)
            for line in block.replace("<head-ip>", f"<node{first}-ip>").splitlines():
                if r and line.startswith("# every node"):
                    continue
                if _serves_http(line) and "--host" not in line:
                    line += " --host 0.0.0.0"  # the load balancer reaches it from another node
                lines.append(line)
            urls.append(f"http://<node{first}-ip>:{port}")
        return "\n".join(lines + [_balancer(runtime, urls)])
    nodes = -(-dp // rpn)
    local = [min(rpn, dp - n * rpn) for n in range(nodes)]
    if runtime.engine == "vllm":
        flags = f" --data-parallel-size {dp}"
        if nodes == 1:
            return base + flags
        flags += " --data-parallel-address <node0-ip> --data-parallel-rpc-port 13345"
        return "\n".join([f"# every node: {nccl}"] + [
            f"# node {n}: {base}{flags} --data-parallel-size-local {local[n]}"
            + (f" --headless --data-parallel-start-rank {n * rpn}" if n else "") for n in range(nodes)])
    if runtime.engine == "sglang":
        if nodes == 1:
            return f"{base} --dp-size {dp}"
        return "\n".join([f"# node {n}: {base} --dp-size {local[n]} --host 0.0.0.0 --port {port}" for n in range(nodes)]
                         + [_balancer(runtime, [f"http://<node{n}-ip>:{port}" for n in range(nodes)])])
    # independent servers, each on its own GPUs of a node
    lines, urls = [], []
    for n in range(nodes):
        for i in range(local[n]):
            gpus = ",".join(str(i * g + k) for k in range(g))
            cmd = re.sub(r" --port \d+", "", base) + ("" if "--host" in base else " --host 0.0.0.0") + f" --port {port + i}"
            lines.append(f"# node {n}: CUDA_VISIBLE_DEVICES={gpus} {cmd}")
            urls.append(f"http://<node{n}-ip>:{port + i}")
    return "\n".join(lines + [_balancer(runtime, urls)])


def _serves_http(line: str) -> bool:
    """Whether a launch line starts the HTTP endpoint of a replica (not a worker, Ray or RPC process)."""
    return "--headless" not in line and any(k in line for k in ("vllm serve", "trtllm-serve", "llama-server", "--node-rank 0 "))


def _balancer(runtime: Runtime, urls: list[str]) -> str:
    """The line that spreads requests over replica endpoints: SGLang's router, else any HTTP load balancer."""
    if runtime.engine == "sglang":
        return f"# node 0: python -m sglang_router.launch_router --worker-urls {' '.join(urls)} --policy cache_aware --host 0.0.0.0 --port 8000"
    return f"# load balancer (nginx upstream, Kubernetes Service, ...) over: {' '.join(urls)}"


def k8s_manifest(plan: Plan, model: ModelSpec, fmt: WeightFormat, target: Target) -> str:
    """A LeaderWorkerSet manifest running vLLM over Ray across `nodes` pods (one per node)."""
    par = plan.parallel
    tp, pp = par.get("tensor_parallel", 1), par.get("pipeline_parallel", 1)
    mdl = artifact_name(model, fmt)
    gpus = target.count
    serve = (f"ray start --head --port=6379 && vllm serve {mdl} --tensor-parallel-size {tp} --pipeline-parallel-size {pp} "
             f"--distributed-executor-backend ray --max-model-len {plan.context}")
    return f"""apiVersion: leaderworkerset.x-k8s.io/v1
kind: LeaderWorkerSet
metadata:
  name: vllm-{model.id}
spec:
  replicas: {par.get("data_parallel", 1)}
  leaderWorkerTemplate:
    size: {target.nodes}
    restartPolicy: RecreateGroupOnPodRestart
    leaderTemplate:
      spec:
        containers:
          - name: vllm-leader
            image: vllm/vllm-openai:latest
            command: ["sh", "-c", "{serve}"]
            resources:
              limits:
                nvidia.com/gpu: "{gpus}"
            ports:
              - containerPort: 8000
    workerTemplate:
      spec:
        containers:
          - name: vllm-worker
            image: vllm/vllm-openai:latest
            command: ["sh", "-c", "ray start --address=$(LWS_LEADER_ADDRESS):6379 --block"]
            resources:
              limits:
                nvidia.com/gpu: "{gpus}"
"""
