"""Configs of a block's slots (norm, mixer, MLP), each selected by ``type:`` from a registry.

The slot configs *are* the layer configs plus per-weight settings: ``AttentionMixerConfig``
is an :class:`~megaspec.transformer_config.AttentionConfig`, ``FeedForwardConfig`` an
:class:`~megaspec.transformer_config.MlpConfig`, so each setting and its checks are defined
once. Each turns itself into the typed builder a Python user would write by hand, starting
from :mod:`megaspec.backends.torch`'s standard submodules and replacing only what the config
changes (the linears, wrapped with their per-weight settings).

Register your own mixer with one decorator::

    @register_mixer("conv")
    @dataclass(frozen=True, kw_only=True)
    class ConvMixerSettings(MixerConfig):
        kernel_size: int = 4

        def builder(self, lr_scale: float) -> MixerBuilder:
            return CausalConvMixer.as_mixer_submodule(ConvMixerConfig(self.kernel_size))

and use it from YAML as ``mixer: {type: conv, kernel_size: 8}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from megaspec.backends import torch as torch_backend
from megaspec.builders import Mixer, MixerBuilder, MlpBuilder, NormBuilder
from megaspec.config.weights import (
    LearningRateScaled,
    LinearConfig,
    WeightConfig,
    configured_column_linear,
    configured_norm,
    configured_row_linear,
)
from megaspec.layers import MLP, LayerNorm, MlpSubmodules, RMSNorm, SelfAttention, SelfAttentionSubmodules
from megaspec.layers.slots import checked_module
from megaspec.parallel import ParallelGroups
from megaspec.parameter_settings import tag_module_parameters
from megaspec.schema import Config, ConfigError, ConfigT, DynamicConfig
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig

LINEAR_BIASES = "add_linear_biases"


def shortcut_flag(data: dict[str, Any], name: str) -> bool | None:
    """Pop the boolean shortcut ``name`` from ``data`` (``None`` when absent).

    Raises:
        ConfigError: if its value is not a bool.
    """
    if name not in data:
        return None
    value = data.pop(name)
    if not isinstance(value, bool):
        raise ConfigError(name, f"expected bool, got {value!r} ({type(value).__name__})")
    return value


def _expand_linear_biases(data: Mapping[str, Any], linears: tuple[str, ...]) -> dict[str, Any]:
    """``add_linear_biases: b`` -> ``{linear: {bias: b}}`` for each linear not set explicitly."""
    data = dict(data)
    value = shortcut_flag(data, LINEAR_BIASES)
    if value is None:
        return data
    for name in linears:
        settings = data.get(name, {})
        if isinstance(settings, Mapping) and "bias" not in settings:
            data[name] = {**settings, "bias": value}
    return data


# --- norms ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NormConfig(DynamicConfig, registry_base=True):
    """A norm slot: ``type: rms_norm`` or ``layer_norm``; ``weight`` sets its parameters."""

    weight: WeightConfig = field(default_factory=WeightConfig)

    def norm_class(self) -> NormBuilder:
        raise NotImplementedError(f"{type(self).__name__}.norm_class")

    def builder(self, lr_scale: float) -> NormBuilder:
        """The configured norm builder under ``lr_scale``."""
        return configured_norm(self.norm_class(), self.weight, lr_scale)


@NormConfig.register("rms_norm")
@dataclass(frozen=True, kw_only=True)
class RMSNormConfig(NormConfig):
    """Root-mean-square norm."""

    def norm_class(self) -> NormBuilder:
        return RMSNorm


@NormConfig.register("layer_norm")
@dataclass(frozen=True, kw_only=True)
class LayerNormConfig(NormConfig):
    """Layer norm with bias."""

    def norm_class(self) -> NormBuilder:
        return LayerNorm


# --- mixers -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MixerConfig(DynamicConfig, LearningRateScaled, registry_base=True):
    """A mixer slot. Subclasses return the mixer builder for their settings.

    ``apply_peft``: whether adapters wrap the mixer's linears.
    """

    apply_peft: bool = True

    def builder(self, lr_scale: float) -> MixerBuilder:
        """The mixer builder; ``lr_scale`` is the product of the enclosing scales."""
        raise NotImplementedError(f"{type(self).__name__}.builder")

    def check_model(self, hidden_size: int, tensor_parallel_size: int) -> None:
        """Checks that need model-wide values; raise ``ConfigError`` naming the field."""

    def tagged_builder(self, lr_scale: float) -> MixerBuilder:
        """:meth:`builder`, tagging parameters the mixer left untagged with ``lr_scale``.

        Custom mixers thereby follow the enclosing learning-rate scales without any code.
        """
        scale = lr_scale * self.lr_scale
        inner = self.builder(scale)

        def build(*, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> Mixer:
            mixer = inner(config=config, groups=groups, layer_index=layer_index)
            module = checked_module(mixer, owner=f"layer {layer_index}", slot="mixer", builder=inner)
            tag_module_parameters(module, lr_scale=scale, weight_decay=None, apply_peft=self.apply_peft)
            return mixer

        return build


def register_mixer(name: str) -> Callable[[type[ConfigT]], type[ConfigT]]:
    """Class decorator: make a :class:`MixerConfig` subclass usable as ``mixer: {type: name}``."""
    return MixerConfig.register(name)


@register_mixer("attention")
@dataclass(frozen=True, kw_only=True)
class AttentionMixerConfig(AttentionConfig, MixerConfig):
    """Self-attention: every :class:`~megaspec.transformer_config.AttentionConfig` setting,
    plus QK-norm and the settings of the ``qkv`` and ``proj`` weights.

    Shortcut: ``add_linear_biases: true`` sets ``bias`` of ``qkv`` and ``proj`` (unless they
    set it themselves); it is expanded on resolution and never saved.
    """

    qk_norm: bool = False
    qkv: LinearConfig = field(default_factory=LinearConfig)
    proj: LinearConfig = field(default_factory=LinearConfig)

    shortcuts = frozenset({LINEAR_BIASES})

    @classmethod
    def expand_shortcuts(cls, data: Mapping[str, Any], current: Config) -> dict[str, Any]:
        return _expand_linear_biases(data, ("qkv", "proj"))

    def standard_submodules(self) -> SelfAttentionSubmodules:
        """The backend's attention slots that ``qkv`` and ``proj`` then configure."""
        return torch_backend.attention_submodules(qk_norm=self.qk_norm)

    def builder(self, lr_scale: float) -> MixerBuilder:
        standard = self.standard_submodules()

        def build(*, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> SelfAttention:
            submodules = replace(
                standard,
                linear_qkv=configured_column_linear(standard.linear_qkv, self.qkv, config, lr_scale),
                linear_proj=configured_row_linear(standard.linear_proj, self.proj, config, lr_scale),
            )
            return SelfAttention(
                config=config, attention=self, groups=groups, layer_index=layer_index, submodules=submodules
            )

        return build


# --- MLPs -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MlpLayerConfig(DynamicConfig, LearningRateScaled, registry_base=True):
    """An MLP slot. Subclasses return the MLP builder for their settings."""

    def builder(self, lr_scale: float) -> MlpBuilder:
        """The MLP builder; ``lr_scale`` is the product of the enclosing scales."""
        raise NotImplementedError(f"{type(self).__name__}.builder")

    def check_model(self, hidden_size: int, tensor_parallel_size: int) -> None:
        """Checks that need model-wide values; raise ``ConfigError`` naming the field."""


@MlpLayerConfig.register("mlp")
@dataclass(frozen=True, kw_only=True)
class FeedForwardConfig(MlpConfig, MlpLayerConfig):
    """The standard MLP: every :class:`~megaspec.transformer_config.MlpConfig` setting, plus
    the settings of the ``fc1`` and ``fc2`` weights. Shortcut ``add_linear_biases`` as for
    attention.
    """

    fc1: LinearConfig = field(default_factory=LinearConfig)
    fc2: LinearConfig = field(default_factory=LinearConfig)

    shortcuts = frozenset({LINEAR_BIASES})

    @classmethod
    def expand_shortcuts(cls, data: Mapping[str, Any], current: Config) -> dict[str, Any]:
        return _expand_linear_biases(data, ("fc1", "fc2"))

    def standard_submodules(self) -> MlpSubmodules:
        """The backend's MLP slots that ``fc1`` and ``fc2`` then configure."""
        return torch_backend.mlp_submodules()

    def builder(self, lr_scale: float) -> MlpBuilder:
        scale = lr_scale * self.lr_scale
        standard = self.standard_submodules()

        def build(*, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> MLP:
            submodules = replace(
                standard,
                linear_fc1=configured_column_linear(standard.linear_fc1, self.fc1, config, scale),
                linear_fc2=configured_row_linear(standard.linear_fc2, self.fc2, config, scale),
            )
            return MLP(config=config, mlp=self, groups=groups, layer_index=layer_index, submodules=submodules)

        return build
