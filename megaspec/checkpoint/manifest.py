"""The manifest of a training checkpoint: what was saved, at which layout, and a hash of
every file, written last so that its presence means the save finished.

Verification runs before anything in the directory is parsed. It matters beyond corruption:
torch.distributed.checkpoint's ``FileSystemReader`` reads the ``.metadata`` file with
``pickle.load`` (torch 2.13, ``filesystem.py``), so checking its sha256 against the manifest
first means only a file megaspec itself wrote is ever unpickled. (The manifest does not
defend against someone who rewrites both: it is a guard against damage and foreign files,
not a signature.)

Cost: hashing reads every byte once more than loading does (sha256 runs at roughly
1 GB/s a core). On several ranks the files are split between them (rank i hashes every
world-size-th file) and the verdict is all-reduced, so the extra reading is spread, not
multiplied; every rank still hashes the small ``.metadata`` itself before unpickling it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch
import torch.distributed as dist

from megaspec.checkpoint.errors import CheckpointError

MANIFEST_FILE: Final = "manifest.json"
FORMAT_NAME: Final = "megaspec-training-checkpoint"
FORMAT_VERSION: Final = 1
DCP_METADATA_FILE: Final = ".metadata"
_CHUNK: Final = 1 << 20


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` records.

    Attributes:
        step: the optimizer step the checkpoint was taken after.
        tensor_parallel_size, world_size: the layout it was saved at.
        files: relative path -> (size in bytes, sha256 hex digest), every other file.
    """

    step: int
    tensor_parallel_size: int
    world_size: int
    files: dict[str, tuple[int, str]]


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read a chunk at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: Path, *, step: int, tensor_parallel_size: int, world_size: int) -> None:
    """Hash every file under ``directory`` and write ``manifest.json`` (the last file)."""
    files = sorted(path for path in directory.rglob("*") if path.is_file())
    document = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "step": step,
        "layout": {"tensor_parallel_size": tensor_parallel_size, "world_size": world_size},
        "files": {
            path.relative_to(directory).as_posix(): {"bytes": path.stat().st_size, "sha256": sha256_of(path)}
            for path in files
        },
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(document, indent=1) + "\n")


def read_manifest(directory: Path) -> Manifest:
    """Parse ``manifest.json`` (JSON only).

    Raises:
        CheckpointError: if it is missing (an incomplete save), not JSON, or of another format.
    """
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{directory}: incomplete checkpoint: no {MANIFEST_FILE} (the save never finished)"
        )
    try:
        document: Any = json.loads(path.read_text())
        if document.get("format") != FORMAT_NAME:
            raise CheckpointError(f"{path}: format {document.get('format')!r}, expected {FORMAT_NAME!r}")
        if document.get("version") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: version {document.get('version')!r}, expected {FORMAT_VERSION}")
        layout = document["layout"]
        files = {
            name: (int(entry["bytes"]), str(entry["sha256"]))
            for name, entry in document["files"].items()
        }
        sizes = int(layout["tensor_parallel_size"]), int(layout["world_size"])
        return Manifest(int(document["step"]), *sizes, files)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{path}: not a valid manifest ({error})") from None


def verify_files(directory: Path, manifest: Manifest, *, distributed: bool) -> None:
    """Check every listed file's presence and size, then its hash (split over the ranks when
    ``distributed``; see the module docstring); ``.metadata`` is hashed on every rank.

    Raises:
        CheckpointError: naming the first missing, truncated or corrupt file; on a rank that
            found nothing itself, naming the rank that did.
    """
    for name, (size, _) in manifest.files.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing file: listed in {MANIFEST_FILE} but not present")
        if path.stat().st_size != size:
            raise CheckpointError(
                f"{path}: truncated or altered file: {path.stat().st_size} bytes, {MANIFEST_FILE} says {size}"
            )
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    names = sorted(manifest.files)
    mine = {name for index, name in enumerate(names) if index % world == rank or name == DCP_METADATA_FILE}
    differing = (name for name in sorted(mine) if sha256_of(directory / name) != manifest.files[name][1])
    problem = next(differing, None)
    if distributed:
        flag = torch.tensor([rank + 1 if problem is not None else 0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if problem is None and int(flag) > 0:
            raise CheckpointError(
                f"{directory}: corrupt checkpoint: rank {int(flag) - 1} found a file whose "
                f"sha256 differs"
            )
    if problem is not None:
        raise CheckpointError(
            f"{directory / problem}: corrupt file: its sha256 differs from the one in {MANIFEST_FILE}"
        )
