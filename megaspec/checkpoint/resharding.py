"""How megaspec's tensor-parallel shards are presented to torch.distributed.checkpoint (DCP),
so that DCP's own resharding loads a checkpoint at another tensor-parallel size.

A sharded parameter (and every optimizer state of the parameter's shape, e.g. AdamW's
``exp_avg``) becomes a ``DTensor`` over a 1-D ``tp`` device mesh built from the tensor group:

* ``parts == 1``: ``Shard(dim)`` of the full tensor.
* ``parts > 1`` (``[gate; up]`` fc1): the local shard viewed as ``[.., parts, rows / tp, ..]``,
  ``Shard(dim + 1)`` of the logical ``[.., parts, rows, ..]`` tensor, so a key means the
  same values at every size.

At tensor-parallel size 1 the same logical tensor is a plain tensor (same key, same shape).
Replicated tensors stay plain: DCP writes one copy. The DTensor's local tensor is a view of
the parameter, so ``dcp.load`` writes straight into the model.

Data parallelism does not change the logical tensors. Under DDP every replica holds the
same shards. Under FSDP2 a parameter is a DTensor over ``dp`` whose global shape is this rank's
tensor-parallel shard; the state dict handed here is gathered over ``dp`` first (torch's
``StateDictOptions(full_state_dict=True)``, see :mod:`megaspec.checkpoint.training_state`),
so it is the same as DDP's, and the ``tp`` DTensors of the replicas describe the same chunks
(DCP writes each once). An FSDP DTensor reaching these functions is refused: its chunks would
name offsets into the shard, not into the logical tensor, and would not reshard.

Vocabulary-padded tensors (the embedding and the output layer, padded to a multiple of
``128 x tp`` rows) have a different full shape at each size. When the saved shape differs
from the current one only along the sharded dimension, that tensor is read in full on every
rank and this rank's rows are copied; rows past the saved size (padding) keep their values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Shard

from megaspec.checkpoint.errors import CheckpointError
from megaspec.parallel import ParallelGroups
from megaspec.parallel.sharding import TensorParallelSharding, sharding_of

Tree = Any  # nested dicts and lists of tensors and plain values (a state dict)


def tensor_mesh(groups: ParallelGroups) -> DeviceMesh | None:
    """The 1-D ``tp`` mesh over the tensor group, or ``None`` at tensor-parallel size 1.

    Groups made from a ``(dp, tp)`` mesh (torchrun jobs) give their own ``tp`` sub-mesh: one
    per data-parallel replica, each describing the same logical tensors, so DCP writes each
    chunk once (it drops the replicas' duplicate writes).
    """
    if groups.tensor is None or groups.tensor_size == 1:
        return None
    if groups.mesh is not None:
        return groups.mesh["tp"]
    return DeviceMesh.from_group(groups.tensor, "cpu", mesh_dim_names=("tp",))


def logical_view(tensor: Tensor, sharding: TensorParallelSharding | None, mesh: DeviceMesh | None) -> Tensor:
    """``tensor`` (a local shard) as DCP should see it (see the module docstring)."""
    if sharding is None:
        return tensor
    local = tensor.detach()
    dim = sharding.dim
    if sharding.parts > 1:  # [.., parts * rows/tp, ..] -> [.., parts, rows/tp, ..]
        rows = local.shape[dim] // sharding.parts
        shape = [*local.shape[:dim], sharding.parts, rows, *local.shape[dim + 1 :]]
        local = local.view(shape)
        dim += 1
    if mesh is None:
        return local
    return DTensor.from_local(local, mesh, [Shard(dim)], run_check=False)


@dataclass(frozen=True)
class Sharded:
    """A sharded parameter's layout and local shape, by flattened DCP key."""

    sharding: TensorParallelSharding
    shape: torch.Size


def sharded_keys(model: torch.nn.Module, model_key: str, optimizer_key: str) -> dict[str, Sharded]:
    """Flattened DCP key -> layout, for every sharded parameter and its optimizer states.

    An optimizer state (``optim.state.<fqn>.<name>``) shares the parameter's layout only when
    it has the parameter's shape (``exp_avg`` does, AdamW's scalar ``step`` does not).
    """
    found: dict[str, Sharded] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        sharding = sharding_of(parameter)
        if sharding is not None:
            found[f"{model_key}.{name}"] = Sharded(sharding, parameter.shape)
            found[f"{optimizer_key}.state.{name}"] = Sharded(sharding, parameter.shape)
    return found


def _sharding_for(key: str, tensor: Tensor, sharded: Mapping[str, Sharded]) -> TensorParallelSharding | None:
    entry = sharded.get(key) or sharded.get(key.rsplit(".", 1)[0])  # optim.state.<fqn>.exp_avg
    return entry.sharding if entry is not None and entry.shape == tensor.shape else None


def map_tree(tree: Tree, function: Callable[[str, Any], Any], path: str = "") -> Tree:
    """A copy of ``tree`` with every leaf replaced by ``function(dotted key, leaf)``."""
    if isinstance(tree, Mapping):
        return {
            key: map_tree(value, function, f"{path}.{key}" if path else str(key))
            for key, value in tree.items()
        }
    if isinstance(tree, list):
        return [map_tree(value, function, f"{path}.{index}") for index, value in enumerate(tree)]
    return function(path, tree)


@dataclass
class PaddedRead:
    """A tensor read in full (``saved``) whose rows go into this rank's shard (``target``)."""

    saved: Tensor
    target: Tensor
    dim: int
    rank: int


@dataclass
class DcpView:
    """A state dict converted for DCP, with what to copy back after loading."""

    tree: Tree
    padded: list[PaddedRead]


def _refuse_dtensor(key: str, leaf: Tensor) -> None:
    if isinstance(leaf, DTensor):
        raise CheckpointError(
            f"{key}: a DTensor (FSDP's shard over dp); gather the state dict over dp first "
            f"(StateDictOptions(full_state_dict=True)) so it holds tensor-parallel shards"
        )


def for_saving(tree: Tree, sharded: Mapping[str, Sharded], mesh: DeviceMesh | None) -> Tree:
    """``tree`` with every sharded tensor replaced by its :func:`logical_view`.

    Raises:
        CheckpointError: for a DTensor leaf (see the module docstring).
    """
    def convert(key: str, leaf: Any) -> Any:
        if not isinstance(leaf, Tensor):
            return leaf
        _refuse_dtensor(key, leaf)
        return logical_view(leaf, _sharding_for(key, leaf, sharded), mesh)

    return map_tree(tree, convert)


def for_loading(
    tree: Tree,
    sharded: Mapping[str, Sharded],
    mesh: DeviceMesh | None,
    saved: Mapping[str, Any],
    groups: ParallelGroups,
) -> DcpView:
    """``tree`` prepared for ``dcp.load`` against the checkpoint's metadata ``saved``.

    Raises:
        CheckpointError: for a tensor the checkpoint lacks, or one whose shape differs in
            another way than vocabulary padding (a checkpoint of another architecture), or a
            DTensor leaf (see the module docstring).
    """
    padded: list[PaddedRead] = []

    def convert(key: str, leaf: Any) -> Any:
        if not isinstance(leaf, Tensor):
            return leaf
        _refuse_dtensor(key, leaf)
        sharding = _sharding_for(key, leaf, sharded)
        view = logical_view(leaf, sharding, mesh)
        entry = saved.get(key)
        if not isinstance(entry, TensorStorageMetadata):
            raise CheckpointError(f"{key}: not in the checkpoint (saved for another architecture?)")
        if entry.size == view.shape:
            return view
        padded_only = sharding is not None and _differs_only_at(entry.size, view.shape, sharding.dim)
        if sharding is not None and sharding.parts == 1 and padded_only:
            full = torch.empty(entry.size, dtype=leaf.dtype)
            padded.append(PaddedRead(full, leaf.detach(), sharding.dim, groups.tensor_rank))
            return full
        raise CheckpointError(
            f"{key}: shape {list(entry.size)} in the checkpoint, {list(view.shape)} in the model "
            f"(saved for another architecture?)"
        )

    return DcpView(map_tree(tree, convert), padded)


def copy_padded(reads: list[PaddedRead]) -> None:
    """Copy each rank's rows of the tensors read in full into its shards."""
    with torch.no_grad():
        for read in reads:
            rows = read.target.shape[read.dim]
            start = read.rank * rows
            stop = min(start + rows, read.saved.shape[read.dim])
            if stop > start:
                block = read.saved.narrow(read.dim, start, stop - start)
                read.target.narrow(read.dim, 0, stop - start).copy_(block)


def _differs_only_at(saved: torch.Size, current: torch.Size, dim: int) -> bool:
    if len(saved) != len(current):
        return False
    return all(a == b for index, (a, b) in enumerate(zip(saved, current)) if index != dim)
