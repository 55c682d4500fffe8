"""Run by tests/parallel/test_torchrun_data_parallel.py under torchrun: init_parallel from
torchrun's environment, FSDP2 over every rank, 3 clipped steps; rank 0 prints the global
losses and those of one process on the same global batches.

    torchrun --standalone --nproc-per-node 2 -m tests.parallel.torchrun_data_parallel
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from megaspec.optim import parameter_groups
from megaspec.parallel import (
    ParallelGroups,
    data_parallel,
    init_parallel,
    local_batch,
    seeded_initialization,
    train_step,
)
from tests.parallel.test_data_parallel import CONFIG

STEPS = 3


def losses(groups: ParallelGroups, *, parallel: bool) -> list[float]:
    """Global losses of 3 steps on random global batches of 4 sequences."""
    with seeded_initialization(0):
        model = CONFIG.build(groups)
    if parallel:
        model = data_parallel(model, groups)
    optimizer = torch.optim.AdamW(parameter_groups(model, learning_rate=1e-2, weight_decay=0.1))
    generator = torch.Generator().manual_seed(3)
    result = []
    for _ in range(STEPS):
        tokens = local_batch(torch.randint(0, 256, (4, 9), generator=generator), groups)
        step = train_step(model, optimizer, tokens[:, :-1], tokens[:, 1:], groups, max_norm=0.5)
        result.append(float(step.loss))
    return result


def main() -> None:
    groups = init_parallel(1)  # every rank a data-parallel replica
    try:
        parallel = losses(groups, parallel=True)
        if dist.get_rank() == 0:
            single = losses(ParallelGroups.single(), parallel=False)
            print(f"data-parallel size {groups.data_size}: losses {parallel}")
            print(f"one process: losses {single}")
        # Rank 1 waits for rank 0's single-process run: destroying a gloo group while a peer
        # still holds it open aborted rank 1 now and then ("terminate called without an
        # active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
