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
from megaspec.parallel.data_parallel import (
    Engine,
    data_parallel,
    is_fully_sharded,
    local_batch,
    reshard_data_parallel,
)
from megaspec.parallel.draws import UniformDraws
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
from megaspec.parallel.linear_cross_entropy import (
    LinearCrossEntropyLayer,
    default_chunk_tokens,
    linear_cross_entropy,
)
from megaspec.parallel.layouts import (
    GatedFc1Rows,
    QkvRows,
    VocabRows,
    gated_fc1_rows,
    pack_gated_fc1,
    pack_qkv,
    pad_vocab_rows,
    qkv_rows,
    rank_block,
    row_parallel_columns,
    shard_index,
    unpack_gated_fc1,
    unpack_qkv,
    unpad_vocab_rows,
    vocab_rows,
)
from megaspec.parallel.linear import (
    ColumnParallelLinear,
    RowParallelLinear,
    column_parallel_matmul,
    sequence_parallel_replicated,
)
from megaspec.parallel.materialize import materialize
from megaspec.parallel.mesh import init_parallel
from megaspec.parallel.random import seeded_initialization
from megaspec.parallel.sharding import (
    InitMethod,
    ParameterInit,
    TensorParallelSharding,
    full_from_shards,
    gather_full,
    init_tensor_,
    mark_sharded,
    new_sharded_parameter,
    parameter_init,
    shard_of_full,
    sharding_of,
)
from megaspec.parallel.step import StepResult, clip_grad_norm, global_mean_loss, train_step

__all__ = [
    "ColumnParallelLinear",
    "Engine",
    "GatedFc1Rows",
    "InitMethod",
    "LinearCrossEntropyLayer",
    "ParallelGroups",
    "ParameterInit",
    "QkvRows",
    "RowParallelLinear",
    "StepResult",
    "TensorParallelSharding",
    "UniformDraws",
    "VocabParallelEmbedding",
    "VocabRows",
    "clip_grad_norm",
    "column_parallel_matmul",
    "copy_to_tensor_parallel_region",
    "data_parallel",
    "default_chunk_tokens",
    "full_from_shards",
    "gated_fc1_rows",
    "gather_from_sequence_parallel_region",
    "gather_from_tensor_parallel_region",
    "gather_full",
    "global_mean_loss",
    "init_parallel",
    "init_tensor_",
    "is_fully_sharded",
    "linear_cross_entropy",
    "local_batch",
    "reshard_data_parallel",
    "mark_sharded",
    "materialize",
    "new_sharded_parameter",
    "normal_init",
    "ones_init",
    "pack_gated_fc1",
    "pack_qkv",
    "pad_vocab_rows",
    "padded_rows_init",
    "padded_vocab_rows",
    "padded_vocab_size",
    "parameter_init",
    "qkv_rows",
    "rank_block",
    "reduce_from_tensor_parallel_region",
    "reduce_scatter_to_sequence_parallel_region",
    "repad_vocab_rows",
    "replicated_over_sequence",
    "row_parallel_columns",
    "scaled_normal_init",
    "scatter_to_sequence_parallel_region",
    "scatter_to_tensor_parallel_region",
    "seeded_initialization",
    "sequence_parallel_replicated",
    "shard_index",
    "shard_of_full",
    "sharding_of",
    "train_step",
    "uniform_init",
    "unpack_gated_fc1",
    "unpack_qkv",
    "unpad_vocab_rows",
    "vocab_parallel_cross_entropy",
    "vocab_rows",
    "zeros_init",
]
