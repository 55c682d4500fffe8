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
    """Optimisation settings of a training run (the defaults are ``megaspec train``'s run).

    Attributes:
        steps: optimizer updates.
        batch_size, sequence_length: each step trains on ``batch_size x sequence_length``
            tokens.
        learning_rate: peak AdamW learning rate, reached linearly over ``warmup_steps``
            steps; a cosine then decays it to ``min_learning_rate`` at the last step. Each
            weight's rate is this schedule times its ``lr_scale``.
        min_learning_rate: the floor of the cosine; ``None`` means a tenth of
            ``learning_rate`` (see :attr:`learning_rate_floor`), so lowering the peak alone
            keeps a valid schedule.
        weight_decay: AdamW decoupled weight decay of the weights that decay (matrices,
            unless a weight's config says otherwise).
        grad_clip: maximum global gradient norm.
        validation_fraction: tail of the corpus held out for the validation loss.
        eval_interval, eval_batches: the validation loss is measured every ``eval_interval``
            steps and after the last, on the same ``eval_batches`` batches each time.
        seed: seeds the weights, the training batches and the validation batches.
    """

    steps: int = 250
    batch_size: int = 32
    sequence_length: int = 128
    learning_rate: float = 3e-3
    min_learning_rate: float | None = None
    warmup_steps: int = 20
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    validation_fraction: float = 0.05
    eval_interval: int = 50
    eval_batches: int = 8
    seed: int = 0

    @property
    def learning_rate_floor(self) -> float:
        """The rate the cosine ends at: ``min_learning_rate``, or a tenth of the peak."""
        if self.min_learning_rate is None:
            return self.learning_rate / 10
        return self.min_learning_rate

    def validate(self) -> None:
        for name in ("steps", "batch_size", "sequence_length", "eval_interval", "eval_batches"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(name, f"must be >= 1, got {value}")
        for name in ("learning_rate", "grad_clip"):
            value = getattr(self, name)
            if value <= 0:
                raise ConfigError(name, f"must be positive, got {value}")
        for name in ("weight_decay", "warmup_steps"):
            value = getattr(self, name)
            if value < 0:
                raise ConfigError(name, f"must be >= 0, got {value}")
        floor = self.min_learning_rate
        if floor is not None and not 0 <= floor <= self.learning_rate:
            raise ConfigError(
                "min_learning_rate",
                f"must lie in [0, learning_rate ({self.learning_rate})], got {floor}",
            )
        if not 0 < self.validation_fraction < 1:
            raise ConfigError(
                "validation_fraction", f"must lie in (0, 1), got {self.validation_fraction}"
            )
        if not 0 <= self.seed < 2**63:
            raise ConfigError("seed", f"must lie in [0, 2**63), got {self.seed}")


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
