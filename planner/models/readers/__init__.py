"""Readers for models on disk: HF config.json, safetensors headers and GGUF headers, behind load_model_source()."""

from planner.models.readers.gguf_header import (
    GGUFHeader,
    GGUFTensor,
    gguf_quantization,
    parse_gguf_header,
    read_gguf_header,
    read_gguf_model,
    spec_from_gguf,
)
from planner.models.readers.hf_config import quantization_from_config, spec_from_hf_config, supported_architectures
from planner.models.readers.hf_names import gguf_name, gguf_slot, map_hf_tensors
from planner.models.readers.safetensors_header import (
    RawTensor,
    parse_safetensors_header,
    read_safetensors_dir,
    read_safetensors_header,
    read_safetensors_index,
)
from planner.models.readers.common import ModelSource
from planner.models.readers.local import load_model_source

__all__ = [
    "GGUFHeader",
    "GGUFTensor",
    "ModelSource",
    "RawTensor",
    "gguf_name",
    "gguf_slot",
    "gguf_quantization",
    "load_model_source",
    "map_hf_tensors",
    "parse_gguf_header",
    "parse_safetensors_header",
    "quantization_from_config",
    "read_gguf_header",
    "read_gguf_model",
    "read_safetensors_dir",
    "read_safetensors_header",
    "read_safetensors_index",
    "spec_from_gguf",
    "spec_from_hf_config",
    "supported_architectures",
]
