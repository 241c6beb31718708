"""Weight-only GPU formats in `planner eval`: the checkpoint `planner quantize` writes (GPTQ/RTN, NF4, FP8, MLX),
read back and dequantized tensor by tensor into a float32 Hugging Face directory, which the GGUF writer turns into
an F32 GGUF that llama.cpp runs like any other format.

A weight-only format's whole quantization error is in its dequantized weights, so running those weights in
llama.cpp measures the format's quality (not its kernels' speed). F32, not F16: a GPTQ value (a small integer times
an fp16 scale, at most 19 significant bits) is exact in F32 and not in F16; NF4 (code-book level times a float32
absmax), FP8 (E4M3 value times a float32 scale) and MLX (q * fp16 scale + fp16 bias) are kept as the float32
result of the format's defining arithmetic, where F16 would round each value a second time (up to 2**-11
relative). The runtimes (bitsandbytes, vLLM, MLX) round once more to their compute dtype (bf16/fp16); that is
below 2**-8 relative, far under the quantization error, and is not modelled. Cost: the GGUF llama.cpp runs is 4
bytes a weight (the sizes reported are the checkpoint's own).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from planner.errors import InvalidInputError, PlannerError
from planner.quantize.config import AWQConfig, FP8Config, GPTQConfig, MLXConfig, NF4Config, QuantConfig
from planner.quantize.group_quant import e4m3_decode, group_dequantize, mlx_dequantize, unpack_gptq
from planner.quantize.primitives import from_bf16_bits
from planner.quantize.safetensors_writer import NUMPY_DTYPES, SafetensorsWriter, TensorSpec

WEIGHT_ONLY_CONFIGS = (GPTQConfig, AWQConfig, NF4Config, FP8Config, MLXConfig)
GGUF_DTYPE = "F32"  # the GGUF file type the dequantized weights run in (see the module doc)


def method(cfg: QuantConfig) -> str:
    """How the format's weights were made, for the report (honest about RTN under a GPTQ name)."""
    if isinstance(cfg, GPTQConfig):
        g = f"g{cfg.group_size}" if cfg.group_size else "per-channel"
        if cfg.method == "rtn":
            return f"RTN {cfg.bits}-bit {g} in GPTQ's layout, no calibration"
        order = ", act-order" if cfg.desc_act else ""
        return f"GPTQ {cfg.bits}-bit {g}{order}, damp {cfg.damp:g}, calibrated by planner quantize"
    if isinstance(cfg, AWQConfig):
        search = "scale and clip search" if cfg.clip else "scale search, no clip search"
        return f"AWQ {cfg.bits}-bit g{cfg.group_size} ({search}), calibrated by planner quantize"
    if isinstance(cfg, NF4Config):
        return f"bitsandbytes NF4, block {cfg.block_size}, {'double quant' if cfg.double_quant else 'fp32 absmax'}"
    if isinstance(cfg, FP8Config):
        # the checkpoint's config asks vLLM for dynamic FP8 activations; only the weights' error is measured here
        return f"FP8 E4M3 {'per-channel' if cfg.per_channel else 'per-tensor'} scale, weights only"
    if isinstance(cfg, MLXConfig):
        return f"MLX affine {cfg.bits}-bit, group {cfg.group_size}"
    raise PlannerError(f"{type(cfg).__name__} is not a weight-only format")


class _Checkpoint:
    """The tensors of a safetensors checkpoint directory, read as numpy arrays (memory-mapped)."""

    def __init__(self, directory: Path):
        from planner.models.readers.safetensors_header import read_safetensors_dir

        raw, _ = read_safetensors_dir(directory)
        self.dir = directory
        self.raw = {t.name: t for t in raw}
        self._data: dict[str, int] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.raw

    def get(self, name: str) -> np.ndarray:
        """Tensor `name` in its stored dtype (BF16 as uint16 bit patterns, F8_E4M3 as uint8 codes)."""
        t = self.raw.get(name)
        if t is None:
            raise InvalidInputError(f"{self.dir}: tensor {name} is missing")
        path = self.dir / t.file
        if t.file not in self._data:
            with path.open("rb") as fh:
                self._data[t.file] = 8 + int.from_bytes(fh.read(8), "little")
        dtype = NUMPY_DTYPES.get(t.dtype)
        if dtype is None:
            raise InvalidInputError(f"{path}: {name}: unexpected dtype {t.dtype}")
        arr = np.memmap(path, dtype=dtype, mode="r", offset=self._data[t.file] + t.data_offsets[0],
                        shape=t.shape or (1,))
        return np.asarray(arr)

    def floats(self, name: str) -> np.ndarray:
        """A float tensor as float32."""
        t = self.raw[name]
        a = self.get(name)
        return from_bf16_bits(a) if t.dtype == "BF16" else a.astype(np.float32)


