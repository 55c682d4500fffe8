"""megaspec: Megatron-style transformers whose construction is checked by mypy.

The public API is what this module and the subpackages' ``__init__`` export:
``megaspec.builders`` (slot Protocols), ``megaspec.parallel`` (tensor parallelism),
``megaspec.layers``, ``megaspec.models``, ``megaspec.backends.torch`` (standard specs) and
``megaspec.checkpoint`` (pretrained weights: :func:`from_pretrained`, Hugging Face export).
"""

from megaspec.checkpoint import PretrainedModel, from_pretrained
from megaspec.context import LayerContext
from megaspec.models import GPTModel, GPTSubmodules
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig

__all__ = [
    "AttentionConfig",
    "GPTModel",
    "GPTSubmodules",
    "LayerContext",
    "MlpConfig",
    "ParallelGroups",
    "PretrainedModel",
    "TransformerConfig",
    "from_pretrained",
]
