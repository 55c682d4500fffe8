"""Sequences of layers built from a repeated pattern of layer builders (hybrid stacks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from megaspec.builders import LayerBuilder, LayerSpec
from megaspec.context import LayerContext
from megaspec.layers.slots import (
    building_slot,
    checked_module,
    checked_output,
    declared_sequence_parallel,
    describe_builder,
)
from megaspec.parallel import ParallelGroups, replicated_over_sequence
from megaspec.transformer_config import TransformerConfig


@dataclass(frozen=True)
class BlockSequenceSpec:
    """``pattern`` repeated until it has built ``num_layers`` layers.

    An element of ``pattern`` is a :class:`~megaspec.builders.LayerSpec` (one layer, e.g.
    ``TransformerLayer.as_layer_submodule(...)``) or a nested spec (its ``num_layers``
    layers). ``num_layers`` must be a whole multiple of the pattern's length: nothing is
    silently cut or replicated. Examples::

        BlockSequenceSpec(pattern=[attention_layer], num_layers=24)          # 24 x attention
        BlockSequenceSpec(pattern=[attn, attn, conv], num_layers=12)         # 4 x (a, a, c)
        BlockSequenceSpec(pattern=[layer_0, layer_1, layer_2], num_layers=3) # explicit list

    Raises:
        ValueError: for an empty pattern or a ``num_layers`` that is not a positive multiple
            of the pattern's length.
        TypeError: for an element that is neither a ``LayerSpec`` nor a ``BlockSequenceSpec``
            (a mixer builder, say, in code mypy does not check).
    """

    pattern: Sequence[LayerSpec | BlockSequenceSpec]
    num_layers: int

    def __post_init__(self) -> None:
        # Keep an immutable copy: a list changed after validation must not change the spec.
        object.__setattr__(self, "pattern", tuple(self.pattern))
        if len(self.pattern) == 0:
            raise ValueError("BlockSequenceSpec: pattern is empty")
        for index, element in enumerate(self.pattern):
            if not isinstance(element, (LayerSpec, BlockSequenceSpec)):
                raise TypeError(
                    f"BlockSequenceSpec: pattern[{index}] is {describe_builder(element)}, not a "
                    f"LayerSpec or BlockSequenceSpec; wrap a layer builder as LayerSpec(builder) "
                    f"(TransformerLayer.as_layer_submodule(...) returns one)"
                )
        length = self.pattern_length
        if self.num_layers <= 0 or self.num_layers % length != 0:
            raise ValueError(
                f"BlockSequenceSpec: num_layers ({self.num_layers}) must be a positive multiple "
                f"of the pattern's length ({length} layers); write the pattern out in full "
                f"instead of relying on a partial repeat"
            )

    @property
    def pattern_length(self) -> int:
        """Layers built by one pass over ``pattern``."""
        return sum(
            element.num_layers if isinstance(element, BlockSequenceSpec) else 1
            for element in self.pattern
        )

    def layer_builders(self) -> list[LayerBuilder]:
        """The builder of every layer, in order (``num_layers`` of them)."""
        one_pass: list[LayerBuilder] = []
        for element in self.pattern:
            if isinstance(element, BlockSequenceSpec):
                one_pass.extend(element.layer_builders())
            else:
                one_pass.append(element.builder)
        return one_pass * (self.num_layers // len(one_pass))


class BlockSequence(nn.Module):
    """The layers of a :class:`BlockSequenceSpec`, applied in order.

    Layer ``i`` is built with ``layer_index=first_layer_index + i``. Under sequence
    parallelism a layer declaring ``handles_sequence_parallel = False`` gets the whole
    sequence (see :mod:`megaspec.builders`).
    Shapes: ``[s, b, hidden] -> [s, b, hidden]`` (``s / tp`` when sequence parallel).

    Raises:
        ValueError: if the spec builds a different number of layers than
            ``config.num_layers`` declares (when ``check_num_layers``).
    """

    def __init__(
        self,
        *,
        config: TransformerConfig,
        groups: ParallelGroups,
        spec: BlockSequenceSpec,
        first_layer_index: int = 0,
        check_num_layers: bool = True,
    ) -> None:
        super().__init__()
        if check_num_layers and spec.num_layers != config.num_layers:
            raise ValueError(
                f"BlockSequence: the block spec builds {spec.num_layers} layers but "
                f"config.num_layers is {config.num_layers}"
            )
        builders = spec.layer_builders()
        # The spec is frozen and validated; this guards the invariant the whole design rests on.
        assert len(builders) == spec.num_layers, (len(builders), spec.num_layers)
        self.groups = groups
        self._builder_names = [describe_builder(builder) for builder in builders]
        self.layers = nn.ModuleList()
        sequence_split = config.sequence_parallel and groups.tensor_size > 1
        self._gather_sequence: list[bool] = []
        for offset, builder in enumerate(builders):
            slot = f"layers[{offset}]"
            with building_slot(owner="BlockSequence", slot=slot, builder=builder, interface=LayerBuilder):
                layer = builder(config=config, groups=groups, layer_index=first_layer_index + offset)
            self.layers.append(checked_module(layer, owner="BlockSequence", slot=slot, builder=builder))
            handles = declared_sequence_parallel(layer, owner="BlockSequence", slot=slot, builder=builder)
            self._gather_sequence.append(sequence_split and not handles)

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor:
        for offset, layer in enumerate(self.layers):
            if self._gather_sequence[offset]:
                output = replicated_over_sequence(
                    lambda full: layer(full, context=context), hidden, self.groups.tensor
                )
            else:
                output = layer(hidden, context=context)
            hidden = checked_output(
                output, hidden, owner="BlockSequence", slot=f"layers[{offset}]",
                builder=self._builder_names[offset],
            )
        return hidden