def dequantize_gptq(ck: _Checkpoint, prefix: str, cfg: GPTQConfig) -> np.ndarray:
    """(out, in) float32 of an AutoGPTQ v1 layer: (q - zero) * scale with the group g_idx names for each input."""
    q, scales, zeros = unpack_gptq(ck.get(f"{prefix}.qweight"), ck.get(f"{prefix}.qzeros"), ck.get(f"{prefix}.scales"),
                                   cfg.bits)
    g_idx = ck.get(f"{prefix}.g_idx").astype(np.int64)
    n = q.shape[1]
    if np.array_equal(g_idx, np.arange(n) // (cfg.group_size or n)):  # contiguous groups: the writer's own inverse
        return group_dequantize(q, scales, zeros, cfg.group_size)
    return (q.astype(np.float32) - zeros[:, g_idx].astype(np.float32)) * scales[:, g_idx]


def dequantize_awq(ck: _Checkpoint, prefix: str) -> np.ndarray:
    """(out, in) float32 of an AutoAWQ GEMM layer: (q - zero) * scale per group, unpacked from AWQ's column order."""
    from planner.quantize.awq import unpack_awq

    return unpack_awq(ck.get(f"{prefix}.qweight"), ck.get(f"{prefix}.qzeros"), ck.get(f"{prefix}.scales"))


def dequantize_nf4(ck: _Checkpoint, name: str) -> np.ndarray:
    """A bitsandbytes NF4 weight as float32 of its original shape, through the code books stored beside it."""
    state = json.loads(ck.get(f"{name}.quant_state.bitsandbytes__nf4").tobytes())
    block = int(state["blocksize"])
    absmax = ck.get(f"{name}.absmax")
    if "nested_blocksize" in state:
        nb = int(state["nested_blocksize"])
        nested = ck.get(f"{name}.nested_absmax").astype(np.float32)
        levels = ck.get(f"{name}.nested_quant_map").astype(np.float32)
        absmax = levels[absmax] * np.repeat(nested, nb)[:absmax.size] + np.float32(state["nested_offset"])
    qmap = ck.get(f"{name}.quant_map").astype(np.float32)
    packed = ck.get(name).reshape(-1)
    codes = np.empty(packed.size * 2, dtype=np.uint8)
    codes[0::2], codes[1::2] = packed >> 4, packed & 0x0F
    w = qmap[codes].reshape(-1, block) * absmax.astype(np.float32)[:, None]
    return w.reshape(tuple(state["shape"]))


def dequantize_fp8(ck: _Checkpoint, prefix: str) -> np.ndarray:
    """A compressed-tensors FP8 weight: E4M3 value times its float32 scale (per channel or per tensor)."""
    codes = ck.get(f"{prefix}.weight")
    scale = ck.get(f"{prefix}.weight_scale").astype(np.float32)
    return e4m3_decode(codes) * (scale.reshape(-1, 1) if scale.size > 1 else scale.reshape(()))


def dequantize_mlx(ck: _Checkpoint, prefix: str, cfg: MLXConfig) -> np.ndarray:
    """An MLX affine layer: q * scale + bias per group."""
    return mlx_dequantize(ck.get(f"{prefix}.weight"), ck.get(f"{prefix}.scales"), ck.get(f"{prefix}.biases"),
                          cfg.bits, cfg.group_size)


def dequantized_tensors(ck: _Checkpoint, cfg: QuantConfig) -> dict[str, Callable[[], np.ndarray]]:
    """The checkpoint's model weights as HF name -> loader of its float32 values (quantized ones dequantized)."""
    names = set(ck.raw)
    out: dict[str, Callable[[], np.ndarray]] = {}

    def _bind(fn: Callable[..., np.ndarray], *args: Any) -> Callable[[], np.ndarray]:
        return lambda: fn(*args)

    for name in sorted(names):
        if isinstance(cfg, GPTQConfig) and name.endswith(".qweight"):
            p = name[: -len(".qweight")]
            out[f"{p}.weight"] = _bind(dequantize_gptq, ck, p, cfg)
        elif isinstance(cfg, AWQConfig) and name.endswith(".qweight"):
            p = name[: -len(".qweight")]
            out[f"{p}.weight"] = _bind(dequantize_awq, ck, p)
        elif isinstance(cfg, NF4Config) and f"{name}.quant_state.bitsandbytes__nf4" in names:
            out[name] = _bind(dequantize_nf4, ck, name)
        elif isinstance(cfg, FP8Config) and f"{name}_scale" in names:
            out[name] = _bind(dequantize_fp8, ck, name[: -len(".weight")])
        elif isinstance(cfg, MLXConfig) and name.endswith(".weight") and f"{name[:-len('.weight')]}.scales" in names:
            out[name] = _bind(dequantize_mlx, ck, name[: -len(".weight")], cfg)
    parts = {f"{k[:-len('.weight')]}.{s}" for k in out for s in
             ("qweight", "qzeros", "scales", "g_idx", "biases", "weight_scale")}
    for name in sorted(names):
        if name in out or name in parts or ".absmax" in name or name.endswith(("quant_map", "bitsandbytes__nf4")):
            continue
        if ck.raw[name].dtype not in ("F32", "F16", "BF16"):
            raise InvalidInputError(f"{ck.dir}: {name}: {ck.raw[name].dtype} tensor that is not part of a {type(cfg).__name__} layer")
        out[name] = _bind(ck.floats, name)
    return out


def write_dequantized(checkpoint: Path, cfg: QuantConfig, out: Path) -> None:
    """A plain float32 HF directory at `out` (created) with the checkpoint's dequantized weights and side files."""
    ck = _Checkpoint(checkpoint)
    loaders = dequantized_tensors(ck, cfg)
    shapes = {n: _shape(ck, n, cfg) for n in loaders}
    out.mkdir()
    with (out / "model.safetensors").open("wb+") as fh:
        w = SafetensorsWriter(fh, [TensorSpec(n, "F32", shapes[n]) for n in loaders], {"format": "pt"})
        for n, load in loaders.items():
            arr = np.ascontiguousarray(load(), dtype=np.float32)
            if arr.shape != shapes[n]:
                raise AssertionError(f"{n}: dequantized to {arr.shape}, expected {shapes[n]}")
            w.write(n, arr)
        w.finish()
    config = json.loads((checkpoint / "config.json").read_text())
    config.pop("quantization_config", None)
    config.pop("quantization", None)
    config["torch_dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for f in checkpoint.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and f.name not in ("config.json", "quantize_config.json") \
                and not f.name.startswith("."):
            shutil.copyfile(f, out / f.name)


def _shape(ck: _Checkpoint, name: str, cfg: QuantConfig) -> tuple[int, ...]:
    """The float shape of weight `name` from the checkpoint's headers (no data read)."""
    p = name[: -len(".weight")]
    if isinstance(cfg, GPTQConfig) and f"{p}.qweight" in ck:
        return (ck.raw[f"{p}.scales"].shape[1], ck.raw[f"{p}.g_idx"].shape[0])
    if isinstance(cfg, AWQConfig) and f"{p}.qweight" in ck:
        return (ck.raw[f"{p}.scales"].shape[1], ck.raw[f"{p}.qweight"].shape[0])
    if isinstance(cfg, NF4Config) and f"{name}.quant_state.bitsandbytes__nf4" in ck:
        return tuple(json.loads(ck.get(f"{name}.quant_state.bitsandbytes__nf4").tobytes())["shape"])
    if isinstance(cfg, MLXConfig) and f"{p}.scales" in ck:
        rows, groups = ck.raw[f"{p}.scales"].shape
        return (rows, groups * cfg.group_size)
    return tuple(ck.raw[name].shape)


def quantize_dequantized(source: Path, fmt: Any, cfg: QuantConfig, out: Path, work: Path,
                         progress: Any = None, calib: str | None = None) -> dict[str, Any]:
    """Quantize `source` to the weight-only `fmt` with planner quantize, dequantize that checkpoint and write it as
    an F32 GGUF at `out`. Returns the summary eval stores: the checkpoint's size and bits, the GGUF's size. calib:
    the calibration text of GPTQ/AWQ (None: planner quantize's default)."""
    from planner.quantize.pipeline import quantize_model

    with tempfile.TemporaryDirectory(prefix=f".{fmt.id}-", dir=work) as tmp:
        ckpt, plain = Path(tmp) / "checkpoint", Path(tmp) / "dequantized"
        res = quantize_model(source, fmt, ckpt, force=True, progress=progress, calib=calib)
        write_dequantized(ckpt, cfg, plain)
        runnable = quantize_model(plain, GGUF_DTYPE, out, force=True)
    return {"format": fmt.id, "file_bytes": res.file_bytes, "bits_per_weight": res.bits_per_weight,
            "warnings": res.warnings, "method": method(cfg), "run_as": f"{GGUF_DTYPE} GGUF",
            "run_file_bytes": runnable.file_bytes}
