"""Bench one model in one format on one device: time every distinct matmul shape per kernel, extrapolate to the
whole model by layer count, and put the cost model's prediction beside it.

What is measured is the weight matmuls only (no attention over the KV cache, norms, sampling or per-layer sync),
so whole-model figures are upper bounds of what a runtime built on these kernels reaches. Shapes are timed one at
a time, each within a memory budget (half the free memory by default): a model larger than memory is benched
shape by shape, and a shape larger than the budget (or than `max_sample_bytes`) is timed on a slice of its rows and
scaled by rows, which is exact for a streaming GEMV and a large GEMM. Decode weights rotate through enough copies
that the working set is at least twice the last-level cache, so no call reads its weights from cache.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from planner.measure.speed.kernels import (
    KernelInfo, NumpyBF16, NumpyFP32, NumpyInt4, NumpyInt8, Timing, TorchDense, TorchFP8, TorchInt4,
    TorchInt8WeightOnly, TorchIntMM, available_memory_bytes, copy_bandwidth_gb_s, device_kind, last_level_cache_bytes,
    single_threaded_blas, time_calls, time_calls_cuda,
)
from planner.measure.speed.quant import F32, random_weights
from planner.measure.speed.shapes import MatmulShape, model_shapes
from planner.errors import PlannerError

if TYPE_CHECKING:
    from planner.cost.model import ModelCost
    from planner.formats import WeightFormat
    from planner.plan import Target
    from planner.runtimes import Runtime

GIB = 2**30
MAX_SAMPLE_BYTES = 256 * 2**20  # weights timed per shape at most; more rows are extrapolated (GEMV time ~ rows)
PREFILL_FLOPS_PER_CALL = {"cpu": 2e10, "cuda": 2e13, "mps": 2e12}  # cap per timed GEMM; rows scale the rest
# Relative error of a kernel's output against fp32 weights that still counts as correct, per kernel class
# (int4 group quantization of N(0, sigma) weights costs about 8-10 % relative error; bf16 activations 0.4 %).
ERROR_TOLERANCE = {"float": 0.02, "q8": 0.05, "group4": 0.2, "fp8": 0.1}


@dataclass
class LayerResult:
    """One distinct shape timed with one kernel (times are for the whole shape, sampled rows scaled up)."""

    shape: MatmulShape
    kernel: str
    rows_timed: int
    weight_bytes: int  # bytes of the whole (n, k) weight in the kernel's layout
    working_set_bytes: int  # bytes the decode timing rotated through
    decode: dict[int, Timing]  # batch -> seconds per call
    prefill: Timing | None
    prefill_rows: int
    prompt_tokens: int
    error_vs_float: float  # relative error of the kernel's output against fp32 weights (first rows, batch 1)

    def achieved_gb_s(self, batch: int = 1) -> float:
        """Weight bytes per second at decode."""
        return self.weight_bytes / self.decode[batch].median_s / 1e9

    @property
    def prefill_tflops(self) -> float | None:
        """Prefill TFLOP/s (2 x M x N x K per call)."""
        if self.prefill is None:
            return None
        return 2 * self.prompt_tokens * self.shape.n * self.shape.k / self.prefill.median_s / 1e12


@dataclass
class KernelRun:
    """All shapes of a model timed with one kernel, extrapolated, and the cost model's prediction."""

    info: KernelInfo
    layers: list[LayerResult]
    batches: tuple[int, ...]
    prompt_tokens: int
    predicted_runtime: str | None = None
    predicted_decode: dict[int, float] = field(default_factory=dict)  # batch -> tokens/s (aggregate)
    predicted_prefill: float | None = None
    peak_flops: float | None = None
    notes: list[str] = field(default_factory=list)

    def decode_step_s(self, batch: int = 1) -> float:
        """Seconds of one decode step of `batch` sequences: every shape times its count."""
        return extrapolate([(lr.shape.count, lr.decode[batch].median_s) for lr in self.layers])

    def decode_tokens_per_s(self, batch: int = 1) -> float:
        """Aggregate decode tokens/s at `batch` sequences (matmuls only)."""
        return batch / self.decode_step_s(batch)

    def prefill_s(self) -> float | None:
        """Seconds to run the prompt through every matmul."""
        if any(lr.prefill is None for lr in self.layers):
            return None
        return extrapolate([(lr.shape.count, lr.prefill.median_s) for lr in self.layers])  # type: ignore[union-attr]

    def prefill_tokens_per_s(self) -> float | None:
        """Prompt tokens/s (matmuls only)."""
        s = self.prefill_s()
        return self.prompt_tokens / s if s else None

    @property
    def bytes_per_token(self) -> int:
        """Weight bytes one decode step reads."""
        return sum(lr.weight_bytes * lr.shape.count for lr in self.layers)

    @property
    def flops_per_prompt(self) -> float:
        """Matmul FLOPs of the whole prompt."""
        return sum(2.0 * self.prompt_tokens * lr.shape.n * lr.shape.k * lr.shape.count for lr in self.layers)

    def effective_gb_s(self) -> float:
        """Whole-model decode bandwidth at batch 1: bytes per token over seconds per token."""
        return self.bytes_per_token / self.decode_step_s(1) / 1e9

    def calibration_fractions(self, peak_gb_s: float) -> tuple[float, float | None]:
        """(bandwidth fraction of `peak_gb_s`, per-layer µs or None) for a calibration record: matmuls only have no
        per-layer cost, so the whole time counts as streaming."""
        return self.effective_gb_s() / peak_gb_s, None


