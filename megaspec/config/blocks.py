"""Block configs and block sequences (``repeat``, ``pattern``, nested), turned into specs.

A resolved config becomes the same values a Python user would write: each block becomes a
``TransformerLayer.as_layer_submodule(TransformerLayerSubmodules(...))`` (a ``LayerSpec``) and
each sequence a
:class:`~megaspec.layers.BlockSequenceSpec`. Learning-rate scales multiply down the tree:
sequence x nested sequence x block x layer (mixer / MLP) x weight.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from megaspec.builders import LayerSpec
from megaspec.config.slots import (
    LINEAR_BIASES,
    AttentionMixerConfig,
    FeedForwardConfig,
    MixerConfig,
    MlpLayerConfig,
    NormConfig,
    RMSNormConfig,
    shortcut_flag,
)
from megaspec.config.weights import LearningRateScaled
from megaspec.layers import BlockSequenceSpec, TransformerLayer, TransformerLayerSubmodules
from megaspec.schema import (
    Config,
    ConfigError,
    DynamicConfig,
    at_least,
    checks,
    join_path,
    suggestion,
)


@dataclass(frozen=True, kw_only=True)
class BlockConfig(LearningRateScaled):
    """One transformer layer: ``norm -> mixer -> residual -> norm -> mlp -> residual``.

    ``post_norms`` adds a norm after each branch (Gemma 2 style). Shortcut:
    ``add_linear_biases`` is passed on to ``mixer`` and ``mlp``.
    """

    mixer: MixerConfig = field(default_factory=AttentionMixerConfig)
    mlp: MlpLayerConfig = field(default_factory=FeedForwardConfig)
    norm: NormConfig = field(default_factory=RMSNormConfig)
    post_norms: bool = False

    shortcuts = frozenset({LINEAR_BIASES})

    @classmethod
    def expand_shortcuts(cls, data: Mapping[str, Any], current: BlockConfig) -> dict[str, Any]:
        # Passed on to the slots whose type has the shortcut (a convolution mixer has none).
        data = dict(data)
        value = shortcut_flag(data, LINEAR_BIASES)
        if value is None:
            return data
        slots: tuple[tuple[str, type[DynamicConfig], Config], ...] = (
            ("mixer", MixerConfig, current.mixer),
            ("mlp", MlpLayerConfig, current.mlp),
        )
        for slot, base, slot_config in slots:
            settings = data.get(slot, {})
            if isinstance(settings, Config):
                raise ConfigError(
                    LINEAR_BIASES,
                    f"cannot apply to '{slot}' given as a config object; set bias on its linears",
                )
            if not isinstance(settings, Mapping):
                continue  # the slot's own conversion reports the bad value
            chosen = (
                base.class_for(settings["type"], slot) if "type" in settings else type(slot_config)
            )
            if LINEAR_BIASES in chosen.shortcuts:
                data[slot] = {LINEAR_BIASES: value, **settings}
        return data

    def check_model(self, hidden_size: int, tensor_parallel_size: int) -> None:
        """Checks needing model-wide values, with paths relative to this block."""
        for slot, settings in (("mixer", self.mixer), ("mlp", self.mlp)):
            try:
                settings.check_model(hidden_size, tensor_parallel_size)
            except ConfigError as error:
                raise error.under(slot) from None

    def layer_spec(self, lr_scale: float) -> LayerSpec:
        """The layer's pattern element; ``lr_scale`` is the product of the enclosing scales."""
        scale = lr_scale * self.lr_scale
        norm = self.norm.builder(scale)
        submodules = TransformerLayerSubmodules(
            input_norm=norm,
            mixer=self.mixer.tagged_builder(scale),
            pre_mlp_norm=norm,
            mlp=self.mlp.builder(scale),
            post_mixer_norm=norm if self.post_norms else None,
            post_mlp_norm=norm if self.post_norms else None,
        )
        return TransformerLayer.as_layer_submodule(submodules)


@dataclass(frozen=True, kw_only=True)
class BlockSequenceConfig(DynamicConfig, LearningRateScaled, registry_base=True):
    """A sequence of blocks: ``type: repeat`` or ``type: pattern``."""

    @property
    def num_layers(self) -> int:
        """Layers this sequence builds."""
        raise NotImplementedError(f"{type(self).__name__}.num_layers")

    def named_blocks(self) -> list[tuple[str, BlockConfig]]:
        """Every distinct block config with its path relative to this sequence."""
        raise NotImplementedError(f"{type(self).__name__}.named_blocks")

    def layer_block_paths(self) -> list[str]:
        """For each layer this sequence builds, in order, the path of its block config."""
        raise NotImplementedError(f"{type(self).__name__}.layer_block_paths")

    def spec(self, lr_scale: float) -> BlockSequenceSpec:
        """The block sequence spec; ``lr_scale`` is the product of the enclosing scales."""
        raise NotImplementedError(f"{type(self).__name__}.spec")


