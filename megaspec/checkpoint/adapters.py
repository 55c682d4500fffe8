"""Adapters only, on disk: ``adapter_config.json`` and ``adapter_model.safetensors``.

``save_adapters`` writes the chosen adapters of a model, whatever their types (a mixed set of
LoRA and (IA)^3 saves and loads like one type): their configs, the linears each one adapts
with those linears' geometry, and their weights in full (TP=1) form, gathered from every
tensor-parallel rank. ``load_adapters`` adds them to a model built from the same architecture
at any tensor-parallel size, each rank reading only its shard; a file saved for another
architecture is refused before anything changes. Base weights are never written or read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import safetensors
import safetensors.torch
import torch
from torch import Tensor, nn

from megaspec.checkpoint.errors import CheckpointError
from megaspec.checkpoint.writing import StagedDirectory
from megaspec.config import AdapterConfig, PathLike, from_data, to_data
from megaspec.parallel import ParallelGroups, gather_full, shard_index, shard_of_full, sharding_of
from megaspec.peft import (
    AdaptedLinear,
    LinearGeometry,
    adapted_linears,
    adapter_names,
    add_adapter_to_linears,
    check_adapter_names,
    delete_adapter,
    linear_geometry,
    model_groups,
    slot_linears,
)

CONFIG_FILE: Final = "adapter_config.json"
WEIGHTS_FILE: Final = "adapter_model.safetensors"
FORMAT: Final = "megaspec-adapters/1"


def _stored_output_size(model: nn.Module, slot: str, output_size: int) -> int:
    """The output rows a file holds for linear ``slot``: a GPT model's output layer has its
    vocabulary padded to a multiple that depends on the tensor-parallel size, so files hold
    the unpadded vocabulary and loading pads it again (padded logits are never used)."""
    vocab, padded = getattr(model, "vocab_size", None), getattr(model, "padded_vocab_size", None)
    if slot == "output_layer" and isinstance(vocab, int) and output_size == padded:
        return vocab
    return output_size


def _geometry_data(model: nn.Module, slot: str, geometry: LinearGeometry) -> dict[str, Any]:
    return {"kind": geometry.kind, "input_size": geometry.input_size,
            "output_size": _stored_output_size(model, slot, geometry.output_size),
            "parts": geometry.parts}  # fmt: skip


def _saved_adapters(model: nn.Module, names: Sequence[str]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The JSON document and the full tensors of adapters ``names`` (gathered on every rank)."""
    groups = model_groups(model)
    document: dict[str, Any] = {"format": FORMAT, "adapters": {}, "linears": {}}
    tensors: dict[str, Tensor] = {}
    for slot, wrappers in adapted_linears(model).items():
        for wrapper in wrappers:
            for name in names:
                if name not in wrapper.adapters:
                    continue
                adapter = wrapper.adapter(name)
                entry = document["adapters"].setdefault(
                    name, {"config": to_data(adapter.config, explicit_only=False), "linears": []}
                )
                entry["linears"].append(slot)
                geometry = document["linears"][slot] = _geometry_data(model, slot, wrapper.geometry)
                for key, parameter in adapter.named_parameters():
                    full = gather_full(parameter, sharding_of(parameter), groups)
                    if _over_outputs(parameter, wrapper.geometry):  # drop vocabulary padding
                        full = full[: geometry["output_size"]]
                    tensors[f"{slot}.{name}.{key}"] = full.cpu().contiguous()
    return document, tensors


def save_adapters(
    model: nn.Module, directory: PathLike, names: Sequence[str] | None = None, *, overwrite: bool = False
) -> Path:
    """Write adapters ``names`` (default: all) of ``model`` to ``directory``, atomically.

    Under tensor parallelism every rank calls it (the shards are gathered) and rank 0 writes.

    Raises:
        ValueError: for a name no adapter of the model has (an adapter that is not attached).
        CheckpointError: if ``directory`` exists and is not empty and ``overwrite`` is false.
    """
    chosen = list(adapter_names(model) if names is None else names)
    if not chosen:
        raise ValueError("the model has no adapters to save")
    check_adapter_names(model, chosen, "save")
    document, tensors = _saved_adapters(model, chosen)
    target = Path(directory)
    if model_groups(model).tensor_rank != 0:
        return target
    staging = StagedDirectory(target, overwrite=overwrite)
    try:
        (staging.path / CONFIG_FILE).write_text(json.dumps(document, indent=2) + "\n")
        safetensors.torch.save_file(tensors, str(staging.path / WEIGHTS_FILE))
        staging.commit()
    except BaseException:
        staging.discard()
        raise
    return target


