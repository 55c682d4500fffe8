"""Pretrained weights in and out. So far: Hugging Face Llama-family configs <-> megaspec
model configs. Anything that cannot be carried over exactly raises :class:`CheckpointError`.
"""

from megaspec.checkpoint.errors import CheckpointError
from megaspec.checkpoint.hf_config import FAMILIES, LlamaArchitecture, model_data_from_hf
from megaspec.checkpoint.hf_config_export import hf_config_from_model, llama_architecture

__all__ = [
    "FAMILIES",
    "CheckpointError",
    "LlamaArchitecture",
    "hf_config_from_model",
    "llama_architecture",
    "model_data_from_hf",
]
