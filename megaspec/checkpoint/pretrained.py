"""``from_pretrained``: a model with pretrained weights, from a Hugging Face checkpoint (a
directory or a ``transformers`` model object) or a megaspec run directory.

The checkpoint's config is the ``pretrained`` layer of :func:`megaspec.config.resolve`; the
caller's overrides apply on top and the result is validated once. Overrides may change how
the model trains (``lr_scale``, ``apply_peft``, ``weight_decay``, ``init``, ``init_std``,
``fuse_elementwise``), never what it computes: an override that would change a parameter's
shape or the function (layers, widths, heads, KV groups, vocabulary, norms, biases, RoPE,
tied embeddings, ...) is refused with the field, the old and the new value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import torch
from torch import nn

from megaspec.checkpoint.errors import CheckpointError, show
from megaspec.checkpoint.hf import CONFIG_FILE as HF_CONFIG_FILE
from megaspec.checkpoint.hf import open_hf_checkpoint
from megaspec.checkpoint.hf_config import model_data_from_hf
from megaspec.checkpoint.hf_config_export import llama_architecture
from megaspec.checkpoint.hf_weights import load_hf_weights
from megaspec.checkpoint.native import load_megaspec_weights
from megaspec.checkpoint.sources import SafetensorsSource
from megaspec.config import (
    Config,
    ConfigError,
    DynamicConfig,
    ModelConfig,
    PathLike,
    RunConfig,
    from_data,
    load,
    resolve,
    validate_tree,
)
from megaspec.config.resolve import Override
from megaspec.models import GPTModel
from megaspec.parallel import ParallelGroups, seeded_initialization
from megaspec.schema import deferred_validation, join_path

RUN_CONFIG_FILE: Final = "config.yaml"
TRAINING_SETTINGS: Final = frozenset(
    {
        "lr_scale",
        "apply_peft",
        "weight_decay",
        "init",
        "init_std",
        "fuse_elementwise",
        "recompute",
        "recompute_core_attention",
        "fused_cross_entropy",
        "cross_entropy_chunk_tokens",
        "sdpa_backend",
    }
)
"""Config fields an override may change on a pretrained model (at any depth)."""


@dataclass(frozen=True)
class PretrainedModel:
    """What :func:`from_pretrained` returns.

    Attributes:
        model: the model with the checkpoint's weights, in eval mode.
        config: its resolved config (the checkpoint's, with the overrides); save it with
            ``megaspec.config.save`` or pass it to :func:`~megaspec.checkpoint.export_hf`.
        source_format: ``"huggingface"`` or ``"megaspec"`` (a run directory).
        hf_config: the Hugging Face config data the model came from (``None`` for a run
            directory); ``export_hf(..., template=hf_config)`` keeps its token ids and
            ``model_type``.
    """

    model: GPTModel
    config: ModelConfig
    source_format: Literal["huggingface", "megaspec"]
    hf_config: Mapping[str, Any] | None = None


def from_pretrained(
    source: PathLike | nn.Module,
    *,
    overrides: Sequence[Override] = (),
    groups: ParallelGroups | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    sequence_parallel: bool = False,
) -> PretrainedModel:
    """Build a model from a pretrained checkpoint and load its weights.

    Args:
        source: a Hugging Face checkpoint directory (``config.json`` + safetensors), a
            megaspec run directory (``config.yaml`` + ``model.safetensors``), or a
            ``transformers`` model object (Llama, Mistral, Qwen2, Qwen3).
        overrides: ``dotted.path=value`` strings or mappings, relative to the model config
            (``decoder.block.mixer.lr_scale=0``); training settings only (see the module).
        groups: tensor-parallel groups (default: one process). Call on every rank; each
            reads only its own shards from the files.
        device, dtype: where and in which dtype the parameters live (a checkpoint in
            another dtype is converted; the same dtype is copied bit for bit).
        sequence_parallel: build with sequence parallelism.

    Memory: the model is built first (its random initial weights are drawn on the CPU, one
    full tensor at a time, then each rank keeps its shard in ``dtype`` on ``device``) and the
    checkpoint copied in: each rank needs its shard of the model, plus one full float32
    weight on the CPU while building (the largest is the embedding, vocabulary x hidden),
    plus its slice of the largest weight being read. Safetensors files are memory-mapped,
    never read whole. A model object source is in memory already (so is its state dict).

    Raises:
        CheckpointError: for an unsupported checkpoint (named field and value), a missing
            file, shard or tensor, or a shape that does not match the config.
        ConfigError: for a bad override, an override that changes the architecture, or a
            model that does not split over ``groups``' tensor-parallel size.
    """
    groups = ParallelGroups.single() if groups is None else groups
    if isinstance(source, nn.Module) or _is_hf_directory(Path(source)):
        return _from_hf(source, overrides, groups, device, dtype, sequence_parallel)
    directory = Path(source)
    run = load(RunConfig, directory / RUN_CONFIG_FILE)
    config = _resolve_over(run.model, overrides, where=str(directory / RUN_CONFIG_FILE))
    model = _build(config, groups, device, dtype, sequence_parallel)
    with SafetensorsSource(directory) as tensors:
        load_megaspec_weights(model, tensors)
    return PretrainedModel(model=model.eval(), config=config, source_format="megaspec")


def _is_hf_directory(directory: Path) -> bool:
    has_hf, has_run = (directory / HF_CONFIG_FILE).is_file(), (directory / RUN_CONFIG_FILE).is_file()
    if has_hf and has_run:
        raise CheckpointError(
            f"{directory}: holds both {HF_CONFIG_FILE} (Hugging Face) and {RUN_CONFIG_FILE} "
            f"(megaspec run); which one is meant is unclear"
        )
    if not (has_hf or has_run):
        raise CheckpointError(
            f"{directory}: neither {HF_CONFIG_FILE} (a Hugging Face checkpoint) nor "
            f"{RUN_CONFIG_FILE} (a megaspec run directory)"
        )
    return has_hf


def _from_hf(
    source: PathLike | nn.Module,
    overrides: Sequence[Override],
    groups: ParallelGroups,
    device: str | torch.device,
    dtype: torch.dtype,
    sequence_parallel: bool,
) -> PretrainedModel:
    with open_hf_checkpoint(source) as checkpoint:
        data = model_data_from_hf(checkpoint.config, where=checkpoint.where)
        with deferred_validation():  # validated once, with the overrides, by resolve
            pretrained = from_data(ModelConfig, data)
        config = _resolve_over(pretrained, overrides, where=checkpoint.where)
        architecture = llama_architecture(config)
        model = _build(config, groups, device, dtype, sequence_parallel)
        load_hf_weights(model, architecture, checkpoint.tensors)
        hf_config = dict(checkpoint.config)
    return PretrainedModel(
        model=model.eval(), config=config, source_format="huggingface", hf_config=hf_config
    )


def _resolve_over(
    pretrained: ModelConfig, overrides: Sequence[Override], *, where: str
) -> ModelConfig:
    try:
        config = resolve(ModelConfig, pretrained=pretrained, overrides=overrides)
    except ConfigError:
        try:
            validate_tree(pretrained)
        except ConfigError as invalid:
            message = f"{where}: does not describe a valid megaspec model: {invalid}"
            raise CheckpointError(message) from None
        raise
    check_same_architecture(pretrained, config)
    return config


def _build(
    config: ModelConfig,
    groups: ParallelGroups,
    device: str | torch.device,
    dtype: torch.dtype,
    sequence_parallel: bool,
) -> GPTModel:
    # The seed only fixes the initial values the checkpoint then overwrites; it keeps the
    # caller's random state untouched.
    with torch.device(device), seeded_initialization(0):
        return config.build(groups, sequence_parallel=sequence_parallel, params_dtype=dtype)


def check_same_architecture(pretrained: ModelConfig, config: ModelConfig) -> None:
    """Refuse a ``config`` that computes a different function than ``pretrained`` (any
    difference outside :data:`TRAINING_SETTINGS`; linear biases compared as built).

    Raises:
        ConfigError: naming the first differing field (relative to the model config), its
            old and its new value.
    """
    before, after = architecture_values(pretrained), architecture_values(config)
    for path in [*before, *(path for path in after if path not in before)]:
        if before.get(path, _UNSET) == after.get(path, _UNSET):
            continue
        # A sub-config set or removed (rotary_scaling: null -> {...}) is named as a whole.
        shown = next(prefix for prefix in _prefixes(path) if prefix in before or prefix in after)
        old, new = _value_at(before, shown), _value_at(after, shown)
        raise ConfigError(
            shown,
            f"changes the architecture of the pretrained model ({_shown(old)} -> {_shown(new)}); "
            f"growing or reshaping a pretrained model is not available yet (overrides may "
            f"change {', '.join(sorted(TRAINING_SETTINGS))})",
        )


_UNSET: Final = object()


def _prefixes(path: str) -> list[str]:
    """``a.b.c`` -> ``[a, a.b, a.b.c]``."""
    parts = path.split(".")
    return [".".join(parts[: count + 1]) for count in range(len(parts))]


def _value_at(flat: dict[str, object], path: str) -> object:
    if path in flat:
        return flat[path]
    inside = f"{path}."
    below = {key.removeprefix(inside): value for key, value in flat.items() if key.startswith(inside)}
    return below or _UNSET


def _shown(value: object) -> str:
    return "not set" if value is _UNSET else show(value)


def architecture_values(config: ModelConfig) -> dict[str, object]:
    """Every setting of ``config`` that shapes its parameters or its function, by dotted path.

    Training settings are left out; a linear's ``bias: null`` is replaced by the default its
    parent gives it (the mixer's or MLP's ``bias``, none for the output layer), and those
    parent defaults are then left out, so only the biases a model really has are compared.
    """
    flat = _flatten(config, "")
    for path in [path for path in flat if path.endswith(".bias") and flat[path] is None]:
        owner = path.rsplit(".", 2)[0] if path.count(".") >= 2 else ""
        flat[path] = flat.get(join_path(owner, "bias"), False) if owner else False
    for path in list(flat):
        owner = path.removesuffix(".bias")
        has_linears = any(join_path(owner, f"{linear}.bias") in flat for linear in ("qkv", "fc1"))
        if path.endswith(".bias") and has_linears:
            del flat[path]
    return flat


def _flatten(config: Config, prefix: str) -> dict[str, object]:
    values: dict[str, object] = {}
    if isinstance(config, DynamicConfig):
        values[join_path(prefix, "type")] = config.type_name
    for field in dataclasses.fields(config):
        if not field.init or field.name in TRAINING_SETTINGS:
            continue
        values.update(_flatten_value(getattr(config, field.name), join_path(prefix, field.name)))
    return values


def _flatten_value(value: object, path: str) -> dict[str, object]:
    if isinstance(value, Config):
        return _flatten(value, path)
    if isinstance(value, Mapping):
        flat: dict[str, object] = {}
        for key, item in value.items():
            flat.update(_flatten_value(item, join_path(path, str(key))))
        return flat
    return {path: list(value) if isinstance(value, tuple) else value}
