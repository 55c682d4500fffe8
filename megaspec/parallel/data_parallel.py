"""Data parallelism over the ``dp`` dimension, composed with megaspec's tensor parallelism.

The engines are PyTorch's own: FSDP2 (``torch.distributed.fsdp.fully_shard``) shards each
rank's tensor-parallel-local parameters over the ``dp`` sub-mesh, or DDP replicates them over
the data-parallel group. Layers never see the data-parallel group: under FSDP2 they run on
the unsharded local tensors FSDP gathers for each forward and backward, exactly as without
it, and their collectives stay on ``groups.tensor``.
"""

from __future__ import annotations

from typing import Literal, TypeVar, overload

from torch import Tensor, nn
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.nn.parallel import DistributedDataParallel

from megaspec.parallel.groups import ParallelGroups

Engine = Literal["fsdp", "ddp"]
ModuleT = TypeVar("ModuleT", bound=nn.Module)

# Tags megaspec records on parameters as attributes (TP sharding, optimizer settings,
# meta-device init records, adapters). FSDP2 replaces every parameter with a new DTensor
# parameter and drops them; they are copied across so that ``sharding_of``,
# ``parameter_groups`` and checkpoint code keep working after ``data_parallel``.
_TAG_PREFIX = "_megaspec_"


@overload
def data_parallel(
    model: ModuleT, groups: ParallelGroups, *, engine: Literal["fsdp"] = "fsdp"
) -> ModuleT: ...


@overload
def data_parallel(
    model: nn.Module, groups: ParallelGroups, *, engine: Literal["ddp"]
) -> DistributedDataParallel: ...


def data_parallel(
    model: nn.Module, groups: ParallelGroups, *, engine: Engine = "fsdp"
) -> nn.Module:
    """Make ``model`` data parallel over ``groups``' ``dp`` dimension.

    ``"fsdp"`` (the default) applies FSDP2 ``fully_shard`` to every layer of each
    :class:`~megaspec.layers.BlockSequence`, then to the root (the torchtitan pattern: one
    all-gather per layer, overlapped with the previous layer's compute), in place; the
    model's parameters become DTensors sharded over ``dp``, each holding a slice of this
    rank's tensor-parallel shard. ``"ddp"`` wraps the model in ``DistributedDataParallel``
    over ``groups.data`` (parameters broadcast from the group's first rank).

    Either way gradients are averaged over ``dp``, so with each replica taking an equal
    slice of the global batch (:func:`local_batch`) a step matches one process on the whole
    batch. Build the optimizer afterwards (``megaspec.optim.parameter_groups``) and clip with
    :func:`megaspec.parallel.clip_grad_norm`. A model built on the meta device must be
    materialised first (:func:`megaspec.parallel.materialize` draws tensor-parallel shards,
    not FSDP's DTensors).

    Raises:
        ValueError: if ``groups`` has no data group, or ``"fsdp"`` is asked of groups not made
            from a mesh (:meth:`ParallelGroups.from_mesh`, :func:`init_parallel`), or
            ``engine`` is unknown, or a parameter is still on the meta device.
    """
    data = groups.data
    if data is None:
        raise ValueError(
            "data_parallel needs groups with a data-parallel group; build them with "
            "megaspec.parallel.init_parallel or ParallelGroups.from_mesh"
        )
    meta = [name for name, parameter in model.named_parameters() if parameter.is_meta]
    if meta:
        raise ValueError(
            f"{meta[0]} (and {len(meta) - 1} more) is on the meta device; call "
            f"megaspec.parallel.materialize(model) before data_parallel"
        )
    if engine == "ddp":
        return DistributedDataParallel(model, process_group=data)
    if engine != "fsdp":
        raise ValueError(f"engine must be 'fsdp' or 'ddp', got {engine!r}")
    if groups.mesh is None:
        raise ValueError(
            "data_parallel(engine='fsdp') needs groups made from a DeviceMesh "
            "(megaspec.parallel.init_parallel or ParallelGroups.from_mesh)"
        )
    # Imported here: megaspec.layers imports megaspec.parallel, which exports this module.
    from megaspec.layers.block_sequence import BlockSequence

    data_mesh = groups.mesh["dp"]
    tags = _parameter_tags(model)
    sequences = [module for module in model.modules() if isinstance(module, BlockSequence)]
    for layer in [layer for sequence in sequences for layer in sequence.layers]:
        fully_shard(layer, mesh=data_mesh)
    fully_shard(model, mesh=data_mesh)
    _restore_parameter_tags(model, tags)
    return model


def local_batch(batch: Tensor, groups: ParallelGroups) -> Tensor:
    """This data-parallel replica's rows of the global ``batch`` ([global_batch, ...]).

    Replica ``r`` of ``d`` takes rows ``[r * b, (r + 1) * b)`` with ``b = global_batch / d``;
    the ranks of one tensor-parallel group share a replica and so take the same rows.

    Raises:
        ValueError: if the data-parallel size does not divide the batch.
    """
    size, rank = groups.data_size, groups.data_rank
    if batch.shape[0] % size != 0:
        raise ValueError(
            f"the global batch of {batch.shape[0]} rows does not split over {size} "
            f"data-parallel replicas"
        )
    rows = batch.shape[0] // size
    return batch[rank * rows : (rank + 1) * rows]


def is_fully_sharded(model: nn.Module) -> bool:
    """Whether :func:`data_parallel` made ``model`` (or a part of it) FSDP2 modules."""
    return any(isinstance(module, FSDPModule) for module in model.modules())


def reshard_data_parallel(model: nn.Module) -> None:
    """Bring every FSDP2 module of ``model`` back to its sharded state (no-op without FSDP).

    FSDP2 leaves the root's parameters unsharded after a forward without backward (a
    validation loss): plain tensors without megaspec's tags, which gathering or checkpoint
    code would take for another layout. Call it before reading parameters or a state dict.
    """
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def _parameter_tags(model: nn.Module) -> dict[str, dict[str, object]]:
    """megaspec's attributes on each parameter, by parameter name."""
    return {
        name: {key: value for key, value in vars(parameter).items() if key.startswith(_TAG_PREFIX)}
        for name, parameter in model.named_parameters()
    }


def _restore_parameter_tags(model: nn.Module, tags: dict[str, dict[str, object]]) -> None:
    for name, parameter in model.named_parameters():
        for key, value in tags[name].items():
            setattr(parameter, key, value)
