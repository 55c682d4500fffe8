"""Feed-forward block: column-parallel fc1, activation (optionally gated), row-parallel fc2."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from megaspec.builders import ColumnLinearBuilder, MlpBuilder, RowLinearBuilder
from megaspec.layers.slots import building_slot
from megaspec.parallel import ParallelGroups, normal_init, scaled_normal_init
from megaspec.schema import ConfigError
from megaspec.transformer_config import Activation, MlpConfig, TransformerConfig


def gated_activation(activation: Activation, fused: bool) -> Callable[[Tensor], Tensor]:
    """``[gate; up] -> activation(gate) * up`` on the last dimension.

    Eager, this is three passes over memory; ``fused`` (``TransformerConfig.fuse_elementwise``)
    compiles it into one kernel that recomputes the activation in the backward pass instead
    of saving it.
    """

    def gate_times_up(intermediate: Tensor) -> Tensor:
        gate, up = intermediate.chunk(2, dim=-1)
        return activation(gate) * up

    return torch.compile(gate_times_up, fullgraph=True) if fused else gate_times_up


@dataclass(frozen=True)
class MlpSubmodules:
    """The slots of :class:`MLP`."""

    linear_fc1: ColumnLinearBuilder
    linear_fc2: RowLinearBuilder


class MLP(nn.Module):
    """``fc2(activation(fc1(x)))``, or ``fc2(activation(gate(x)) * up(x))`` when gated.

    A gated fc1 computes ``[gate; up]`` in one matrix; each tensor-parallel rank holds
    ``[gate_r; up_r]`` (``stacked_parts=2``), so the gating needs no communication.

    Shapes: ``[s, b, hidden] -> [s, b, hidden]`` (``s / tp`` when sequence parallel).

    Raises:
        ValueError: if ``ffn_hidden_size`` is not divisible by the tensor-parallel size.
    """

    handles_sequence_parallel = True  # linear_fc1 gathers the sequence, linear_fc2 splits it

    def __init__(
        self,
        *,
        config: TransformerConfig,
        mlp: MlpConfig,
        groups: ParallelGroups,
        layer_index: int,
        submodules: MlpSubmodules,
    ) -> None:
        super().__init__()
        owner = f"MLP (layer {layer_index})"
        try:
            mlp.check_model(config.hidden_size, groups.tensor_size)
        except ConfigError as error:
            raise ValueError(f"{owner}: {error}") from None
        activation = mlp.activation_function
        self.activate = gated_activation(activation, config.fuse_elementwise) if mlp.gated else activation
        parts = 2 if mlp.gated else 1
        with building_slot(
            owner=owner, slot="linear_fc1", builder=submodules.linear_fc1, interface=ColumnLinearBuilder
        ) as slot:
            self.linear_fc1 = slot.checked(
                submodules.linear_fc1(
                    input_size=config.hidden_size,
                    output_size=parts * mlp.ffn_hidden_size,
                    groups=groups,
                    init_method=normal_init(config.init_std),
                    bias=mlp.bias,
                    gather_output=False,
                    sequence_parallel=config.sequence_parallel,
                    stacked_parts=parts,
                    params_dtype=config.params_dtype,
                )
            )
        with building_slot(
            owner=owner, slot="linear_fc2", builder=submodules.linear_fc2, interface=RowLinearBuilder
        ) as slot:
            self.linear_fc2 = slot.checked(
                submodules.linear_fc2(
                    input_size=mlp.ffn_hidden_size,
                    output_size=config.hidden_size,
                    groups=groups,
                    init_method=scaled_normal_init(config.init_std, config.num_layers),
                    bias=mlp.bias,
                    input_is_parallel=True,
                    sequence_parallel=config.sequence_parallel,
                    params_dtype=config.params_dtype,
                )
            )

    @classmethod
    def as_mlp_submodule(cls, mlp: MlpConfig, submodules: MlpSubmodules) -> MlpBuilder:
        """An :class:`~megaspec.builders.MlpBuilder` for this MLP with these settings."""

        def build(*, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> MLP:
            return cls(
                config=config, mlp=mlp, groups=groups, layer_index=layer_index, submodules=submodules
            )

        build.__qualname__ = f"{cls.__qualname__}.as_mlp_submodule(...)"
        return build

    def forward(self, hidden: Tensor) -> Tensor:
        return self.linear_fc2(self.activate(self.linear_fc1(hidden)))