@BlockSequenceConfig.register("repeat")
@dataclass(frozen=True, kw_only=True)
class RepeatSequenceConfig(BlockSequenceConfig):
    """One block repeated ``num_blocks`` times."""

    block: BlockConfig = field(default_factory=BlockConfig)
    num_blocks: int = field(default=4, metadata=checks(at_least(1)))

    @property
    def num_layers(self) -> int:
        return self.num_blocks

    def named_blocks(self) -> list[tuple[str, BlockConfig]]:
        return [("block", self.block)]

    def layer_block_paths(self) -> list[str]:
        return ["block"] * self.num_blocks

    def spec(self, lr_scale: float) -> BlockSequenceSpec:
        scale = lr_scale * self.lr_scale
        return BlockSequenceSpec(pattern=[self.block.layer_spec(scale)], num_layers=self.num_blocks)


@BlockSequenceConfig.register("pattern")
@dataclass(frozen=True, kw_only=True)
class PatternSequenceConfig(BlockSequenceConfig):
    """Named blocks (and nested sequences) cycled through ``pattern``.

    ``num_blocks`` is the number of pattern entries after cycling (default: the pattern once)
    and must be a whole multiple of the pattern's length.
    Example: ``pattern: [attn, attn, conv]`` with ``num_blocks: 12`` builds 4 x (attn, attn, conv).
    """

    blocks: dict[str, BlockConfig] = field(default_factory=dict)
    sequences: dict[str, BlockSequenceConfig] = field(default_factory=dict)
    pattern: tuple[str, ...] = ()
    num_blocks: int | None = None

    def validate(self) -> None:
        super().validate()
        if not self.pattern:
            raise ConfigError("pattern", "must name at least one block")
        for name in self.sequences:
            if name in self.blocks:
                raise ConfigError(
                    join_path("sequences", name), f"name '{name}' is also a block; names must be unique"
                )
        known = [*self.blocks, *self.sequences]
        for index, name in enumerate(self.pattern):
            if name not in known:
                hint = suggestion(name, known) if known else "; no blocks or sequences are defined"
                raise ConfigError(f"pattern[{index}]", f"unknown block '{name}'{hint}")
        if self.num_blocks is not None and (
            self.num_blocks < 1 or self.num_blocks % len(self.pattern) != 0
        ):
            raise ConfigError(
                "num_blocks",
                f"must be a positive multiple of the pattern's length ({len(self.pattern)}), "
                f"got {self.num_blocks}",
            )

    @property
    def repeats(self) -> int:
        """Passes over the pattern."""
        return 1 if self.num_blocks is None else self.num_blocks // len(self.pattern)

    @property
    def num_layers(self) -> int:
        one_pass = sum(
            self.sequences[name].num_layers if name in self.sequences else 1 for name in self.pattern
        )
        return one_pass * self.repeats

    def named_blocks(self) -> list[tuple[str, BlockConfig]]:
        named = [(join_path("blocks", name), block) for name, block in self.blocks.items()]
        for name, sequence in self.sequences.items():
            prefix = join_path("sequences", name)
            named += [(join_path(prefix, path), block) for path, block in sequence.named_blocks()]
        return named

    def layer_block_paths(self) -> list[str]:
        one_pass: list[str] = []
        for name in self.pattern:
            if name in self.sequences:
                prefix = join_path("sequences", name)
                one_pass += [join_path(prefix, path) for path in self.sequences[name].layer_block_paths()]
            else:
                one_pass.append(join_path("blocks", name))
        return one_pass * self.repeats

    def spec(self, lr_scale: float) -> BlockSequenceSpec:
        scale = lr_scale * self.lr_scale
        elements: dict[str, LayerSpec | BlockSequenceSpec] = {
            name: block.layer_spec(scale) for name, block in self.blocks.items()
        }
        elements.update({name: sequence.spec(scale) for name, sequence in self.sequences.items()})
        pattern = [elements[name] for name in self.pattern]
        return BlockSequenceSpec(pattern=pattern, num_layers=self.num_layers)
