"""Expected quality loss of a format: KL divergence and perplexity change versus 16-bit weights.

Measured points: llama.cpp's Llama-3-8B scoreboard (planner/data/quality.json, with its source). Formats that
are not GGUF file types are placed on that curve by their bits per weight (log-linear interpolation between the
measured K-quants), with a named factor for round-to-nearest methods that use no calibration data.
Larger models lose less: the loss is scaled by (8B / params) ** SIZE_EXPONENT, an assumption, shown as such.
A quantized KV cache adds its own loss (KV_QUALITY_KLD), which ranking adds to the weights'.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from planner.cost.model import ModelCost
from planner.formats import WeightFormat, get_format, gguf_base_type
from planner.models.profiles import load_registry

SIZE_EXPONENT = 0.3  # assumed: quantization loss shrinks with model size (e.g. Llama-2-70B Q4_K_M +1.2 % PPL)
UNCALIBRATED_FACTOR = 2.0  # assumed: round-to-nearest (NF4, MLX affine, plain INT4) vs calibrated GPTQ/AWQ/imatrix
ACTIVATION_QUANT_FACTOR = 1.5  # assumed: W8A8 also rounds activations
_CALIBRATED = {"gptq", "awq", "exl2"}
_UNCALIBRATED = {"bnb", "mlx", "nvfp4", "mxfp4"}
# Assumed extra loss of a quantized KV cache (llama.cpp discussions: q8_0 KV is near-lossless, q4_0 is not).
KV_QUALITY_KLD = {"q8_0": 0.0005, "q8": 0.0005, "fp8_e4m3": 0.0005, "fp8_e5m2": 0.001, "fp8": 0.0005, "int8": 0.0005,
                  "q5_1": 0.002, "q5_0": 0.002, "q6": 0.001, "q4_1": 0.008, "q4_0": 0.01, "iq4_nl": 0.008, "q4": 0.004}


@dataclass(frozen=True)
class Quality:
    """Expected loss of a format on a model."""

    kld: float  # mean KL divergence vs 16-bit, nats/token
    ppl_delta_pct: float  # perplexity increase, percent
    basis: str  # how the number was obtained
    source: str = "estimated"  # 'estimated' (this table) or 'measured' (planner eval on the model itself)
    release: str = ""  # what the model's quantized release means for this format (planner.cost.release); '' for none

    @property
    def label(self) -> str:
        """A word for the loss: lossless / negligible / small / noticeable / large / severe."""
        for limit, word in ((0.002, "lossless"), (0.012, "negligible"), (0.04, "small"), (0.1, "noticeable"), (0.35, "large")):
            if self.kld <= limit:
                return word
        return "severe"

    def as_dict(self) -> dict:
        """JSON form."""
        return {"kld": round(self.kld, 5), "ppl_delta_pct": round(self.ppl_delta_pct, 3), "label": self.label, "basis": self.basis,
                "source": self.source, **({"release": self.release} if self.release else {})}


def quality_text(q: dict | None) -> str:
    """A plan's quality as a table cell: '0.0312 small', '0.0312 small (measured)' for planner eval's measurement,
    '-' for none."""
    if not q:
        return "-"
    return f"{q.get('kld', 0):.4f} {q.get('label', '')}" + (" (measured)" if q.get("source") == "measured" else "")


@lru_cache(maxsize=1)
def _table() -> dict:
    return json.loads((Path(__file__).parent.parent / "data" / "quality.json").read_text(encoding="utf-8"))


def _curve() -> list[tuple[float, float, float]]:
    """(bits per weight on Llama-3-8B, kld, ppl%) for the measured GGUF types, sorted by bits."""
    # The measurements were taken on Meta-Llama-3-8B: place each type on the curve by its bits on that model
    # (through the cost model's layouts, which are cached on disk).
    ref = ModelCost(load_registry().get(_table().get("reference_profile", "llama-3-8b")))
    n = sum(t.n_elements for t in ref.tensors)
    pts = []
    for name, row in _table()["gguf_file_types"].items():
        if name == "F16":
            continue
        bpw = ref.layout(get_format(name)).stored_bytes * 8 / n
        pts.append((bpw, row["kld"], row["ppl_delta_pct"]))
    ref.flush()
    return sorted(pts)


_CURVE: list[tuple[float, float, float]] | None = None


def _interpolate(bpw: float) -> tuple[float, float]:
    """kld and ppl% at `bpw` on the measured curve (log-linear; clamped at the ends)."""
    global _CURVE
    if _CURVE is None:
        _CURVE = _curve()
    pts = _CURVE
    if bpw <= pts[0][0]:
        return pts[0][1], pts[0][2]
    if bpw >= pts[-1][0]:
        return pts[-1][1], pts[-1][2]
    for (b0, k0, p0), (b1, k1, p1) in zip(pts, pts[1:]):
        if b0 <= bpw <= b1:
            f = (bpw - b0) / (b1 - b0) if b1 > b0 else 0.0
            k = math.exp(math.log(k0) + f * (math.log(k1) - math.log(k0)))
            p = math.exp(math.log(max(p0, 1e-4)) + f * (math.log(max(p1, 1e-4)) - math.log(max(p0, 1e-4))))
            return k, p
    return pts[-1][1], pts[-1][2]


def expected_quality(fmt: WeightFormat, params: int, bits_per_weight: float, native_dtype: str = "bfloat16") -> Quality:
    """Expected loss of `fmt` for a model of `params` parameters stored at `bits_per_weight` on average."""
    if fmt.family == "float" or (fmt.family == "gguf" and fmt.id in ("F16", "BF16", "F32")):
        return Quality(0.0, 0.0, "16/32-bit weights: no quantization loss")
    if fmt.family == "mxfp4" and native_dtype == "mxfp4":
        return Quality(0.0, 0.0, "the model was released in MXFP4 (quantization-aware trained)")
    if fmt.family == "fp8" and native_dtype == "float8_e4m3":
        return Quality(0.0, 0.0, "the model was released in FP8 (trained with FP8 weights)")
    scale = min(2.0, max(0.3, (8.03e9 / max(params, 1)) ** SIZE_EXPONENT))
    table = _table()["gguf_file_types"]
    base = gguf_base_type(fmt.id.removesuffix("-as-stored")) if fmt.family == "gguf" else None
    if base and base in table:
        row = table[base]
        basis = f"llama.cpp KLD for {base} on Llama-3-8B, scaled x{scale:.2f} for model size"
        return Quality(row["kld"] * scale, row["ppl_delta_pct"] * scale, basis)
    kld, ppl = _interpolate(bits_per_weight)
    factor = 1.0
    how = "calibrated" if fmt.family in _CALIBRATED else "measured-curve"
    if fmt.family in _UNCALIBRATED:
        factor = UNCALIBRATED_FACTOR
        how = "round-to-nearest (x%.1f, assumed)" % factor
    if fmt.family == "w8a8":
        factor = ACTIVATION_QUANT_FACTOR
        how = "int8 activations too (x%.1f, assumed)" % factor
    basis = f"interpolated at {bits_per_weight:.2f} bpw on llama.cpp's Llama-3-8B curve, {how}, scaled x{scale:.2f} for size"
    return Quality(kld * factor * scale, ppl * factor * scale, basis)
