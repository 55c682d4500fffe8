"""megaspec: Megatron-style transformers whose construction is checked by mypy.

The public API is what this module and the subpackages' ``__init__`` export:
``megaspec.builders`` (slot Protocols), ``megaspec.parallel`` (tensor parallelism),
``megaspec.layers``, ``megaspec.models`` and ``megaspec.backends.torch`` (standard specs).
"""

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
    "TransformerConfig",
]
