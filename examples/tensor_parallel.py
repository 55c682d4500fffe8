"""Example: one training step of a model built from a config, tensor-parallel under torchrun.

Every process of the job is one tensor-parallel rank. Run on CPU with two processes:

    torchrun --nproc-per-node 2 -m examples.tensor_parallel

(on GPUs: ``init_process_group("nccl")`` and ``torch.cuda.set_device(local rank)``). Rank 0
also builds the same model in one process and prints both losses: they agree to float
rounding, because every rank draws the full weights from the same seed and keeps its shard.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from megaspec.config import RunConfig, resolve
from megaspec.parallel import ParallelGroups, seeded_initialization

MODEL = {
    "hidden_size": 128,
    "decoder": {
        "type": "repeat",
        "num_blocks": 2,
        "block": {"mixer": {"type": "attention", "num_heads": 4, "num_query_groups": 2}},
    },
}


def main() -> None:
    dist.init_process_group("gloo")
    try:
        groups = ParallelGroups.tensor_parallel_over_world()  # all ranks share every layer
        # Checks divisibility (heads, KV groups, MLP width, sequence) before anything is built.
        run = resolve(
            RunConfig,
            overrides=[
                {"model": MODEL},
                f"parallel.tensor_parallel_size={groups.tensor_size}",
                "parallel.sequence_parallel=true",
            ],
        )
        with seeded_initialization(run.training.seed):
            model = run.model.build(groups, sequence_parallel=run.parallel.sequence_parallel)
        # Every rank of a tensor-parallel group gets the same batch.
        generator = torch.Generator().manual_seed(1)
        tokens = torch.randint(0, run.model.vocab_size, (4, 65), generator=generator)
        loss = model(tokens[:, :-1], labels=tokens[:, 1:]).mean()
        loss.backward()
        if dist.get_rank() == 0:
            with seeded_initialization(run.training.seed):
                single = run.model.build()  # the same model in one process
            reference = single(tokens[:, :-1], labels=tokens[:, 1:]).mean()
            print(f"tensor-parallel size {groups.tensor_size}: loss {loss.item():.6f}; "
                  f"one process: loss {reference.item():.6f}")  # fmt: skip
        # Rank 1 waits for rank 0's one-process run: a rank that destroys its gloo group while
        # a peer still holds it open can abort at exit.
        dist.barrier()
    finally:
        dist.destroy_process_group()  # tear the group down before exit


if __name__ == "__main__":
    main()
