"""The cost model: every number the planner predicts for a deployment, and where it comes from.

Import graph (one way, top to bottom): evaluate -> quality, speed -> placement -> memory; quality -> model -> memory.
`evaluate.evaluate(model_cost, format, runtime, target, context=...)` is the one function that makes a `Plan`
(planner.plan); recommend, estimate, check and the TUI call it. Which runtime runs which format on which device is
not cost but data: planner.runtimes. Bytes of a tensor in a format: planner.formats.

Provenance words as in the code's comments: *sourced* (a document, a header, a spec sheet), *calibrated* (fitted to
measured rows, benchmarks/data/*.csv, checked by benchmarks/accuracy.py), *assumed* (an engineering estimate).

| predicted (Plan field)                         | computed by                                   | constants (provenance)                                                                      |
|------------------------------------------------|-----------------------------------------------|---------------------------------------------------------------------------------------------|
| file_size_bytes, weights_bytes, bits_per_weight | model.ModelCost.layout -> FormatLayout         | formats table (sourced: ggml block structs, llama.cpp mix rules); memory.gguf_header_bytes (assumed estimate); memory.DEQUANT_BYTES (sourced) |
| kv_cache_bytes                                  | model.ModelCost.kv_bytes, memory.kv_*          | the architecture (sourced); memory._KV_FLOAT_BYTES and ggml block layouts (sourced)          |
| kv_dtype                                        | evaluate._kv_dtype                             | evaluate._KV_ALIASES (sourced: the runtimes' own names)                                     |
| per_device activations_bytes                    | memory.llamacpp_compute_buffer_bytes, memory.engine_activation_bytes | llama.cpp buffer (calibrated against its log); vLLM profiling run (assumed); memory.LAYER_ENGINE_ACTIVATION_BYTES (assumed) |
| per_device overhead_bytes                       | memory.runtime_overhead_bytes                  | runtimes table cuda_context_gib / cuda_graph_gib (sourced or assumed there); memory.METAL_OVERHEAD_BYTES (assumed) |
| per_device, layout, gpu_layers, host_bytes, parallel | placement.place_tensor_parallel, placement.place_layers, placement.replicate, placement.expert_bytes | placement.MULTI_NODE_ENGINES, placement.DATA_PARALLEL_RUNTIMES (sourced: engine docs)        |
| usable_memory_bytes                             | planner.plan (Target, usable_bytes_from_catalog) | plan.DEDICATED_RESERVED_FRACTION (measured); plan.SYSTEM_RESERVED_* and plan.DEFAULT_HOST_BANDWIDTH_GB_S (assumed) |
| decode_tokens_per_s (+ full context), throughput_tokens_per_s | speed.predict_speeds (step_time), speed.rates | speed.EFFICIENCY (each entry calibrated or assumed, with a per-layer and a per-step cost; serving engines fitted by benchmarks/engines.py; `planner bench` records override it); speed.speed_basis, speed.CALIBRATED_ON, speed.SPEED_P90 (the basis and 10-90 % band of every speed, decode and prefill widths per engine: the one table of speed error); speed.KERNEL_BANDWIDTH_FACTOR (assumed); speed.UNIT_RATE_GB_S (calibrated); speed.KV_READ_FRACTION (calibrated for llama.cpp, default assumed); speed.FOREIGN_GGUF_FACTOR (assumed, after vLLM's docs); speed.CPU_CORE_DECODE_GB_S (calibrated) |
| multi-GPU and multi-node terms of those speeds  | speed.predict_speeds, placement.fabric_link    | speed.ALLREDUCE_LATENCY_US, speed.ALLREDUCE_BUS_FRACTION (assumed, ring factor sourced: NCCL); speed.LAYER_SPLIT_HOP_US (calibrated); speed.RPC_HOP_US (assumed); speed.PCIE_GB_S (sourced: PCI-SIG); placement.NDR_FALLBACK (assumed InfiniBand NDR figures) |
| prefill_tokens_per_s, ttft_s                    | speed.predict_speeds, speed.prefill_peak_flops | device TFLOPS (catalog, sourced); speed.QUANT_PREFILL_FACTOR (calibrated); speed.CPU_INT8_RATIO_BY_ISA and speed.I8MM_GGML_TYPES (sourced: Intel SDM, Arm, llama.cpp PRs); speed.CPU_INT8_SPEEDUP, speed.CPU_FLOPS_PER_CORE, speed.CPU_DEFAULT_CORES (assumed); speed.UBATCH, speed.N_BATCH (sourced: llama.cpp defaults) |
| quality (kld, ppl_delta_pct, their _low/_high, label, basis, note) | quality.expected_quality          | planner/data/quality_published.csv (sourced per row), fitted per family at load; quality.HEAVY_TRAINED, SIZE_KNOT_B (calibrated), PRIOR, EXTRAPOLATE, MIN_BITS_SPAN, DEFAULT_SPREAD, EXTRAPOLATED_WIDEN, BITS_MARGIN, FAMILY_PRIOR_SOURCES, MODEL_FX_SHRINK, SOURCE_FX_SHRINK (assumed); GROUPED_SLOPE (uniform-grid noise law); TOKENS_PER_WORD (sourced); `planner eval` measurements on the model replace it |
| KV cache quantization loss (used in ranking)    | quality.KV_QUALITY_KLD                          | assumed (llama.cpp discussions)                                                             |
"""
