"""What a Megatron-core ``GPTModel``'s state dict holds, next to megaspec's names for it.

For each weight: its megaspec and Megatron names, its full (tensor-parallel size 1) shape and
its tensor-parallel layout, a :class:`~megaspec.parallel.TensorParallelSharding` of
:mod:`megaspec.parallel.sharding` (the layouts are the same in both libraries); plus the
``_extra_state`` entries Megatron's modules add. Read from Megatron-core 0.19.2 and
Transformer Engine 2.20:

* local spec (``get_gpt_layer_local_spec``): separate norms ``input_layernorm`` and
  ``pre_mlp_layernorm`` (``torch.nn.RMSNorm`` / ``LayerNorm``, or Apex's); Megatron's own
  ``ColumnParallelLinear`` / ``RowParallelLinear``, whose ``get_extra_state`` returns ``None``.
* Transformer Engine spec (``get_gpt_layer_with_transformer_engine_spec``): the layer's norms
  are fused into the next linear, TE's ``LayerNormLinear``, as ``linear_qkv.layer_norm_weight``
  and ``linear_fc1.layer_norm_weight`` (``..._bias`` for LayerNorm); every TE module
  (``LayerNormLinear``, ``Linear``, ``DotProductAttention`` as ``core_attention``, and the
  ``RMSNorm`` / ``LayerNorm`` of QK-norm) keeps an ``_extra_state`` for FP8 metadata.
* Both: ``embedding.word_embeddings.weight``, ``decoder.final_layernorm.*`` (a TE norm, with
  ``_extra_state``, whenever Transformer Engine is importable, whatever the layer spec:
  ``transformer_block.LayerNormImpl``), ``output_layer.weight`` (absent when the embedding is
  shared) and ``output_layer._extra_state`` (a Megatron ``ColumnParallelLinear``, even when
  its weight is shared).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from megaspec.checkpoint.errors import CheckpointError
from megaspec.checkpoint.megatron_config import MegatronArguments
from megaspec.parallel import TensorParallelSharding

MegatronSpec = Literal["local", "transformer_engine"]
"""Which Megatron-core layer spec built the model: ``get_gpt_layer_local_spec`` or
``get_gpt_layer_with_transformer_engine_spec``."""

ExtraStateOwner = Literal["megatron", "transformer_engine"]
"""Whose module an ``_extra_state`` entry belongs to (it decides the value written)."""

# The same layouts as megaspec's ColumnParallelLinear (stacked_parts), RowParallelLinear and
# VocabParallelEmbedding; tests check them against a built model's recorded layouts.
COLUMN = TensorParallelSharding(dim=0)  # linear_qkv (rows packed per KV group), vocabulary rows
GATED_COLUMN = TensorParallelSharding(dim=0, parts=2)  # gated linear_fc1: [gate; up]
ROW = TensorParallelSharding(dim=1)  # linear_proj, linear_fc2

EXTRA_STATE = "_extra_state"

_Row = tuple[str, str, tuple[int, ...], TensorParallelSharding | None, bool]
"""(megaspec name, Megatron name, full shape, layout, whether the config has the weight)"""

_UNSUPPORTED_FEATURES = (
    (".mlp.router.", "mixture-of-experts layers (num_moe_experts)"),
    (".mlp.experts.", "mixture-of-experts layers (num_moe_experts)"),
    (".mlp.shared_experts.", "mixture-of-experts layers (num_moe_experts)"),
    (
        "embedding.position_embeddings.",
        "learned absolute position embeddings (position_embedding_type='learned_absolute')",
    ),
    ("_down_proj.", "multi-latent attention (multi_latent_attention)"),
    ("_up_proj.", "multi-latent attention (multi_latent_attention)"),
    ("mtp.", "multi-token prediction (mtp_num_layers)"),
)


@dataclass(frozen=True)
class WeightEntry:
    """One weight under both names.

    ``shape`` is the full (tensor-parallel size 1) shape; a ``vocabulary`` weight (embedding,
    output layer) has as many rows as its state dict's padding gives it, so only its other
    dimensions are fixed. ``sharding`` is ``None`` for a weight every rank holds whole.
    """

    megaspec: str
    megatron: str
    shape: tuple[int, ...]
    sharding: TensorParallelSharding | None
    vocabulary: bool = False


def weight_entries(arguments: MegatronArguments, spec: MegatronSpec) -> list[WeightEntry]:
    """Every weight of the model, in Megatron's state-dict order."""
    hidden = arguments.hidden_size
    entries = [WeightEntry("embedding.weight", "embedding.word_embeddings.weight", (0, hidden), COLUMN, True)]
    for index in range(arguments.num_layers):
        entries += _layer_entries(arguments, spec, index)
    entries += _norm_entries(arguments, "final_norm.", "decoder.final_layernorm.")
    if not arguments.share_embeddings_and_output_weights:
        entries.append(WeightEntry("output_layer.weight", "output_layer.weight", (0, hidden), COLUMN, True))
    return entries


