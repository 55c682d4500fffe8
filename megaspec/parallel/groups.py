"""Process groups, carried explicitly instead of living in global state."""

from __future__ import annotations

import weakref
from typing import Any

import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh

_GroupReference = Any  # weakref.ref[dist.ProcessGroup] | None; ProcessGroup is a pybind class


def weak_group(group: dist.ProcessGroup | None) -> _GroupReference:
    """A weak reference to ``group`` (``None`` stays ``None``)."""
    return None if group is None else weakref.ref(group)


def strong_group(reference: _GroupReference, what: str) -> dist.ProcessGroup | None:
    """The group behind :func:`weak_group`'s ``reference``.

    Raises:
        RuntimeError: if the group was destroyed (``torch.distributed.destroy_process_group``).
    """
    if reference is None:
        return None
    group: dist.ProcessGroup | None = reference()
    if group is None:
        raise RuntimeError(
            f"the {what} process group no longer exists (torch.distributed.destroy_process_group "
            f"was called); build the model again for a live group"
        )
    return group


class ParallelGroups:
    """The process groups a model is built for (immutable).

    ``tensor`` is the tensor-parallel group; ``None`` means tensor-parallel size 1 (a single
    process, or data parallelism only). ``data`` is the data-parallel group, used by the
    training loop, never by layers. Build one with :meth:`single` (no ``torch.distributed``
    needed, e.g. in a notebook), :meth:`tensor_parallel_over_world`, :meth:`from_mesh` (a
    ``dp`` x ``tp`` :class:`~torch.distributed.device_mesh.DeviceMesh`) or
    :func:`megaspec.parallel.init_parallel` (under torchrun).

    The groups are held by weak references, so a model never keeps a process group alive:
    ``torch.distributed.destroy_process_group()`` really tears it down, and the process
    exits cleanly (a process group that outlives it until interpreter exit makes gloo abort
    with ``terminate called without an active exception``). Using a model after its group
    was destroyed raises ``RuntimeError``.
    """

    __slots__ = ("_tensor", "_data", "_mesh")
    _tensor: _GroupReference
    _data: _GroupReference
    _mesh: DeviceMesh | None

    def __init__(
        self,
        tensor: dist.ProcessGroup | None = None,
        data: dist.ProcessGroup | None = None,
        *,
        mesh: DeviceMesh | None = None,
    ) -> None:
        object.__setattr__(self, "_tensor", weak_group(tensor))
        object.__setattr__(self, "_data", weak_group(data))
        # A DeviceMesh records its groups by name, not by reference, so holding it strongly
        # keeps no process group alive.
        object.__setattr__(self, "_mesh", mesh)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"ParallelGroups is immutable; cannot set {name!r}")

    # A copied model (copy.deepcopy(model), e.g. a float32 reference or an EMA copy) talks to
    # the same processes: process groups cannot be copied, and this value is immutable.
    def __copy__(self) -> ParallelGroups:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> ParallelGroups:
        return self

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

    @staticmethod
    def from_mesh(mesh: DeviceMesh) -> ParallelGroups:
        """Groups of a two-dimensional mesh named ``("dp", "tp")``, ``tp`` innermost.

        ``tp`` innermost makes each tensor-parallel group consecutive ranks (one node's GPUs,
        where the per-layer all-reduces are cheapest). A ``tp`` size of 1 gives
        ``tensor=None``, so layers skip their collectives; ``data`` is always the ``dp``
        group (size 1 included), for :func:`megaspec.parallel.data_parallel`.

        Raises:
            ValueError: if the mesh is not two-dimensional with dimensions ``("dp", "tp")``.
        """
        if mesh.mesh_dim_names != ("dp", "tp"):
            raise ValueError(
                f"ParallelGroups.from_mesh needs a mesh with dimensions ('dp', 'tp') (tp "
                f"innermost), got {mesh.mesh_dim_names} of shape {tuple(mesh.shape)}"
            )
        tensor_mesh = mesh["tp"]
        tensor = None if tensor_mesh.size() == 1 else tensor_mesh.get_group()
        return ParallelGroups(tensor=tensor, data=mesh["dp"].get_group(), mesh=mesh)

    @staticmethod
    def layout_only(tensor_size: int, tensor_rank: int = 0) -> ParallelGroups:
        """Groups that describe rank ``tensor_rank`` of a tensor-parallel size without any
        process: for building on the meta device to see shard shapes (``megaspec inspect``).

        A model built with them cannot run: its first collective raises ``RuntimeError``.

        Raises:
            ValueError: if the rank is not in ``[0, tensor_size)``.
        """
        if not 0 <= tensor_rank < tensor_size:
            raise ValueError(f"tensor_rank must lie in [0, {tensor_size}), got {tensor_rank}")
        return _LayoutOnlyGroups(tensor_size, tensor_rank)

    @property
    def tensor(self) -> dist.ProcessGroup | None:
        """The tensor-parallel group (``None``: size 1)."""
        return strong_group(self._tensor, "tensor-parallel")

    @property
    def data(self) -> dist.ProcessGroup | None:
        """The data-parallel group (``None``: no data parallelism)."""
        return strong_group(self._data, "data-parallel")

    @property
    def mesh(self) -> DeviceMesh | None:
        """The ``("dp", "tp")`` mesh these groups came from (``None``: not from a mesh)."""
        return self._mesh

    @property
    def data_size(self) -> int:
        """Number of data-parallel replicas (1 without a data group)."""
        group = self.data
        return 1 if group is None else dist.get_world_size(group)

    @property
    def data_rank(self) -> int:
        """This process's rank among the data-parallel replicas."""
        group = self.data
        return 0 if group is None else dist.get_rank(group)

    @property
    def tensor_size(self) -> int:
        """Number of ranks that share each tensor-parallel layer."""
        group = self.tensor
        return 1 if group is None else dist.get_world_size(group)

    @property
    def tensor_rank(self) -> int:
        """This process's rank inside the tensor-parallel group."""
        group = self.tensor
        return 0 if group is None else dist.get_rank(group)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ParallelGroups):
            return NotImplemented
        return (self._tensor, self._data, id(self._mesh)) == (
            other._tensor,
            other._data,
            id(other._mesh),
        )

    def __hash__(self) -> int:
        return hash((self._tensor, self._data, id(self._mesh)))

    def __repr__(self) -> str:
        if self._tensor is None and self._data is None:
            return "ParallelGroups.single()"
        if self._data is not None:
            return f"ParallelGroups(data size {self.data_size}, tensor size {self.tensor_size})"
        return f"ParallelGroups(tensor size {self.tensor_size}, data unset)"


class _LayoutOnlyGroups(ParallelGroups):
    """A tensor-parallel size and rank with no process group behind them."""

    __slots__ = ("_size", "_rank")
    _size: int
    _rank: int

    def __init__(self, tensor_size: int, tensor_rank: int) -> None:
        super().__init__()
        object.__setattr__(self, "_size", tensor_size)
        object.__setattr__(self, "_rank", tensor_rank)

    @property
    def tensor(self) -> dist.ProcessGroup | None:
        if self._size == 1:
            return None
        raise RuntimeError(
            f"ParallelGroups.layout_only({self._size}) describes a layout; it has no process group "
            f"to communicate over"
        )

    @property
    def tensor_size(self) -> int:
        return self._size

    @property
    def tensor_rank(self) -> int:
        return self._rank

    def __repr__(self) -> str:
        return f"ParallelGroups.layout_only({self._size}, {self._rank})"
