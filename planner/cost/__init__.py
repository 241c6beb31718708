"""The cost model: memory (weights, KV cache, activations, overheads) and speed (decode, prefill, TTFT)."""