def _norm_entries(arguments: MegatronArguments, ours: str, theirs: str) -> list[WeightEntry]:
    # theirs ends in "." (a norm module) or "layer_norm_" (a norm fused into TE's LayerNormLinear).
    parameters = ("weight", "bias") if arguments.normalization == "LayerNorm" else ("weight",)
    return [WeightEntry(ours + name, theirs + name, (arguments.hidden_size,), None) for name in parameters]


def _layer_entries(arguments: MegatronArguments, spec: MegatronSpec, index: int) -> list[WeightEntry]:
    ours, theirs = f"blocks.layers.{index}.", f"decoder.layers.{index}."
    fused = spec == "transformer_engine"
    hidden, head_dim, ffn = arguments.hidden_size, arguments.head_dim, arguments.feed_forward_size
    qkv_rows = (arguments.num_attention_heads + 2 * arguments.query_groups) * head_dim
    fc1 = GATED_COLUMN if arguments.gated_linear_unit else COLUMN
    fc1_rows = fc1.parts * ffn
    linear_bias, qk_norm = arguments.add_bias_linear, arguments.qk_layernorm
    attention: list[_Row] = [
        ("mixer.linear_qkv.weight", "self_attention.linear_qkv.weight", (qkv_rows, hidden), COLUMN, True),
        ("mixer.linear_qkv.bias", "self_attention.linear_qkv.bias", (qkv_rows,), COLUMN, arguments.qkv_bias),
        ("mixer.q_norm.weight", "self_attention.q_layernorm.weight", (head_dim,), None, qk_norm),
        ("mixer.k_norm.weight", "self_attention.k_layernorm.weight", (head_dim,), None, qk_norm),
        ("mixer.linear_proj.weight", "self_attention.linear_proj.weight",
         (hidden, arguments.num_attention_heads * head_dim), ROW, True),
        ("mixer.linear_proj.bias", "self_attention.linear_proj.bias", (hidden,), None, linear_bias),
    ]
    mlp: list[_Row] = [
        ("mlp.linear_fc1.weight", "mlp.linear_fc1.weight", (fc1_rows, hidden), fc1, True),
        ("mlp.linear_fc1.bias", "mlp.linear_fc1.bias", (fc1_rows,), fc1, linear_bias),
        ("mlp.linear_fc2.weight", "mlp.linear_fc2.weight", (hidden, ffn), ROW, True),
        ("mlp.linear_fc2.bias", "mlp.linear_fc2.bias", (hidden,), None, linear_bias),
    ]
    input_norm = "self_attention.linear_qkv.layer_norm_" if fused else "input_layernorm."
    pre_mlp_norm = "mlp.linear_fc1.layer_norm_" if fused else "pre_mlp_layernorm."
    return [
        *_norm_entries(arguments, ours + "input_norm.", theirs + input_norm),
        *_present(ours, theirs, attention),
        *_norm_entries(arguments, ours + "pre_mlp_norm.", theirs + pre_mlp_norm),
        *_present(ours, theirs, mlp),
    ]


