"""Feed-forward block: column-parallel fc1, activation (optionally gated), row-parallel fc2."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from megaspec.builders import ColumnLinearBuilder, MlpBuilder, RowLinearBuilder
from megaspec.layers.fused import gated_activation
from megaspec.layers.slots import building_slot
from megaspec.parallel import ParallelGroups, normal_init, scaled_normal_init
from megaspec.transformer_config import MlpConfig, TransformerConfig


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
        if mlp.ffn_hidden_size % groups.tensor_size != 0:
            raise ValueError(
                f"MLP (layer {layer_index}): ffn_hidden_size ({mlp.ffn_hidden_size}) is not "
                f"divisible by the tensor-parallel size ({groups.tensor_size})"
            )
        self.activate = (
            gated_activation(mlp.activation, config.fuse_elementwise) if mlp.gated else mlp.activation
        )
        parts = 2 if mlp.gated else 1
        owner = f"MLP (layer {layer_index})"
        with building_slot(owner=owner, slot="linear_fc1", builder=submodules.linear_fc1) as slot:
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
        with building_slot(owner=owner, slot="linear_fc2", builder=submodules.linear_fc2) as slot:
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
