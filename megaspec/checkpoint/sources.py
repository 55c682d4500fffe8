"""Named tensors read in part: a state dict in memory, or safetensors files on disk.

A tensor-parallel rank reads only the rows or columns it owns. From safetensors files that
means ``safe_open(...).get_slice(name)[index]``: the file is memory-mapped and only the
requested bytes are copied, so no rank ever holds a full tensor it does not own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol

import safetensors
from torch import Tensor

from megaspec.checkpoint.errors import CheckpointError

SINGLE_FILE: Final = "model.safetensors"
INDEX_FILE: Final = "model.safetensors.index.json"

# safetensors' stub leaves safe_open and its methods untyped; one typed alias, not an ignore
# at every call.
_safe_open: Callable[..., Any] = safetensors.safe_open

TensorIndex = tuple[slice, ...]
"""Which part of a tensor to read: one slice per leading dimension (``()``: all of it)."""


class TensorSource(Protocol):
    """Named tensors that can be read in part."""

    @property
    def description(self) -> str:
        """What the tensors are, for messages (a directory, a model's state dict)."""
        ...

    @property
    def bytes_read(self) -> int:
        """Bytes of tensor data read so far."""
        ...

    def names(self) -> frozenset[str]:
        """Every tensor's name."""
        ...

    def location(self, name: str) -> str:
        """Where tensor ``name`` lives, for messages (its file)."""
        ...

    def shape(self, name: str) -> tuple[int, ...]:
        """Tensor ``name``'s full shape, without reading it."""
        ...

    def read(self, name: str, index: TensorIndex = ()) -> Tensor:
        """Tensor ``name``, or the part ``index`` selects."""
        ...


class StateDictSource:
    """Tensors held in memory (a model's ``state_dict()``); reads are views."""

    def __init__(self, tensors: Mapping[str, Tensor], description: str) -> None:
        self._tensors = dict(tensors)
        self._description = description
        self._bytes_read = 0

    @property
    def description(self) -> str:
        return self._description

    @property
    def bytes_read(self) -> int:
        return self._bytes_read

    def names(self) -> frozenset[str]:
        return frozenset(self._tensors)

    def location(self, name: str) -> str:
        return self._description

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._tensors[name].shape)

    def read(self, name: str, index: TensorIndex = ()) -> Tensor:
        tensor = self._tensors[name][index].detach()
        self._bytes_read += tensor.numel() * tensor.element_size()
        return tensor


class SafetensorsSource:
    """The tensors of a directory's ``model.safetensors``, or of the shards its
    ``model.safetensors.index.json`` names; use as a context manager (files stay open,
    memory-mapped, until it exits).

    Raises:
        CheckpointError: on entry, if neither file exists, the index is malformed, names a
            shard that is missing, or places a tensor in a shard that does not hold it.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._files: dict[str, str] = {}  # tensor name -> file name
        self._handles: dict[str, Any] = {}  # file name -> open safe_open handle
        self._stack = ExitStack()
        self._bytes_read = 0

    def __enter__(self) -> SafetensorsSource:
        try:
            self._files = _weight_map(self.directory)
            for file in sorted(set(self._files.values())):
                path = str(self.directory / file)
                handle = self._stack.enter_context(_safe_open(path, framework="pt"))
                self._handles[file] = handle
                held = set(handle.keys())
                for name, placed in self._files.items():
                    if placed == file and name not in held:
                        raise CheckpointError(
                            f"{file}: does not hold {name}, which {INDEX_FILE} places there"
                        )
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stack.close()

    @property
    def description(self) -> str:
        return str(self.directory)

    @property
    def bytes_read(self) -> int:
        return self._bytes_read

    def names(self) -> frozenset[str]:
        return frozenset(self._files)

    def location(self, name: str) -> str:
        return self._files[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handles[self._files[name]].get_slice(name).get_shape())

    def read(self, name: str, index: TensorIndex = ()) -> Tensor:
        part = self._handles[self._files[name]].get_slice(name)
        tensor = part[index] if index else part[:]
        assert isinstance(tensor, Tensor)
        self._bytes_read += tensor.numel() * tensor.element_size()
        return tensor


def _weight_map(directory: Path) -> dict[str, str]:
    """Tensor name -> file name, from the index or the single file."""
    index = directory / INDEX_FILE
    if index.is_file():
        data = json.loads(index.read_text())
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in weight_map.items()
        ):
            raise CheckpointError(
                f"{INDEX_FILE}: weight_map: expected a mapping of tensor names to files"
            )
        for file in sorted(set(weight_map.values())):
            if not (directory / file).is_file():
                raise CheckpointError(
                    f"{INDEX_FILE}: names shard {file!r}, which is missing from {directory}"
                )
        return dict(weight_map)
    single = directory / SINGLE_FILE
    if single.is_file():
        with _safe_open(str(single), framework="pt") as handle:
            return {name: SINGLE_FILE for name in handle.keys()}
    raise CheckpointError(
        f"{directory}: no {SINGLE_FILE} or {INDEX_FILE} (only safetensors checkpoints are supported)"
    )
