"""Pretrained weights in and out: Hugging Face checkpoints of the Llama family and megaspec
run directories.

``from_pretrained(source, overrides=..., groups=...)`` builds a model (tensor-parallel if
asked, each rank reading only its shards) from a Hugging Face directory, a ``transformers``
model object or a megaspec run directory; ``export_hf(model, config, directory)`` writes a
directory ``transformers.AutoModelForCausalLM.from_pretrained`` loads. The layouts that
differ between the formats (fused QKV, ``[gate; up]``, vocabulary padding) live in
:mod:`megaspec.parallel.layouts`. Anything that cannot be carried over exactly raises
:class:`CheckpointError`.
"""

from megaspec.checkpoint.errors import CheckpointError
from megaspec.checkpoint.hf import HfCheckpoint, export_hf, open_hf_checkpoint
from megaspec.checkpoint.hf_config import FAMILIES, LlamaArchitecture, model_data_from_hf
from megaspec.checkpoint.hf_config_export import hf_config_from_model, llama_architecture
from megaspec.checkpoint.hf_weights import load_hf_weights
from megaspec.checkpoint.native import load_megaspec_weights
from megaspec.checkpoint.pretrained import (
    TRAINING_SETTINGS,
    PretrainedModel,
    check_same_architecture,
    from_pretrained,
)
from megaspec.checkpoint.sources import SafetensorsSource, StateDictSource, TensorSource
from megaspec.checkpoint.writing import DEFAULT_MAX_SHARD_BYTES

__all__ = [
    "DEFAULT_MAX_SHARD_BYTES",
    "FAMILIES",
    "TRAINING_SETTINGS",
    "CheckpointError",
    "HfCheckpoint",
    "LlamaArchitecture",
    "PretrainedModel",
    "SafetensorsSource",
    "StateDictSource",
    "TensorSource",
    "check_same_architecture",
    "export_hf",
    "from_pretrained",
    "hf_config_from_model",
    "llama_architecture",
    "load_hf_weights",
    "load_megaspec_weights",
    "model_data_from_hf",
    "open_hf_checkpoint",
]