def extrapolate(per_shape: Sequence[tuple[int, float]]) -> float:
    """Whole-model seconds from (count, seconds per call) of each distinct shape."""
    return float(sum(count * seconds for count, seconds in per_shape))


@dataclass
class BenchResult:
    """A bench run: the device, its measured copy bandwidth and the runs of every kernel."""

    device: str
    target: Target
    model_id: str
    format_id: str
    copy_bandwidth_gb_s: float
    llc_bytes: int
    runs: list[KernelRun]
    skipped: list[tuple[str, str]]
    notes: list[str]
    calibration_used: bool = False

    @property
    def peak_bandwidth_gb_s(self) -> float:
        """The catalog's peak memory bandwidth for the device."""
        return float(self.target.device.mem_bandwidth_gb_s)

    @property
    def best(self) -> KernelRun | None:
        """The headline run: real llama.cpp when it ran (the runtime itself), else the kernel with the fastest
        decode (what a runtime built on these kernels would pick)."""
        engine = [r for r in self.runs if r.info.backend == "llamacpp"]
        pool = engine or self.runs
        return max(pool, key=lambda r: r.decode_tokens_per_s(1)) if pool else None

    def to_json(self) -> dict:
        """The documented `planner bench --json` form."""
        peak = self.peak_bandwidth_gb_s
        layers = []
        for run in self.runs:
            for lr in run.layers:
                gbs = lr.achieved_gb_s(1)
                tf = lr.prefill_tflops
                layers.append({
                    "name": lr.shape.name, "shape": [lr.shape.n, lr.shape.k], "count": lr.shape.count,
                    "kernel": lr.kernel, "rows_timed": lr.rows_timed, "weight_bytes": lr.weight_bytes,
                    "working_set_bytes": lr.working_set_bytes,
                    "decode_s": lr.decode[1].median_s, "decode_min_s": lr.decode[1].min_s,
                    "decode_max_s": lr.decode[1].max_s, "decode_spread": round(lr.decode[1].spread, 4),
                    "decode_s_by_batch": {str(b): t.median_s for b, t in lr.decode.items()},
                    "achieved_gb_s": round(gbs, 3), "fraction_of_peak_bandwidth": round(gbs / peak, 4),
                    "fraction_of_copy_bandwidth": round(gbs / self.copy_bandwidth_gb_s, 4),
                    "prefill_s": lr.prefill.median_s if lr.prefill else None,
                    "prefill_tflops": round(tf, 4) if tf is not None else None,
                    "fraction_of_peak_flops": round(tf * 1e12 / run.peak_flops, 4) if tf and run.peak_flops else None,
                    "error_vs_float": round(lr.error_vs_float, 5),
                })
        kernels = [self._kernel_json(r) for r in self.runs]
        best = self.best
        head = self._kernel_json(best) if best else None
        return {
            "schema_version": 1,
            "device": self.device, "device_id": self.target.device.id, "device_name": self.target.device.name,
            "backend": self.target.device.backend,
            "peak_bandwidth_gb_s": peak, "copy_bandwidth_gb_s": round(self.copy_bandwidth_gb_s, 3),
            "last_level_cache_bytes": self.llc_bytes, "model": self.model_id, "format": self.format_id,
            "prompt_tokens": best.prompt_tokens if best else None, "batches": list(best.batches) if best else [],
            "measured_scope": ("the whole model in llama.cpp" if best and best.info.backend == "llamacpp" else
                               "weight matmuls only (no attention, norms, sampling or per-layer sync)"),
            "calibration_used": self.calibration_used,
            "layers": layers, "kernels": kernels,
            "kernel": best.info.id if best else None,
            "decode_tokens_per_s": head["decode_tokens_per_s"] if head else {"measured": None, "predicted": None},
            "prefill_tokens_per_s": head["prefill_tokens_per_s"] if head else {"measured": None, "predicted": None},
            "skipped": [{"kernel": k, "reason": why} for k, why in self.skipped],
            "notes": list(self.notes),
        }

    def _kernel_json(self, r: KernelRun) -> dict:
        dec, pre = r.decode_tokens_per_s(1), r.prefill_tokens_per_s()
        pdec, ppre = r.predicted_decode.get(1), r.predicted_prefill
        eff = r.effective_gb_s()
        return {
            "kernel": r.info.id, "label": r.info.label, "backend": r.info.backend, "engine": r.info.engine,
            "kernel_class": r.info.kernel_class, "predicted_runtime": r.predicted_runtime,
            "bytes_per_token": r.bytes_per_token, "achieved_gb_s": round(eff, 3),
            "fraction_of_peak_bandwidth": round(eff / self.peak_bandwidth_gb_s, 4),
            "fraction_of_copy_bandwidth": round(eff / self.copy_bandwidth_gb_s, 4),
            "decode_tokens_per_s": _pair(dec, pdec), "prefill_tokens_per_s": _pair(pre, ppre),
            "by_batch": [{"batch": b, **_pair(r.decode_tokens_per_s(b), r.predicted_decode.get(b))} for b in r.batches],
            "notes": list(r.notes),
        }

    def records(self) -> list[Any]:
        """Calibration records of this run, one per kernel (see planner.measure.calibration)."""
        from planner import __version__
        from planner.measure.calibration import SOURCE, record_model

        Record = record_model()
        now = datetime.now(timezone.utc).replace(microsecond=0)
        dev = self.target.device
        out = []
        for r in self.runs:
            pre_s = r.prefill_s()
            compute = (r.flops_per_prompt / pre_s / r.peak_flops) if (pre_s and r.peak_flops) else None
            bandwidth, overhead = r.calibration_fractions(self.peak_bandwidth_gb_s)
            scope = "whole model" if r.info.backend == "llamacpp" else "matmuls only"
            notes = "; ".join(r.notes + [f"{self.model_id} shapes, {self.format_id}; {scope}"])
            out.append(Record(
                device_id=dev.id, backend=dev.backend, engine=r.info.engine, kernel_backend=r.info.backend,
                kernel=r.info.id, kernel_class=r.info.kernel_class, format_id=self.format_id, model_id=self.model_id,
                bandwidth_fraction=bandwidth, compute_fraction=compute, layer_overhead_us=overhead,
                copy_bandwidth_gb_s=self.copy_bandwidth_gb_s,
                peak_bandwidth_gb_s=self.peak_bandwidth_gb_s, peak_flops=r.peak_flops, measured_at=now,
                planner_version=__version__, source=SOURCE, notes=notes[:2000]))
        return out


