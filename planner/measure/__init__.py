"""Measuring on the user's machine: speed and quality, measured here and stored for the cost model to use.

- `speed/`: `planner bench`, the matmuls of a model's layers (or the whole model in llama.cpp) timed on a device.
- `quality/`: `planner eval`, perplexity and KL divergence of quantized formats against the 16-bit model.
- `calibration`: the store of speed measurements (calibration records), read back as engine efficiencies.
- `reports`: the store of quality measurements (eval reports), read back as measured quality per format.
- `confirm_speed` / `confirm_quality`: `planner recommend --confirm` / `--eval`, re-ranking the top candidates by
  what is measured here.

The two stores are read on `planner recommend`'s start-up path, so they import neither numpy nor pydantic at module
level; the measuring rooms do.
"""
