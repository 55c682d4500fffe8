"""The files of a run directory: checking the output directory, the metrics log, saving.

A plain run directory (what ``megaspec train`` writes) holds:

    model.safetensors   the weights
    config.yaml         the run config's explicitly set fields
    progress.json       {"steps_done": N, "steps": total, "stopped_by": null | "SIGINT" | "SIGTERM"}
    metrics.jsonl       one JSON object a line: every step, and every validation measurement
    checkpoints/        training checkpoints, if any (see :mod:`megaspec.training.checkpoints`)

A directory *holds a previous run* when it contains any of :data:`RUN_FILES` (these,
and an adapter run's files); ``megaspec train`` refuses to write there unless
``--overwrite``. Every file is written atomically (a temporary name, then a rename), so an
interrupted save leaves the previous file, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Final

import safetensors.torch
from torch import nn

from megaspec.config import PathLike, RunConfig, save
from megaspec.peft import refuse_adapters

WEIGHTS_FILE: Final = "model.safetensors"
CONFIG_FILE: Final = "config.yaml"
PROGRESS_FILE: Final = "progress.json"
METRICS_FILE: Final = "metrics.jsonl"
RUN_FILES: Final = (
    WEIGHTS_FILE,
    CONFIG_FILE,
    PROGRESS_FILE,
    METRICS_FILE,
    "adapter_config.json",
    "adapter_model.safetensors",
    "base_model.json",
    "checkpoints",
)
"""Files whose presence marks a directory as holding a previous run."""


class OutputDirectoryError(ValueError):
    """The output directory cannot take this run's files; the message names it."""


def check_output_dir(directory: PathLike, *, overwrite: bool) -> Path:
    """Create ``directory`` if needed and prove it writable, before any training.

    Raises:
        OutputDirectoryError: if it is a file, cannot be created or written, or holds a
            previous run (any of :data:`RUN_FILES`) and ``overwrite`` is false.
    """
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise OutputDirectoryError(f"output directory {path}: exists and is not a directory")
    if path.is_dir() and not overwrite:
        previous = sorted(name for name in RUN_FILES if (path / name).exists())
        if previous:
            raise OutputDirectoryError(
                f"output directory {path}: holds a previous run ({', '.join(previous)}); "
                f"pass --overwrite to replace it, or choose another --output-dir"
            )
    try:
        path.mkdir(parents=True, exist_ok=True)
        # The save at the end writes temporary files here: prove now that it can.
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise OutputDirectoryError(f"output directory {path}: cannot write there ({reason})") from None
    return path


class MetricsLog:
    """``metrics.jsonl`` being written: one JSON object a line, flushed as it is written.

    Each line is flushed at once, so a crashed or killed run keeps every step before it.
    Non-finite numbers are written as ``null`` (JSON has no NaN). A resumed run passes
    ``resumed_at``, the checkpoint's step: the lines of later steps (the interrupted run's
    steps after its checkpoint, which the resumed run does again) are dropped, the rest kept.
    """

    def __init__(self, directory: PathLike | None, *, resumed_at: int | None = None) -> None:
        self._file: IO[str] | None = None
        if directory is None:
            return
        path = Path(directory) / METRICS_FILE
        kept = []
        if resumed_at is not None and path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
            # A killed run's last line may be cut short: it is past the checkpoint anyway.
            kept = [line for line in lines if line.endswith("\n") and json.loads(line)["step"] <= resumed_at]
        self._file = open(path, "w", encoding="utf-8")
        self._file.writelines(kept)
        self._file.flush()

    def write(self, **values: float | int) -> None:
        """Append one line (nothing without a directory)."""
        if self._file is None:
            return
        finite = {
            key: value if not isinstance(value, float) or math.isfinite(value) else None
            for key, value in values.items()
        }
        self._file.write(json.dumps(finite) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None


def save_trained_model(
    model: nn.Module,
    run: RunConfig,
    directory: PathLike,
    *,
    steps_done: int | None = None,
    stopped_by: str | None = None,
) -> None:
    """Write ``model.safetensors`` and ``config.yaml`` (the run's explicit fields); given
    ``steps_done`` (as :func:`megaspec.training.train` does), also ``progress.json``: the
    steps done of ``run.training.steps`` and the signal that stopped the run early, if any.

    ``directory`` and its parents are created; existing files are replaced, each file
    atomically (written under a temporary name, then renamed).

    Raises:
        ValueError: for a model with adapters (see :func:`megaspec.peft.refuse_adapters`).
    """
    refuse_adapters(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    temporary = weights.with_name(f".{WEIGHTS_FILE}.tmp")
    safetensors.torch.save_model(model, str(temporary))
    os.replace(temporary, weights)
    save(run, directory / CONFIG_FILE)
    if steps_done is not None:
        write_progress(run, directory, steps_done=steps_done, stopped_by=stopped_by)


def write_progress(
    run: RunConfig, directory: PathLike, *, steps_done: int, stopped_by: str | None
) -> None:
    """Write ``progress.json`` atomically: how many of ``run.training.steps`` were done."""
    progress = {"steps_done": steps_done, "steps": run.training.steps, "stopped_by": stopped_by}
    text = json.dumps(progress) + "\n"
    target = Path(directory) / PROGRESS_FILE
    temporary = target.with_name(f".{PROGRESS_FILE}.tmp")
    temporary.write_text(text)
    os.replace(temporary, target)
