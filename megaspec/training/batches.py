"""The batches of a run: training batches with a resumable position, fixed validation batches.

Two sources, one interface (:class:`TrainingBatches`):

- ``training.data.path`` unset: the bundled text in random windows (:class:`RandomWindows`),
  the sampler the README's numbers were measured with;
- ``training.data.path`` set: the documents read, tokenized with ``training.tokenizer`` and
  packed by :func:`megaspec.data.load_packed_data`, visited by a
  :class:`megaspec.data.SequenceLoader`.

Either way a position is the number of training sequences drawn so far, a plain int that a
training checkpoint stores as its ``data_position``; :meth:`TrainingBatches.seek` continues
from it with exactly the batches an uninterrupted run draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from megaspec.config import ConfigError, RunConfig, TrainingConfig
from megaspec.data import (
    DataSourceError,
    SequenceLoader,
    Tokenizer,
    WindowSampler,
    evaluation_batches,
    load_corpus,
    load_packed_data,
    load_tokenizer,
    train_validation_split,
)

Batch = tuple[Tensor, Tensor]
"""``(inputs, labels)``, each ``[batch, sequence_length]`` int64."""


class TrainingBatches(Protocol):
    """Endless training batches whose position can be saved and restored."""

    @property
    def position(self) -> int:
        """Sequences drawn so far."""
        ...

    def next_batch(self) -> Batch: ...

    def seek(self, position: int) -> None:
        """Continue from a saved :attr:`position`."""
        ...


class RandomWindows:
    """``batch_size`` uniformly random windows of a token stream per batch, drawn from a
    generator seeded with ``seed``.

    A generator's state is bytes, not a count, so :meth:`seek` re-seeds it and replays the
    draws of ``position // batch_size`` batches: cheap (a few integers per batch) and exact.
    """

    def __init__(
        self, windows: WindowSampler, *, batch_size: int, sequence_length: int, seed: int
    ) -> None:
        self.windows = windows
        self.batch_size = batch_size
        self.sequence_length = sequence_length
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)
        self._position = 0

    @property
    def position(self) -> int:
        """Windows drawn so far."""
        return self._position

    def next_batch(self) -> Batch:
        """The next ``batch_size`` random windows."""
        self._position += self.batch_size
        return self.windows.sample(
            batch_size=self.batch_size, seq_length=self.sequence_length, generator=self._generator
        )

    def seek(self, position: int) -> None:
        """Draw as an uninterrupted run would after ``position`` windows.

        Raises:
            ValueError: if ``position`` is negative or not a whole number of batches.
        """
        if position < 0 or position % self.batch_size != 0:
            raise ValueError(
                f"position {position} is not a whole number of batches of {self.batch_size}"
            )
        self._generator.manual_seed(self.seed)
        self._position = 0
        for _ in range(position // self.batch_size):
            self.next_batch()


@dataclass(frozen=True)
class RunBatches:
    """A run's data: its training batches, validation batches and tokenizer."""

    train: TrainingBatches
    validation: list[Batch]
    tokenizer: Tokenizer


def run_batches(run: RunConfig) -> RunBatches:
    """The batches of ``run`` (see the module).

    Raises:
        ConfigError: at ``training.tokenizer`` if it cannot be loaded, at ``model.vocab_size``
            if the model's vocabulary is smaller than the tokenizer's, at ``training.data`` if
            the documents cannot be read or packed (naming the file), or at
            ``training.sequence_length`` if a split of the bundled text is too short.
    """
    training = run.training
    try:
        tokenizer = load_tokenizer(training.tokenizer)
    except (ImportError, OSError, ValueError) as error:
        raise ConfigError("training.tokenizer", str(error)) from None
    if run.model.vocab_size < tokenizer.vocab_size:
        raise ConfigError(
            "model.vocab_size",
            f"must be >= {tokenizer.vocab_size} for the tokenizer {training.tokenizer}, got "
            f"{run.model.vocab_size}",
        )
    if training.data.path is None:
        return _bundled_windows(training, tokenizer)
    try:
        data = load_packed_data(
            training.data, tokenizer, sequence_length=training.sequence_length,
            validation_fraction=training.validation_fraction,
        )  # fmt: skip
    except (DataSourceError, ValueError) as error:
        raise ConfigError("training.data", str(error)) from None
    loader = SequenceLoader(data.train, batch_size=training.batch_size, seed=training.seed)
    validation = evaluation_batches(
        data.validation, batch_size=training.batch_size, count=training.eval_batches
    )
    return RunBatches(train=loader, validation=validation, tokenizer=tokenizer)


def _bundled_windows(training: TrainingConfig, tokenizer: Tokenizer) -> RunBatches:
    """The bundled text in random windows; validation windows from a generator seeded with
    ``seed + 1``, drawn once, so every evaluation measures the same text."""
    tokens = torch.tensor(tokenizer.encode(load_corpus()), dtype=torch.int64)
    train_windows, validation_windows = train_validation_split(
        tokens, training.validation_fraction
    )
    shortest = min(len(train_windows), len(validation_windows))
    if training.sequence_length + 1 > shortest:
        raise ConfigError(
            "training.sequence_length",
            f"{training.sequence_length} needs windows of {training.sequence_length + 1} "
            f"tokens, but a split of the bundled text (validation_fraction "
            f"{training.validation_fraction}) holds only {shortest}",
        )
    generator = torch.Generator().manual_seed(training.seed + 1)
    validation = [
        validation_windows.sample(
            batch_size=training.batch_size, seq_length=training.sequence_length,
            generator=generator,
        )  # fmt: skip
        for _ in range(training.eval_batches)
    ]
    train = RandomWindows(
        train_windows, batch_size=training.batch_size,
        sequence_length=training.sequence_length, seed=training.seed,
    )  # fmt: skip
    return RunBatches(train=train, validation=validation, tokenizer=tokenizer)
