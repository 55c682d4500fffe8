"""Pretrained weights in and out: Hugging Face checkpoints of the Llama family, megaspec run
directories, and Megatron-core ``GPTModel`` state dicts.

``from_pretrained(source, overrides=..., groups=...)`` builds a model (tensor-parallel if
asked, each rank reading only its shards) from a Hugging Face directory, a ``transformers``
model object or a megaspec run directory; ``export_hf(model, config, directory)`` writes a
directory ``transformers.AutoModelForCausalLM.from_pretrained`` loads, and
``export_peft(model, config, directory)`` a LoRA adapter that ``peft.PeftModel.from_pretrained``
loads onto it (``save_adapters``/``load_adapters`` keep adapters in megaspec's own format).
``to_megatron`` and ``from_megatron`` convert state dicts (local or Transformer Engine spec, any tensor-parallel
size). The layouts that differ between the formats (fused QKV, ``[gate; up]``, vocabulary
padding) live in :mod:`megaspec.parallel.layouts` and :mod:`megaspec.parallel.sharding`.
Anything that cannot be carried over exactly raises :class:`CheckpointError`.
"""

from megaspec.checkpoint.adapters import load_adapters, save_adapters
from megaspec.checkpoint.errors import CheckpointError
from megaspec.checkpoint.hf import HfCheckpoint, export_hf, open_hf_checkpoint
from megaspec.checkpoint.hf_config import FAMILIES, LlamaArchitecture, model_data_from_hf
from megaspec.checkpoint.hf_config_export import hf_config_from_model, llama_architecture
from megaspec.checkpoint.hf_weights import load_hf_weights
from megaspec.checkpoint.megatron import (
    from_megatron,
    load_from_megatron,
    model_to_megatron,
    to_megatron,
)
from megaspec.checkpoint.megatron_config import MegatronArguments, megatron_arguments, model_config
from megaspec.checkpoint.megatron_keys import MegatronSpec
from megaspec.checkpoint.native import load_megaspec_weights
from megaspec.checkpoint.peft_format import export_peft
from megaspec.checkpoint.pretrained import (
    TRAINING_SETTINGS,
    PretrainedModel,
    check_same_architecture,
    from_pretrained,
)
from megaspec.checkpoint.sources import SafetensorsSource, StateDictSource, TensorSource
from megaspec.checkpoint.training_state import (
    TrainingState,
    latest_checkpoint,
    load_training_checkpoint,
    save_training_checkpoint,
)
from megaspec.checkpoint.consolidate import export_consolidated
from megaspec.checkpoint.writing import DEFAULT_MAX_SHARD_BYTES

__all__ = [
    "DEFAULT_MAX_SHARD_BYTES",
    "FAMILIES",
    "TRAINING_SETTINGS",
    "CheckpointError",
    "HfCheckpoint",
    "LlamaArchitecture",
    "MegatronArguments",
    "MegatronSpec",
    "PretrainedModel",
    "SafetensorsSource",
    "StateDictSource",
    "TensorSource",
    "TrainingState",
    "check_same_architecture",
    "export_consolidated",
    "export_hf",
    "export_peft",
    "from_megatron",
    "from_pretrained",
    "hf_config_from_model",
    "latest_checkpoint",
    "llama_architecture",
    "load_adapters",
    "load_from_megatron",
    "load_hf_weights",
    "load_megaspec_weights",
    "load_training_checkpoint",
    "megatron_arguments",
    "model_config",
    "model_data_from_hf",
    "model_to_megatron",
    "open_hf_checkpoint",
    "save_adapters",
    "save_training_checkpoint",
    "to_megatron",
]
