"""Norm slots on the te backend: Transformer Engine's RMSNorm and LayerNorm.

Where a norm is fused into the next linear
(:class:`~megaspec.backends.te.linears.TENormColumnParallelLinear`), the layer's norm slot
holds :class:`megaspec.layers.IdentityNorm` instead: the layer keeps calling its norm slot
and never learns about the fusion.
"""

from __future__ import annotations

from torch import Tensor, nn

from megaspec.backends.te._engine import adopt_parameter, te_pytorch
from megaspec.parallel import InitMethod, ParallelGroups, zeros_init
from megaspec.parallel.sharding import new_sharded_parameter
from megaspec.transformer_config import TransformerConfig


def _refuse_sharded_input(name: str, sharded_input: bool, groups: ParallelGroups) -> None:
    # megaspec's own norms sum the scale's gradient over ranks when each rank normalises
    # different data; Transformer Engine's norms do not (Megatron-core does it outside).
    if sharded_input and groups.tensor_size > 1:
        raise ValueError(
            f"{name}: a norm whose tensor-parallel ranks see different data (sequence "
            f"parallelism, or QK-norm over sharded heads) is not supported on the te backend; "
            f"use megaspec.layers.RMSNorm / LayerNorm for this slot"
        )


class _TENorm(nn.Module):
    """What the two norm adapters share: their forward through ``te_module``."""

    te_module: nn.Module

    def forward(self, hidden: Tensor) -> Tensor:
        output: Tensor = self.te_module(hidden)
        return output


class TERMSNorm(_TENorm):
    """``te.pytorch.RMSNorm``: ``[..., hidden_size] -> [..., hidden_size]``, a
    :class:`~megaspec.builders.Norm`. The scale is ``weight``, as in megaspec's ``RMSNorm``.

    Raises:
        ValueError: for ``sharded_input`` on more than one tensor-parallel rank.
    """

    def __init__(
        self,
        *,
        hidden_size: int,
        config: TransformerConfig,
        groups: ParallelGroups,
        sharded_input: bool,
        init_method: InitMethod,
    ) -> None:
        super().__init__()
        _refuse_sharded_input(type(self).__name__, sharded_input, groups)
        self.eps = config.norm_epsilon
        dtype = config.params_dtype
        self.te_module = te_pytorch.RMSNorm(hidden_size, eps=self.eps, device="meta", dtype=dtype)
        weight = new_sharded_parameter((hidden_size,), None, init_method, groups, dtype=dtype)
        adopt_parameter(self.te_module, "weight", weight)


class TELayerNorm(_TENorm):
    """``te.pytorch.LayerNorm`` with scale ``weight`` and ``bias``, a
    :class:`~megaspec.builders.Norm`: ``[..., hidden_size]`` in and out.

    Raises:
        ValueError: for ``sharded_input`` on more than one tensor-parallel rank.
    """

    def __init__(
        self,
        *,
        hidden_size: int,
        config: TransformerConfig,
        groups: ParallelGroups,
        sharded_input: bool,
        init_method: InitMethod,
    ) -> None:
        super().__init__()
        _refuse_sharded_input(type(self).__name__, sharded_input, groups)
        self.eps = config.norm_epsilon
        dtype = config.params_dtype
        self.te_module = te_pytorch.LayerNorm(hidden_size, eps=self.eps, device="meta", dtype=dtype)
        weight = new_sharded_parameter((hidden_size,), None, init_method, groups, dtype=dtype)
        adopt_parameter(self.te_module, "weight", weight)
        bias = new_sharded_parameter((hidden_size,), None, zeros_init(), groups, dtype=dtype)
        adopt_parameter(self.te_module, "bias", bias)

