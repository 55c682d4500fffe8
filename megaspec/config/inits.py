"""Initialisation settings: a typed union selected by ``type:`` (normal, scaled_normal, ...)."""

from __future__ import annotations

from dataclasses import dataclass, field

from megaspec.parallel import (
    InitMethod,
    normal_init,
    ones_init,
    scaled_normal_init,
    uniform_init,
    zeros_init,
)
from megaspec.schema import ConfigError, DynamicConfig, checks, optional, positive
from megaspec.transformer_config import TransformerConfig


@dataclass(frozen=True, kw_only=True)
class InitConfig(DynamicConfig, registry_base=True):
    """How a weight is initialised. Subclasses turn themselves into an ``InitMethod``."""

    def method(self, model: TransformerConfig) -> InitMethod:
        """The init method, given the model-wide settings (``init_std``, ``num_layers``)."""
        raise NotImplementedError(f"{type(self).__name__}.method")


@InitConfig.register("normal")
@dataclass(frozen=True, kw_only=True)
class NormalInit(InitConfig):
    """Normal(0, std); ``std: null`` means the model's ``init_std``."""

    std: float | None = field(default=None, metadata=checks(optional(positive)))

    def method(self, model: TransformerConfig) -> InitMethod:
        return normal_init(model.init_std if self.std is None else self.std)


@InitConfig.register("scaled_normal")
@dataclass(frozen=True, kw_only=True)
class ScaledNormalInit(InitConfig):
    """Normal(0, std / sqrt(2 * num_layers)), Megatron's init for output projections."""

    std: float | None = field(default=None, metadata=checks(optional(positive)))

    def method(self, model: TransformerConfig) -> InitMethod:
        std = model.init_std if self.std is None else self.std
        return scaled_normal_init(std, model.num_layers)


@InitConfig.register("uniform")
@dataclass(frozen=True, kw_only=True)
class UniformInit(InitConfig):
    """Uniform(low, high)."""

    low: float = -0.02
    high: float = 0.02

    def validate(self) -> None:
        super().validate()
        if not self.low < self.high:
            raise ConfigError("high", f"must be greater than low ({self.low}), got {self.high}")

    def method(self, model: TransformerConfig) -> InitMethod:
        return uniform_init(self.low, self.high)


@InitConfig.register("zeros")
@dataclass(frozen=True, kw_only=True)
class ZerosInit(InitConfig):
    """All zeros."""

    def method(self, model: TransformerConfig) -> InitMethod:
        return zeros_init()


@InitConfig.register("ones")
@dataclass(frozen=True, kw_only=True)
class OnesInit(InitConfig):
    """All ones."""

    def method(self, model: TransformerConfig) -> InitMethod:
        return ones_init()
