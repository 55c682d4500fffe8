"""The config of a training run: model, parallel layout and training settings."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from megaspec.backends.fp8 import Fp8Config
from megaspec.config.adapters import AdapterConfig
from megaspec.config.model import ModelConfig
from megaspec.data.config import DataConfig, tokenizer_name
from megaspec.schema import (
    Config,
    ConfigError,
    at_least,
    checks,
    non_negative,
    optional,
    positive,
    within,
)


@dataclass(frozen=True, kw_only=True)
class ParallelConfig(Config):
    """How the model is split over processes."""

    tensor_parallel_size: int = field(default=1, metadata=checks(at_least(1)))
    sequence_parallel: bool = False
    # How data-parallel replicas (a torchrun job's world / tensor_parallel_size) share the
    # weights: FSDP2 shards them, DDP keeps a full copy on each; both average gradients.
    data_parallel_engine: Literal["fsdp", "ddp"] = "fsdp"


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
        warmup_steps: steps of linear warmup from ``learning_rate / warmup_steps`` to
            ``learning_rate``.
        weight_decay: AdamW decoupled weight decay of the weights that decay (matrices,
            unless a weight's config says otherwise).
        gradient_accumulation_steps: micro-batches each step's batch is split into (it must
            divide ``batch_size``); their gradients add up to the whole batch's, so only
            memory changes.
        grad_clip: maximum global gradient norm.
        validation_fraction: tail of the corpus held out for the validation loss.
        eval_interval, eval_batches: the validation loss is measured every ``eval_interval``
            steps and after the last, on the same ``eval_batches`` batches each time.
        seed: seeds the weights, the training batches and the validation batches.
        data: the documents to train on (:class:`megaspec.data.DataConfig`); its ``path``
            unset trains on the bundled text in random windows. A plain string is short for
            ``{path: STRING}``, with ``format: jsonl`` when it ends in ``.jsonl``. Set, the
            documents are packed into sequences visited in a seeded shuffled order (see
            :mod:`megaspec.training.batches`); the tail ``validation_fraction`` is held out.
        tokenizer: ``byte`` or a path to a Hugging Face ``tokenizer.json``; the model's
            ``vocab_size`` must cover it.
        checkpoint_interval: save a training checkpoint every this many steps (``None``:
            none), into the output directory's ``checkpoints/``.
        keep_checkpoints: the newest checkpoints kept; older ones are deleted.
        mixed_precision: ``none`` trains in the weights' float32; ``bfloat16`` runs the
            forward and the loss under ``torch.autocast(dtype=torch.bfloat16)`` (matrix
            products and attention in bfloat16, float32 master weights, gradients and
            optimizer states), the usual way to train on a GPU.
        fp8: run the forward of the model's Transformer Engine slots in FP8 with this recipe
            (:class:`megaspec.backends.fp8.Fp8Config`, such as ``{recipe: current}``); ``null``
            trains without FP8. The model needs ``te_*`` slot types (``te_attention``,
            ``te_mlp``, ...) and a GPU with FP8 (Hopper or newer).
    """

    steps: int = field(default=250, metadata=checks(at_least(1)))
    batch_size: int = field(default=32, metadata=checks(at_least(1)))
    sequence_length: int = field(default=128, metadata=checks(at_least(1)))
    learning_rate: float = field(default=3e-3, metadata=checks(positive))
    min_learning_rate: float | None = None
    warmup_steps: int = field(default=20, metadata=checks(non_negative))
    weight_decay: float = field(default=0.1, metadata=checks(non_negative))
    gradient_accumulation_steps: int = field(default=1, metadata=checks(at_least(1)))
    grad_clip: float = field(default=1.0, metadata=checks(positive))
    validation_fraction: float = field(
        default=0.05, metadata=checks(within(0, 1, open_low=True, open_high=True))
    )
    eval_interval: int = field(default=50, metadata=checks(at_least(1)))
    eval_batches: int = field(default=8, metadata=checks(at_least(1)))
    seed: int = field(default=0, metadata=checks(within(0, 2**63, open_high=True, shown="[0, 2**63)")))
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: str = field(default="byte", metadata=checks(tokenizer_name))
    checkpoint_interval: int | None = field(default=None, metadata=checks(optional(at_least(1))))
    keep_checkpoints: int = field(default=2, metadata=checks(at_least(1)))
    mixed_precision: Literal["none", "bfloat16"] = "none"
    fp8: Fp8Config | None = None

    @classmethod
    def expand_shortcuts(cls, data: Mapping[str, Any], current: Self) -> dict[str, Any]:
        """``data: PATH`` is ``data: {path: PATH}`` (``format: jsonl`` for a ``.jsonl``)."""
        expanded = dict(data)
        path = expanded.get("data")
        if isinstance(path, str):
            expanded["data"] = {"path": path, "format": "jsonl" if path.endswith(".jsonl") else "text"}
        return expanded

    @property
    def learning_rate_floor(self) -> float:
        """The rate the cosine ends at: ``min_learning_rate``, or a tenth of the peak."""
        if self.min_learning_rate is None:
            return self.learning_rate / 10
        return self.min_learning_rate

    def validate(self) -> None:
        super().validate()
        if not math.isfinite(self.learning_rate):
            raise ConfigError("learning_rate", f"must be finite, got {self.learning_rate}")
        if self.batch_size % self.gradient_accumulation_steps != 0:
            raise ConfigError(
                "gradient_accumulation_steps",
                f"{self.gradient_accumulation_steps} does not divide batch_size "
                f"({self.batch_size}) into equal micro-batches",
            )
        floor = self.min_learning_rate
        if floor is not None and not 0 <= floor <= self.learning_rate:
            raise ConfigError(
                "min_learning_rate",
                f"must lie in [0, learning_rate ({self.learning_rate})], got {floor}",
            )


@dataclass(frozen=True, kw_only=True)
class RunConfig(Config):
    """Everything a training run needs, resolved from defaults, files and overrides.

    Attributes:
        peft: an adapter (``peft: {type: lora, rank: 8}``) to add to a pretrained base and
            train alone, the base frozen; ``None`` trains every weight.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    peft: AdapterConfig | None = None

    def validate(self) -> None:
        super().validate()
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
