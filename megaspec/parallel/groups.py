"""Process groups, carried explicitly instead of living in global state."""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist


@dataclass(frozen=True)
class ParallelGroups:
    """The process groups a model is built for.

    ``tensor`` is the tensor-parallel group; ``None`` means tensor-parallel size 1 (a single
    process, or data parallelism only). ``data`` is the data-parallel group, used by the
    training loop, never by layers. Build one with :meth:`single` (no ``torch.distributed``
    needed, e.g. in a notebook) or :meth:`tensor_parallel_over_world`.
    """

    tensor: dist.ProcessGroup | None = None
    data: dist.ProcessGroup | None = None

    @staticmethod
    def single() -> ParallelGroups:
        """Groups for one process: tensor-parallel size 1, no data parallelism."""
        return ParallelGroups()

    @staticmethod
    def tensor_parallel_over_world() -> ParallelGroups:
        """Every process of the initialised default group forms one tensor-parallel group.

        Raises:
            RuntimeError: if ``torch.distributed`` is not initialised.
        """
        if not dist.is_initialized():
            raise RuntimeError(
                "ParallelGroups.tensor_parallel_over_world() needs torch.distributed to be "
                "initialised (torch.distributed.init_process_group); use ParallelGroups.single() "
                "for one process"
            )
        return ParallelGroups(tensor=dist.group.WORLD)

    @property
    def tensor_size(self) -> int:
        """Number of ranks that share each tensor-parallel layer."""
        return 1 if self.tensor is None else dist.get_world_size(self.tensor)

    @property
    def tensor_rank(self) -> int:
        """This process's rank inside the tensor-parallel group."""
        return 0 if self.tensor is None else dist.get_rank(self.tensor)
