"""Hugging Face checkpoints of the Llama family: open one for import, export a model as one.

A checkpoint is a directory with ``config.json`` and ``model.safetensors`` (or shards
``model-0000x-of-0000y.safetensors`` listed in ``model.safetensors.index.json``), or a
``transformers`` model object in memory. Import goes through
:func:`megaspec.checkpoint.from_pretrained`; :func:`export_hf` writes a directory that
``transformers.AutoModelForCausalLM.from_pretrained`` loads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.distributed as dist
from torch import Tensor, nn

from megaspec.checkpoint.errors import CheckpointError
from megaspec.checkpoint.hf_config import LlamaArchitecture
from megaspec.checkpoint.hf_config_export import hf_config_from_model, llama_architecture
from megaspec.checkpoint.hf_weights import (
    WeightMapping,
    check_model_parameters,
    hf_tensors,
    hf_weight_mappings,
)
from megaspec.checkpoint.sources import INDEX_FILE, SafetensorsSource, StateDictSource, TensorSource
from megaspec.checkpoint.writing import (
    DEFAULT_MAX_SHARD_BYTES,
    StagedDirectory,
    check_target,
    plan_shards,
    shard_file_names,
)
from megaspec.config import ModelConfig, PathLike
from megaspec.models import GPTModel
from megaspec.parallel import ParallelGroups, gather_full, sharding_of

CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class HfCheckpoint:
    """An open Hugging Face checkpoint: its config data and its tensors.

    Attributes:
        config: the ``config.json`` data (or a model object's ``config.to_dict()``).
        where: what errors about the config name (``config.json``, ``LlamaConfig``).
        tensors: the weights, readable in part.
    """

    config: Mapping[str, Any]
    where: str
    tensors: TensorSource


@contextmanager
def open_hf_checkpoint(source: PathLike | nn.Module) -> Iterator[HfCheckpoint]:
    """Open a checkpoint directory, or a ``transformers`` model object, for reading.

    A tied model object's ``lm_head.weight`` is the embedding itself and is left out.

    Raises:
        CheckpointError: for a directory without ``config.json`` or weights (see
            :class:`~megaspec.checkpoint.sources.SafetensorsSource`), or a tied model object
            whose ``lm_head.weight`` differs from its embedding.
        TypeError: for a module without a ``config`` that has ``to_dict()``.
    """
    if isinstance(source, nn.Module):
        yield _model_object_checkpoint(source)
        return
    directory = Path(source)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"{directory}: no {CONFIG_FILE}")
    config = json.loads(config_path.read_text())
    if not isinstance(config, dict):
        raise CheckpointError(f"{CONFIG_FILE}: expected a JSON object")
    with SafetensorsSource(directory) as tensors:
        yield HfCheckpoint(config=config, where=CONFIG_FILE, tensors=tensors)


def _model_object_checkpoint(model: nn.Module) -> HfCheckpoint:
    hf_config: Any = getattr(model, "config", None)
    if not callable(getattr(hf_config, "to_dict", None)):
        raise TypeError(
            f"{type(model).__name__} has no Hugging Face config (model.config.to_dict()); pass a "
            f"transformers model or a checkpoint directory"
        )
    config: dict[str, Any] = hf_config.to_dict()
    where = type(hf_config).__name__
    state = dict(model.state_dict())
    description = f"state dict of {type(model).__name__}"
    if config.get("tie_word_embeddings") and "lm_head.weight" in state:
        head, embedding = state.pop("lm_head.weight"), state.get("model.embed_tokens.weight")
        shared = embedding is not None and (
            head.data_ptr() == embedding.data_ptr() or torch.equal(head, embedding)
        )
        if not shared:
            raise CheckpointError(
                f"{description}: lm_head.weight differs from model.embed_tokens.weight although "
                f"tie_word_embeddings is true"
            )
    return HfCheckpoint(config=config, where=where, tensors=StateDictSource(state, description))


def export_hf(
    model: GPTModel,
    config: ModelConfig,
    directory: PathLike,
    *,
    model_type: str | None = None,
    template: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Path:
    """Write ``model`` (built from ``config``) as a Hugging Face checkpoint in ``directory``.

    Call it on every rank of a tensor-parallel model: each parameter is gathered
    (``gather_full``) and rank 0 writes ``config.json`` and the weights in the parameters'
    dtype: ``model.safetensors``, or ``model-0000x-of-0000y.safetensors`` files of at most
    ``max_shard_bytes`` (a larger single tensor gets a file of its own) with
    ``model.safetensors.index.json``. The directory appears atomically (see
    :mod:`megaspec.checkpoint.writing`). Memory: every rank holds one gathered parameter at a
    time; rank 0 also holds the tensors of the file being written (at most about
    ``max_shard_bytes``). ``model_type`` and ``template`` are as in
    :func:`~megaspec.checkpoint.hf_config_export.hf_config_from_model`.

    Returns:
        The directory written.

    Raises:
        CheckpointError: on every rank and before anything is written, for a config the
            Hugging Face family cannot express or an existing non-empty ``directory``
            without ``overwrite``; on every rank if rank 0 fails to write.
        ValueError: if ``model``'s parameters do not match ``config``.
    """
    dtype = next(model.parameters()).dtype
    hf_config = hf_config_from_model(config, model_type=model_type, dtype=dtype, template=template)
    architecture = llama_architecture(config)
    mappings = hf_weight_mappings(architecture)
    check_model_parameters(model, mappings)
    target = Path(directory)
    check_target(target, overwrite=overwrite)
    writer = _Writer(target, overwrite=overwrite) if model.groups.tensor_rank == 0 else None
    try:
        sizes = _gather_and_write(model, mappings, architecture, writer, max_shard_bytes)
        if writer is not None:
            writer.finish(hf_config, total_bytes=sum(sizes))
    except BaseException:
        if writer is not None:
            writer.staging.discard()
        raise
    _raise_if_any_rank_failed(writer, model.groups)
    return target


def _gather_and_write(
    model: GPTModel,
    mappings: list[WeightMapping],
    architecture: LlamaArchitecture,
    writer: _Writer | None,
    max_shard_bytes: int,
) -> list[int]:
    """Gather every parameter (every rank takes part); ``writer`` (rank 0) writes the files.
    Returns each mapping's size in bytes."""
    parameters = dict(model.named_parameters())
    dtype = next(model.parameters()).dtype
    sizes = [_bytes(mapping, dtype) for mapping in mappings]
    shards = plan_shards(sizes, max_shard_bytes)
    for file, shard in zip(shard_file_names(len(shards)), shards):
        tensors: dict[str, Tensor] = {}
        for index in shard:
            parameter = parameters[mappings[index].parameter]
            full = gather_full(parameter, sharding_of(parameter), model.groups)
            if writer is not None:
                tensors.update(hf_tensors(mappings[index], full.cpu(), architecture))
        if writer is not None:
            writer.write_file(file, tensors)
    return sizes


def _bytes(mapping: WeightMapping, dtype: torch.dtype) -> int:
    itemsize = torch.empty((), dtype=dtype).element_size()
    return sum(math.prod(shape) for shape in mapping.hf_shapes) * itemsize


class _Writer:
    """Rank 0's side of an export. A failure to write is kept, not raised at once, so that
    rank 0 keeps taking part in the gathers the other ranks are waiting in."""

    def __init__(self, target: Path, *, overwrite: bool) -> None:
        self.staging = StagedDirectory(target, overwrite=overwrite)
        self.weight_map: dict[str, str] = {}
        self.failure: Exception | None = None

    def write_file(self, file: str, tensors: dict[str, Tensor]) -> None:
        if self.failure is not None:
            return
        try:
            path = self.staging.path / file
            safetensors.torch.save_file(tensors, str(path), metadata={"format": "pt"})
        except Exception as error:  # noqa: BLE001 - reported on every rank at the end
            self.failure = error
        self.weight_map.update({name: file for name in tensors})

    def finish(self, hf_config: Mapping[str, Any], *, total_bytes: int) -> None:
        if self.failure is not None:
            self.staging.discard()
            return
        try:
            config_text = json.dumps(hf_config, indent=2, sort_keys=True) + "\n"
            (self.staging.path / CONFIG_FILE).write_text(config_text)
            if len(set(self.weight_map.values())) > 1:
                index = {"metadata": {"total_size": total_bytes}, "weight_map": self.weight_map}
                (self.staging.path / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
            self.staging.commit()
        except Exception as error:  # noqa: BLE001 - reported on every rank at the end
            self.failure = error
            self.staging.discard()


def _raise_if_any_rank_failed(writer: _Writer | None, groups: ParallelGroups) -> None:
    failure = None if writer is None else writer.failure
    if groups.tensor_size > 1:
        message = [None if failure is None else f"{type(failure).__name__}: {failure}"]
        source = dist.get_global_rank(groups.tensor, 0) if groups.tensor is not None else 0
        dist.broadcast_object_list(message, src=source, group=groups.tensor)
        if writer is None and message[0] is not None:
            raise CheckpointError(f"export failed on tensor-parallel rank 0: {message[0]}")
    if failure is not None:
        raise failure
