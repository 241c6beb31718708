"""Quantization configs: one typed object per output kind, and the registry from formats-table ids to configs.

`config_for(get_format("Q4_K_M"))` -> GGUFConfig(ftype="Q4_K_M"); the pipeline picks its writer by the config's
type. Which tensor gets which encoding is never decided here: that is the format's assignment rule
(planner.formats), the same one the cost model uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

from planner.errors import PlannerError
from planner.formats import EMBED_OUTPUT_Q8_VARIANTS, FORMATS, IMATRIX_SUFFIX, GGMLType, WeightFormat, gguf_base_type
from planner.quantize.primitives import ENCODERS


@dataclass(frozen=True)
class GGUFConfig:
    """A GGUF file of llama.cpp file type `ftype` (per-tensor types from planner.formats.gguf_mix)."""

    ftype: str  # llama.cpp file type name, e.g. 'Q4_K_M' (bartowski's _L variants: their base type)
    embed_output_type: str | None = None  # forced type of token_embd/output (Q8_0 for the _L variants)
    imatrix: bool = False  # the '-imat' variants: encoders weight errors by an importance matrix (required)


@dataclass(frozen=True)
class FloatConfig:
    """An unquantized Hugging Face checkpoint (safetensors + config.json)."""

    dtype: Literal["fp32", "fp16", "bf16"]


@dataclass(frozen=True)
class GPTQConfig:
    """A checkpoint in GPTQ's layout (AutoGPTQ v1: qweight/qzeros/scales/g_idx), made by real GPTQ on calibration
    activations (method 'gptq') or by round to nearest without calibration (method 'rtn', the `rtn-*` formats)."""

    bits: Literal[4, 8]
    group_size: int | None  # None: one group per output channel (written as -1)
    sym: bool = True
    desc_act: bool = False  # act-order: columns by decreasing Hessian diagonal (GPTQ only)
    method: Literal["gptq", "rtn"] = "gptq"
    # damp_percent: fraction of the mean Hessian diagonal added to it. The GPTQ paper's 1 % assumes ~128 x 2048
    # calibration tokens; we calibrate on 8,192. Measured on SmolLM2-135M (held-out eval text, KLD against
    # round-to-nearest): calibrated on the project's own docs 0.01 gave +44 % and 0.1 gave +2 %; on the bundled prose
    # (calib_alice.txt) 0.01 gave -68 % and 0.1 gave -70 %. 10 % is never worse here, so it is the default.
    damp: float = 0.1

    @property
    def calibrated(self) -> bool:
        """Whether making it needs calibration activations."""
        return self.method == "gptq"


@dataclass(frozen=True)
class AWQConfig:
    """AutoAWQ GEMM checkpoint (qweight/qzeros/scales packed along the output dim), activation-aware scales searched
    on calibration activations, asymmetric grid with zero points."""

    bits: Literal[4] = 4
    group_size: int = 128
    clip: bool = True  # AutoAWQ's clip search after scaling (its default, apply_clip=True)

    @property
    def calibrated(self) -> bool:
        """Always calibrated."""
        return True


@dataclass(frozen=True)
class NF4Config:
    """bitsandbytes 4-bit NormalFloat checkpoint (pre-quantized, as transformers serializes it)."""

    block_size: int = 64
    double_quant: bool = True
    nested_block_size: int = 256
    compute_dtype: str = "bfloat16"


@dataclass(frozen=True)
class FP8Config:
    """FP8 E4M3 weights with float32 scales in compressed-tensors layout (weight + weight_scale), vLLM-loadable."""

    per_channel: bool = True


@dataclass(frozen=True)
class MLXConfig:
    """MLX affine quantization: packed uint32 weights with fp16 scales and biases per group."""

    bits: Literal[4, 8]
    group_size: int = 64


QuantConfig = Union[GGUFConfig, FloatConfig, GPTQConfig, AWQConfig, NF4Config, FP8Config, MLXConfig]

# Format id -> config, for the checkpoint formats we can write; GGUF formats are derived below.
_REGISTRY: dict[str, QuantConfig] = {
    "fp32": FloatConfig("fp32"),
    "fp16": FloatConfig("fp16"),
    "bf16": FloatConfig("bf16"),
    # GPTQ with act-order (desc_act): what gptqmodel and the published GPTQ checkpoints mostly use
    "gptq-int4": GPTQConfig(4, 128, desc_act=True),
    "gptq-int4-g32": GPTQConfig(4, 32, desc_act=True),
    "gptq-int4-perchannel": GPTQConfig(4, None, desc_act=True),
    "gptq-int8": GPTQConfig(8, 128, desc_act=True),
    "gptq-int8-perchannel": GPTQConfig(8, None, desc_act=True),
    "rtn-int4": GPTQConfig(4, 128, method="rtn"),
    "rtn-int4-g32": GPTQConfig(4, 32, method="rtn"),
    "rtn-int4-perchannel": GPTQConfig(4, None, method="rtn"),
    "rtn-int8": GPTQConfig(8, 128, method="rtn"),
    "rtn-int8-perchannel": GPTQConfig(8, None, method="rtn"),
    "awq-int4": AWQConfig(),
    "nf4": NF4Config(double_quant=True),
    "nf4-nodq": NF4Config(double_quant=False),
    "fp8": FP8Config(per_channel=True),
    "fp8-pertensor": FP8Config(per_channel=False),
    "mlx-4bit": MLXConfig(4),
    "mlx-8bit": MLXConfig(8),
}


def _gguf_types_we_encode() -> set[str]:
    return set(ENCODERS)


# llama.cpp file types whose mixes (fallbacks included) only pick types we encode; the IQ1-IQ3 types need
# lattice grids (iq2xxs_grid ...) that are not written here.
GGUF_FILE_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L",
                   "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS", "MXFP4_MOE")


def _gguf_ok(fmt: WeightFormat) -> bool:
    """A GGUF format we can write."""
    return fmt.family == "gguf" and gguf_base_type(fmt.id) in GGUF_FILE_TYPES


def config_for(fmt: WeightFormat) -> QuantConfig:
    """The quantization config that produces `fmt`; a format we cannot write is a clear error listing those we can."""
    if _gguf_ok(fmt):
        plain = fmt.id.removesuffix(IMATRIX_SUFFIX)
        return GGUFConfig(gguf_base_type(fmt.id), "Q8_0" if plain in EMBED_OUTPUT_Q8_VARIANTS else None, fmt.imatrix)
    cfg = _REGISTRY.get(fmt.id)
    if cfg is None:
        raise PlannerError(f"planner quantize cannot write {fmt.id} ({fmt.description}); it writes: {', '.join(supported_formats())}")
    return cfg


def supported_formats() -> list[str]:
    """Format ids `planner quantize` can produce."""
    gguf = [f.id for f in FORMATS.values() if _gguf_ok(f)]
    return gguf + list(_REGISTRY)


def check_encodings(fmt: WeightFormat, assignments: list) -> None:  # type: ignore[type-arg]
    """Every GGUF tensor type the format assigns must have an encoder (guards against new mix rules)."""
    have = _gguf_types_we_encode()
    for a in assignments:
        if isinstance(a.encoding, GGMLType) and a.encoding.name not in have:
            raise PlannerError(f"{fmt.id}: {a.tensor.name} is assigned {a.encoding.name}, which planner quantize cannot encode")
