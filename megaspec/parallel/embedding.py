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
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    step = groups.tensor_size * multiple
    return -(-vocab_size // step) * step


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
