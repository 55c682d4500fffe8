"""Tensor parallelism: process groups, autograd collectives, sharded layers and loss.

Activation layout: ``[sequence, batch, hidden]``. Sequence parallelism splits dimension 0,
so its all-gathers and reduce-scatters move one contiguous block per rank with no transpose
(the reason Megatron-LM uses the same layout); attention permutes to ``[batch, heads,
sequence, head_dim]`` only around the attention kernel. Model inputs and outputs
(``input_ids``, logits, losses) stay ``[batch, sequence, ...]`` as users expect.

With no ``torch.distributed`` initialised, use ``ParallelGroups.single()``: every layer runs
as tensor-parallel size 1 and every collective is the identity.
"""

from megaspec.parallel.collectives import (
    copy_to_tensor_parallel_region,
    gather_from_sequence_parallel_region,
    gather_from_tensor_parallel_region,
    reduce_from_tensor_parallel_region,
    reduce_scatter_to_sequence_parallel_region,
    replicated_over_sequence,
    scatter_to_sequence_parallel_region,
    scatter_to_tensor_parallel_region,
)
from megaspec.parallel.cross_entropy import vocab_parallel_cross_entropy
from megaspec.parallel.embedding import (
    VocabParallelEmbedding,
    padded_vocab_rows,
    padded_vocab_size,
    repad_vocab_rows,
)
from megaspec.parallel.groups import ParallelGroups
from megaspec.parallel.initializers import (
    normal_init,
    ones_init,
    padded_rows_init,
    scaled_normal_init,
    uniform_init,
    zeros_init,
)
from megaspec.parallel.linear import (
    ColumnParallelLinear,
    RowParallelLinear,
    column_parallel_matmul,
    sequence_parallel_replicated,
)
from megaspec.parallel.random import seeded_initialization
from megaspec.parallel.sharding import (
    InitMethod,
    TensorParallelSharding,
    full_from_shards,
    gather_full,
    mark_sharded,
    new_sharded_parameter,
    shard_of_full,
    sharding_of,
)

__all__ = [
    "ColumnParallelLinear",
    "InitMethod",
    "ParallelGroups",
    "RowParallelLinear",
    "TensorParallelSharding",
    "VocabParallelEmbedding",
    "column_parallel_matmul",
    "copy_to_tensor_parallel_region",
    "full_from_shards",
    "gather_from_sequence_parallel_region",
    "gather_from_tensor_parallel_region",
    "gather_full",
    "mark_sharded",
    "new_sharded_parameter",
    "normal_init",
    "ones_init",
    "padded_rows_init",
    "padded_vocab_rows",
    "padded_vocab_size",
    "reduce_from_tensor_parallel_region",
    "reduce_scatter_to_sequence_parallel_region",
    "repad_vocab_rows",
    "replicated_over_sequence",
    "scaled_normal_init",
    "scatter_to_sequence_parallel_region",
    "scatter_to_tensor_parallel_region",
    "seeded_initialization",
    "sequence_parallel_replicated",
    "shard_of_full",
    "sharding_of",
    "uniform_init",
    "vocab_parallel_cross_entropy",
    "zeros_init",
]
