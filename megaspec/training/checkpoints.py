"""Training checkpoints of ``megaspec train``: when to save, where, and resuming from one.

Checkpoints live in ``OUTPUT_DIR/checkpoints/step-<step>/`` (the format is
:mod:`megaspec.checkpoint.training_state`): one every ``training.checkpoint_interval`` steps,
the newest ``training.keep_checkpoints`` kept, and one more when SIGINT or SIGTERM stops the
run. A checkpoint's ``data_position`` is the training batches' position (sequences drawn,
see :mod:`megaspec.training.batches`), so a resumed run trains on exactly the batches the
uninterrupted run would have.

A non-finite step raises before anything is saved, so the newest checkpoint is always one of
finite weights.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import torch

from megaspec.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_training_checkpoint,
    save_training_checkpoint,
)
from megaspec.config import ConfigError, PathLike, RunConfig
from megaspec.parallel import ParallelGroups
from megaspec.training.batches import TrainingBatches

CHECKPOINTS_DIRECTORY: Final = "checkpoints"
"""The directory under the output directory that holds a run's training checkpoints."""


def checkpoints_root(output_dir: PathLike) -> Path:
    """``output_dir/checkpoints``."""
    return Path(output_dir) / CHECKPOINTS_DIRECTORY


def find_resume_checkpoint(output_dir: PathLike, path: PathLike | None = None) -> Path:
    """The checkpoint ``--resume`` continues from: ``path``, or the newest complete one in
    ``output_dir/checkpoints``.

    Raises:
        CheckpointError: if ``path`` is not a directory, or ``output_dir`` has none.
    """
    if path is not None:
        if not Path(path).is_dir():
            # argparse gives --resume the next word: an override typed after it lands here.
            hint = "; put overrides before --resume" if "=" in str(path) else ""
            raise CheckpointError(f"--resume {path}: no such checkpoint directory{hint}")
        return Path(path)
    found = latest_checkpoint(checkpoints_root(output_dir))
    if found is None:
        raise CheckpointError(
            f"--resume: no complete checkpoint in {checkpoints_root(output_dir)} (set "
            f"training.checkpoint_interval, or stop a run with Ctrl-C, to make one)"
        )
    return found


def check_checkpointing(run: RunConfig) -> None:
    """Refuse checkpoints of an adapter run, which this loop cannot save yet.

    Raises:
        ConfigError: at ``training.checkpoint_interval``.
    """
    if run.peft is not None and run.training.checkpoint_interval is not None:
        raise ConfigError(
            "training.checkpoint_interval",
            "adapter (peft) runs are not checkpointed; leave it unset",
        )


@dataclass
class Checkpointer:
    """Saves a run's training checkpoints into ``output_dir/checkpoints``."""

    run: RunConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batches: TrainingBatches
    output_dir: Path
    groups: ParallelGroups = field(default_factory=ParallelGroups.single)

    def after_step(self, steps_done: int) -> None:
        """Save when ``steps_done`` is a multiple of ``training.checkpoint_interval``."""
        interval = self.run.training.checkpoint_interval
        if interval is not None and steps_done % interval == 0:
            self.save(steps_done)

    def save(self, steps_done: int) -> Path:
        """Save the state after ``steps_done`` steps; keep the newest ``keep_checkpoints``.

        Under torchrun every rank calls it (a collective): each writes its shards and RNG
        state, rank 0 the rest, and the newest ``keep_checkpoints`` are kept by rank 0 alone.
        """
        return save_training_checkpoint(
            checkpoints_root(self.output_dir), step=steps_done, model=self.model,
            optimizer=self.optimizer, run=self.run, data_position=self.batches.position,
            groups=self.groups, keep_last=self.run.training.keep_checkpoints,
        )  # fmt: skip


def restore(
    path: PathLike,
    *,
    run: RunConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: TrainingBatches,
    groups: ParallelGroups | None = None,
) -> int:
    """Load the checkpoint at ``path`` into ``model``, ``optimizer``, torch's RNG and
    ``batches``; returns the steps it had done.

    Under torchrun (``groups`` spanning several processes) every rank calls it; the
    checkpoint may have been saved at another layout (see
    :func:`megaspec.checkpoint.load_training_checkpoint`). Every rank draws the same batches,
    so one data position serves them all.

    Raises:
        CheckpointError: as :func:`megaspec.checkpoint.load_training_checkpoint` (a foreign
            model, a corrupt or incomplete checkpoint), one saved with other
            :data:`DATA_FIELDS`, for a checkpoint at or past
            ``training.steps``, or for a data position that is not one of these batches'.
    """
    state = load_training_checkpoint(
        path, model=model, optimizer=optimizer, run=run,
        groups=ParallelGroups.single() if groups is None else groups,
    )  # fmt: skip
    _check_same_data(state.run, run, path)
    if state.step >= run.training.steps:
        raise CheckpointError(
            f"{path}: nothing to resume: its {state.step} steps reach training.steps "
            f"({run.training.steps})"
        )
    try:
        batches.seek(state.data_position)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None
    return state.step


DATA_FIELDS: Final = ("data", "tokenizer", "seed", "batch_size", "sequence_length")
"""The ``training`` fields that decide which batches a data position stands for."""


def _check_same_data(saved: RunConfig, run: RunConfig, path: PathLike) -> None:
    """Refuse a checkpoint whose data position counts other batches (see :data:`DATA_FIELDS`).

    Raises:
        CheckpointError: naming the first differing field, as saved and as now.
    """
    for name in DATA_FIELDS:
        before, after = getattr(saved.training, name), getattr(run.training, name)
        if before != after:
            raise CheckpointError(
                f"{path}: its data position counts other batches: training.{name} is "
                f"{before!r} in the checkpoint, {after!r} now"
            )


def remove_previous_checkpoints(output_dir: PathLike) -> None:
    """Delete a previous run's ``checkpoints/``: a fresh run's steps would collide with it,
    and ``--resume`` must never pick up another run's state."""
    shutil.rmtree(checkpoints_root(output_dir), ignore_errors=True)
