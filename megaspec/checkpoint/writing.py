"""Writing a checkpoint directory atomically, its weights split into size-limited files.

The files are written into a hidden staging directory next to the target, which is renamed
into place only when everything is written: a reader never sees half a checkpoint, and a
failed export leaves nothing behind. An existing non-empty directory is replaced only when
asked (``overwrite=True``).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from megaspec.checkpoint.errors import CheckpointError

DEFAULT_MAX_SHARD_BYTES: Final = 5 * 1024**3
"""Weights above 5 GiB are split into several files (as ``save_pretrained`` does by default)."""


def check_target(target: Path, *, overwrite: bool) -> None:
    """Refuse to write into ``target`` when it is a file, or a non-empty directory and
    ``overwrite`` is false.

    Raises:
        CheckpointError: naming ``target``.
    """
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"{target}: exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise CheckpointError(
            f"{target}: directory exists and is not empty; pass overwrite=True to replace it"
        )


class StagedDirectory:
    """A hidden directory beside ``target`` to write into, then :meth:`commit` (renamed to
    ``target``, replacing a previous one) or :meth:`discard`.

    Raises:
        CheckpointError: on creation, as :func:`check_target`.
    """

    def __init__(self, target: Path, *, overwrite: bool) -> None:
        check_target(target, overwrite=overwrite)
        self.target = target
        target.parent.mkdir(parents=True, exist_ok=True)
        self.path = target.with_name(f".{target.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
        self.path.mkdir()

    def commit(self) -> None:
        """Move the written directory to ``target``: one rename (after moving an existing
        non-empty ``target`` aside, deleted once the new one is in place)."""
        previous = None
        if self.target.is_dir() and any(self.target.iterdir()):
            previous = self.target.with_name(f".{self.target.name}.previous-{secrets.token_hex(4)}")
            os.rename(self.target, previous)
        os.replace(self.path, self.target)  # replaces an empty directory, too
        if previous is not None:
            shutil.rmtree(previous)

    def discard(self) -> None:
        """Delete the staging directory and what was written into it."""
        shutil.rmtree(self.path, ignore_errors=True)


def plan_shards(sizes: Sequence[int], max_bytes: int) -> list[list[int]]:
    """Indices of ``sizes`` (bytes of consecutive items) grouped into files of at most
    ``max_bytes``, in order; an item larger than ``max_bytes`` gets a file of its own.

    Raises:
        ValueError: if ``max_bytes`` is not positive.
    """
    if max_bytes <= 0:
        raise ValueError(f"max_shard_bytes must be positive, got {max_bytes}")
    shards: list[list[int]] = [[]]
    used = 0
    for index, size in enumerate(sizes):
        if shards[-1] and used + size > max_bytes:
            shards.append([])
            used = 0
        shards[-1].append(index)
        used += size
    return shards


def shard_file_names(count: int, single: str = "model.safetensors") -> list[str]:
    """``[single]`` for one file, else ``model-00001-of-0000N.safetensors``, ..."""
    if count == 1:
        return [single]
    return [f"model-{number:05d}-of-{count:05d}.safetensors" for number in range(1, count + 1)]
