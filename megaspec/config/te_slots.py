"""Slot types on the Transformer Engine backend: ``te_attention``, ``te_mlp``, ``te_rms_norm``,
``te_layer_norm``.

Each subclasses the torch slot type of the same settings and builds the te backend's modules
(:mod:`megaspec.backends.te`) instead, so a YAML config switches a slot's backend by its
``type``::

    model:
      decoder:
        block:
          norm: {type: te_rms_norm}
          mixer: {type: te_attention, num_heads: 8}
          mlp: {type: te_mlp, ffn_hidden_size: 1024}

Transformer Engine is imported when the model is built, not when the config is read: a
config naming these types resolves anywhere, and building it without the ``te`` extra raises
``TransformerEngineNotInstalled`` naming it. Norms stay separate slots here (the fused
``LayerNormLinear`` layers are a Python-API spec, :func:`megaspec.backends.te.llama_submodules`).
"""

from __future__ import annotations

from dataclasses import dataclass

from megaspec.builders import NormBuilder
from megaspec.config.slots import (
    AttentionMixerConfig,
    FeedForwardConfig,
    LayerNormConfig,
    MlpLayerConfig,
    NormConfig,
    RMSNormConfig,
    register_mixer,
)
from megaspec.layers import MlpSubmodules, SelfAttentionSubmodules


@register_mixer("te_attention")
@dataclass(frozen=True, kw_only=True)
class TEAttentionMixerConfig(AttentionMixerConfig):
    """``attention`` on Transformer Engine linears and attention kernels."""

    def standard_submodules(self) -> SelfAttentionSubmodules:
        from megaspec.backends import te  # Transformer Engine, or an error naming the extra

        return te.attention_submodules(qk_norm=self.qk_norm)


@MlpLayerConfig.register("te_mlp")
@dataclass(frozen=True, kw_only=True)
class TEFeedForwardConfig(FeedForwardConfig):
    """``mlp`` on Transformer Engine linears."""

    def standard_submodules(self) -> MlpSubmodules:
        from megaspec.backends import te

        return te.mlp_submodules()


@NormConfig.register("te_rms_norm")
@dataclass(frozen=True, kw_only=True)
class TERMSNormConfig(RMSNormConfig):
    """Transformer Engine's RMSNorm."""

    def norm_class(self) -> NormBuilder:
        from megaspec.backends import te

        return te.TERMSNorm


@NormConfig.register("te_layer_norm")
@dataclass(frozen=True, kw_only=True)
class TELayerNormConfig(LayerNormConfig):
    """Transformer Engine's LayerNorm."""

    def norm_class(self) -> NormBuilder:
        from megaspec.backends import te

        return te.TELayerNorm
