"""Models: architecture profiles, the tensor inventory, and readers for config.json, safetensors and GGUF."""
