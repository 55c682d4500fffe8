"""megaspec's own weights (``model.safetensors`` of a run directory, as ``megaspec train``
writes it) into a model of any tensor-parallel size.

The file holds full (tensor-parallel size 1) parameters under the model's own names, the
vocabulary padded for size 1. Each rank reads only its shard of each parameter
(:func:`megaspec.parallel.layouts.shard_index`) and its vocabulary rows, re-padded for the
model's tensor-parallel size.
"""

from __future__ import annotations

import torch
from torch import Tensor

from megaspec.checkpoint.errors import CheckpointError, listed_names
from megaspec.checkpoint.sources import TensorSource
from megaspec.models import GPTModel
from megaspec.models.gpt import VOCAB_PADDING_MULTIPLE
from megaspec.parallel import (
    ParallelGroups,
    TensorParallelSharding,
    pad_vocab_rows,
    padded_vocab_size,
    shard_index,
    sharding_of,
    vocab_rows,
)

VOCAB_PARAMETERS = ("embedding.weight", "output_layer.weight")


def load_megaspec_weights(model: GPTModel, source: TensorSource) -> None:
    """Copy ``source``'s full megaspec parameters into ``model``, each rank its shards.

    Raises:
        CheckpointError: naming missing or unexpected tensors, or a tensor whose shape does
            not match the model's full shape (both shapes given).
    """
    parameters = dict(model.named_parameters())
    missing, unexpected = parameters.keys() - source.names(), source.names() - parameters.keys()
    if missing:
        raise CheckpointError(
            f"{source.description}: missing tensors the config needs: {listed_names(missing)}"
        )
    if unexpected:
        raise CheckpointError(
            f"{source.description}: unexpected tensors the config does not describe: "
            f"{listed_names(unexpected)}"
        )
    with torch.no_grad():
        for name, parameter in parameters.items():
            if name in VOCAB_PARAMETERS:
                local = _vocab_shard(model, source, name, parameter)
            else:
                local = _shard(model.groups, source, name, parameter)
            parameter.copy_(local)


def _check_shape(source: TensorSource, name: str, expected: tuple[int, ...]) -> None:
    found = source.shape(name)
    if found != expected:
        raise CheckpointError(
            f"{source.location(name)}: {name}: shape {list(found)} does not match the config "
            f"(expected {list(expected)})"
        )


def _shard(groups: ParallelGroups, source: TensorSource, name: str, parameter: Tensor) -> Tensor:
    sharding = sharding_of(parameter)
    full_shape = _full_shape(tuple(parameter.shape), sharding, groups.tensor_size)
    _check_shape(source, name, full_shape)
    if sharding is None:
        return source.read(name)
    indices = shard_index(full_shape, sharding, groups.tensor_rank, groups.tensor_size)
    pieces = [source.read(name, index) for index in indices]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=sharding.dim)


def _full_shape(
    local: tuple[int, ...], sharding: TensorParallelSharding | None, size: int
) -> tuple[int, ...]:
    if sharding is None:
        return local
    full = list(local)
    full[sharding.dim] *= size
    return tuple(full)


def _vocab_shard(model: GPTModel, source: TensorSource, name: str, parameter: Tensor) -> Tensor:
    # The file's vocabulary is padded for tensor-parallel size 1; the model's for its own size.
    saved_rows = padded_vocab_size(model.vocab_size, ParallelGroups.single(), VOCAB_PADDING_MULTIPLE)
    _check_shape(source, name, (saved_rows, *parameter.shape[1:]))
    rank, size = model.groups.tensor_rank, model.groups.tensor_size
    rows = vocab_rows(model.vocab_size, model.padded_vocab_size, rank, size)
    return pad_vocab_rows(source.read(name, (rows.rows,)), parameter.shape[0])
