"""Checkpoint conversion: megaspec state dicts to and from other libraries' layouts."""

from megaspec.checkpoint.megatron import from_megatron
from megaspec.checkpoint.megatron import load_from_megatron
from megaspec.checkpoint.megatron import model_to_megatron
from megaspec.checkpoint.megatron import to_megatron
from megaspec.checkpoint.megatron_config import MegatronArguments
from megaspec.checkpoint.megatron_config import megatron_arguments
from megaspec.checkpoint.megatron_config import model_config
from megaspec.checkpoint.megatron_keys import MegatronSpec

__all__ = [
    "MegatronArguments",
    "MegatronSpec",
    "from_megatron",
    "load_from_megatron",
    "megatron_arguments",
    "model_config",
    "model_to_megatron",
    "to_megatron",
]
