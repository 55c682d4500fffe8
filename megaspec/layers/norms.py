"""RMSNorm and LayerNorm, with the keyword interface of :class:`~megaspec.builders.NormBuilder`."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from megaspec.parallel import InitMethod, ParallelGroups, new_sharded_parameter, zeros_init
from megaspec.parallel.linear import sequence_parallel_replicated
from megaspec.transformer_config import TransformerConfig


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale: ``x / rms(x) * weight``.

    Shapes: ``[..., hidden_size] -> [..., hidden_size]``. ``eps`` is ``config.norm_epsilon``;
    ``init_method`` fills ``weight`` (ones from the standard parents).
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
        self.hidden_size = hidden_size
        self.eps = config.norm_epsilon
        self.groups = groups
        self.sharded_input = sharded_input
        self.weight = new_sharded_parameter(
            (hidden_size,), None, init_method, groups, dtype=config.params_dtype
        )

    def forward(self, hidden: Tensor) -> Tensor:
        weight: Tensor = self.weight
        if self.sharded_input:
            weight = sequence_parallel_replicated(weight, self.groups)
        return F.rms_norm(hidden, (self.hidden_size,), weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, eps={self.eps}"


class LayerNorm(nn.Module):
    """Layer norm with learned scale and bias. Shapes: ``[..., hidden_size]`` in and out."""

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
        self.hidden_size = hidden_size
        self.eps = config.norm_epsilon
        self.groups = groups
        self.sharded_input = sharded_input
        dtype = config.params_dtype
        self.weight = new_sharded_parameter((hidden_size,), None, init_method, groups, dtype=dtype)
        self.bias = new_sharded_parameter((hidden_size,), None, zeros_init(), groups, dtype=dtype)

    def forward(self, hidden: Tensor) -> Tensor:
        weight: Tensor = self.weight
        bias: Tensor = self.bias
        if self.sharded_input:
            weight = sequence_parallel_replicated(weight, self.groups)
            bias = sequence_parallel_replicated(bias, self.groups)
        return F.layer_norm(hidden, (self.hidden_size,), weight, bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, eps={self.eps}"


class IdentityNorm(nn.Module):
    """A norm slot that returns its input, for a norm fused into the next layer.

    The te backend's norm-fused linears (``te.pytorch.LayerNormLinear``) normalise their own
    input; the layer's ``input_norm`` / ``pre_mlp_norm`` slot then holds this class, so the
    layer calls its norm slot as always. ``eps`` is ``None`` (it normalises nothing); it has
    no parameters and fits :class:`~megaspec.builders.NormBuilder` directly.
    """

    eps: float | None = None

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

    def forward(self, hidden: Tensor) -> Tensor:
        return hidden
