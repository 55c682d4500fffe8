"""The parallel layout of a torchrun job: a ``("dp", "tp")`` device mesh and its groups."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from megaspec.parallel.groups import ParallelGroups


def init_parallel(tensor_parallel_size: int = 1, *, backend: str | None = None) -> ParallelGroups:
    """Groups for a job started by torchrun: ``world // K`` data-parallel replicas of
    ``K = tensor_parallel_size`` tensor-parallel ranks each.

    Initialises the default process group from torchrun's environment (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ...) unless it already is, then builds the mesh
    ``(world // K, K)`` named ``("dp", "tp")``: ranks ``[0, K)`` form the first
    tensor-parallel group, so a tensor-parallel group stays within a node when ``K``
    divides the GPUs per node. ``backend`` defaults to NCCL with CUDA and gloo without; with
    NCCL each process takes the GPU ``LOCAL_RANK``.

    The layout is checked before any process group is created, so a bad size fails at once
    on every rank. Check a model against it before building with
    ``ModelConfig.check_tensor_parallel(groups.tensor_size)`` (``ModelConfig.build`` does).

    Raises:
        ValueError: if ``tensor_parallel_size`` is not positive or does not divide the world
            size.
        RuntimeError: if ``torch.distributed`` is not initialised and no ``WORLD_SIZE`` is set
            (not started by torchrun).
    """
    world_size = _world_size()
    if tensor_parallel_size < 1 or world_size % tensor_parallel_size != 0:
        raise ValueError(
            f"tensor_parallel_size {tensor_parallel_size} does not divide the world size "
            f"{world_size}"
        )
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    device_type = "cuda" if backend == "nccl" else "cpu"
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    mesh = init_device_mesh(
        device_type,
        (world_size // tensor_parallel_size, tensor_parallel_size),
        mesh_dim_names=("dp", "tp"),
    )
    return ParallelGroups.from_mesh(mesh)


def _world_size() -> int:
    """The job's world size, from the default group or else torchrun's environment."""
    if dist.is_initialized():
        return dist.get_world_size()
    if "WORLD_SIZE" not in os.environ:
        raise RuntimeError(
            "init_parallel needs torch.distributed initialised or torchrun's environment "
            "(WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT); start the script with torchrun, "
            "or use ParallelGroups.single() for one process"
        )
    return int(os.environ["WORLD_SIZE"])
