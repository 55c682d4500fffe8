"""Hugging Face Llama-family tensor names and layouts <-> megaspec parameters.

Each megaspec parameter is made of one or more Hugging Face tensors in one of five layouts:

* ``whole``: the same tensor (norms, biases of row-parallel linears; replicated over ranks);
* ``row_parallel``: ``o_proj`` and ``down_proj``, whose input-feature columns are split;
* ``qkv``: ``q_proj``, ``k_proj``, ``v_proj`` packed per KV group into ``linear_qkv``;
* ``gated_fc1``: ``gate_proj`` and ``up_proj`` as ``linear_fc1 = [gate; up]``;
* ``vocab``: ``embed_tokens`` and ``lm_head``, rows padded to megaspec's padded vocabulary.

:func:`local_tensor` reads one rank's shard straight from a :class:`TensorSource` (only the
rows or columns the rank owns, see :mod:`megaspec.parallel.layouts`); :func:`hf_tensors` turns
a full (gathered) megaspec parameter back into Hugging Face tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import torch
from torch import Tensor

from megaspec.checkpoint.errors import CheckpointError, listed_names
from megaspec.checkpoint.hf_config import LlamaArchitecture
from megaspec.checkpoint.sources import TensorSource
from megaspec.models import GPTModel
from megaspec.peft import refuse_adapters
from megaspec.parallel import (
    ParallelGroups,
    gated_fc1_rows,
    pack_gated_fc1,
    pack_qkv,
    pad_vocab_rows,
    qkv_rows,
    row_parallel_columns,
    unpack_gated_fc1,
    unpack_qkv,
    unpad_vocab_rows,
    vocab_rows,
)

Layout = Literal["whole", "row_parallel", "qkv", "gated_fc1", "vocab"]

IGNORED_SUFFIXES: Final = (".rotary_emb.inv_freq",)
"""Buffers some older checkpoints saved; they are recomputed, never read."""


@dataclass(frozen=True)
class WeightMapping:
    """One megaspec parameter and the Hugging Face tensors (with their full shapes) it is
    made of, combined by ``layout``."""

    parameter: str
    layout: Layout
    hf_names: tuple[str, ...]
    hf_shapes: tuple[tuple[int, ...], ...]


def _layer_mappings(index: int, model: LlamaArchitecture) -> list[WeightMapping]:
    hf, ours = f"model.layers.{index}", f"blocks.layers.{index}"
    hidden, head_dim, ffn = model.hidden_size, model.head_dim, model.ffn_hidden_size
    query_rows, kv_rows = model.num_heads * head_dim, model.num_query_groups * head_dim
    attention, mlp = f"{hf}.self_attn", f"{hf}.mlp"

    def qkv(suffix: str, *trailing: int) -> WeightMapping:
        names = tuple(f"{attention}.{name}_proj.{suffix}" for name in ("q", "k", "v"))
        shapes = ((query_rows, *trailing), (kv_rows, *trailing), (kv_rows, *trailing))
        return WeightMapping(f"{ours}.mixer.linear_qkv.{suffix}", "qkv", names, shapes)

    def fc1(suffix: str, *trailing: int) -> WeightMapping:
        names = (f"{mlp}.gate_proj.{suffix}", f"{mlp}.up_proj.{suffix}")
        shapes = ((ffn, *trailing),) * 2
        return WeightMapping(f"{ours}.mlp.linear_fc1.{suffix}", "gated_fc1", names, shapes)

    def whole(parameter: str, name: str, rows: int) -> WeightMapping:
        return WeightMapping(f"{ours}.{parameter}", "whole", (f"{hf}.{name}",), ((rows,),))

    def row_parallel(parameter: str, name: str, columns: int) -> WeightMapping:
        shape = (hidden, columns)
        return WeightMapping(f"{ours}.{parameter}", "row_parallel", (f"{hf}.{name}",), (shape,))

    mappings = [whole("input_norm.weight", "input_layernorm.weight", hidden), qkv("weight", hidden)]
    if model.qkv_bias:
        mappings.append(qkv("bias"))
    if model.qk_norm:
        mappings.append(whole("mixer.q_norm.weight", "self_attn.q_norm.weight", head_dim))
        mappings.append(whole("mixer.k_norm.weight", "self_attn.k_norm.weight", head_dim))
    mappings.append(row_parallel("mixer.linear_proj.weight", "self_attn.o_proj.weight", query_rows))
    if model.proj_bias:
        mappings.append(whole("mixer.linear_proj.bias", "self_attn.o_proj.bias", hidden))
    mappings.append(whole("pre_mlp_norm.weight", "post_attention_layernorm.weight", hidden))
    mappings.append(fc1("weight", hidden))
    if model.mlp_bias:
        mappings.append(fc1("bias"))
    mappings.append(row_parallel("mlp.linear_fc2.weight", "mlp.down_proj.weight", ffn))
    if model.mlp_bias:
        mappings.append(whole("mlp.linear_fc2.bias", "mlp.down_proj.bias", hidden))
    return mappings


def hf_weight_mappings(model: LlamaArchitecture) -> list[WeightMapping]:
    """Every megaspec parameter of ``model`` with its Hugging Face tensors, in checkpoint
    order (embedding, layers, final norm, output layer unless tied)."""
    vocab_shape = (model.vocab_size, model.hidden_size)
    embedding = ("model.embed_tokens.weight",)
    mappings = [WeightMapping("embedding.weight", "vocab", embedding, (vocab_shape,))]
    for index in range(model.num_layers):
        mappings += _layer_mappings(index, model)
    norm = ("model.norm.weight",)
    mappings.append(WeightMapping("final_norm.weight", "whole", norm, ((model.hidden_size,),)))
    if not model.tie_embeddings:
        head = ("lm_head.weight",)
        mappings.append(WeightMapping("output_layer.weight", "vocab", head, (vocab_shape,)))
    return mappings


def check_source(source: TensorSource, mappings: list[WeightMapping], *, tied: bool) -> None:
    """Check that ``source`` holds exactly the tensors ``mappings`` need, in their shapes.

    Raises:
        CheckpointError: naming missing or unexpected tensors, or a tensor whose shape does
            not match the config (with both shapes).
    """
    expected = {
        name: shape
        for mapping in mappings
        for name, shape in zip(mapping.hf_names, mapping.hf_shapes)
    }
    present = {name for name in source.names() if not name.endswith(IGNORED_SUFFIXES)}
    missing = expected.keys() - present
    if missing:
        raise CheckpointError(
            f"{source.description}: missing tensors the config needs: {listed_names(missing)}"
        )
    unexpected = present - expected.keys()
    if unexpected:
        hint = (
            " (tie_word_embeddings is true: the output layer is model.embed_tokens.weight)"
            if tied and "lm_head.weight" in unexpected
            else ""
        )
        raise CheckpointError(
            f"{source.description}: unexpected tensors the config does not describe: "
            f"{listed_names(unexpected)}{hint}"
        )
    for name, shape in expected.items():
        found = source.shape(name)
        if found != shape:
            raise CheckpointError(
                f"{source.location(name)}: {name}: shape {list(found)} does not match the config "
                f"(expected {list(shape)})"
            )


def local_tensor(
    mapping: WeightMapping,
    source: TensorSource,
    model: LlamaArchitecture,
    groups: ParallelGroups,
    padded_vocab: int,
) -> Tensor:
    """This rank's shard of ``mapping``'s parameter, reading only the parts it owns."""
    rank, size = groups.tensor_rank, groups.tensor_size
    names = mapping.hf_names
    if mapping.layout == "whole":
        return source.read(names[0])
    if mapping.layout == "row_parallel":
        columns = row_parallel_columns(mapping.hf_shapes[0][1], rank, size)
        return source.read(names[0], (slice(None), columns))
    if mapping.layout == "qkv":
        rows = qkv_rows(model.num_heads, model.num_query_groups, model.head_dim, rank, size)
        query = source.read(names[0], (rows.query,))
        key = source.read(names[1], (rows.key,))
        value = source.read(names[2], (rows.value,))
        return pack_qkv(query, key, value, rows.groups)
    if mapping.layout == "gated_fc1":
        fc1 = gated_fc1_rows(model.ffn_hidden_size, rank, size)
        return pack_gated_fc1(source.read(names[0], (fc1.gate,)), source.read(names[1], (fc1.up,)))
    owned = vocab_rows(model.vocab_size, padded_vocab, rank, size)
    return pad_vocab_rows(source.read(names[0], (owned.rows,)), padded_vocab // size)


def hf_tensors(mapping: WeightMapping, full: Tensor, model: LlamaArchitecture) -> dict[str, Tensor]:
    """The Hugging Face tensors of a full (tensor-parallel size 1, gathered) parameter."""
    if mapping.layout == "qkv":
        parts: tuple[Tensor, ...] = unpack_qkv(full, model.num_heads, model.num_query_groups)
    elif mapping.layout == "gated_fc1":
        parts = unpack_gated_fc1(full)
    elif mapping.layout == "vocab":
        parts = (unpad_vocab_rows(full, model.vocab_size),)
    else:
        parts = (full.contiguous(),)
    return dict(zip(mapping.hf_names, parts))


def load_hf_weights(model: GPTModel, architecture: LlamaArchitecture, source: TensorSource) -> None:
    """Copy ``source``'s Hugging Face tensors into ``model`` (built from the config that
    ``architecture`` describes, at any tensor-parallel size), each rank reading its shards.

    Raises:
        CheckpointError: as :func:`check_source`.
        ValueError: if ``model``'s parameters are not those of ``architecture``.
    """
    mappings = hf_weight_mappings(architecture)
    check_model_parameters(model, mappings)
    check_source(source, mappings, tied=architecture.tie_embeddings)
    by_name = {mapping.parameter: mapping for mapping in mappings}
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            mapping = by_name[name]
            local = local_tensor(mapping, source, architecture, model.groups, model.padded_vocab_size)
            if local.shape != parameter.shape:
                raise ValueError(
                    f"{name}: the model holds {list(parameter.shape)} on this rank, the checkpoint "
                    f"gives {list(local.shape)}: the model was not built from this config"
                )
            parameter.copy_(local)


def check_model_parameters(model: GPTModel, mappings: list[WeightMapping]) -> None:
    """Check that ``model`` has exactly the parameters ``mappings`` describe.

    Raises:
        ValueError: naming the parameters that differ, or the adapters a model holds.
    """
    refuse_adapters(model)
    names = {name for name, _ in model.named_parameters()}
    expected = {mapping.parameter for mapping in mappings}
    if names != expected:
        raise ValueError(
            f"the model's parameters differ from the config's: missing "
            f"{listed_names(expected - names) or '-'}, unexpected "
            f"{listed_names(names - expected) or '-'}"
        )
