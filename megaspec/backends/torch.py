"""Pure-PyTorch provider of standard specs: start from one call, change one slot.

Example::

    from dataclasses import replace
    from megaspec.backends import torch as torch_backend

    layer = torch_backend.llama_layer_submodules(attention, mlp)
    layer = replace(layer, mixer=MyMixer.as_mixer_submodule(...))   # swap one slot
"""

from __future__ import annotations

from megaspec.builders import LayerSpec
from megaspec.layers import (
    MLP,
    BlockSequenceSpec,
    DotProductAttention,
    MlpSubmodules,
    RMSNorm,
    SelfAttention,
    SelfAttentionSubmodules,
    TransformerLayer,
    TransformerLayerSubmodules,
)
from megaspec.models import GPTSubmodules
from megaspec.parallel import ColumnParallelLinear, RowParallelLinear
from megaspec.transformer_config import AttentionConfig, MlpConfig


def attention_submodules(*, qk_norm: bool = False) -> SelfAttentionSubmodules:
    """Fused-QKV self-attention on SDPA, optionally with RMSNorm QK-norm."""
    return SelfAttentionSubmodules(
        linear_qkv=ColumnParallelLinear,
        core_attention=DotProductAttention,
        linear_proj=RowParallelLinear,
        q_norm=RMSNorm if qk_norm else None,
        k_norm=RMSNorm if qk_norm else None,
    )


def mlp_submodules() -> MlpSubmodules:
    """Column-parallel fc1 and row-parallel fc2."""
    return MlpSubmodules(linear_fc1=ColumnParallelLinear, linear_fc2=RowParallelLinear)


def llama_layer_submodules(
    attention: AttentionConfig, mlp: MlpConfig, *, qk_norm: bool = False
) -> TransformerLayerSubmodules:
    """A Llama-style layer: RMSNorm, RoPE self-attention (GQA per ``attention``), gated MLP."""
    return TransformerLayerSubmodules(
        input_norm=RMSNorm,
        mixer=SelfAttention.as_mixer_submodule(attention, attention_submodules(qk_norm=qk_norm)),
        pre_mlp_norm=RMSNorm,
        mlp=MLP.as_mlp_submodule(mlp, mlp_submodules()),
    )


def llama_layer(attention: AttentionConfig, mlp: MlpConfig, *, qk_norm: bool = False) -> LayerSpec:
    """:func:`llama_layer_submodules` as an element of a block pattern."""
    return TransformerLayer.as_layer_submodule(
        llama_layer_submodules(attention, mlp, qk_norm=qk_norm)
    )


def gpt_submodules(blocks: BlockSequenceSpec) -> GPTSubmodules:
    """A GPT model around ``blocks`` with a final RMSNorm and a column-parallel output layer."""
    return GPTSubmodules(blocks=blocks, final_norm=RMSNorm, output_layer=ColumnParallelLinear)


def llama_submodules(
    attention: AttentionConfig, mlp: MlpConfig, num_layers: int, *, qk_norm: bool = False
) -> GPTSubmodules:
    """A whole Llama-style model: ``num_layers`` identical Llama layers."""
    layer = llama_layer(attention, mlp, qk_norm=qk_norm)
    return gpt_submodules(BlockSequenceSpec(pattern=[layer], num_layers=num_layers))