def _present(ours: str, theirs: str, rows: list[_Row]) -> list[WeightEntry]:
    return [WeightEntry(ours + a, theirs + b, shape, sharding) for a, b, shape, sharding, on in rows if on]


def extra_state_entries(
    arguments: MegatronArguments, spec: MegatronSpec, *, transformer_engine_installed: bool
) -> dict[str, ExtraStateOwner]:
    """The ``_extra_state`` keys of the model's state dict, with whose module each is.

    ``transformer_engine_installed`` decides the final norm's (a TE norm whenever Transformer
    Engine is importable, see the module docstring).

    Raises:
        CheckpointError: for the Transformer Engine spec without Transformer Engine.
    """
    if spec == "transformer_engine" and not transformer_engine_installed:
        raise CheckpointError("the Transformer Engine spec needs Transformer Engine installed")
    owner: ExtraStateOwner = "transformer_engine" if spec == "transformer_engine" else "megatron"
    modules = ["self_attention.linear_qkv", "self_attention.linear_proj", "mlp.linear_fc1", "mlp.linear_fc2"]
    if spec == "transformer_engine":
        modules.insert(1, "self_attention.core_attention")
        if arguments.qk_layernorm:
            modules[2:2] = ["self_attention.q_layernorm", "self_attention.k_layernorm"]
    entries: dict[str, ExtraStateOwner] = {
        f"decoder.layers.{index}.{module}.{EXTRA_STATE}": owner
        for index in range(arguments.num_layers)
        for module in modules
    }
    if transformer_engine_installed:
        entries[f"decoder.final_layernorm.{EXTRA_STATE}"] = "transformer_engine"
    entries[f"output_layer.{EXTRA_STATE}"] = "megatron"
    return entries


def readable_extra_states(arguments: MegatronArguments) -> frozenset[str]:
    """Every ``_extra_state`` key a state dict of this model may hold, for either spec."""
    keys: set[str] = set()
    for spec in ("local", "transformer_engine"):
        keys |= set(extra_state_entries(arguments, spec, transformer_engine_installed=True))
    return frozenset(keys)


def unexpected_key_reason(key: str, arguments: MegatronArguments, spec: MegatronSpec) -> str:
    """Why a Megatron state dict's ``key`` has no place in the model ``arguments`` describe."""
    for marker, feature in _UNSUPPORTED_FEATURES:
        if marker in key:
            return f"megaspec does not support {feature}"
    other: MegatronSpec = "local" if spec == "transformer_engine" else "transformer_engine"
    if key in {entry.megatron for entry in weight_entries(arguments, other)}:
        return f"it belongs to the {other!r} spec; pass spec={other!r}"
    if key == "output_layer.weight":
        return "the config shares the embedding with the output layer (share_embeddings_and_output_weights)"
    layer = re.match(r"decoder\.layers\.(\d+)\.", key)
    if layer is not None and int(layer[1]) >= arguments.num_layers:
        return f"the config has {arguments.num_layers} layers (num_layers)"
    if "q_layernorm." in key or "k_layernorm." in key:
        return "the config has no QK-norm (qk_layernorm)"
    if "layernorm.bias" in key or "layer_norm_bias" in key:
        return "the config's normalization is RMSNorm, which has no bias"
    if key.endswith(".bias"):
        return "the config has no bias on this linear (add_bias_linear, add_qkv_bias)"
    return "it is no weight of the configured model"


def missing_key_reason(key: str, arguments: MegatronArguments) -> str:
    """Why the model ``arguments`` describe needs ``key``."""
    if key == "output_layer.weight":
        return (
            "the config does not share the embedding with the output layer "
            "(share_embeddings_and_output_weights)"
        )
    if "layernorm.bias" in key or "layer_norm_bias" in key:
        return "the config's normalization is LayerNorm, which has a bias"
    if key.endswith(".bias"):
        return "the config has a bias on this linear (add_bias_linear, add_qkv_bias)"
    if "q_layernorm." in key or "k_layernorm." in key:
        return "the config has QK-norm (qk_layernorm)"
    return "the configured model has this weight"
