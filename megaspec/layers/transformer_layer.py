"""Pre-norm transformer layer: ``x + mixer(norm(x))`` then ``x + mlp(norm(x))``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from megaspec.builders import LayerSpec, MixerBuilder, MlpBuilder, Norm, NormBuilder
from megaspec.context import LayerContext
from megaspec.inference import supports_inference_cache
from megaspec.layers.residual import residual_add_and_norm
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

    ``config.recompute`` names slots whose activations are recomputed in the backward pass
    instead of kept; adjacent named slots (``input_norm`` and ``mixer``, ``pre_mlp_norm`` and
    ``mlp``) form one recomputed region that keeps only its input. ``config.fuse_elementwise``
    runs the mixer's residual add and ``pre_mlp_norm`` as one compiled region (unless
    ``pre_mlp_norm`` is recomputed: then the add stays outside the region, which keeps the sum).

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
        self._recompute = frozenset(config.recompute)
        self._add_and_norm = residual_add_and_norm(config.fuse_elementwise)
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

    def _stages(self, hidden: Tensor, stages: Sequence[tuple[str, Callable[[Tensor], Tensor]]]) -> Tensor:
        """Runs ``(slot, function)`` stages in order; a run of consecutive recomputed slots is
        one checkpointed region, so only its input is kept for the backward pass."""
        recompute = self._recompute if torch.is_grad_enabled() else frozenset()
        start = 0
        while start < len(stages):
            end = start
            while end < len(stages) and stages[end][0] in recompute:
                end += 1
            if end == start:
                hidden = stages[start][1](hidden)
                start += 1
                continue
            # Non-reentrant: works with keyword-only closures, collectives and FSDP2, and
            # replays the RNG state so dropout draws the same mask when recomputed.
            region = _composed([function for _, function in stages[start:end]])
            recomputed: Tensor = checkpoint(region, hidden, use_reentrant=False)
            hidden = recomputed
            start = end
        return hidden

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor:
        def mixer(normed: Tensor) -> Tensor:
            return self._branch("mixer", lambda full: self.mixer(full, context=context), normed)

        def mlp(normed: Tensor) -> Tensor:
            return self._branch("mlp", self.mlp, normed)

        branch = self._stages(hidden, (("input_norm", self.input_norm), ("mixer", mixer)))
        if self.post_mixer_norm is not None:
            branch = self.post_mixer_norm(branch)
        if "pre_mlp_norm" in self._recompute and torch.is_grad_enabled():
            hidden = hidden + branch
            branch = self._stages(hidden, (("pre_mlp_norm", self.pre_mlp_norm), ("mlp", mlp)))
        else:
            hidden, normed = self._add_and_norm(hidden, branch, self.pre_mlp_norm)
            branch = self._stages(normed, (("mlp", mlp),))
        if self.post_mlp_norm is not None:
            branch = self.post_mlp_norm(branch)
        return hidden + branch


def _composed(functions: Sequence[Callable[[Tensor], Tensor]]) -> Callable[[Tensor], Tensor]:
    def run(hidden: Tensor) -> Tensor:
        for function in functions:
            hidden = function(hidden)
        return hidden

    return run
