"""Vocabulary-parallel embedding: each tensor-parallel rank holds a contiguous slice of rows."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from megaspec.parallel.collectives import (
    reduce_from_tensor_parallel_region,
    reduce_scatter_to_sequence_parallel_region,
)
from megaspec.parallel.groups import ParallelGroups
from megaspec.parallel.sharding import InitMethod, TensorParallelSharding, new_sharded_parameter


def padded_vocab_size(vocab_size: int, groups: ParallelGroups, multiple: int = 128) -> int:
    """``vocab_size`` rounded up to a multiple of ``tensor-parallel size x multiple``.

    Every rank then holds the same number of rows, and each shard's size is a multiple of
    ``multiple`` (fast matrix shapes on GPUs).
    """
    return padded_vocab_rows(vocab_size, groups.tensor_size, multiple)


def padded_vocab_rows(vocab_size: int, tensor_parallel_size: int, multiple: int = 128) -> int:
    """:func:`padded_vocab_size` for a tensor-parallel size given as a number.

    Megatron-LM pads the same way (``make_vocab_size_divisible_by`` x tensor-parallel size).

    Raises:
        ValueError: if ``vocab_size``, ``tensor_parallel_size`` or ``multiple`` is below 1.
    """
    for name, value in (
        ("vocab_size", vocab_size),
        ("tensor_parallel_size", tensor_parallel_size),
        ("multiple", multiple),
    ):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    step = tensor_parallel_size * multiple
    return -(-vocab_size // step) * step


def repad_vocab_rows(weight: Tensor, vocab_size: int, rows: int) -> Tensor:
    """``weight``'s first ``vocab_size`` rows (dimension 0), zero-padded to ``rows`` rows.

    Converts a vocabulary weight (embedding or output layer) between paddings: the padded
    rows it had are dropped (they stand for no token) and the new ones are zeros, as a
    megaspec model initialises them. Returns ``weight`` itself when nothing changes.

    Raises:
        ValueError: if ``weight`` has fewer than ``vocab_size`` rows, or ``rows`` is below
            ``vocab_size``.
    """
    if weight.shape[0] < vocab_size or rows < vocab_size:
        raise ValueError(
            f"cannot repad {weight.shape[0]} vocabulary rows to {rows}: both must be at least "
            f"the vocabulary size {vocab_size}"
        )
    if weight.shape[0] == rows and rows == vocab_size:
        return weight
    padding = weight.new_zeros((rows - vocab_size, *weight.shape[1:]))
    return torch.cat([weight[:vocab_size], padding])


class VocabParallelEmbedding(nn.Module):
    """Token embedding whose rows are split across tensor-parallel ranks.

    Input: token ids of any shape ``[...]``; output ``[..., embedding_dim]``, summed over ranks
    (each rank contributes the rows it owns, zeros elsewhere). With ``sequence_parallel``
    the ids must be ``[s, b]`` and the output is ``[s / tp, b, embedding_dim]``.

    Raises:
        ValueError: if ``num_embeddings`` does not split evenly across ranks.
    """

    def __init__(
        self,
        *,
        num_embeddings: int,
        embedding_dim: int,
        groups: ParallelGroups,
        init_method: InitMethod,
        sequence_parallel: bool = False,
        params_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if num_embeddings % groups.tensor_size != 0:
            raise ValueError(
                f"VocabParallelEmbedding: num_embeddings ({num_embeddings}) is not divisible "
                f"by the tensor-parallel size ({groups.tensor_size})"
            )
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.groups = groups
        self.sequence_parallel = sequence_parallel
        rows_per_rank = num_embeddings // groups.tensor_size
        self.vocab_start = groups.tensor_rank * rows_per_rank
        self.vocab_end = self.vocab_start + rows_per_rank
        self.weight = new_sharded_parameter(
            (num_embeddings, embedding_dim),
            TensorParallelSharding(dim=0),
            init_method,
            groups,
            dtype=params_dtype,
        )

    def forward(self, token_ids: Tensor) -> Tensor:
        if self.groups.tensor_size == 1:
            embedded = F.embedding(token_ids, self.weight)
        else:
            outside = (token_ids < self.vocab_start) | (token_ids >= self.vocab_end)
            local_ids = (token_ids - self.vocab_start).masked_fill(outside, 0)
            embedded = F.embedding(local_ids, self.weight).masked_fill(outside.unsqueeze(-1), 0.0)
        if self.sequence_parallel:
            return reduce_scatter_to_sequence_parallel_region(embedded, self.groups.tensor)
        return reduce_from_tensor_parallel_region(embedded, self.groups.tensor)

    def extra_repr(self) -> str:
        return (
            f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}, "
            f"tp={self.groups.tensor_size}, sequence_parallel={self.sequence_parallel}"
        )
