"""Megatron-core state dicts on disk, as ``megaspec convert`` reads and writes them.

A directory holding ``megatron_arguments.json`` (the :class:`MegatronArguments` that define
the model, the layer spec and the tensor-parallel size) and one ``mp_rank_XX.safetensors``
per tensor-parallel rank with that rank's ``GPTModel.state_dict()``. Safetensors, not
pickle: nothing read here can run code. ``_extra_state`` entries that are ``None`` (Megatron's
local linears) are left out and need not be present when loading.

From a Megatron-LM training run, write such a directory with a few lines on each rank::

    safetensors.torch.save_file(
        {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)},
        f"{directory}/mp_rank_{tp_rank:02d}.safetensors")

plus the JSON (see :func:`arguments_to_json`); :func:`read_megatron` refuses anything else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Final

import safetensors.torch
from torch import Tensor

from megaspec.checkpoint.errors import CheckpointError
from megaspec.checkpoint.megatron_config import MegatronArguments
from megaspec.checkpoint.megatron_keys import MegatronSpec
from megaspec.checkpoint.writing import StagedDirectory
from megaspec.config import PathLike
from megaspec.transformer_config import ACTIVATIONS

ARGUMENTS_FILE: Final = "megatron_arguments.json"
SPECS: Final = ("local", "transformer_engine")


def rank_file(rank: int) -> str:
    """The file of tensor-parallel rank ``rank``: ``mp_rank_XX.safetensors``."""
    return f"mp_rank_{rank:02d}.safetensors"


@dataclass(frozen=True)
class MegatronFiles:
    """What a Megatron directory holds: arguments, spec and one state dict per rank."""

    arguments: MegatronArguments
    spec: MegatronSpec
    state_dicts: list[dict[str, Tensor]]


def arguments_to_json(arguments: MegatronArguments, spec: MegatronSpec, tensor_parallel_size: int) -> str:
    """The JSON of ``megatron_arguments.json``; the activation is written by its name."""
    data: dict[str, Any] = asdict(arguments)
    names = [name for name, function in ACTIVATIONS.items() if function is arguments.activation_func]
    if not names:
        raise CheckpointError(f"activation_func {arguments.activation_func!r} has no megaspec name")
    data["activation_func"] = names[0]
    document = {"spec": spec, "tensor_parallel_size": tensor_parallel_size, "arguments": data}
    return json.dumps(document, indent=2) + "\n"


def _arguments_from_json(path: Path) -> tuple[MegatronArguments, MegatronSpec, int]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        data = dict(document["arguments"])
        spec, size = document["spec"], document["tensor_parallel_size"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: not a megaspec Megatron arguments file ({error})") from None
    if spec not in SPECS:
        raise CheckpointError(f"{path}: spec: {spec!r} is not one of {', '.join(SPECS)}")
    if not isinstance(size, int) or size < 1:
        raise CheckpointError(f"{path}: tensor_parallel_size: expected a positive integer, got {size!r}")
    known = {field.name for field in fields(MegatronArguments)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CheckpointError(f"{path}: arguments: unknown names {', '.join(unknown)}")
    activation = data.get("activation_func", "gelu")
    if activation not in ACTIVATIONS:
        raise CheckpointError(
            f"{path}: arguments.activation_func: {activation!r} is not one of {', '.join(ACTIVATIONS)}"
        )
    data["activation_func"] = ACTIVATIONS[activation]
    try:
        return MegatronArguments(**data), spec, size
    except TypeError as error:
        raise CheckpointError(f"{path}: arguments: {error}") from None


def is_megatron_directory(path: PathLike) -> bool:
    """Whether ``path`` is a directory holding ``megatron_arguments.json``."""
    return (Path(path) / ARGUMENTS_FILE).is_file()


def read_megatron(directory: PathLike) -> MegatronFiles:
    """The arguments and per-rank state dicts of a Megatron directory (see the module docstring).

    Raises:
        CheckpointError: for a missing or malformed arguments file or rank file.
    """
    directory = Path(directory)
    arguments, spec, size = _arguments_from_json(directory / ARGUMENTS_FILE)
    state_dicts = []
    for rank in range(size):
        path = directory / rank_file(rank)
        if not path.is_file():
            raise CheckpointError(f"{directory}: {rank_file(rank)} is missing (tensor_parallel_size {size})")
        try:
            state_dicts.append(safetensors.torch.load_file(path))
        except Exception as error:  # safetensors raises its own error types for bad files
            raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None
    return MegatronFiles(arguments, spec, state_dicts)


def write_megatron(
    directory: PathLike,
    state_dicts: Sequence[Mapping[str, Tensor | None]],
    arguments: MegatronArguments,
    spec: MegatronSpec,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a Megatron directory atomically (a temporary directory, then a rename).

    Raises:
        CheckpointError: if ``directory`` exists and is not empty and ``overwrite`` is false.
    """
    target = Path(directory)
    staging = StagedDirectory(target, overwrite=overwrite)
    try:
        (staging.path / ARGUMENTS_FILE).write_text(arguments_to_json(arguments, spec, len(state_dicts)))
        for rank, state_dict in enumerate(state_dicts):
            tensors = {key: value.contiguous() for key, value in state_dict.items() if value is not None}
            safetensors.torch.save_file(tensors, str(staging.path / rank_file(rank)))
        staging.commit()
    except BaseException:
        staging.discard()
        raise
    return target
