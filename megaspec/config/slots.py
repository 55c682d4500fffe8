"""Configs of a block's slots (norm, mixer, MLP), each selected by ``type:`` from a registry.

Each config turns itself into the typed builder a Python user would write by hand
(``SelfAttention.as_mixer_submodule(...)``, ``MLP.as_mlp_submodule(...)``, ``RMSNorm``), so
configs are a front end to specs, not a second way of building modules.

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
from dataclasses import dataclass, field
from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor

from megaspec.builders import Mixer, MixerBuilder, MlpBuilder, NormBuilder
from megaspec.config.schema import Config, ConfigError, ConfigT, DynamicConfig
from megaspec.config.weights import (
    LinearConfig,
    WeightConfig,
    configured_column_linear,
    configured_norm,
    configured_row_linear,
)
from megaspec.layers import (
    MLP,
    DotProductAttention,
    LayerNorm,
    MlpSubmodules,
    RMSNorm,
    SelfAttention,
    SelfAttentionSubmodules,
)
from megaspec.layers.slots import checked_module
from megaspec.parallel import ColumnParallelLinear, ParallelGroups, RowParallelLinear
from megaspec.parameter_settings import tag_module_parameters
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig

ActivationName = Literal["silu", "gelu", "gelu_tanh", "relu"]


def _gelu_tanh(hidden: Tensor) -> Tensor:
    return F.gelu(hidden, approximate="tanh")


ACTIVATIONS: Mapping[str, Callable[[Tensor], Tensor]] = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": _gelu_tanh,
    "relu": F.relu,
}


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


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(name, f"must be positive, got {value}")


def _non_negative(name: str, value: float) -> None:
    if value < 0:
        raise ConfigError(name, f"must be >= 0, got {value}")


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
class MixerConfig(DynamicConfig, registry_base=True):
    """A mixer slot. Subclasses return the mixer builder for their settings."""

    lr_scale: float = 1.0
    apply_peft: bool = True

    def validate(self) -> None:
        _non_negative("lr_scale", self.lr_scale)

    def builder(self, lr_scale: float) -> MixerBuilder:
        """The mixer builder; ``lr_scale`` is the product of the enclosing scales."""
        raise NotImplementedError(f"{type(self).__name__}.builder")

    def check_model(self, hidden_size: int, tensor_parallel_size: int) -> None:
        """Checks that need model-wide values; raise ``ConfigError`` naming the field."""

    def tagged_builder(self, lr_scale: float) -> MixerBuilder:
        """:meth:`builder`, tagging parameters the mixer left untagged with ``lr_scale``.

        Custom mixers thereby follow the enclosing learning-rate scales without any code.
        """
        inner = self.builder(lr_scale * self.lr_scale)
        scale = lr_scale * self.lr_scale

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
class AttentionMixerConfig(MixerConfig):
    """Self-attention (see :class:`megaspec.transformer_config.AttentionConfig`).

    Shortcut: ``add_linear_biases: true`` sets ``bias`` of ``qkv`` and ``proj`` (unless they
    set it themselves); it is expanded on resolution and never saved.
    """

    num_heads: int = 8
    num_query_groups: int | None = None
    head_dim: int | None = None
    rotary_base: float = 10000.0
    rotary_fraction: float = 1.0
    qk_norm: bool = False
    causal: bool = True
    qkv: LinearConfig = field(default_factory=LinearConfig)
    proj: LinearConfig = field(default_factory=LinearConfig)

    shortcuts = frozenset({LINEAR_BIASES})

    @classmethod
    def expand_shortcuts(cls, data: Mapping[str, Any], current: Config) -> dict[str, Any]:
        return _expand_linear_biases(data, ("qkv", "proj"))

    def validate(self) -> None:
        super().validate()
        _positive("num_heads", self.num_heads)
        _positive("rotary_base", self.rotary_base)
        groups = self.num_heads if self.num_query_groups is None else self.num_query_groups
        if groups <= 0 or self.num_heads % groups != 0:
            raise ConfigError(
                "num_query_groups", f"{groups} must be positive and divide num_heads ({self.num_heads})"
            )
        if self.head_dim is not None:
            _positive("head_dim", self.head_dim)
        if not 0.0 <= self.rotary_fraction <= 1.0:
            raise ConfigError("rotary_fraction", f"must lie in [0, 1], got {self.rotary_fraction}")

    def check_model(self, hidden_size: int, tensor_parallel_size: int) -> None:
        if self.head_dim is None and hidden_size % self.num_heads != 0:
            raise ConfigError(
                "num_heads",
                f"{self.num_heads} does not divide hidden_size ({hidden_size}); set head_dim",
            )
        groups = self.num_heads if self.num_query_groups is None else self.num_query_groups
        for name, count in (("num_heads", self.num_heads), ("num_query_groups", groups)):
            if count % tensor_parallel_size != 0:
                raise ConfigError(
                    name,
                    f"{count} is not divisible by the tensor-parallel size ({tensor_parallel_size})",
                )

    def attention_config(self) -> AttentionConfig:
        """The layer-level settings."""
        return AttentionConfig(
            num_heads=self.num_heads,
            num_query_groups=self.num_query_groups,
            head_dim=self.head_dim,
            rotary_base=self.rotary_base,
            rotary_fraction=self.rotary_fraction,
            causal=self.causal,
        )

    def builder(self, lr_scale: float) -> MixerBuilder:
        def build(*, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> SelfAttention:
            norm: NormBuilder | None = RMSNorm if self.qk_norm else None
            submodules = SelfAttentionSubmodules(
                linear_qkv=configured_column_linear(ColumnParallelLinear, self.qkv, config, lr_scale),
                core_attention=DotProductAttention,
                linear_proj=configured_row_linear(RowParallelLinear, self.proj, config, lr_scale),
                q_norm=norm,
                k_norm=norm,
            )
            return SelfAttention(
                config=config,
                attention=self.attention_config(),
                groups=groups,
                layer_index=layer_index,
                submodules=submodules,
            )

        return build


# --- MLPs -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MlpLayerConfig(DynamicConfig, registry_base=True):
    """An MLP slot. Subclasses return the MLP builder for their settings."""

    lr_scale: float = 1.0

    def validate(self) -> None:
        _non_negative("lr_scale", self.lr_scale)

    def builder(self, lr_scale: float) -> MlpBuilder:
        """The MLP builder; ``lr_scale`` is the product of the enclosing scales."""
        raise NotImplementedError(f"{type(self).__name__}.builder")

    def check_model(self, hidden_size: int, tensor_parallel_size: int) -> None:
        """Checks that need model-wide values; raise ``ConfigError`` naming the field."""


@MlpLayerConfig.register("mlp")
@dataclass(frozen=True, kw_only=True)
class FeedForwardConfig(MlpLayerConfig):
    """The standard MLP (gated or plain). Shortcut ``add_linear_biases`` as for attention."""

    ffn_hidden_size: int = 1024
    activation: ActivationName = "silu"
    gated: bool = True
    fc1: LinearConfig = field(default_factory=LinearConfig)
    fc2: LinearConfig = field(default_factory=LinearConfig)

    shortcuts = frozenset({LINEAR_BIASES})

    @classmethod
    def expand_shortcuts(cls, data: Mapping[str, Any], current: Config) -> dict[str, Any]:
        return _expand_linear_biases(data, ("fc1", "fc2"))

    def validate(self) -> None:
        super().validate()
        _positive("ffn_hidden_size", self.ffn_hidden_size)

    def check_model(self, hidden_size: int, tensor_parallel_size: int) -> None:
        if self.ffn_hidden_size % tensor_parallel_size != 0:
            raise ConfigError(
                "ffn_hidden_size",
                f"{self.ffn_hidden_size} is not divisible by the tensor-parallel size "
                f"({tensor_parallel_size})",
            )

    def builder(self, lr_scale: float) -> MlpBuilder:
        scale = lr_scale * self.lr_scale
        settings = MlpConfig(
            ffn_hidden_size=self.ffn_hidden_size,
            activation=ACTIVATIONS[self.activation],
            gated=self.gated,
        )

        def build(*, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> MLP:
            submodules = MlpSubmodules(
                linear_fc1=configured_column_linear(ColumnParallelLinear, self.fc1, config, scale),
                linear_fc2=configured_row_linear(RowParallelLinear, self.fc2, config, scale),
            )
            return MLP(
                config=config, mlp=settings, groups=groups, layer_index=layer_index, submodules=submodules
            )

        return build

