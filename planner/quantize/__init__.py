"""Produce a planned format from real weights.

- primitives: numpy encoders for ggml types (Q8_0 ... Q6_K, F16, BF16), ggml's exact block layouts
- group_quant: GPTQ int4/int8 (RTN), bitsandbytes NF4 + double quant, FP8 E4M3, MLX affine
- config: typed quantization configs and the format-id registry (`config_for`)
- sources: Hugging Face directories and GGUF files read tensor by tensor from memory maps
- gguf_writer / safetensors_writer / tokenizer: the output files and their metadata
- pipeline: `quantize_model(source, format, out)`, streaming and atomic, with a quality report
"""