def _pair(measured: float | None, predicted: float | None) -> dict:
    return {"measured": round(measured, 3) if measured is not None else None,
            "predicted": round(predicted, 3) if predicted is not None else None,
            "ratio": round(measured / predicted, 4) if measured and predicted else None}


# ------------------------------------------------------------------------------------------ kernel choice


def _group_size(fmt: WeightFormat) -> int:
    """Group size of a 4-bit format's kernels: GPTQ/AWQ 128 (g32 variants 32), MLX/bnb 64, GGUF blocks 32."""
    if fmt.id.endswith("-g32"):
        return 32
    if fmt.family in ("gptq", "awq"):
        return 128
    if fmt.family in ("mlx", "bnb"):
        return 64
    return 32


def kernels_for_format(fmt: WeightFormat, device: str) -> tuple[list[Any], list[str]]:
    """The kernels that stand for `fmt` on the device kind, and notes on stand-ins."""
    kind = device_kind(device)
    notes: list[str] = []
    bits = fmt.weight_bits_nominal
    if fmt.family == "float" or fmt.compute in ("fp32", "fp16", "bf16"):
        if fmt.compute == "fp32":
            ks: list[Any] = [NumpyFP32(), TorchDense("fp32")]
        else:
            ks = [NumpyBF16(), TorchDense("fp16" if (fmt.compute == "fp16" and kind != "cpu") else "bf16")]
            if fmt.compute == "fp16" and kind == "cpu":
                notes.append("fp16 on CPU is timed as bf16 (same bytes; CPU runtimes compute 16-bit weights in bf16)")
    elif fmt.compute == "fp8":
        ks = [TorchFP8()]
    elif fmt.family == "w8a8":
        ks = [NumpyInt8(), TorchIntMM()]
    elif bits >= 6.0:
        ks = [NumpyInt8(), TorchInt8WeightOnly()]
    else:
        g = _group_size(fmt)
        ks = [NumpyInt4(g), TorchInt4(g)]
    if fmt.family in ("exl2", "mxfp4", "nvfp4", "bnb", "mlx"):
        notes.append(f"{fmt.family} kernels are not available to the bench; the nearest int8/int4 kernels stand in")
    return ks, notes


