"""Run a function on N spawned gloo processes (real torch.distributed, no mocks)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(
    rank: int,
    world_size: int,
    backend: str,
    store_path: str,
    function: Callable[..., Any],
    args: tuple[Any, ...],
    result_dir: str,
) -> None:
    torch.set_num_threads(1)
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(
        backend, init_method=f"file://{store_path}", rank=rank, world_size=world_size
    )
    try:
        result = function(*args)
        torch.save(result, os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_on_ranks(
    world_size: int, function: Callable[..., Any], *args: Any, backend: str = "gloo"
) -> list[Any]:
    """Call ``function(*args)`` on ``world_size`` ranks; return each rank's result.

    ``function`` must be importable (a module-level function): processes are spawned.
    With ``backend="nccl"`` rank r uses GPU r.
    """
    with tempfile.TemporaryDirectory() as directory:
        store_path = os.path.join(directory, "store")
        mp.spawn(
            _worker,
            args=(world_size, backend, store_path, function, args, directory),
            nprocs=world_size,
            join=True,
        )
        return [
            torch.load(os.path.join(directory, f"rank{rank}.pt"), weights_only=False)
            for rank in range(world_size)
        ]
