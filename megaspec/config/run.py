"""The config of a training run: model, parallel layout and training settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from megaspec.config.model import ModelConfig
from megaspec.config.schema import Config, ConfigError


@dataclass(frozen=True, kw_only=True)
class ParallelConfig(Config):
    """How the model is split over processes."""

    tensor_parallel_size: int = 1
    sequence_parallel: bool = False

    def validate(self) -> None:
        if self.tensor_parallel_size < 1:
            raise ConfigError(
                "tensor_parallel_size", f"must be >= 1, got {self.tensor_parallel_size}"
            )


@dataclass(frozen=True, kw_only=True)
class TrainingConfig(Config):
    """Optimisation settings of a training run."""

    steps: int = 300
    batch_size: int = 16
    sequence_length: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 0.1
    warmup_steps: int = 30
    seed: int = 0

    def validate(self) -> None:
        for name in ("steps", "batch_size", "sequence_length"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(name, f"must be >= 1, got {value}")
        if self.learning_rate <= 0:
            raise ConfigError("learning_rate", f"must be positive, got {self.learning_rate}")
        if self.weight_decay < 0:
            raise ConfigError("weight_decay", f"must be >= 0, got {self.weight_decay}")
        if self.warmup_steps < 0:
            raise ConfigError("warmup_steps", f"must be >= 0, got {self.warmup_steps}")


@dataclass(frozen=True, kw_only=True)
class RunConfig(Config):
    """Everything a training run needs, resolved from defaults, files and overrides."""

    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def validate(self) -> None:
        try:
            self.model.check_tensor_parallel(self.parallel.tensor_parallel_size)
        except ConfigError as error:
            raise error.under("model") from None
        if (
            self.parallel.sequence_parallel
            and self.training.sequence_length % self.parallel.tensor_parallel_size != 0
        ):
            raise ConfigError(
                "training.sequence_length",
                f"{self.training.sequence_length} is not divisible by the tensor-parallel size "
                f"({self.parallel.tensor_parallel_size}), which sequence parallelism needs",
            )
