"""How much error HQQ's 8-bit meta-quantized scale and zero add, by weight bits (run by hand:
`python benchmarks/hqq_meta_scale.py`; prints a table, not a test).

Why: lm-quant-toolkit's HQQ rows (benchmarks/data/quality_extra13.csv) quantize each group's step and zero, and then
quantize those to 8 bits again (its printed configs: scale_quant_params nbits 8 per 128 steps, zero_quant_params nbits 8
per tensor, hqq 0.1.x's quant_scale / quant_zero). That metadata rounding does not shrink with the weights' bits, so it
can only matter where the weight grid is as fine as 8 bits. The table compares, per output row, the relative squared
error of plain min-max group quantization with the same codes dequantized through the 8-bit metadata, on Gaussian
weights whose rows are scaled by a lognormal factor (sigma 0 = every row alike; LLM rows differ widely in magnitude).
The model only shows the mechanism; it does not reproduce HQQ's optimizer."""
import numpy as np


def meta8(x: np.ndarray, n: int) -> np.ndarray:
    """Round x to an 8-bit min-max grid per n consecutive values (n = x.size: one grid for the tensor)."""
    v = x.reshape(-1, n)
    lo, hi = v.min(1, keepdims=True), v.max(1, keepdims=True)
    step = np.where(hi > lo, (hi - lo) / 255, 1.0)
    return (np.round((v - lo) / step) * step + lo).reshape(x.shape)


def row_error(w: np.ndarray, bits: int, group: int, meta: bool) -> float:
    """Mean over rows of |W_q - W|^2 / |W|^2 for min-max group quantization, metadata exact or 8-bit."""
    g = w.reshape(-1, group)
    lo, hi = g.min(1, keepdims=True), g.max(1, keepdims=True)
    step = (hi - lo) / (2**bits - 1)
    zero = -lo / step
    codes = np.clip(np.round(g / step + zero), 0, 2**bits - 1)  # codes come from the exact step and zero
    if meta:
        step, zero = meta8(step, 128), meta8(zero, zero.size)
    wq = ((codes - zero) * step).reshape(w.shape)
    return float(np.mean(np.sum((wq - w) ** 2, 1) / np.sum(w**2, 1)))


def main() -> None:
    """Print the error ratio (8-bit metadata / exact metadata) by row spread and weight bits, group 64."""
    rng = np.random.default_rng(0)
    print("row sigma  bits  exact meta   8-bit meta   ratio")
    for sigma in (0.0, 0.5, 1.0):
        w = rng.standard_normal((1024, 4096)) * np.exp(rng.normal(0.0, sigma, (1024, 1)))
        for bits in (3, 4, 8):
            e0, e1 = row_error(w, bits, 64, False), row_error(w, bits, 64, True)
            print(f"{sigma:9.1f}  {bits:4d}  {e0:10.3e}   {e1:10.3e}   {e1 / e0:5.2f}")


if __name__ == "__main__":
    main()
