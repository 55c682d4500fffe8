"""Standard specs on Transformer Engine, mirroring :mod:`megaspec.backends.torch`.

The specs are the same submodules dataclasses as the torch backend's, filled with the te
adapters, so one slot can be switched back (or forth) with ``dataclasses.replace``::

    from dataclasses import replace
    from megaspec.backends import te, torch as torch_backend

    layer = te.llama_layer_submodules(attention, mlp, fuse_norms=False)
    layer = replace(layer, input_norm=torch_backend.RMSNorm)   # that norm in PyTorch

With ``fuse_norms`` (the default) the layer's ``input_norm`` / ``pre_mlp_norm`` slots hold
:class:`~megaspec.layers.IdentityNorm` and the norms run inside ``linear_qkv`` / ``linear_fc1``
(``te.pytorch.LayerNormLinear``), built with the model's ``norm_epsilon``. The output layer
stays megaspec's ``ColumnParallelLinear`` (vocab-parallel logits, kept out of FP8 as in
Megatron-core).
"""

from __future__ import annotations

from dataclasses import replace

from megaspec.backends.te.attention import TEDotProductAttention
from megaspec.backends.te.linears import (
    Normalization,
    TEColumnParallelLinear,
    TERowParallelLinear,
    norm_column_linear,
)
from megaspec.backends.te.norms import TERMSNorm
from megaspec.builders import LayerSpec, MixerBuilder, MlpBuilder, NormBuilder
from megaspec.layers import (
    MLP,
    BlockSequenceSpec,
    IdentityNorm,
    MlpSubmodules,
    SelfAttention,
    SelfAttentionSubmodules,
    TransformerLayer,
    TransformerLayerSubmodules,
)
from megaspec.models import GPTSubmodules
from megaspec.parallel import ColumnParallelLinear, ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig


def attention_submodules(*, qk_norm: bool = False) -> SelfAttentionSubmodules:
    """Fused-QKV self-attention on Transformer Engine linears and attention kernels,
    optionally with Transformer Engine RMSNorm QK-norm (tensor-parallel size 1 only)."""
    return SelfAttentionSubmodules(
        linear_qkv=TEColumnParallelLinear,
        core_attention=TEDotProductAttention,
        linear_proj=TERowParallelLinear,
        q_norm=TERMSNorm if qk_norm else None,
        k_norm=TERMSNorm if qk_norm else None,
    )


def mlp_submodules() -> MlpSubmodules:
    """Transformer Engine column-parallel fc1 and row-parallel fc2."""
    return MlpSubmodules(linear_fc1=TEColumnParallelLinear, linear_fc2=TERowParallelLinear)


def norm_fused_attention(
    attention: AttentionConfig, submodules: SelfAttentionSubmodules, normalization: Normalization
) -> MixerBuilder:
    """Self-attention whose ``linear_qkv`` normalises its input first (``LayerNormLinear``).

    The norm's epsilon is the built model's ``norm_epsilon``: the builder reads it from the
    config it receives, so it is never written twice. ``submodules.linear_qkv`` is replaced.
    """

    def build(*, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> SelfAttention:
        fused = norm_column_linear(normalization=normalization, eps=config.norm_epsilon)
        return SelfAttention(
            config=config,
            attention=attention,
            groups=groups,
            layer_index=layer_index,
            submodules=replace(submodules, linear_qkv=fused),
        )

    build.__qualname__ = "te.norm_fused_attention(...)"
    return build


def norm_fused_mlp(mlp: MlpConfig, submodules: MlpSubmodules, normalization: Normalization) -> MlpBuilder:
    """An MLP whose ``linear_fc1`` normalises its input first (``LayerNormLinear``), with the
    built model's ``norm_epsilon``. ``submodules.linear_fc1`` is replaced."""

    def build(*, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> MLP:
        fused = norm_column_linear(normalization=normalization, eps=config.norm_epsilon)
        return MLP(
            config=config,
            mlp=mlp,
            groups=groups,
            layer_index=layer_index,
            submodules=replace(submodules, linear_fc1=fused),
        )

    build.__qualname__ = "te.norm_fused_mlp(...)"
    return build


def llama_layer_submodules(
    attention: AttentionConfig, mlp: MlpConfig, *, qk_norm: bool = False, fuse_norms: bool = True
) -> TransformerLayerSubmodules:
    """A Llama-style layer on Transformer Engine: RMSNorm, RoPE self-attention, gated MLP.

    ``fuse_norms``: run the two RMSNorms inside ``linear_qkv`` and ``linear_fc1``
    (``IdentityNorm`` in the layer's norm slots); otherwise they are ``TERMSNorm`` slots.
    """
    if not fuse_norms:
        return TransformerLayerSubmodules(
            input_norm=TERMSNorm,
            mixer=SelfAttention.as_mixer_submodule(attention, attention_submodules(qk_norm=qk_norm)),
            pre_mlp_norm=TERMSNorm,
            mlp=MLP.as_mlp_submodule(mlp, mlp_submodules()),
        )
    return TransformerLayerSubmodules(
        input_norm=IdentityNorm,
        mixer=norm_fused_attention(attention, attention_submodules(qk_norm=qk_norm), "RMSNorm"),
        pre_mlp_norm=IdentityNorm,
        mlp=norm_fused_mlp(mlp, mlp_submodules(), "RMSNorm"),
    )


def llama_layer(
    attention: AttentionConfig, mlp: MlpConfig, *, qk_norm: bool = False, fuse_norms: bool = True
) -> LayerSpec:
    """:func:`llama_layer_submodules` as an element of a block pattern."""
    return TransformerLayer.as_layer_submodule(
        llama_layer_submodules(attention, mlp, qk_norm=qk_norm, fuse_norms=fuse_norms)
    )


def gpt_submodules(blocks: BlockSequenceSpec, *, final_norm: NormBuilder = TERMSNorm) -> GPTSubmodules:
    """A GPT model around ``blocks`` with a Transformer Engine final RMSNorm and megaspec's
    column-parallel output layer."""
    return GPTSubmodules(blocks=blocks, final_norm=final_norm, output_layer=ColumnParallelLinear)


def llama_submodules(
    attention: AttentionConfig,
    mlp: MlpConfig,
    num_layers: int,
    *,
    qk_norm: bool = False,
    fuse_norms: bool = True,
) -> GPTSubmodules:
    """A whole Llama-style model on Transformer Engine: ``num_layers`` identical layers."""
    layer = llama_layer(attention, mlp, qk_norm=qk_norm, fuse_norms=fuse_norms)
    return gpt_submodules(BlockSequenceSpec(pattern=[layer], num_layers=num_layers))