def _read_document(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: {CONFIG_FILE} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not a readable adapter config ({error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else None
        raise CheckpointError(f"{path}: format: expected {FORMAT!r}, got {found!r}")
    return document


def _check_architecture(model: nn.Module, document: dict[str, Any], path: Path) -> None:
    """Refuse adapters whose linears the model lacks or has with other sizes."""
    linears = slot_linears(model)
    groups = model_groups(model)
    for slot, saved in document["linears"].items():
        if slot not in linears:
            raise CheckpointError(f"{path}: saved for another architecture: the model has no linear {slot}")
        found = _geometry_data(model, slot, linear_geometry(linears[slot], groups))
        if found != saved:
            raise CheckpointError(
                f"{path}: saved for another architecture: {slot} is {found} in the model, {saved} "
                f"in the file"
            )


def load_adapters(model: nn.Module, directory: PathLike, *, activate: bool = True) -> list[str]:
    """Add the adapters saved in ``directory`` to ``model``; returns their names.

    Raises:
        CheckpointError: for a missing, foreign or unreadable file, or adapters saved for
            another architecture (before anything changes).
        ValueError: for an adapter name the model already has.
    """
    directory = Path(directory)
    document = _read_document(directory)
    _check_architecture(model, document, directory / CONFIG_FILE)
    existing = [name for name in document["adapters"] if name in adapter_names(model)]
    if existing:
        raise ValueError(f"the model already has adapter(s) {', '.join(existing)}; delete them first")
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{directory}: {WEIGHTS_FILE} is missing")
    configs = {
        name: from_data(AdapterConfig, entry["config"], path=f"{CONFIG_FILE}: adapters.{name}.config")
        for name, entry in document["adapters"].items()
    }
    added: list[str] = []
    try:
        for name, config in configs.items():
            add_adapter_to_linears(model, config, document["adapters"][name]["linears"], activate=activate)
            added.append(name)
        _read_weights(model, added, weights)
    except BaseException:
        for name in added:  # leave the model as it was
            delete_adapter(model, name)
        raise
    return added


@torch.no_grad()
def _read_weights(model: nn.Module, names: list[str], path: Path) -> None:
    groups = model_groups(model)
    with safetensors.safe_open(str(path), framework="pt") as file:
        stored = set(file.keys())
        for slot, wrappers in adapted_linears(model).items():
            for wrapper in wrappers:
                for name in names:
                    if name not in wrapper.adapters:
                        continue
                    for key, parameter in wrapper.adapter(name).named_parameters():
                        file_key = f"{slot}.{name}.{key}"
                        if file_key not in stored:
                            raise CheckpointError(f"{path}: tensor {file_key} is missing")
                        over_outputs = _over_outputs(parameter, wrapper.geometry)
                        padded_rows = wrapper.geometry.output_size if over_outputs else None
                        parameter.copy_(_local_shard(file, file_key, parameter, groups, padded_rows))


def _over_outputs(parameter: Tensor, geometry: LinearGeometry) -> bool:
    """Whether ``parameter``'s first dimension runs over the linear's (full) output features."""
    sharding = sharding_of(parameter)
    return geometry.kind == "column" and sharding is not None and sharding.dim == 0


def _local_shard(
    file: Any, key: str, parameter: Tensor, groups: ParallelGroups, padded_rows: int | None
) -> Tensor:
    """This rank's shard of tensor ``key``; ``padded_rows``: the full first dimension to
    zero-pad a stored tensor over output features to (vocabulary padding)."""
    sharding = sharding_of(parameter)
    split = sharding is not None and groups.tensor_size > 1
    if padded_rows is not None:  # an output layer's adapter tensor: small, padded in memory
        stored: Tensor = file.get_tensor(key)
        padding = stored.new_zeros(max(0, padded_rows - stored.shape[0]), *stored.shape[1:])
        local = torch.cat([stored, padding])
        if sharding is not None and split:
            local = shard_of_full(local, sharding, groups.tensor_rank, groups.tensor_size)
    elif sharding is not None and split:
        tensor_slice = file.get_slice(key)
        shape = tuple(tensor_slice.get_shape())
        indices = shard_index(shape, sharding, groups.tensor_rank, groups.tensor_size)
        local = torch.cat([tensor_slice[index] for index in indices], dim=sharding.dim)
    else:
        local = file.get_tensor(key)
    if local.shape != parameter.shape:
        raise CheckpointError(f"{key}: shape {list(local.shape)} does not fit {list(parameter.shape)}")
    return local
