"""Training checkpoints: model, optimizer, RNG, step and data position, saved sharded with
torch.distributed.checkpoint (DCP) and loadable at another layout (tensor- and data-parallel
sizes, FSDP2 or DDP, one process): an FSDP2 model's state is gathered over ``dp`` by torch's
state-dict API first (see :func:`_state_dict_options`), so what DCP sees depends only on the
tensor-parallel layout, which :mod:`megaspec.checkpoint.resharding` turns into logical tensors.

A checkpoint is a directory ``root/step-00000100/``::

    config.yaml            the run's explicitly set fields
    training_state.json    {"step": ..., "data_position": ...}
    rng/rank-00000.bin     torch's CPU generator state of each rank (raw bytes)
    .metadata, *.distcp    model and optimizer state (DCP, FQN-keyed via get_state_dict)
    manifest.json          format, version, step, layout, sha256 of every file; written last

It is written into ``root/.step-00000100.tmp-<token>`` and renamed into place by rank 0
after a barrier, so a ``step-*`` directory is always complete; a failed save leaves the
previous checkpoints as they were. Loading verifies the manifest before anything is parsed
(:mod:`megaspec.checkpoint.manifest`), and the layout conversion lives in
:mod:`megaspec.checkpoint.resharding`. Nothing is unpickled except DCP's own ``.metadata``,
and only after its hash matched.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.filesystem import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from megaspec.checkpoint.errors import CheckpointError
from megaspec.checkpoint.optimizer_groups import read_optimizer_groups, write_optimizer_groups
from megaspec.checkpoint.manifest import read_manifest, verify_files, write_manifest
from megaspec.checkpoint.pretrained import architecture_values
from megaspec.checkpoint.resharding import copy_padded, for_loading, for_saving, sharded_keys, tensor_mesh
from megaspec.config import ConfigError, PathLike, RunConfig, load, save
from megaspec.parallel import ParallelGroups, is_fully_sharded, reshard_data_parallel

CONFIG_FILE: Final = "config.yaml"
STATE_FILE: Final = "training_state.json"
RNG_DIRECTORY: Final = "rng"
_STEP_PATTERN: Final = re.compile(r"step-(\d{8,})")
_MODEL: Final = "model"
_OPTIMIZER: Final = "optim"


@dataclass(frozen=True)
class TrainingState:
    """What :func:`load_training_checkpoint` restored besides the weights.

    Attributes:
        step: the optimizer steps taken when the checkpoint was saved.
        data_position: where the data stream was (the caller's own count).
        rng_restored: whether torch's CPU generator was restored (only at the saved world size).
        run: the run config saved with the checkpoint.
    """

    step: int
    data_position: int
    rng_restored: bool
    run: RunConfig


def step_directory_name(step: int) -> str:
    """``step-00000100`` for step 100."""
    return f"step-{step:08d}"


def _rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextmanager
def _quiet_single_process() -> Iterator[None]:
    """Silence DCP's warning that it runs on one process: that is what ``no_dist`` asks for."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


def _staging_name(target: Path) -> str:
    """The same hidden sibling name on every rank (rank 0 draws the token)."""
    token = torch.tensor([secrets.randbits(62)])
    if dist.is_initialized():
        dist.broadcast(token, src=0)
    return f".{target.name}.tmp-{int(token):016x}"


def save_training_checkpoint(
    root: PathLike,
    *,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    run: RunConfig,
    data_position: int,
    groups: ParallelGroups,
    keep_last: int | None = None,
) -> Path:
    """Save a checkpoint as ``root/step-<step>`` on every rank (a collective call); returns
    its path. With ``keep_last=K`` only the newest K complete checkpoints remain afterwards.

    A failure to write on any rank (DCP gathers its storage errors to all of them; a rank's
    other files are all-reduced as a flag) raises on every rank, and the staging directory is
    removed; no rank is left waiting for another.

    Raises:
        CheckpointError: if ``root/step-<step>`` exists, ``keep_last`` is below 1, or writing
            failed on any rank (DCP's message holds each failing rank's traceback; otherwise
            the failing rank names its error and the others name the rank).
    """
    if keep_last is not None and keep_last < 1:
        raise CheckpointError(f"keep_last must be at least 1, got {keep_last}")
    target = Path(root) / step_directory_name(step)
    if target.exists():
        raise CheckpointError(f"{target}: a checkpoint of step {step} exists already")
    rank, world = _rank_and_world()
    staging = target.with_name(_staging_name(target))
    if rank == 0:
        staging.mkdir(parents=True)
    _barrier()
    try:
        rng_bytes = torch.get_rng_state().numpy().tobytes()  # before anything could draw
        # Collective: DCP gathers a failure on any rank to every rank, which all raise here.
        optimizer_groups = _write_tensors(staging, model, optimizer, groups)
        failure: Exception | None = None
        try:
            _write_rank_files(staging, rank, rng_bytes)
            if rank == 0:
                _write_run_files(staging, run, step, data_position, optimizer_groups)
        except Exception as error:  # a rank's own files: the others must hear of it
            failure = error
        # Every rank's files are in place before they are hashed, or every rank raises.
        _raise_if_any_rank_failed(failure, target)
        if rank == 0:
            write_manifest(staging, step=step, tensor_parallel_size=groups.tensor_size, world_size=world)
            staging.rename(target)
            if keep_last is not None:
                _prune(target.parent, keep_last)
    except BaseException:
        if rank == 0:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    _barrier()
    return target


def _raise_if_any_rank_failed(failure: Exception | None, target: Path) -> None:
    """A barrier that also tells every rank whether any rank failed to write its files.

    A rank failing alone (its RNG file, rank 0's config) would otherwise leave the others
    waiting at the next barrier until the process group's timeout.

    Raises:
        CheckpointError: on every rank: on a failing rank with its error, on the others
            naming the lowest failing rank.
    """
    rank, world = _rank_and_world()
    failed_rank = rank if failure is not None else world
    if dist.is_initialized():
        lowest = torch.tensor([failed_rank])
        dist.all_reduce(lowest, op=dist.ReduceOp.MIN)
        failed_rank = int(lowest)
    if failure is not None:
        raise CheckpointError(f"{target}: saving failed on rank {rank}: {failure}") from failure
    if failed_rank < world:
        raise CheckpointError(f"{target}: saving failed on rank {failed_rank} (see its error)")


def _write_tensors(
    staging: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
    groups: ParallelGroups,
) -> list[dict[str, Any]] | None:
    """Model and optimizer tensors through DCP; returns the optimizer's param_groups.

    Raises:
        CheckpointError: on every rank, if DCP failed on any.
    """
    state, optimizer_groups = _state_dict(model, optimizer)
    tree = for_saving(state, sharded_keys(model, _MODEL, _OPTIMIZER), tensor_mesh(groups))
    try:
        with _quiet_single_process():
            dcp_save(tree, storage_writer=FileSystemWriter(staging), no_dist=not dist.is_initialized())
    except CheckpointException as error:  # a BaseException: `except Exception` would miss it
        raise CheckpointError(f"{staging}: saving failed: {error}") from error
    return optimizer_groups


def _write_rank_files(staging: Path, rank: int, rng_bytes: bytes) -> None:
    """This rank's RNG state."""
    rng_file = staging / RNG_DIRECTORY / f"rank-{rank:05d}.bin"
    rng_file.parent.mkdir(exist_ok=True)
    rng_file.write_bytes(rng_bytes)


def _write_run_files(
    staging: Path, run: RunConfig, step: int, data_position: int,
    optimizer_groups: list[dict[str, Any]] | None,
) -> None:
    """Rank 0's files: the config, the step and data position, the optimizer's groups."""
    save(run, staging / CONFIG_FILE)
    progress = {"step": step, "data_position": data_position}
    (staging / STATE_FILE).write_text(json.dumps(progress) + "\n")
    if optimizer_groups is not None:
        write_optimizer_groups(staging, optimizer_groups)


def _state_dict(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer | None
) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """The tensors for DCP (model, optimizer states by parameter name) and the optimizer's
    param_groups, kept apart (see :mod:`megaspec.checkpoint.optimizer_groups`).

    Raises:
        CheckpointError: for an optimizer state that is not a tensor.
    """
    options = _state_dict_options(model)
    if optimizer is None:
        return {_MODEL: get_model_state_dict(model, options=options)}, None
    model_state, optimizer_state = get_state_dict(model, optimizer, options=options)
    # get_state_dict's layout: {"state": {fqn: {name: value}}, "param_groups": [{...}]}
    # (typed by torch as a loose union of values, hence the ignores)
    states: dict[str, dict[str, Any]] = optimizer_state["state"]  # type: ignore[assignment]  # see above
    named_groups: list[dict[str, Any]] = optimizer_state["param_groups"]  # type: ignore[assignment]  # see above
    for name, values in states.items():
        for key, value in values.items():
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"optimizer state {name}.{key}: {value!r} is not a tensor")
    return {_MODEL: model_state, _OPTIMIZER: {"state": states}}, named_groups


