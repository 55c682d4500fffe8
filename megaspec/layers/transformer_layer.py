"""Pre-norm transformer layer: ``x + mixer(norm(x))`` then ``x + mlp(norm(x))``."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from megaspec.builders import LayerBuilder, MixerBuilder, MlpBuilder, Norm, NormBuilder
from megaspec.context import LayerContext
from megaspec.layers.slots import building_slot, checked_output, describe_builder
from megaspec.parallel import ParallelGroups, ones_init
from megaspec.transformer_config import TransformerConfig


@dataclass(frozen=True)
class TransformerLayerSubmodules:
    """The slots of :class:`TransformerLayer`.

    ``post_mixer_norm`` and ``post_mlp_norm`` (as in Gemma 2) normalise a branch's output
    before it is added to the residual stream.
    """

    input_norm: NormBuilder
    mixer: MixerBuilder
    pre_mlp_norm: NormBuilder
    mlp: MlpBuilder
    post_mixer_norm: NormBuilder | None = None
    post_mlp_norm: NormBuilder | None = None


class TransformerLayer(nn.Module):
    """One pre-norm transformer layer built from :class:`TransformerLayerSubmodules`.

    Every builder is called with the slot's full keyword interface, whatever it builds; the
    layer then uses only what the slot's Protocol declares. A builder that returns something
    other than an ``nn.Module``, or a child whose output shape differs from its input's, is
    an error naming the slot and the builder.

    Shapes: ``[s, b, hidden] -> [s, b, hidden]`` (``s / tp`` when sequence parallel).
    """

    def __init__(
        self,
        *,
        config: TransformerConfig,
        groups: ParallelGroups,
        layer_index: int,
        submodules: TransformerLayerSubmodules,
    ) -> None:
        super().__init__()
        self.layer_index = layer_index
        self._owner = f"TransformerLayer (layer {layer_index})"
        self._builder_names = {
            "mixer": describe_builder(submodules.mixer),
            "mlp": describe_builder(submodules.mlp),
        }
        norm_args = (config, groups)
        self.input_norm = self._build_norm(submodules.input_norm, "input_norm", *norm_args)
        with building_slot(owner=self._owner, slot="mixer", builder=submodules.mixer) as slot:
            self.mixer = slot.checked(
                submodules.mixer(config=config, groups=groups, layer_index=layer_index)
            )
        self.post_mixer_norm = self._build_optional_norm(
            submodules.post_mixer_norm, "post_mixer_norm", *norm_args
        )
        self.pre_mlp_norm = self._build_norm(submodules.pre_mlp_norm, "pre_mlp_norm", *norm_args)
        with building_slot(owner=self._owner, slot="mlp", builder=submodules.mlp) as slot:
            self.mlp = slot.checked(
                submodules.mlp(config=config, groups=groups, layer_index=layer_index)
            )
        self.post_mlp_norm = self._build_optional_norm(
            submodules.post_mlp_norm, "post_mlp_norm", *norm_args
        )

    def _build_norm(
        self, builder: NormBuilder, slot: str, config: TransformerConfig, groups: ParallelGroups
    ) -> Norm:
        # Under sequence parallelism each rank normalises its own slice of the sequence.
        with building_slot(owner=self._owner, slot=slot, builder=builder) as building:
            return building.checked(
                builder(
                    hidden_size=config.hidden_size,
                    config=config,
                    groups=groups,
                    sharded_input=config.sequence_parallel,
                    init_method=ones_init(),
                )
            )

    def _build_optional_norm(
        self, builder: NormBuilder | None, slot: str, config: TransformerConfig, groups: ParallelGroups
    ) -> Norm | None:
        return None if builder is None else self._build_norm(builder, slot, config, groups)

    @classmethod
    def as_layer_submodule(cls, submodules: TransformerLayerSubmodules) -> LayerBuilder:
        """A :class:`~megaspec.builders.LayerBuilder` for block sequences."""

        def build(
            *, config: TransformerConfig, groups: ParallelGroups, layer_index: int
        ) -> TransformerLayer:
            return cls(config=config, groups=groups, layer_index=layer_index, submodules=submodules)

        build.__qualname__ = f"{cls.__qualname__}.as_layer_submodule(...)"
        return build

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor:
        branch = self.input_norm(hidden)
        branch = checked_output(
            self.mixer(branch, context=context), hidden,
            owner=self._owner, slot="mixer", builder=self._builder_names["mixer"],
        )
        if self.post_mixer_norm is not None:
            branch = self.post_mixer_norm(branch)
        hidden = hidden + branch
        branch = self.pre_mlp_norm(hidden)
        branch = checked_output(
            self.mlp(branch), hidden,
            owner=self._owner, slot="mlp", builder=self._builder_names["mlp"],
        )
        if self.post_mlp_norm is not None:
            branch = self.post_mlp_norm(branch)
        return hidden + branch