def gguf_standin_note(fmt: WeightFormat, kernels: Sequence[Any]) -> str:
    """The note for a GGUF format benched on matmul kernels only (llama.cpp itself was not timed)."""
    nearest = kernels[0].info.kernel_class
    return (f"GGUF {fmt.id} runs in llama.cpp, whose kernels are not timed here (llama-cpp-python is not used); the "
            f"nearest {'int8' if nearest == 'q8' else 'int4 group-32'} kernels stand in")


def _for_k(kernel: Any, k: int) -> tuple[Any, str | None]:
    """A group-wise kernel whose group divides k (MLA and small models have rows of 576, 1536 ...)."""
    g = getattr(kernel, "group_size", None)
    if g is None or k % g == 0:
        return kernel, None
    for smaller in (64, 32, 16):
        if smaller < g and k % smaller == 0:
            return type(kernel)(smaller), f"row length {k} is not a multiple of {g}: group {smaller} used"
    raise PlannerError(f"row length {k} has no even group size for {kernel.info.id}")


# ------------------------------------------------------------------------------------------ timing


def bench_shape(kernel: Any, shape: MatmulShape, *, device: str, batches: Sequence[int], prompt: int,
                budget_bytes: int, llc_bytes: int, max_sample_bytes: int = MAX_SAMPLE_BYTES, repeat: int = 25,
                budget_s: float = 0.5, seed: int = 0) -> tuple[LayerResult, str | None]:
    """Time one shape with one kernel: decode at each batch (rotating copies past the cache) and prefill."""
    kernel, note = _for_k(kernel, shape.k)
    kind = device_kind(device)
    n, k = shape.n, shape.k
    probe_rows = min(n, 64)
    probe = kernel.prepare(random_weights(probe_rows, k, seed), device)
    row_bytes = kernel.nbytes(probe) / probe_rows
    del probe
    # Rows that fit: the fp32 source plus quantization temporaries (~4x fp32) and at least one prepared copy.
    per_row_work = 16 * k + row_bytes
    rows = min(n, int(budget_bytes // per_row_work), max(64, int(max_sample_bytes // row_bytes)))
    # sampled rows in multiples of 64: packed int4 layouts tile rows (torch's CPU int4 pack needs N % 16 == 0)
    rows = n if rows >= n else max(64, rows - rows % 64)
    if rows * per_row_work > budget_bytes:
        raise PlannerError(f"{shape.name} ({n}x{k}) needs {rows * per_row_work / GIB:.2f} GiB even for {rows} rows; "
                           f"only {budget_bytes / GIB:.2f} GiB may be used")
    w = random_weights(rows, k, seed)
    state = kernel.prepare(w, device)
    state_bytes = kernel.nbytes(state)
    copies = max(1, math.ceil(2 * llc_bytes / max(state_bytes, 1)))
    copies = max(1, min(copies, int((budget_bytes - rows * 16 * k) // max(state_bytes, 1))))
    states = [state] + [kernel.clone(state) for _ in range(copies - 1)]

    def timer(call: Callable[[int], Any], **kw: Any) -> Timing:
        if kind == "cuda":
            return time_calls_cuda(call, device, **kw)
        return time_calls(call, lambda: kernel.sync(device), **kw)

    rng = np.random.default_rng(seed + 1)
    scale = n / rows
    decode: dict[int, Timing] = {}
    err = 0.0
    for b in batches:
        x32 = rng.standard_normal((b, k), dtype=F32)
        x = kernel.make_input(x32, device)
        if b == batches[0]:
            check = min(rows, 256)
            y = kernel.to_numpy(kernel(state, x))[:, :check]
            ref = x32 @ w[:check].T
            err = float(np.linalg.norm(y - ref) / max(np.linalg.norm(ref), 1e-30))
        t = timer(lambda i, x=x: kernel(states[i % copies], x), repeat=repeat, budget_s=budget_s)
        decode[b] = t.scaled(scale)
    del states
    prefill = None
    prefill_rows = 0
    if prompt > 0:
        cap = PREFILL_FLOPS_PER_CALL[kind] / (2 * prompt * k)
        prefill_rows = min(rows, max(64, int(cap) - int(cap) % 64))
        st = state if prefill_rows == rows else kernel.prepare(w[:prefill_rows], device)
        xp = kernel.make_input(rng.standard_normal((prompt, k), dtype=F32), device)
        t = timer(lambda i: kernel(st, xp), warmup=1, repeat=repeat, budget_s=2 * budget_s)
        prefill = t.scaled(n / prefill_rows)
    lr = LayerResult(shape, kernel.info.id, rows, int(round(row_bytes * n)), state_bytes * copies, decode, prefill,
                     prefill_rows, prompt, err)
    return lr, note


# ------------------------------------------------------------------------------------------ the whole bench


def _predict(run: KernelRun, mc: ModelCost, fmt: WeightFormat, target: Target, runtime: Runtime | None,
             calibration: dict | None) -> None:
    """Fill in the cost model's prediction for the run (runtime: the one asked for, else the kernel's engine's,
    else the fastest that runs the format on the device)."""
    from planner.cost.speed import prefill_peak_flops
    from planner.cost.evaluate import evaluate
    from planner.formats import gguf_main_type
    from planner.runtimes import RUNTIMES

    dev = target.device
    candidates = [rt for rt in RUNTIMES.values() if rt.support(fmt, dev).runs]
    ctx = min(mc.spec.max_context, max(4096, run.prompt_tokens + 1))
    if runtime is None and candidates:
        same = [rt for rt in candidates if rt.engine == run.info.engine]
        pool = same or candidates
        runtime = max(pool, key=lambda rt: evaluate(mc, fmt, rt, target, context=ctx, prompt_tokens=run.prompt_tokens,
                                                    calibration=calibration).decode_tokens_per_s)
    if run.info.engine == "reference":
        run.peak_flops = prefill_peak_flops(dev, "transformers", "float", "fp32", "native")
    else:
        rt = next((r for r in candidates if r.engine == run.info.engine), None)
        mode = rt.support(fmt, dev).mode if rt else "native"
        run.peak_flops = prefill_peak_flops(dev, run.info.engine, fmt.family, fmt.compute, mode, gguf_main_type(fmt))
    if runtime is None:
        run.notes.append(f"no runtime runs {fmt.id} on {dev.name}: nothing to compare with")
        return
    run.predicted_runtime = runtime.id
    for b in run.batches:
        plan = evaluate(mc, fmt, runtime, target, context=ctx, concurrency=b, prompt_tokens=run.prompt_tokens,
                        calibration=calibration)
        if not plan.runs:
            run.notes.append(f"{runtime.id} cannot run {fmt.id} here: {plan.reason}")
            return
        run.predicted_decode[b] = plan.throughput_tokens_per_s if b > 1 else plan.decode_tokens_per_s
        if b == run.batches[0]:
            run.predicted_prefill = plan.prefill_tokens_per_s


def run_bench(mc: ModelCost, fmt: WeightFormat, target: Target, *, device: str = "cpu", batches: Sequence[int] = (1,),
              prompt: int = 512, kernels: Sequence[Any] | None = None, runtime: Runtime | None = None,
              calibration: dict | None = None, budget_bytes: int | None = None,
              max_sample_bytes: int = MAX_SAMPLE_BYTES, copy_bytes: int = GIB, llc_bytes: int | None = None,
              repeat: int = 25, budget_s: float = 0.5, shapes: Sequence[MatmulShape] | None = None,
              progress: Callable[[str], None] | None = None, copy_gb_s: float | None = None,
              llamacpp: bool | None = None) -> BenchResult:
    """Bench `mc` in `fmt` on `device` (planning figures from `target`); see the module docstring.

    `llamacpp`: also time the whole model in real llama.cpp (GGUF formats only). None: when the format is GGUF,
    no kernels were named and llama-cpp-python is installed; True: required (an error if it cannot run)."""
    say = progress or (lambda _msg: None)
    device_kind(device)
    batches = tuple(sorted({int(b) for b in batches}))
    if not batches or batches[0] < 1 or batches[-1] > 4096:
        raise PlannerError(f"--batch values must be between 1 and 4096, got {list(batches)}")
    if not 0 <= prompt <= 131072:
        raise PlannerError(f"--prompt must be between 0 and 131072 tokens, got {prompt}")
    notes: list[str] = []
    standins = kernels is None  # the format's stand-in kernels, rather than kernels the caller named
    if llamacpp is None:
        from planner.measure.speed.llamacpp import llama_cpp_missing_reason

        llamacpp = fmt.family == "gguf" and kernels is None and llama_cpp_missing_reason() is None
    elif llamacpp and fmt.family != "gguf":
        raise PlannerError(f"llama.cpp runs GGUF formats; {fmt.id} is not one")
    if kernels is None:
        kernels, notes = kernels_for_format(fmt, device)
    skipped: list[tuple[str, str]] = []
    usable = []
    for kern in kernels:
        why = kern.available(device)
        if why:
            skipped.append((kern.info.id, why))
        else:
            usable.append(kern)
    if not usable and not llamacpp:
        reasons = "; ".join(f"{k}: {w}" for k, w in skipped)
        raise PlannerError(f"no kernel for {fmt.id} runs on {device} here ({reasons})")
    if budget_bytes is None:
        budget_bytes = available_memory_bytes(device) // 2
    llc = llc_bytes if llc_bytes is not None else last_level_cache_bytes(device)
    if copy_gb_s is None:
        say(f"measuring copy bandwidth on {device}")
    copy = copy_gb_s if copy_gb_s is not None else copy_bandwidth_gb_s(device, nbytes=copy_bytes)
    shapes = list(shapes) if shapes is not None else model_shapes(mc.spec, mc.tensors)
    runs = []
    with single_threaded_blas():
        runs = _run_kernels(usable, shapes, mc, fmt, target, device=device, batches=batches, prompt=prompt,
                            budget_bytes=budget_bytes, llc=llc, max_sample_bytes=max_sample_bytes, repeat=repeat,
                            budget_s=budget_s, runtime=runtime, calibration=calibration, say=say, skipped=skipped)
    if llamacpp:
        from planner.measure.speed.llamacpp import run_llamacpp

        try:
            engine = run_llamacpp(mc, fmt, target, device=device, prompt=prompt, budget_bytes=budget_bytes,
                                  budget_s=4 * budget_s, say=say)
        except PlannerError as exc:
            if not runs:
                raise
            skipped.append((f"llama.cpp-{fmt.id}", str(exc)))
        else:
            _predict(engine, mc, fmt, target, runtime, calibration)  # type: ignore[arg-type]
            runs.append(engine)  # type: ignore[arg-type]
            if len(runs) > 1:
                notes.append("the matmul kernels stand beside real llama.cpp for comparison; llama.cpp is the headline")
    if standins and fmt.family == "gguf" and runs and not any(r.info.backend == "llamacpp" for r in runs):
        notes.insert(0, gguf_standin_note(fmt, kernels))
    if not runs:
        reasons = "; ".join(f"{k}: {w}" for k, w in skipped)
        raise PlannerError(f"no kernel for {fmt.id} ran on {device} ({reasons})")
    return BenchResult(device, target, mc.spec.id, fmt.id, copy, llc, runs, skipped, notes,
                       calibration_used=bool(calibration))


def _run_kernels(usable: Sequence[Any], shapes: Sequence[MatmulShape], mc: ModelCost, fmt: WeightFormat,
                 target: Target, *, device: str, batches: tuple[int, ...], prompt: int, budget_bytes: int, llc: int,
                 max_sample_bytes: int, repeat: int, budget_s: float, runtime: Runtime | None,
                 calibration: dict | None, say: Callable[[str], None],
                 skipped: list[tuple[str, str]]) -> list[KernelRun]:
    """Every shape with every usable kernel, checked against fp32, extrapolated and predicted."""
    runs = []
    for kern in usable:
        layers, knotes = [], []
        failed = None
        for sh in shapes:
            say(f"{kern.info.id}: {sh.name} {sh.n}x{sh.k}")
            try:
                lr, note = bench_shape(kern, sh, device=device, batches=batches, prompt=prompt,
                                       budget_bytes=budget_bytes, llc_bytes=llc, max_sample_bytes=max_sample_bytes,
                                       repeat=repeat, budget_s=budget_s)
            except (RuntimeError, TypeError, NotImplementedError) as exc:
                if kern.info.backend != "torch":
                    raise
                # a torch op that passed its smoke test can still refuse a shape (tile or alignment rules)
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                failed = f"failed on {sh.name} {sh.n}x{sh.k}: {first}"
                break
            if note and note not in knotes:
                knotes.append(note)
            tol = ERROR_TOLERANCE.get(kern.info.kernel_class, 0.2)
            if lr.error_vs_float > tol:
                raise PlannerError(f"{kern.info.id} computed {sh.name} with relative error {lr.error_vs_float:.3f} "
                                   f"against fp32 weights (tolerance {tol}): the kernel is broken on {device}")
            layers.append(lr)
        if failed:
            skipped.append((kern.info.id, failed))
            continue
        if any(lr.rows_timed < lr.shape.n for lr in layers):
            knotes.append("large shapes timed on a slice of their rows and scaled by rows")
        if any(lr.working_set_bytes < 2 * llc for lr in layers):
            knotes.append("memory allowed fewer weight copies than twice the last-level cache: decode may read from cache")
        run = KernelRun(kern.info, layers, batches, prompt, notes=knotes)
        _predict(run, mc, fmt, target, runtime, calibration)
        runs.append(run)
    return runs