def _state_dict_options(model: torch.nn.Module, *, strict: bool = False) -> StateDictOptions:
    """How torch's state-dict API presents ``model``: an FSDP2 model's DTensors gathered over
    ``dp`` (``full_state_dict``) into this rank's tensor-parallel shards, which
    :mod:`megaspec.checkpoint.resharding` turns into logical tensors like any other; loading
    such a dict scatters each shard back over ``dp``. Costs one tensor-parallel shard of the
    model and optimizer in memory on every rank while saving or loading.

    The FSDP modules are resharded first: after a forward without backward (a validation
    loss) the root's parameters are plain, untagged tensors.
    """
    reshard_data_parallel(model)
    return StateDictOptions(full_state_dict=is_fully_sharded(model), strict=strict)


def _prune(root: Path, keep_last: int) -> None:
    """Remove all but the newest ``keep_last`` complete checkpoints (each renamed to a hidden
    name first, so no half-deleted ``step-*`` directory is ever seen)."""
    for old in complete_checkpoints(root)[:-keep_last]:
        hidden = old.with_name(f".{old.name}.deleting-{secrets.token_hex(4)}")
        old.rename(hidden)
        shutil.rmtree(hidden, ignore_errors=True)


def complete_checkpoints(root: PathLike) -> list[Path]:
    """The ``step-*`` directories under ``root`` that have a manifest, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        (int(match.group(1)), path)
        for path in root.iterdir()
        if (match := _STEP_PATTERN.fullmatch(path.name)) and (path / "manifest.json").is_file()
    ]
    return [path for _, path in sorted(found)]


def latest_checkpoint(root: PathLike) -> Path | None:
    """The newest complete checkpoint under ``root``, or ``None``."""
    found = complete_checkpoints(root)
    return found[-1] if found else None


def load_training_checkpoint(
    path: PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    run: RunConfig | None = None,
    groups: ParallelGroups,
) -> TrainingState:
    """Load a checkpoint into ``model`` (and ``optimizer``) at the current layout, which may
    differ from the saved one; restore this rank's RNG state when the world size matches.
    A collective call when ``torch.distributed`` is initialised.

    Raises:
        CheckpointError: for an incomplete (no manifest), truncated, corrupt or foreign
            checkpoint (``run.model`` differs from the saved model: the first field is named),
            or one with a file missing.
    """
    directory = Path(path)
    saved_run, manifest_world = read_verified(directory, run, distributed=dist.is_initialized())
    load_weights(directory, model, optimizer, groups, distributed=dist.is_initialized())
    state = json.loads((directory / STATE_FILE).read_text())
    rank, world = _rank_and_world()
    rng_file = directory / RNG_DIRECTORY / f"rank-{rank:05d}.bin"
    restored = world == manifest_world and rng_file.is_file()
    if restored:
        torch.set_rng_state(torch.frombuffer(bytearray(rng_file.read_bytes()), dtype=torch.uint8))
    return TrainingState(int(state["step"]), int(state["data_position"]), restored, saved_run)


def read_verified(directory: Path, run: RunConfig | None, *, distributed: bool) -> tuple[RunConfig, int]:
    """Verify ``directory`` against its manifest and ``run``; the saved run and world size."""
    manifest = read_manifest(directory)
    verify_files(directory, manifest, distributed=distributed)
    try:
        saved_run = load(RunConfig, directory / CONFIG_FILE)
    except ConfigError as error:
        raise CheckpointError(f"{directory / CONFIG_FILE}: {error}") from None
    if run is not None:
        check_same_model(saved_run, run, directory)
    return saved_run, manifest.world_size


def check_same_model(saved: RunConfig, run: RunConfig, directory: Path) -> None:
    """Refuse a checkpoint saved for another architecture, naming the first differing field.

    Raises:
        CheckpointError: ``model.<field>: ...``.
    """
    before, after = architecture_values(saved.model), architecture_values(run.model)
    for field in [*before, *(field for field in after if field not in before)]:
        if before.get(field) != after.get(field):
            raise CheckpointError(
                f"{directory}: saved for another architecture: model.{field} is "
                f"{before.get(field)!r} in the checkpoint, {after.get(field)!r} in the model being loaded"
            )


def load_weights(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
    groups: ParallelGroups, *, distributed: bool,
) -> None:
    """DCP-load model (and optimizer) state from a verified checkpoint, resharding as needed."""
    reader = FileSystemReader(directory)
    saved = reader.read_metadata().state_dict_metadata  # pickle: hash-checked just before
    state, _ = _state_dict(model, optimizer)
    view = for_loading(state, sharded_keys(model, _MODEL, _OPTIMIZER), tensor_mesh(groups), saved, groups)
    with _quiet_single_process():
        dcp_load(view.tree, storage_reader=reader, no_dist=not distributed)
    copy_padded(view.padded)  # the tensors of `state` now hold the checkpoint's values
    options = _state_dict_options(model, strict=True)
    if optimizer is None:
        set_model_state_dict(model, state[_MODEL], options=options)
    else:
        param_groups = read_optimizer_groups(directory)
        optimizer_state = {"state": state[_OPTIMIZER]["state"], "param_groups": param_groups}
        set_state_dict(
            model, optimizer, model_state_dict=state[_MODEL], optim_state_dict=optimizer_state,
            options=options,
        )  # fmt: skip
