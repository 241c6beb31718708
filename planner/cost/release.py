"""What the released checkpoint's own precision means for a target format's quality.

A model released quantized (gpt-oss: routed experts in MXFP4, trained that way; DeepSeek-V3/R1: linear weights in FP8
E4M3 with 128x128 block scales) is exact in its released format. Baseline: the planner counts quality loss relative
to the released checkpoint, for every format of such a model. Per tensor of the released-quantized group a target:
- keeps it (same encoding): no loss;
- stores it in a 16/32-bit float: no loss (E2M1/E4M3 values times their scales fit a 16-bit float up to rounding of
  the scale product), but it gains nothing and costs memory;
- re-quantizes it into another quantized encoding: the target's own loss (re-quantizing the released values is
  assumed to cost what quantizing 16-bit weights costs); with more bits than released it still gains nothing.
Tensors the release keeps in BF16 lose what the target's encoding loses on them. The quality model's loss for the
format is assumed spread over its quantized matrices in proportion to their parameters, so the loss relative to the
release is that loss times the share of those parameters that the target re-quantizes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from planner.formats import GGML_TYPES, FloatType, GGMLType, GroupQuant
from planner.plan import GIB

if TYPE_CHECKING:
    from collections.abc import Sequence

    from planner.cost.quality import Quality
    from planner.formats import Assignment, Encoding, WeightFormat
    from planner.models.inventory import TensorInfo
    from planner.models.spec import ModelSpec

FP8_BLOCK = 128  # DeepSeek-V3 config.json quantization_config.weight_block_size [128, 128]: one fp32 scale per block


@dataclass(frozen=True)
class ReleaseEffect:
    """How a target format treats a quantized release."""

    released: str  # 'MXFP4 (routed experts)'
    kept_share: float  # share of the released-quantized parameters stored exactly as released
    upcast_share: float  # share stored in a 16/32-bit float (exact, no gain)
    requant_share: float  # share of the format's quantized-matrix parameters re-quantized (scales its loss)
    lower: bool  # some released-quantized tensor is re-quantized to as many value bits as released or fewer
    requant_bits: int  # fewest value bits a released-quantized tensor is re-quantized to (0: none is)
    extra_bytes: int  # bytes the released-quantized tensors take beyond their released size (>0: costs memory)
    source: str  # where the release's precision is stated

    @property
    def gains_nothing(self) -> bool:
        """Stores the released-quantized weights at more bits than released, for no quality gain."""
        return not self.lower and self.kept_share < 0.999 and self.extra_bytes > 0

    @property
    def note(self) -> str:
        """The reason sentence for a plan."""
        extra = f"costs {self.extra_bytes / GIB:.1f} GiB more" if self.extra_bytes >= 0.05 * GIB else "costs more memory"
        if self.kept_share >= 0.999:
            return f"released in {self.released}: this format keeps it exactly"
        if self.lower:
            return (f"released in {self.released}: this format re-quantizes it (to {self.requant_bits} bits or fewer) "
                    f"and loses against the release" + (f", and {extra}" if self.extra_bytes > 0.05 * GIB else ""))
        if self.upcast_share >= 0.999:
            return f"released in {self.released}: this format stores it at higher precision, which gains nothing and {extra}"
        return f"released in {self.released}: this format re-quantizes it at more bits, which gains nothing and {extra}"


def _released_group(spec: ModelSpec, t: TensorInfo) -> bool:
    """Is `t` stored quantized in the release?"""
    if not t.is_matrix:
        return False
    if spec.native_dtype == "mxfp4":  # gpt-oss: MoE experts only (modules_to_not_convert lists the rest)
        return t.role.endswith("_exps") and t.row_length % 32 == 0
    if spec.native_dtype == "float8_e4m3":  # DeepSeek: every linear layer in the blocks, not the router
        return t.layer is not None and "gate_inp" not in t.role
    return False


def _released_bytes(spec: ModelSpec, t: TensorInfo) -> int:
    """Bytes of `t` as released."""
    if spec.native_dtype == "mxfp4":
        return GGML_TYPES["MXFP4"].nbytes(t.shape)
    outer = math.prod(t.shape[:-2]) if len(t.shape) > 2 else 1
    rows, cols = (t.shape[-2], t.shape[-1]) if len(t.shape) >= 2 else (1, t.shape[-1])
    return outer * (rows * cols + math.ceil(rows / FP8_BLOCK) * math.ceil(cols / FP8_BLOCK) * 4)


def _same_as_released(spec: ModelSpec, enc: Encoding) -> bool:
    """Does `enc` store the released values as they are?"""
    if spec.native_dtype == "mxfp4":
        return isinstance(enc, GGMLType) and enc.name == "MXFP4"
    # assumed: an FP8 E4M3 format is served from the released FP8 checkpoint (vLLM/SGLang load its block scales);
    # the planner's per-channel layout differs from the 128x128 blocks by < 0.1 % of the bytes
    return isinstance(enc, GroupQuant) and enc.name.startswith("fp8-e4m3")


def _value_bits(enc: Encoding) -> int:
    """Bits of one stored value, scales aside: 4 for Q4_K/IQ4_XS/MXFP4/int4, 8 for Q8_0/FP8/int8."""
    bits = getattr(enc, "weight_bits", None)
    return bits if isinstance(bits, int) else math.floor(enc.bits_per_weight + 1e-9)


def _quantized(enc: Encoding) -> bool:
    """Is `enc` a lossy encoding of 16-bit weights?"""
    if isinstance(enc, FloatType):
        return enc.bits < 16
    if isinstance(enc, GGMLType):
        return enc.quantized
    return True


def release_effect(spec: ModelSpec, fmt: WeightFormat, tensors: Sequence[TensorInfo]) -> ReleaseEffect | None:
    """How `fmt` treats the quantized release of `spec` (None for a 16/32-bit release)."""
    if spec.native_dtype not in ("mxfp4", "float8_e4m3"):
        return None
    assignments: list[Assignment] = fmt.assignments(spec, tensors)
    group = kept = up = 0
    quant = requant = 0
    extra = 0
    fewest = 0
    released_bits = 4 if spec.native_dtype == "mxfp4" else 8  # E2M1 / E4M3 values
    for a in assignments:
        t, enc = a.tensor, a.encoding
        n = t.n_elements
        if _quantized(enc) and t.is_matrix:
            quant += n
        if not _released_group(spec, t):
            if _quantized(enc) and t.is_matrix:
                requant += n
            continue
        group += n
        extra += a.nbytes - _released_bytes(spec, t)
        if _same_as_released(spec, enc):
            kept += n
        elif not _quantized(enc):
            up += n
        else:
            requant += n
            bits = _value_bits(enc)
            fewest = min(fewest, bits) if fewest else bits
    released = "MXFP4 (routed experts)" if spec.native_dtype == "mxfp4" else "FP8 E4M3 (128x128 block scales)"
    lower = 0 < fewest <= released_bits  # a different encoding with no more value bits: it re-rounds the released values
    return ReleaseEffect(released, kept / max(group, 1), up / max(group, 1), requant / max(quant, 1), lower, fewest,
                         extra, spec.native_dtype_source or "the profile's native_dtype")


def relative_to_release(q: Quality, spec: ModelSpec, fmt: WeightFormat, tensors: Sequence[TensorInfo]) -> Quality:
    """`q` (loss of `fmt` versus 16-bit weights) as loss versus the model's quantized release, with the reason."""
    effect = release_effect(spec, fmt, tensors)
    if effect is None:
        return q
    share = effect.requant_share

    def scaled(value: float | None) -> float | None:
        return None if value is None else value * share

    why = f"x{share:.2f}: share of its quantized weights not kept as released ({effect.source})"
    return dataclasses.replace(q, kld=q.kld * share, ppl_delta_pct=q.ppl_delta_pct * share, kld_low=scaled(q.kld_low),
                               kld_high=scaled(q.kld_high), ppl_low=scaled(q.ppl_low), ppl_high=scaled(q.ppl_high),
                               note=f"{q.note}; {why}" if q.note else why, release=effect.note)
