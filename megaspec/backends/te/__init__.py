"""Transformer Engine provider of the standard slots (install the ``te`` extra).

Adapters (each an ``nn.Module`` holding a ``transformer_engine.pytorch`` module as
``te_module``, fitting the same builder Protocols as the torch backend's classes):

* :class:`TEColumnParallelLinear`, :class:`TERowParallelLinear`: ``te.pytorch.Linear``;
* :class:`TENormColumnParallelLinear` (built by :func:`norm_column_linear`):
  ``te.pytorch.LayerNormLinear``, a norm fused into ``linear_qkv`` / ``linear_fc1``;
* :class:`TEDotProductAttention`: ``te.pytorch.DotProductAttention`` (cuDNN / flash);
* :class:`TERMSNorm`, :class:`TELayerNorm`: ``te.pytorch.RMSNorm`` / ``LayerNorm``.

Spec functions mirror :mod:`megaspec.backends.torch` (:func:`llama_submodules`, ...). Weights
have the torch backend's layouts and values for a seed; their state-dict names differ (see
:mod:`megaspec.backends.portable`). FP8: :mod:`megaspec.backends.fp8`.

Importing this package without Transformer Engine raises
:class:`~megaspec.backends.te_import.TransformerEngineNotInstalled`, naming the extra.
"""

from megaspec.backends.te._engine import TE_MODULE
from megaspec.backends.te.attention import TEDotProductAttention
from megaspec.backends.te.linears import (
    Normalization,
    TEColumnParallelLinear,
    TENormColumnParallelLinear,
    TERowParallelLinear,
    norm_column_linear,
)
from megaspec.backends.te.norms import TELayerNorm, TERMSNorm
from megaspec.backends.te.specs import (
    attention_submodules,
    gpt_submodules,
    llama_layer,
    llama_layer_submodules,
    llama_submodules,
    mlp_submodules,
    norm_fused_attention,
    norm_fused_mlp,
)
from megaspec.layers import IdentityNorm

__all__ = [
    "TE_MODULE",
    "IdentityNorm",
    "Normalization",
    "TEColumnParallelLinear",
    "TEDotProductAttention",
    "TELayerNorm",
    "TENormColumnParallelLinear",
    "TERMSNorm",
    "TERowParallelLinear",
    "attention_submodules",
    "gpt_submodules",
    "llama_layer",
    "llama_layer_submodules",
    "llama_submodules",
    "mlp_submodules",
    "norm_column_linear",
    "norm_fused_attention",
    "norm_fused_mlp",
]
