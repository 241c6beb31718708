"""Whole-model decode and prefill in real llama.cpp (through llama-cpp-python) for GGUF formats.

The matmul kernels in planner.measure.speed.kernels stand in for a runtime; for GGUF we can run the runtime itself. The
model is built as a GGUF file in the format's real per-tensor mix (llama.cpp's rules, from planner.formats) with the
profile's real shapes and weights quantized by our own encoders: one sample of random rows per (type, row length) is
quantized for real and tiled over the tensor. llama.cpp's kernels do not branch on weight values, so the timing is
that of a real file of the same types and shapes, without hours of quantizing.

The file is written in llama.cpp's plain `llama` architecture (a stand-in): attention and MLP matmuls, norms, RoPE,
routed experts. What the stand-in drops changes no weight bytes worth counting: biases, q/k norms, post norms,
attention sinks, sliding windows (decode here is at a short context); fused q/k/v and gate/up projections (Phi-3) are
split into their parts, the same rows in the same types. Models llama's graph cannot express (latent attention,
shared experts, ungated MLPs) are refused with the reason, and the matmul kernels remain.

A model larger than the memory budget is built twice with fewer layers (L1 < L2) and timed: time per token is
linear in the layer count, so t(L) = t(L1) + (t(L2) - t(L1)) / (L2 - L1) * (L - L1), with the per-layer part scaled
by the full model's layer bytes over the stand-in's (llama.cpp gives a few layers more bits than the rest).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import os
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import astuple, dataclass, field
from pathlib import Path

import numpy as np

from planner.measure.speed.kernels import Timing
from planner.errors import PlannerError
from planner.outputs import remove_created

if TYPE_CHECKING:
    from planner.cost.model import ModelCost
    from planner.formats import WeightFormat
    from planner.models.inventory import TensorInfo
    from planner.models.spec import ModelSpec
    from planner.plan import Target

GIB = 2**30
SAMPLE_VALUES = 1 << 18  # values quantized for real per (type, row length); tiled over the rest of the tensor
WRITE_CHUNK_BYTES = 32 * 2**20
# Roles the llama graph loads (llama.cpp src/llama-model.cpp, LLM_ARCH_LLAMA); everything else is left out.
LLAMA_ROLES = frozenset({"token_embd", "output_norm", "output", "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                         "ffn_norm", "ffn_gate", "ffn_up", "ffn_down", "ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps",
                         "ffn_down_exps"})


# The stand-in splits fused projections; each part takes the fused tensor's type (its rows, quantized the same way).
_FUSED_ROLE = {"attn_q": "attn_qkv", "attn_k": "attn_qkv", "attn_v": "attn_qkv", "ffn_gate": "ffn_up"}
# Types with no encoder here (the lattice i-quants need an importance matrix and a codebook search) are written as
# random code bytes behind a finite fp16 block scale: any code is a valid lattice point or sign pattern, and llama.cpp's
# kernels for them do not branch on the codes, so the file times like a real one. It holds for a type whose block
# starts with its fp16 scale `d` (read from its layout: IQ1_S, IQ2_XXS/XS/S, IQ3_XXS/S); IQ1_M spreads its scale over
# the sub-block scales and stays refused.
TIMING_CODE_SCALE = np.float16(1e-3)  # any finite, normal fp16 serves; this one keeps the activations small


def timing_codable(typ: str) -> bool:
    """True for a ggml type the stand-in writes as random codes behind a leading fp16 block scale: a lattice i-quant
    without an encoder here whose block starts with its scale."""
    from planner.formats import GGML_TYPES, lattice_iquant
    from planner.quantize.primitives import ENCODERS

    t = GGML_TYPES.get(typ)
    return lattice_iquant(typ) and typ not in ENCODERS and t is not None and t.layout.parts[0] == ("d:fp16", 16)


def random_codes(typ: str, rows: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """`rows` rows of `k` weights of a timing_codable type: random code bytes, each block's scale TIMING_CODE_SCALE."""
    from planner.formats import ggml_type

    lay = ggml_type(typ).layout
    blocks = rng.integers(0, 256, size=(rows, k // lay.block_weights, lay.bytes_per_block), dtype=np.uint8)
    blocks[:, :, :2] = np.frombuffer(TIMING_CODE_SCALE.tobytes(), dtype=np.uint8)
    return blocks.reshape(rows, -1)


def llama_cpp_missing_reason() -> str | None:
    """Why llama.cpp cannot be timed here, or None when llama-cpp-python is importable."""
    from planner.measure.quality.runtime import INSTALL_HINT, llama_cpp_available

    return None if llama_cpp_available() else f"llama-cpp-python is not installed ({INSTALL_HINT})"


# ------------------------------------------------------------------------------------------ the stand-in model


def standin_spec(spec: ModelSpec, num_layers: int | None = None) -> ModelSpec:
    """The model as llama.cpp's `llama` architecture with the same matmul shapes; refuses what llama cannot express."""
    why = []
    if spec.mla is not None:
        why.append("multi-head latent attention")
    if spec.moe is not None and (spec.moe.num_shared_experts or spec.moe.first_dense_layers):
        why.append("shared experts or dense first layers")
    if not spec.mlp_gated:
        why.append("an ungated MLP")
    if why:
        raise PlannerError(f"{spec.id} has {' and '.join(why)}, which llama.cpp's llama graph cannot stand in for")
    update: dict[str, Any] = {
        "architecture": "llama", "attention_bias": False, "attention_output_bias": False, "mlp_bias": False,
        "norm": "rmsnorm", "norm_bias": False, "qk_norm": False, "post_norms": False, "ffn_norm_name": "ffn_norm",
        "parallel_block": False, "attention_sinks": False, "sliding_window": None, "global_every": None,
        "rope_factors": "none", "fused_qkv": False, "fused_gate_up": False,  # split: the same rows, the same bytes
    }
    if spec.moe is not None:  # llama's graph sizes routed experts by feed_forward_length (as in Mixtral)
        update["intermediate_size"] = spec.moe.expert_intermediate_size
    if num_layers is not None:
        update["num_layers"] = num_layers
    return spec.model_copy(update=update)


@dataclass(frozen=True)
class StandinPlan:
    """The tensors of a stand-in file with their ggml types, and how its layers compare with the full model's."""

    spec: ModelSpec
    tensors: list[tuple[TensorInfo, str]]
    layer_bytes: int  # bytes of one stand-in layer (the full model's most common layer)
    full_layer_bytes: int  # bytes of every layer of the full model (the roles the stand-in keeps)
    full_layers: int

    @property
    def file_bytes(self) -> int:
        """Bytes of the tensors (the header is small beside them)."""
        from planner.formats import ggml_type

        return sum(ggml_type(t).nbytes(ti.shape) for ti, t in self.tensors)

    @property
    def layer_scale(self) -> float:
        """Full model's average layer bytes over the stand-in layer's: scales the measured per-layer time."""
        return self.full_layer_bytes / (self.full_layers * self.layer_bytes) if self.layer_bytes else 1.0


def standin_plan(mc: ModelCost, fmt: WeightFormat, num_layers: int) -> StandinPlan:
    """Tensors and types of a `num_layers` stand-in of `mc` in `fmt`: every layer takes the types of the full model's
    most common layer; token embedding and output keep the full model's types."""
    from planner.formats import GGMLType, ggml_type
    from planner.models.inventory import tensor_inventory
    from planner.quantize.primitives import ENCODERS

    types: dict[str, str] = {}
    for a in fmt.assignments(mc.spec, mc.tensors):
        if not isinstance(a.encoding, GGMLType):
            raise PlannerError(f"{fmt.id} is not a GGUF format: llama.cpp cannot load it")
        types[a.tensor.name] = a.encoding.name
    missing = sorted({t for t in types.values() if not (t in ENCODERS or timing_codable(t))})
    if missing:
        raise PlannerError(f"{fmt.id} uses ggml types planner cannot encode or stand in for ({', '.join(missing)}): "
                           f"llama.cpp cannot be timed on it")
    by_layer: dict[int, list[TensorInfo]] = {}
    for t in mc.tensors:
        if t.layer is not None and (t.role in LLAMA_ROLES or t.role in _FUSED_ROLE.values()):
            by_layer.setdefault(t.layer, []).append(t)
    signature = {i: tuple(sorted((t.role, types[t.name]) for t in ts)) for i, ts in by_layer.items()}
    common = Counter(signature.values()).most_common(1)[0][0]
    layer_types = dict(common)
    for role, fused in _FUSED_ROLE.items():  # Phi-3 stores q/k/v as attn_qkv and gate/up as ffn_up
        if role not in layer_types and fused in layer_types:
            layer_types[role] = layer_types[fused]

    def nbytes(t: TensorInfo, typ: str) -> int:
        return ggml_type(typ).nbytes(t.shape)

    full_layer_bytes = sum(nbytes(t, types[t.name]) for ts in by_layer.values() for t in ts)
    spec = standin_spec(mc.spec, num_layers)
    out: list[tuple[TensorInfo, str]] = []
    layer_bytes = 0
    for t in tensor_inventory(spec):
        if t.role not in LLAMA_ROLES:
            continue
        if t.layer is None:
            typ = types.get(t.name, "F32")
        else:
            typ = layer_types.get(t.role, "F32")
            if t.layer == 0:
                layer_bytes += nbytes(t, typ)
        out.append((t, typ))
    return StandinPlan(spec, out, layer_bytes, full_layer_bytes, mc.spec.num_layers)


def _metadata(spec: ModelSpec, ftype: str) -> list[Any]:
    """GGUF metadata of a stand-in: general.*, llama.* hyper-parameters, expert counts, and no vocabulary (the bench
    feeds token ids; llama.cpp sizes embedding and output from the tensors)."""
    from gguf import Keys

    from planner.quantize.gguf_writer import arch_metadata, general_metadata, kv_str

    try:
        meta = general_metadata("llama", f"{spec.name} (planner bench stand-in)", ftype)
    except KeyError:  # a stored mix with no llama.cpp file type name
        meta = general_metadata("llama", f"{spec.name} (planner bench stand-in)", "F16")
    kvs, _ = arch_metadata("llama", spec, {})  # expert counts included for a mixture-of-experts spec
    meta += kvs
    meta.append(kv_str(Keys.Tokenizer.MODEL, "no_vocab"))
    return meta


def write_standin(plan: StandinPlan, ftype: str, path: Path, seed: int = 0) -> int:
    """Write the stand-in GGUF to `path` (a scratch file the bench owns); returns its size in bytes."""
    from planner.formats import ggml_type
    from planner.quantize.gguf_writer import GGUFWriter, PlannedTensor
    from planner.quantize.primitives import encode

    rng = np.random.default_rng(seed)
    samples: dict[tuple[str, int], np.ndarray] = {}

    def sample(typ: str, k: int) -> np.ndarray:
        """Quantized rows of (typ, k) (random codes for a timing_codable type without an encoder): norms are ones,
        weights N(0, 0.02) like a trained model's."""
        if (typ, k) not in samples:
            rows = max(1, SAMPLE_VALUES // k)
            if timing_codable(typ):
                samples[(typ, k)] = random_codes(typ, rows, k, rng)
            else:
                x = rng.normal(0.0, 0.02, size=(rows, k)).astype(np.float32)
                samples[(typ, k)] = encode(typ, x, threads=1)
        return samples[(typ, k)]

    planned = [PlannedTensor(t.name, t.shape, ggml_type(typ), ggml_type(typ).nbytes(t.shape)) for t, typ in plan.tensors]
    with path.open("wb") as fh:
        w = GGUFWriter(fh, _metadata(plan.spec, ftype), planned)
        w.write_header()
        for t, typ in plan.tensors:
            k = t.shape[-1]
            rows = int(np.prod(t.shape[:-1])) if len(t.shape) > 1 else 1
            if len(t.shape) == 1:
                w.write(encode(typ, np.ones((1, k), dtype=np.float32), threads=1))
                continue
            s = sample(typ, k)
            per_chunk = max(1, WRITE_CHUNK_BYTES // s.nbytes)
            block = np.concatenate([s] * per_chunk) if per_chunk > 1 else s
            done = 0
            while done < rows:
                n = min(rows - done, block.shape[0])
                w.write(block[:n])
                done += n
        return w.finish()


# ------------------------------------------------------------------------------------------ timing in llama.cpp


@dataclass
class LlamaCppTiming:
    """One stand-in file timed in llama.cpp: seconds per decoded token and for the whole prompt."""

    layers: int
    file_bytes: int
    decode: Timing
    prefill: Timing | None


def time_file(path: Path, *, prompt: int, threads: int, gpu_layers: int = 0, n_gen: int = 64,
              budget_s: float = 2.0) -> tuple[Timing, Timing | None]:
    """Decode seconds per token (llama-bench `tg`: tokens one at a time from an empty cache) and prefill seconds of
    `prompt` tokens in one batch (`pp`), median of repeats within about `budget_s` each. llama.cpp runs in a child
    process (planner.native): a crash there raises NativeCrash here, and the caller keeps what it timed before."""
    from planner.measure.quality.runtime import llama_cpp_available, missing_error
    from planner.native import Worker

    if not llama_cpp_available():
        raise missing_error()
    args = {"path": str(path), "prompt": prompt, "threads": threads, "gpu_layers": gpu_layers, "n_gen": n_gen,
            "budget_s": budget_s}
    with Worker(JOB) as w:
        res, _ = w.call("time", args, doing=f"timing the bench's stand-in file {path.name} "
                                            f"({'GPU' if gpu_layers else 'CPU'})")
    decode = Timing(*res["decode"])
    return decode, (Timing(*res["prefill"]) if res["prefill"] else None)


JOB = "planner.measure.speed.llamacpp:handle"  # the timing job planner.native.Worker runs in its child


def handle(state: dict[str, Any], op: str, args: dict[str, Any],
           arrays: list[np.ndarray]) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The child's side of time_file: load the file, time decode and prefill; Timings go back as lists."""
    if op != "time":
        raise ValueError(f"unknown request {op!r}")
    decode, prefill = _time_here(Path(args["path"]), prompt=int(args["prompt"]), threads=int(args["threads"]),
                                 gpu_layers=int(args["gpu_layers"]), n_gen=int(args["n_gen"]),
                                 budget_s=float(args["budget_s"]))
    return {"decode": list(astuple(decode)), "prefill": list(astuple(prefill)) if prefill else None}, []


def _time_here(path: Path, *, prompt: int, threads: int, gpu_layers: int, n_gen: int,
               budget_s: float) -> tuple[Timing, Timing | None]:
    """time_file's work, in this process (the worker child)."""
    from planner.measure.quality.runtime import _import

    llama_cpp = _import()
    n_batch = max(32, min(prompt or 32, 2048))  # llama.cpp's defaults: -b 2048, -ub 512 (as llama-bench runs pp)
    try:
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=max(prompt, n_gen) + 64, n_batch=n_batch,
                              n_ubatch=min(n_batch, 512), n_threads=threads, n_threads_batch=threads,
                              n_gpu_layers=gpu_layers, logits_all=False, verbose=False)
    except (ValueError, RuntimeError) as exc:
        raise PlannerError(f"llama.cpp could not load the bench's stand-in file: {exc}") from None
    try:
        rng = np.random.default_rng(1)
        ids = [int(v) for v in rng.integers(0, max(int(llm.n_vocab()), 2), size=max(prompt, n_gen) + 2)]
        llm.reset()
        llm.eval(ids[:1])  # warm-up: page the weights in, build the graph
        first = time.perf_counter()
        llm.eval(ids[1:2])
        first = time.perf_counter() - first
        n = max(4, min(n_gen, int(budget_s / max(first, 1e-6))))
        times = []
        for i in range(n):
            token = ids[2 + i % (len(ids) - 2)]
            t = time.perf_counter()
            llm.eval([token])
            times.append(time.perf_counter() - t)
        decode = Timing(statistics.median(times), min(times), max(times), n)
        prefill = None
        if prompt > 0:
            llm.reset()
            llm.eval(ids[:prompt])  # warm-up: the first batch of this size allocates its compute buffers
            pts = []
            for _ in range(3):
                llm.reset()
                t = time.perf_counter()
                llm.eval(ids[:prompt])
                pts.append(time.perf_counter() - t)
                if sum(pts) > 2 * budget_s:
                    break
            prefill = Timing(statistics.median(pts), min(pts), max(pts), len(pts))
    finally:
        if hasattr(llm, "close"):  # llama-cpp-python 0.3+ frees the model and context here
            llm.close()
        del llm
    return decode, prefill


# ------------------------------------------------------------------------------------------ the engine run


@dataclass
class LlamaCppRun:
    """The model in real llama.cpp: stand-in files timed whole, extrapolated to the full layer count when built
    smaller. Same interface as runner.KernelRun, so reports, records and --confirm treat it like a kernel."""

    info: Any  # planner.measure.speed.kernels.KernelInfo
    timings: list[LlamaCppTiming]
    full_layers: int
    layer_scale: float
    bytes_per_token: int  # the full model's weight bytes read per decoded token (the cost model's figure)
    prompt_tokens: int
    threads: int
    flops_per_prompt: float
    layer_overhead_us: float  # the cost model's per-layer cost, netted out of the calibration record
    batches: tuple[int, ...] = (1,)
    layers: list = field(default_factory=list)  # no per-shape timings: llama.cpp is timed whole
    predicted_runtime: str | None = None
    predicted_decode: dict[int, float] = field(default_factory=dict)
    predicted_prefill: float | None = None
    peak_flops: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def extrapolated(self) -> bool:
        """Whether the full model was too large and its time comes from two smaller builds."""
        return len(self.timings) > 1

    def _full(self, pick: Callable[[LlamaCppTiming], float]) -> float:
        if not self.extrapolated:
            return pick(self.timings[0])
        a, b = self.timings[0], self.timings[-1]
        per_layer = (pick(b) - pick(a)) / (b.layers - a.layers)
        return pick(a) + per_layer * self.layer_scale * (self.full_layers - a.layers)

    def decode_step_s(self, batch: int = 1) -> float:
        """Seconds per decoded token of the full model (batch 1: llama-bench's tg)."""
        return self._full(lambda t: t.decode.median_s)

    def decode_tokens_per_s(self, batch: int = 1) -> float:
        """Decode tokens/s of the full model."""
        return 1.0 / self.decode_step_s(batch)

    def prefill_s(self) -> float | None:
        """Seconds to process the prompt in one batch (llama-bench's pp)."""
        if any(t.prefill is None for t in self.timings):
            return None
        return self._full(lambda t: t.prefill.median_s)  # type: ignore[union-attr]

    def prefill_tokens_per_s(self) -> float | None:
        """Prompt tokens/s."""
        s = self.prefill_s()
        return self.prompt_tokens / s if s else None

    def effective_gb_s(self) -> float:
        """Weight bytes per decoded token over seconds per token (everything llama.cpp does counts against it)."""
        return self.bytes_per_token / self.decode_step_s(1) / 1e9

    def calibration_fractions(self, peak_gb_s: float) -> tuple[float, float | None]:
        """(bandwidth fraction, per-layer µs) that make the cost model reproduce this measured decode: the time left
        after the per-layer cost streams the weights (the per-layer cost is shrunk when the run was faster)."""
        step = self.decode_step_s(1)
        over = min(self.layer_overhead_us, 0.5 * step / self.full_layers * 1e6)
        stream = step - self.full_layers * over / 1e6
        return self.bytes_per_token / stream / (peak_gb_s * 1e9), over


def layer_counts(full: int, file_bytes: Callable[[int], int], budget_bytes: int) -> list[int]:
    """Layer counts to build: the full model when it fits the budget, else two smaller counts (1 and up to 4)."""
    if file_bytes(full) <= budget_bytes:
        return [full]
    counts = [n for n in (1, 2, 3, 4) if n < full and file_bytes(n) <= budget_bytes]
    if len(counts) < 2:
        need = file_bytes(min(2, full))
        raise PlannerError(f"two layers of the model already need {need / GIB:.2f} GiB of stand-in file; the bench may "
                           f"use {budget_bytes / GIB:.2f} GiB (raise --max-memory)")
    return [counts[0], counts[-1]]


def run_llamacpp(mc: ModelCost, fmt: WeightFormat, target: Target, *, device: str = "cpu", prompt: int = 512,
                 budget_bytes: int, max_file_bytes: int = 4 * GIB, budget_s: float = 2.0, n_gen: int = 64,
                 threads: int | None = None, say: Callable[[str], None] | None = None,
                 scratch: Path | None = None) -> LlamaCppRun:
    """Build the model (or two smaller builds) as GGUF stand-ins in `fmt`, time decode and prefill in llama.cpp."""
    from planner.measure.speed.kernels import KernelInfo, cpu_threads, device_kind
    from planner.cost.speed import efficiency, kernel_class
    from planner.formats import gguf_base_type
    from planner.paths import user_cache_dir

    say = say or (lambda _m: None)
    why = llama_cpp_missing_reason()
    if why:
        raise PlannerError(why)
    kind = device_kind(device)
    if kind == "mps":
        raise PlannerError("llama.cpp timing on mps is not wired up: run the bench with --device cpu")
    gpu_layers = 0
    if kind == "cuda":
        from planner.measure.quality.runtime import gpu_offload_supported

        if not gpu_offload_supported():
            raise PlannerError("this llama-cpp-python build has no GPU offload (install a CUDA build to time llama.cpp "
                               "on the GPU)")
        gpu_layers = -1
    standin_spec(mc.spec)  # refuses unsupported architectures before anything is written
    lay = mc.layout(fmt)
    threads = threads or cpu_threads()
    full = mc.spec.num_layers
    budget = min(budget_bytes, max_file_bytes)
    plans: dict[int, StandinPlan] = {}

    def plan_of(n: int) -> StandinPlan:  # each layer count's plan once: layer_counts, the disk check and the build
        if n not in plans:
            plans[n] = standin_plan(mc, fmt, n)
        return plans[n]

    counts = layer_counts(full, lambda n: plan_of(n).file_bytes, budget)
    ftype = gguf_base_type(fmt.id)
    base = Path(scratch or user_cache_dir())
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=base))
    timings = []
    plan = None
    try:
        if shutil.disk_usage(work).free < 2 * plan_of(counts[-1]).file_bytes:
            raise PlannerError(f"not enough free disk under {base} for the bench's stand-in file")
        for n in counts:
            plan = plan_of(n)
            path = work / f"standin-{n}.gguf"
            say(f"llama.cpp: writing a {n}-layer {fmt.id} stand-in ({plan.file_bytes / 2**20:.0f} MiB)")
            size = write_standin(plan, ftype, path)
            say(f"llama.cpp: timing {n} layer(s), {threads} threads")
            dec, pre = time_file(path, prompt=prompt, threads=threads, gpu_layers=gpu_layers, n_gen=n_gen,
                                 budget_s=budget_s)
            timings.append(LlamaCppTiming(n, size, dec, pre))
            path.unlink()
    finally:  # only the stand-ins this run wrote, then its own empty work directory: never rmtree
        remove_created(work, [f"standin-{n}.gguf" for n in counts])
    assert plan is not None
    kclass = kernel_class(fmt.family, fmt.compute, lay.ggml_types)
    info = KernelInfo(f"llama.cpp-{fmt.id}", "llamacpp", f"llama.cpp {fmt.id}, whole model "
                      f"({'GPU' if gpu_layers else 'CPU'})", kclass, "int8", "llamacpp")
    # prefill FLOPs: 2 per active matmul weight per token (attention at this prompt length is small beside it)
    active = float(mc.matmul_params_active)
    run = LlamaCppRun(info, timings, full, plan.layer_scale if len(counts) > 1 else 1.0,
                      int(lay.sum_active + lay.head_active_bytes), prompt, threads, 2.0 * prompt * active,
                      efficiency("llamacpp", target.device.backend).layer_overhead_us)
    run.notes.append("whole model in real llama.cpp (llama-cpp-python) on a stand-in GGUF with the model's shapes and "
                     "the format's per-tensor types" + (f"; {threads} threads" if not gpu_layers else ""))
    coded = sorted({typ for _, typ in plan.tensors if timing_codable(typ)})
    if coded:
        run.notes.append(f"the {', '.join(coded)} tensors hold random codes behind a fixed block scale (planner cannot "
                         "encode these lattice i-quants; their kernels do not branch on the codes): timing only")
    if run.extrapolated:
        run.notes.append(f"built with {counts[0]} and {counts[1]} layers and extrapolated to {full} "
                         f"(layer bytes scaled by {run.layer_scale:.3f})")
    return run
