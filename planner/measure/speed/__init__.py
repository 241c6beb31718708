"""`planner bench`: time the matmuls a model's layers run on this device (its records: planner.measure.calibration).

- `quant`: minimal int8 / int4 group quantization for the bench's random weights.
- `kernels`: GEMV/GEMM kernels per backend (numpy reference kernels always; torch ones when torch imports),
  copy bandwidth, last-level cache size, timing.
- `llamacpp`: stand-in GGUF files in a format's real mix, timed whole in real llama.cpp.
- `shapes`: a model's real matmul shapes per token (fused QKV, gate/up, down, lm_head, active MoE experts).
- `runner`: bench one model and format: per-layer timings, extrapolation by layer count, the cost model's
  prediction beside it, and the calibration record it yields.

Nothing here imports torch at module level: torch is optional and imported only when a torch kernel is asked for.
"""
