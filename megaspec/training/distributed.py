"""``megaspec train`` under torchrun: the job's groups, decisions every rank agrees on, and
the trained model gathered into one run directory.

Each rank runs the same loop; the data-parallel replicas take their rows of the same global
batch, so the job takes the steps one process takes on that batch.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

from megaspec.config import ConfigError, PathLike, RunConfig, resolve
from megaspec.parallel import (
    ParallelGroups,
    gather_full,
    init_parallel,
    reshard_data_parallel,
    seeded_initialization,
)
from megaspec.parallel.sharding import sharding_of
from megaspec.training.files import save_trained_model

TORCHRUN_VARIABLE = "WORLD_SIZE"
"""Set by torchrun in each process it starts: the job's number of processes."""


def started_by_torchrun() -> bool:
    """Whether this process is one rank of a torchrun job."""
    return TORCHRUN_VARIABLE in os.environ


def training_groups(run: RunConfig) -> ParallelGroups:
    """The groups ``run`` trains over: under torchrun ``world / K`` data-parallel replicas of
    ``K = parallel.tensor_parallel_size`` ranks (:func:`megaspec.parallel.init_parallel`),
    else one process.

    Raises:
        ConfigError: at ``parallel.tensor_parallel_size``, for ``K > 1`` without torchrun, or
            a ``K`` that does not divide torchrun's world size (checked before any process
            group is made, identically on every rank).
    """
    size = run.parallel.tensor_parallel_size
    if not started_by_torchrun():
        if size != 1:
            raise ConfigError(
                "parallel.tensor_parallel_size",
                f"{size} ranks need as many processes; start the job with torchrun, e.g. "
                f"torchrun --standalone --nproc-per-node {size} -m megaspec train "
                f"--tensor-parallel-size {size} ...",
            )
        return ParallelGroups.single()
    world_size = int(os.environ[TORCHRUN_VARIABLE])
    if world_size % size != 0:
        raise ConfigError(
            "parallel.tensor_parallel_size",
            f"{size} does not divide torchrun's {world_size} processes",
        )
    return init_parallel(size)


def is_distributed(groups: ParallelGroups) -> bool:
    """Whether ``groups`` span more than this process."""
    return groups.data_size * groups.tensor_size > 1


def is_main_rank() -> bool:
    """Whether this process writes files and prints: rank 0, or the only process."""
    return not dist.is_initialized() or dist.get_rank() == 0


def agreed_signal(signal_number: int | None, groups: ParallelGroups) -> int | None:
    """The stop signal received on any rank (the highest number if they differ), or ``None``;
    every rank gets the same answer (a collective over ``groups``' processes).

    A signal reaches ranks at different times, or one rank only (``kill`` of one worker):
    whether to stop, and whether to save a checkpoint then, must be decided by every rank
    alike, or the others wait forever in the next collective.
    """
    if not is_distributed(groups):
        return signal_number
    value = torch.tensor(signal_number or 0, dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value) or None


def full_parameters(model: nn.Module, groups: ParallelGroups) -> dict[str, Tensor]:
    """Every parameter of ``model`` in full (every rank takes part; each gets them all).

    FSDP's DTensors are gathered over ``dp``, then tensor-parallel shards over ``tp``.
    """
    reshard_data_parallel(model)  # the root may be unsharded after a validation forward
    full = {}
    for name, parameter in model.named_parameters():
        local = parameter.full_tensor() if isinstance(parameter, DTensor) else parameter
        full[name] = gather_full(local.detach(), sharding_of(parameter), groups)
    return full


def save_gathered_model(
    model: nn.Module,
    run: RunConfig,
    directory: PathLike,
    groups: ParallelGroups,
    *,
    steps_done: int,
    stopped_by: str | None,
) -> None:
    """Save the parallel ``model`` as the run directory one process would write (a
    collective: call it on every rank; rank 0 writes).

    The saved ``config.yaml`` has ``parallel.tensor_parallel_size: 1`` (and no sequence
    parallelism), so :func:`megaspec.training.load_trained_model` loads it in one process.
    """
    parameters = full_parameters(model, groups)
    if not is_main_rank():
        return
    single_run = resolve(
        RunConfig, pretrained=run,
        overrides=["parallel.tensor_parallel_size=1", "parallel.sequence_parallel=false"],
    )  # fmt: skip
    with seeded_initialization(run.training.seed):  # buffers (not parameters) come from here
        single = single_run.model.build(sequence_parallel=False)
    single.load_state_dict(parameters, strict=False)
    missing = set(dict(single.named_parameters())) - set(parameters)
    if missing:
        raise RuntimeError(f"parameters not gathered: {sorted(missing)}")
    save_trained_model(single, single_run, directory, steps_done=steps_done, stopped_by=stopped_by)
