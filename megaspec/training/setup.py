"""Setting a run up: presets, the model, the optimizer and its schedule, loading."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Final

import safetensors.torch
import torch

from megaspec.config import ConfigError, PathLike, RunConfig, TrainingConfig, load, resolve
from megaspec.config.resolve import Override
from megaspec.models import GPTModel
from megaspec.optim import parameter_groups
from megaspec.parallel import ParallelGroups, seeded_initialization
from megaspec.training.files import CONFIG_FILE, WEIGHTS_FILE

PRESETS: Final = ("small", "tiny")
"""Packaged models: ``small`` (~1.7M parameters, the default run) and ``tiny`` (~0.1M)."""
ADAM_BETAS: Final = (0.9, 0.95)


def preset_run(name: str = "small") -> RunConfig:
    """The packaged run config ``name`` (one of :data:`PRESETS`): the model, nothing else.

    Raises:
        ValueError: for an unknown preset name.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    resource = resources.files("megaspec.data").joinpath(f"preset_{name}.yaml")
    with resources.as_file(resource) as path:
        return resolve(RunConfig, files=[path])


def resolve_run(
    *, preset: str = "small", files: Sequence[PathLike] = (), overrides: Sequence[Override] = ()
) -> RunConfig:
    """The run config of ``megaspec train``: ``preset``, then ``files``, then ``overrides``.

    The preset is the ``pretrained`` layer of :func:`megaspec.config.resolve`, so its
    (explicit) fields are overridden like any other layer's and saved with the run.

    Raises:
        ConfigError: naming the full path of a bad value, or a malformed override.
        OSError: if a file cannot be read.
    """
    return resolve(RunConfig, pretrained=preset_run(preset), files=files, overrides=overrides)


def configure_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads to ``requested``, capped at the cores this process may use.

    Torch's default counts the machine's cores, which oversubscribes a container or a CPU
    affinity mask that allows fewer; returns the number set.

    Raises:
        ValueError: if ``requested`` is not positive.
    """
    if requested is not None and requested <= 0:
        raise ValueError(f"threads must be positive, got {requested}")
    if hasattr(os, "sched_getaffinity"):  # Linux: the affinity mask, not the machine
        available = len(os.sched_getaffinity(0))
    else:
        available = os.cpu_count() or 1
    threads = available if requested is None else min(requested, available)
    torch.set_num_threads(threads)
    return threads


def build_model(run: RunConfig, groups: ParallelGroups | None = None) -> GPTModel:
    """A freshly initialised ``run.model`` on the CPU, weights from ``run.training.seed``.

    With ``groups`` (a torchrun job's, :func:`megaspec.training.distributed.training_groups`)
    each rank builds its tensor-parallel shards of the weights one process would draw. The
    global RNG state is left as it was.

    Raises:
        ConfigError: if the run's tensor-parallel size is not that of ``groups`` (one process
            without them): tensor parallelism needs torchrun.
    """
    groups = ParallelGroups.single() if groups is None else groups
    if run.parallel.tensor_parallel_size != groups.tensor_size:
        raise ConfigError(
            "parallel.tensor_parallel_size",
            f"this job has {groups.tensor_size} tensor-parallel rank(s), got "
            f"{run.parallel.tensor_parallel_size}; start tensor-parallel runs with torchrun "
            f"(torchrun --nproc-per-node N -m megaspec train --tensor-parallel-size K ...)",
        )
    with seeded_initialization(run.training.seed):
        return run.model.build(groups, sequence_parallel=run.parallel.sequence_parallel)


def check_peft_base(run: RunConfig, *, has_base: bool) -> None:
    """Refuse a run with ``peft`` but no pretrained base: adapters on random weights.

    Raises:
        ConfigError: at ``peft``, saying how to start from a trained model.
    """
    if run.peft is not None and not has_base:
        raise ConfigError(
            "peft",
            "adapters train on pretrained weights, not freshly initialised ones; start from "
            "a trained model (megaspec train --from DIR, or megaspec.finetune.finetune)",
        )


def learning_rate_at(step: int, training: TrainingConfig) -> float:
    """The scheduled rate of update ``step`` (0-based): linear warmup, then cosine decay."""
    if step < training.warmup_steps:
        return training.learning_rate * (step + 1) / training.warmup_steps
    decay_steps = max(1, training.steps - 1 - training.warmup_steps)
    progress = min(1.0, (step - training.warmup_steps) / decay_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    floor = training.learning_rate_floor
    return floor + (training.learning_rate - floor) * cosine


def make_optimizer(model: GPTModel, training: TrainingConfig) -> torch.optim.AdamW:
    """AdamW over :func:`megaspec.optim.parameter_groups`: one group per (lr scale, decay).

    Weights with ``lr_scale: 0`` are frozen and left out.
    """
    groups = parameter_groups(
        model, learning_rate=training.learning_rate, weight_decay=training.weight_decay
    )
    return torch.optim.AdamW(groups, lr=training.learning_rate, betas=ADAM_BETAS)


def set_learning_rate(optimizer: torch.optim.Optimizer, learning_rate: float) -> None:
    """Give every group ``learning_rate`` times its ``lr_scale`` (1 if it has none)."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate * group.get("lr_scale", 1.0)


def load_trained_model(
    directory: PathLike, *, device: str | torch.device = "cpu"
) -> tuple[GPTModel, RunConfig]:
    """Rebuild the model saved by :func:`save_trained_model` in ``directory``; eval mode.

    Raises:
        FileNotFoundError: if ``config.yaml`` or ``model.safetensors`` is missing.
        ValueError: for an adapter run (see :mod:`megaspec.finetune`).
        ConfigError: if ``config.yaml`` is not a valid saved run config.
        RuntimeError: if the weights do not match the model the config describes.
    """
    directory = Path(directory)
    run = load(RunConfig, directory / CONFIG_FILE)
    if run.peft is not None:
        raise ValueError(
            f"{directory}: an adapter run (its {CONFIG_FILE} has a peft: section); load it "
            f"with megaspec.finetune.load_adapter_run, or merge it with megaspec merge"
        )
    model = build_model(run).to(device)
    safetensors.torch.load_model(
        model, str(directory / WEIGHTS_FILE), strict=True, device=str(device)
    )
    model.eval()
    return model, run
