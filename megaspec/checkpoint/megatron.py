"""Megatron-core ``GPTModel`` state dicts to and from megaspec's, at any tensor-parallel size.

Megatron-core stores every weight in megaspec's layout, so a conversion renames weights and
changes the vocabulary padding, nothing more:

* fused QKV: rows packed per KV group, ``[q heads of g, k_g, v_g]`` for each group g
  (Megatron's ``SelfAttention.get_query_key_value_tensors`` views its output as
  ``[s, b, groups, (heads / groups + 2) * head_dim]`` and splits it so); a tensor-parallel rank
  holds its slice of rows: whole groups when ranks divide the groups.
* gated fc1: ``[gate; up]`` (Megatron's MLP chunks its output in two, gate first), each
  rank holding ``[gate_r; up_r]``.
* row-parallel ``linear_proj`` / ``linear_fc2``: each rank holds a slice of input columns;
  their biases, the norms and the QK-norms are whole on every rank.
* embedding and output layer: each rank holds a slice of the (padded) vocabulary rows.

Those layouts are :mod:`megaspec.parallel.sharding`'s; this module never cuts a tensor
itself: it joins each weight's shards with ``full_from_shards`` and cuts the joined weight for
the target size with ``shard_of_full``, with the layouts listed in
:mod:`megaspec.checkpoint.megatron_keys`.

Vocabulary: a megaspec state dict pads the vocabulary to a multiple of tensor-parallel size x
128 (``GPTModel``); Megatron-LM pads it to a multiple of ``make_vocab_size_divisible_by`` x
tensor-parallel size (the same by default), and megatron-core alone keeps what it is given.
Reading drops the padded rows (they stand for no token); writing pads with zeros.

``_extra_state``: written as the modules themselves write them outside FP8 training, which is
what their ``load_state_dict`` accepts: ``torch.empty(0, dtype=torch.uint8)`` for Transformer
Engine modules (TE's ``get_extra_state`` with no FP8 recipe state; TE's ``set_extra_state``
skips an empty tensor) and ``None`` for Megatron's ``ColumnParallelLinear`` /
``RowParallelLinear`` (their ``get_extra_state``; ``set_extra_state`` ignores it). Reading
accepts and drops them: FP8 scaling factors and amax histories have no megaspec counterpart,
and the weights beside them are stored in full precision.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from megaspec.checkpoint.errors import CheckpointError
from megaspec.checkpoint.megatron_config import megatron_arguments
from megaspec.checkpoint.megatron_keys import (
    MegatronSpec,
    WeightEntry,
    extra_state_entries,
    missing_key_reason,
    readable_extra_states,
    unexpected_key_reason,
    weight_entries,
)
from megaspec.config import ModelConfig
from megaspec.models import GPTModel
from megaspec.models.gpt import VOCAB_PADDING_MULTIPLE
from megaspec.parallel import full_from_shards, padded_vocab_rows, repad_vocab_rows, shard_of_full

StateDicts = Mapping[str, Any] | Sequence[Mapping[str, Any]]
"""One state dict (tensor-parallel size 1), or one per tensor-parallel rank, in rank order."""


def to_megatron(
    state_dicts: StateDicts,
    config: ModelConfig,
    *,
    spec: MegatronSpec,
    tensor_parallel_size: int = 1,
    padded_vocab_size: int | None = None,
    transformer_engine_installed: bool = True,
) -> list[dict[str, Tensor | None]]:
    """Megatron-core ``GPTModel`` state dicts, one per tensor-parallel rank, from megaspec's.

    Args:
        state_dicts: the megaspec ``GPTModel`` state dict, or one per rank (in rank order) of
            a model built at tensor-parallel size ``len(state_dicts)``.
        config: the model's config (:func:`~megaspec.checkpoint.megatron_arguments` gives
            Megatron's arguments for it).
        spec: the Megatron layer spec the dicts are for (key names differ).
        tensor_parallel_size: Megatron's tensor-parallel size.
        padded_vocab_size: rows of Megatron's embedding and output layer; default
            Megatron-LM's padding (a multiple of 128 x ``tensor_parallel_size``).
        transformer_engine_installed: whether the Megatron process can import Transformer
            Engine (its final norm is then a TE norm, with an ``_extra_state``).

    Returns:
        One dict per rank for Megatron's ``GPTModel.load_state_dict`` (strict). At
        tensor-parallel size 1 tensors may be the input's own; at larger sizes each rank's
        tensors own their memory, so saving one rank's dict saves only its shards.

    Raises:
        CheckpointError: for a config Megatron cannot represent, a state dict with a missing or
            unexpected key or a wrong shape (naming the key and the shapes), or weights that
            do not split over ``tensor_parallel_size``.
    """
    arguments = megatron_arguments(config)
    entries = weight_entries(arguments, spec)
    extra_states = extra_state_entries(
        arguments, spec, transformer_engine_installed=transformer_engine_installed
    )
    given = _as_list(state_dicts)
    for rank, state_dict in enumerate(given):
        where = _where("megaspec", rank, len(given))
        _check_keys(state_dict, [entry.megaspec for entry in entries], (), where)
    full = _joined(given, entries, config.vocab_size, source="megaspec")
    if padded_vocab_size is None:
        padded_vocab_size = arguments.padded_vocab_size(tensor_parallel_size)
    converted = _split(
        full, entries, tensor_parallel_size, padded_vocab_size, config.vocab_size, to_megatron=True
    )
    per_rank: list[dict[str, Tensor | None]] = [dict(state_dict) for state_dict in converted]
    for state_dict in per_rank:
        for key, owner in extra_states.items():
            state_dict[key] = torch.empty(0, dtype=torch.uint8) if owner == "transformer_engine" else None
    return per_rank


def from_megatron(
    state_dicts: StateDicts,
    config: ModelConfig,
    *,
    spec: MegatronSpec,
    tensor_parallel_size: int = 1,
) -> list[dict[str, Tensor]]:
    """megaspec ``GPTModel`` state dicts, one per tensor-parallel rank, from Megatron-core's.

    Args:
        state_dicts: the Megatron ``GPTModel`` state dict, or one per rank (in rank order) of
            a model at tensor-parallel size ``len(state_dicts)``, with any vocabulary padding.
        config: the megaspec config of the model (:func:`~megaspec.checkpoint.model_config`
            gives it from Megatron's arguments).
        spec: the Megatron layer spec that built the model (key names differ).
        tensor_parallel_size: the size of the megaspec model the dicts are for.

    Returns:
        One dict per rank: ``load_state_dict`` of the model ``config.build(groups)`` builds on
        that rank takes it (:func:`load_from_megatron` does both).

    Raises:
        CheckpointError: as :func:`to_megatron`; an unexpected key's message says why, e.g. that
            megaspec has no mixture-of-experts layers or that the key is the other spec's.
    """
    arguments = megatron_arguments(config)
    entries = weight_entries(arguments, spec)
    given = _as_list(state_dicts)
    for rank, state_dict in enumerate(given):
        _check_keys(
            state_dict,
            [entry.megatron for entry in entries],
            readable_extra_states(arguments),
            _where("Megatron", rank, len(given)),
            unexpected=lambda key: unexpected_key_reason(key, arguments, spec),
            missing=lambda key: missing_key_reason(key, arguments),
        )
    full = _joined(given, entries, config.vocab_size, source="Megatron")
    rows = padded_vocab_rows(config.vocab_size, tensor_parallel_size, VOCAB_PADDING_MULTIPLE)
    return _split(full, entries, tensor_parallel_size, rows, config.vocab_size, to_megatron=False)


def load_from_megatron(
    model: GPTModel, state_dicts: StateDicts, config: ModelConfig, *, spec: MegatronSpec
) -> None:
    """Load Megatron-core state dicts into ``model``, built from ``config`` at any
    tensor-parallel size (each rank loads its own shards).

    Raises:
        CheckpointError: as :func:`from_megatron`.
        RuntimeError: from ``load_state_dict``, if ``model`` was not built from ``config``.
    """
    groups = model.groups
    converted = from_megatron(state_dicts, config, spec=spec, tensor_parallel_size=groups.tensor_size)
    model.load_state_dict(converted[groups.tensor_rank])


def model_to_megatron(
    model: GPTModel,
    config: ModelConfig,
    *,
    spec: MegatronSpec,
    tensor_parallel_size: int = 1,
    padded_vocab_size: int | None = None,
    transformer_engine_installed: bool = True,
) -> list[dict[str, Tensor | None]]:
    """:func:`to_megatron` of the weights of ``model`` (built from ``config``).

    At tensor-parallel size > 1 every rank of the model must call it: the ranks exchange
    their state dicts (through the CPU) and each returns every Megatron rank's dict.
    """
    own = {key: value.detach() for key, value in model.state_dict().items()}
    state_dicts: list[Mapping[str, Any]] = [own]
    groups = model.groups
    if groups.tensor_size > 1:
        gathered: list[Any] = [None] * groups.tensor_size
        on_cpu = {key: value.cpu() for key, value in own.items()}
        dist.all_gather_object(gathered, on_cpu, group=groups.tensor)
        state_dicts = gathered
    return to_megatron(
        state_dicts,
        config,
        spec=spec,
        tensor_parallel_size=tensor_parallel_size,
        padded_vocab_size=padded_vocab_size,
        transformer_engine_installed=transformer_engine_installed,
    )


def _as_list(state_dicts: StateDicts) -> list[Mapping[str, Any]]:
    if isinstance(state_dicts, Mapping):
        return [state_dicts]
    if not state_dicts:
        raise CheckpointError("no state dicts given")
    return list(state_dicts)


def _where(source: str, rank: int, size: int) -> str:
    return f"{source} state dict" if size == 1 else f"{source} state dict of tensor-parallel rank {rank}"


def _no_reason(key: str) -> str:
    return "the configured model has no such weight"


def _check_keys(
    state_dict: Mapping[str, Any],
    expected: list[str],
    ignored: Collection[str],
    where: str,
    *,
    unexpected: Callable[[str], str] = _no_reason,
    missing: Callable[[str], str] | None = None,
) -> None:
    """Refuse a key that is neither ``expected`` nor ``ignored``, then a missing one."""
    known = set(expected)
    for key in state_dict:
        if key not in known and key not in ignored:
            raise CheckpointError(f"{where}: unexpected key '{key}': {unexpected(key)}")
    absent = [key for key in expected if key not in state_dict]
    if absent:
        more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        reason = "" if missing is None else f": {missing(absent[0])}"
        raise CheckpointError(f"{where}: missing key '{absent[0]}'{more}{reason}")


def _joined(
    state_dicts: list[Mapping[str, Any]], entries: list[WeightEntry], vocab_size: int, *, source: str
) -> dict[str, Tensor]:
    """Every weight in full (tensor-parallel size 1), by megaspec name, vocabulary unpadded.

    ``source`` ("megaspec" or "Megatron") says whose names the dicts use and how their
    vocabulary is padded: megaspec's exactly, Megatron's with any padding.
    """
    size = len(state_dicts)
    full: dict[str, Tensor] = {}
    for entry in entries:
        name = entry.megatron if source == "Megatron" else entry.megaspec
        shards = [state_dict[name] for state_dict in state_dicts]
        expected = _local_shape(entry, size, vocab_size, name, source=source, given=shards[0])
        for rank, shard in enumerate(shards):
            if not isinstance(shard, Tensor) or tuple(shard.shape) != expected:
                found = tuple(shard.shape) if isinstance(shard, Tensor) else type(shard).__name__
                raise CheckpointError(
                    f"{_where(source, rank, size)}: '{name}' has shape {found}, expected {expected}"
                )
        # A weight every rank holds whole (a norm, a row-parallel bias) is read from rank 0.
        sharding = entry.sharding
        joined = shards[0] if sharding is None or size == 1 else full_from_shards(shards, sharding)
        if entry.vocabulary and joined.shape[0] < vocab_size:
            raise CheckpointError(
                f"{source} state dict: '{name}' has {joined.shape[0]} vocabulary rows, fewer than the "
                f"config's vocab_size {vocab_size}"
            )
        full[entry.megaspec] = joined[:vocab_size] if entry.vocabulary else joined
    return full


def _local_shape(
    entry: WeightEntry, size: int, vocab_size: int, name: str, *, source: str, given: object
) -> tuple[int, ...]:
    """The shape each of ``size`` ranks holds of ``entry`` (a Megatron vocabulary weight may
    have any padding: its rows are taken from ``given``, rank 0's)."""
    shape = entry.shape
    if entry.vocabulary:
        if source == "megaspec":
            rows = padded_vocab_rows(vocab_size, size, VOCAB_PADDING_MULTIPLE)
        else:
            rows = given.shape[0] * size if isinstance(given, Tensor) and given.dim() == 2 else 0
        shape = (rows, *shape[1:])
    if entry.sharding is None:
        return shape
    dim, parts = entry.sharding.dim, entry.sharding.parts
    if shape[dim] % (parts * size) != 0:
        raise CheckpointError(
            f"'{name}' of full shape {shape} does not split into {parts} part(s) of {size} equal "
            f"tensor-parallel shard(s) along dimension {dim}"
        )
    return tuple(length // size if axis == dim else length for axis, length in enumerate(shape))


def _split(
    full: dict[str, Tensor],
    entries: list[WeightEntry],
    size: int,
    vocab_rows: int,
    vocab_size: int,
    *,
    to_megatron: bool,
) -> list[dict[str, Tensor]]:
    """Each of ``size`` ranks' state dict (Megatron's names if ``to_megatron``), with the
    vocabulary padded to ``vocab_rows``."""
    per_rank: list[dict[str, Tensor]] = [{} for _ in range(size)]
    for entry in entries:
        name = entry.megatron if to_megatron else entry.megaspec
        tensor = full[entry.megaspec]
        if entry.vocabulary:
            tensor = repad_vocab_rows(tensor, vocab_size, vocab_rows)
        for rank, state_dict in enumerate(per_rank):
            if size == 1:
                state_dict[name] = tensor
            elif entry.sharding is None:
                state_dict[name] = tensor.clone()
            else:
                try:
                    state_dict[name] = shard_of_full(tensor, entry.sharding, rank, size).clone()
                except ValueError as error:
                    raise CheckpointError(f"'{name}': {error}") from None
    return per_rank
