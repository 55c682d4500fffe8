"""Pre-norm transformer layer: ``x + mixer(norm(x))`` then ``x + mlp(norm(x))``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from megaspec.builders import LayerSpec, MixerBuilder, MlpBuilder, Norm, NormBuilder
from megaspec.context import LayerContext
from megaspec.inference import supports_inference_cache
from megaspec.layers.slots import (
    building_slot,
    checked_output,
    declared_sequence_parallel,
    describe_builder,
)
from megaspec.parallel import ParallelGroups, ones_init, replicated_over_sequence
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
    other than an ``nn.Module``, a mixer or MLP that does not declare
    ``handles_sequence_parallel``, or a child whose output shape differs from its input's,
    is an error naming the slot and the builder.

    Under sequence parallelism, a mixer or MLP declaring ``handles_sequence_parallel =
    False`` gets the whole sequence: the layer all-gathers it and keeps this rank's slice of
    the result (see :mod:`megaspec.builders`).

    Shapes: ``[s, b, hidden] -> [s, b, hidden]`` (``s / tp`` when sequence parallel).
    """

    handles_sequence_parallel = True

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
        self.groups = groups
        self._owner = f"TransformerLayer (layer {layer_index})"
        self._builder_names = {
            "mixer": describe_builder(submodules.mixer),
            "mlp": describe_builder(submodules.mlp),
        }
        self.input_norm = self._build_norm(submodules.input_norm, "input_norm", config, groups)
        with building_slot(
            owner=self._owner, slot="mixer", builder=submodules.mixer, interface=MixerBuilder
        ) as slot:
            self.mixer = slot.checked(
                submodules.mixer(config=config, groups=groups, layer_index=layer_index)
            )
        self.post_mixer_norm = self._build_optional_norm(
            submodules.post_mixer_norm, "post_mixer_norm", config, groups
        )
        self.pre_mlp_norm = self._build_norm(submodules.pre_mlp_norm, "pre_mlp_norm", config, groups)
        with building_slot(
            owner=self._owner, slot="mlp", builder=submodules.mlp, interface=MlpBuilder
        ) as slot:
            self.mlp = slot.checked(submodules.mlp(config=config, groups=groups, layer_index=layer_index))
        self.post_mlp_norm = self._build_optional_norm(
            submodules.post_mlp_norm, "post_mlp_norm", config, groups
        )
        # Checked at every size: a module must say what it takes before it meets a slice.
        handles = {
            slot: declared_sequence_parallel(child, owner=self._owner, slot=slot, builder=builder)
            for slot, child, builder in (
                ("mixer", self.mixer, submodules.mixer),
                ("mlp", self.mlp, submodules.mlp),
            )
        }
        sequence_split = config.sequence_parallel and groups.tensor_size > 1
        self._gather_sequence = {slot: sequence_split and not handles[slot] for slot in handles}

    def _build_norm(
        self, builder: NormBuilder, slot: str, config: TransformerConfig, groups: ParallelGroups
    ) -> Norm:
        # Under sequence parallelism each rank normalises its own slice of the sequence.
        with building_slot(owner=self._owner, slot=slot, builder=builder, interface=NormBuilder) as building:
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

    @property
    def supports_inference_cache(self) -> bool:
        """Whether generation may keep a cache for this layer: what its mixer declares.

        The norms and the MLP are position-wise and need no cache (see
        :mod:`megaspec.inference`).
        """
        return supports_inference_cache(self.mixer)

    @classmethod
    def as_layer_submodule(cls, submodules: TransformerLayerSubmodules) -> LayerSpec:
        """A block-pattern element building this layer with ``submodules``."""

        def build(
            *, config: TransformerConfig, groups: ParallelGroups, layer_index: int
        ) -> TransformerLayer:
            return cls(config=config, groups=groups, layer_index=layer_index, submodules=submodules)

        build.__qualname__ = f"{cls.__qualname__}.as_layer_submodule(...)"
        return LayerSpec(build)

    def _branch(self, slot: str, function: Callable[[Tensor], Tensor], hidden: Tensor) -> Tensor:
        if self._gather_sequence[slot]:
            output = replicated_over_sequence(function, hidden, self.groups.tensor)
        else:
            output = function(hidden)
        return checked_output(
            output, hidden, owner=self._owner, slot=slot, builder=self._builder_names[slot]
        )

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor:
        branch = self._branch(
            "mixer", lambda normed: self.mixer(normed, context=context), self.input_norm(hidden)
        )
        if self.post_mixer_norm is not None:
            branch = self.post_mixer_norm(branch)
        hidden = hidden + branch
        branch = self._branch("mlp", self.mlp, self.pre_mlp_norm(hidden))
        if self.post_mlp_norm is not None:
            branch = self.post_mlp_norm(branch)
        return hidden + branch
