"""Megatron-core state dicts to and from megaspec's (megaspec.checkpoint.megatron).

Megatron itself needs CUDA (bench/megatron_parity.py compares logits with it on a GPU); here
tests/helpers/megatron_reference.py, Megatron's forward written from its source, reads the
converted weights as Megatron would, and megaspec must compute the same logits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from megaspec.checkpoint import (
    MegatronArguments,
    MegatronSpec,
    from_megatron,
    load_from_megatron,
    model_config,
    model_to_megatron,
    to_megatron,
)
from megaspec.checkpoint.megatron_keys import weight_entries
from megaspec.config import ModelConfig
from megaspec.models import GPTModel
from megaspec.parallel import ParallelGroups, seeded_initialization, shard_of_full, sharding_of
from tests.helpers.distributed import run_on_ranks
from tests.helpers.megatron_reference import megatron_logits
from tests.helpers.reference_llama import randomise

VOCAB = 300
# Llama-style: RMSNorm, GQA, QK-norm, SwiGLU, no biases, partial rotary, untied.
LLAMA = MegatronArguments(
    num_layers=2, hidden_size=32, num_attention_heads=4, num_query_groups=2, ffn_hidden_size=48,
    vocab_size=VOCAB, normalization="RMSNorm", gated_linear_unit=True, activation_func=F.silu,
    add_bias_linear=False, qk_layernorm=True, position_embedding_type="rope", rotary_percent=0.5,
)  # fmt: skip
# GPT-style, Megatron's defaults: LayerNorm, GeLU, biases everywhere; tied embeddings.
GPT = MegatronArguments(
    num_layers=2, hidden_size=32, num_attention_heads=4, ffn_hidden_size=48, vocab_size=VOCAB,
    position_embedding_type="rope", share_embeddings_and_output_weights=True,
)  # fmt: skip
# Qwen-style: a QKV bias only, one KV group (Megatron replicates it over TP ranks), wide heads.
QWEN = MegatronArguments(
    num_layers=1, hidden_size=32, num_attention_heads=4, num_query_groups=1, kv_channels=16,
    ffn_hidden_size=48, vocab_size=VOCAB, normalization="RMSNorm", gated_linear_unit=True,
    activation_func=F.silu, add_bias_linear=False, add_qkv_bias=True, position_embedding_type="rope",
    rotary_base=1e6,
)  # fmt: skip
MODELS = {"llama": LLAMA, "gpt": GPT, "qwen": QWEN}
SPECS: tuple[MegatronSpec, ...] = ("local", "transformer_engine")


def randomised_model(
    config: ModelConfig, groups: ParallelGroups | None = None, dtype: torch.dtype = torch.float32
) -> GPTModel:
    """Every weight far from its initial value (padded vocabulary rows stay zero)."""
    with seeded_initialization(0):
        model = config.build(groups, params_dtype=dtype)
    torch.manual_seed(1)
    randomise(model)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in ("embedding.weight", "output_layer.weight"):
                parameter[config.vocab_size :] = 0
    return model


def weight(state_dict: Mapping[str, Tensor | None], key: str) -> Tensor:
    """A Megatron state dict's tensor (its ``_extra_state`` entries may be ``None``)."""
    value = state_dict[key]
    assert value is not None, key
    return value


def tokens() -> Tensor:
    return torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(5))


def logits(model: GPTModel) -> Tensor:
    with torch.no_grad():
        return model(tokens())


@pytest.mark.parametrize("name", MODELS)
def test_megatron_reads_converted_weights_as_megaspec_does(name: str) -> None:
    arguments = MODELS[name]
    config = model_config(arguments)
    model = randomised_model(config, dtype=torch.float64)
    (megatron,) = to_megatron(model.state_dict(), config, spec="local")
    expected = megatron_logits(megatron, arguments, tokens())[..., :VOCAB]
    # megaspec computes RoPE's angles in float32, hence not float64's precision.
    torch.testing.assert_close(logits(model), expected, rtol=0, atol=1e-6)


def test_reference_tells_per_group_packing_from_a_naive_concatenation() -> None:
    config = model_config(LLAMA)
    model = randomised_model(config, dtype=torch.float64)
    (megatron,) = to_megatron(model.state_dict(), config, spec="local")
    key = "decoder.layers.0.self_attention.linear_qkv.weight"
    groups = weight(megatron, key).view(2, 4, 8, 32)  # [group, (2 q heads, k, v), head_dim, hidden]
    query, key_, value = groups[:, :2], groups[:, 2], groups[:, 3]
    megatron[key] = torch.cat([query.reshape(-1, 32), key_.reshape(-1, 32), value.reshape(-1, 32)])
    naive = megatron_logits(megatron, LLAMA, tokens())[..., :VOCAB]
    assert (naive - logits(model)).abs().max() > 0.1


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("tensor_parallel_size", [1, 2])
@pytest.mark.parametrize("name", MODELS)
def test_round_trip_is_bitwise(name: str, tensor_parallel_size: int, spec: MegatronSpec) -> None:
    config = model_config(MODELS[name])
    model = randomised_model(config)
    megatron = to_megatron(model.state_dict(), config, spec=spec, tensor_parallel_size=tensor_parallel_size)
    assert len(megatron) == tensor_parallel_size
    (back,) = from_megatron(megatron, config, spec=spec)
    original = model.state_dict()
    assert list(back) == list(original)
    for key, tensor in original.items():
        assert back[key].dtype == tensor.dtype and torch.equal(back[key], tensor), key
    converted = config.build()
    converted.load_state_dict(back)
    assert torch.equal(logits(converted), logits(model))


def test_each_rank_holds_its_kv_groups_gate_and_up_columns_and_vocabulary_rows() -> None:
    config = model_config(LLAMA)
    model = randomised_model(config)
    (full,) = to_megatron(model.state_dict(), config, spec="local", padded_vocab_size=512)
    ranks = to_megatron(model.state_dict(), config, spec="local", tensor_parallel_size=2)
    layer = "decoder.layers.1."
    per_group = weight(full, layer + "self_attention.linear_qkv.weight").view(2, -1, 32)  # [q, q, k, v] rows
    gate, up = weight(full, layer + "mlp.linear_fc1.weight").chunk(2)
    for rank, state_dict in enumerate(ranks):
        assert torch.equal(state_dict[layer + "self_attention.linear_qkv.weight"], per_group[rank])
        assert torch.equal(
            state_dict[layer + "mlp.linear_fc1.weight"], torch.cat([gate.chunk(2)[rank], up.chunk(2)[rank]])
        )
        for name in ("self_attention.linear_proj.weight", "mlp.linear_fc2.weight"):
            assert torch.equal(state_dict[layer + name], weight(full, layer + name).chunk(2, dim=1)[rank])
        for name in ("embedding.word_embeddings.weight", "output_layer.weight"):
            assert torch.equal(state_dict[name], weight(full, name)[256 * rank : 256 * (rank + 1)])
        norm = layer + "input_layernorm.weight"
        assert torch.equal(state_dict[norm], full[norm])


@pytest.mark.parametrize("spec", SPECS)
def test_rank_dicts_are_the_shards_of_the_full_dict(spec: MegatronSpec) -> None:
    config = model_config(GPT)
    model = randomised_model(config)
    (full,) = to_megatron(model.state_dict(), config, spec=spec, padded_vocab_size=512)
    ranks = to_megatron(model.state_dict(), config, spec=spec, tensor_parallel_size=2)
    for entry in weight_entries(GPT, spec):
        for rank in range(2):
            tensor = weight(full, entry.megatron)
            expected = tensor if entry.sharding is None else shard_of_full(tensor, entry.sharding, rank, 2)
            assert torch.equal(ranks[rank][entry.megatron], expected), entry.megatron


@pytest.mark.parametrize("name", MODELS)
def test_layouts_are_those_the_model_records(name: str) -> None:
    config = model_config(MODELS[name])
    parameters = dict(config.build().named_parameters())
    entries = weight_entries(MODELS[name], "local")
    assert [entry.megaspec for entry in entries] == list(parameters)
    for entry in entries:
        assert sharding_of(parameters[entry.megaspec]) == entry.sharding, entry.megaspec
        if not entry.vocabulary:
            assert tuple(parameters[entry.megaspec].shape) == entry.shape


def test_local_spec_keys_of_megatron_core() -> None:
    config = model_config(replace(GPT, num_layers=1, share_embeddings_and_output_weights=False))
    (state_dict,) = to_megatron(randomised_model(config).state_dict(), config, spec="local")
    layer = "decoder.layers.0."
    assert {key: None if value is None else tuple(value.shape) for key, value in state_dict.items()} == {
        "embedding.word_embeddings.weight": (384, 32),
        layer + "input_layernorm.weight": (32,),
        layer + "input_layernorm.bias": (32,),
        layer + "self_attention.linear_qkv.weight": (96, 32),
        layer + "self_attention.linear_qkv.bias": (96,),
        layer + "self_attention.linear_qkv._extra_state": None,
        layer + "self_attention.linear_proj.weight": (32, 32),
        layer + "self_attention.linear_proj.bias": (32,),
        layer + "self_attention.linear_proj._extra_state": None,
        layer + "pre_mlp_layernorm.weight": (32,),
        layer + "pre_mlp_layernorm.bias": (32,),
        layer + "mlp.linear_fc1.weight": (48, 32),
        layer + "mlp.linear_fc1.bias": (48,),
        layer + "mlp.linear_fc1._extra_state": None,
        layer + "mlp.linear_fc2.weight": (32, 48),
        layer + "mlp.linear_fc2.bias": (32,),
        layer + "mlp.linear_fc2._extra_state": None,
        "decoder.final_layernorm.weight": (32,),
        "decoder.final_layernorm.bias": (32,),
        "decoder.final_layernorm._extra_state": (0,),  # a TE norm: TE is installed by default
        "output_layer.weight": (384, 32),
        "output_layer._extra_state": None,
    }
    (without_te,) = to_megatron(
        randomised_model(config).state_dict(), config, spec="local", transformer_engine_installed=False
    )
    assert set(state_dict) - set(without_te) == {"decoder.final_layernorm._extra_state"}


def test_transformer_engine_spec_keys_of_megatron_core() -> None:
    config = model_config(replace(LLAMA, num_layers=1))
    (state_dict,) = to_megatron(randomised_model(config).state_dict(), config, spec="transformer_engine")
    layer = "decoder.layers.0."
    assert {key: None if value is None else tuple(value.shape) for key, value in state_dict.items()} == {
        "embedding.word_embeddings.weight": (384, 32),
        layer + "self_attention.linear_qkv.layer_norm_weight": (32,),
        layer + "self_attention.linear_qkv.weight": (64, 32),
        layer + "self_attention.linear_qkv._extra_state": (0,),
        layer + "self_attention.core_attention._extra_state": (0,),
        layer + "self_attention.q_layernorm.weight": (8,),
        layer + "self_attention.q_layernorm._extra_state": (0,),
        layer + "self_attention.k_layernorm.weight": (8,),
        layer + "self_attention.k_layernorm._extra_state": (0,),
        layer + "self_attention.linear_proj.weight": (32, 32),
        layer + "self_attention.linear_proj._extra_state": (0,),
        layer + "mlp.linear_fc1.layer_norm_weight": (32,),
        layer + "mlp.linear_fc1.weight": (96, 32),
        layer + "mlp.linear_fc1._extra_state": (0,),
        layer + "mlp.linear_fc2.weight": (32, 48),
        layer + "mlp.linear_fc2._extra_state": (0,),
        "decoder.final_layernorm.weight": (32,),
        "decoder.final_layernorm._extra_state": (0,),
        "output_layer.weight": (384, 32),
        "output_layer._extra_state": None,
    }
    extra_state = state_dict[layer + "self_attention.core_attention._extra_state"]
    assert extra_state is not None and extra_state.dtype == torch.uint8


def test_megatron_padding_is_dropped_and_megaspec_padding_is_zero() -> None:
    config = model_config(LLAMA)
    model = randomised_model(config)
    megatron = to_megatron(
        model.state_dict(), config, spec="local", tensor_parallel_size=2, padded_vocab_size=1000
    )
    for state_dict in megatron:
        assert weight(state_dict, "embedding.word_embeddings.weight").shape == (500, 32)
        weight(state_dict, "output_layer.weight")[400:] = 7.0  # global rows 400-499 and 900-999: padding
    (back,) = from_megatron(megatron, config, spec="local")
    assert torch.equal(back["output_layer.weight"], model.state_dict()["output_layer.weight"])
    assert back["output_layer.weight"].shape == (384, 32)


def tensor_parallel_case(megatron: list[dict[str, Any]], config: ModelConfig) -> dict[str, Any]:
    """On each of two ranks: a TP=2 model loads its shards of Megatron's TP=2 dicts."""
    groups = ParallelGroups.tensor_parallel_over_world()
    with seeded_initialization(3):  # other weights than the converted ones, to be overwritten
        model = config.build(groups)
    load_from_megatron(model, megatron, config, spec="transformer_engine")
    again = model_to_megatron(
        model, config, spec="transformer_engine", tensor_parallel_size=2, padded_vocab_size=640
    )
    same = all(
        value is None or torch.equal(value, megatron[rank][key]) or key.endswith("_extra_state")
        for rank in range(2)
        for key, value in again[rank].items()
    )
    return {"logits": logits(model), "same": same and [list(d) for d in again] == [list(d) for d in megatron]}


def test_tensor_parallel_model_from_per_rank_megatron_dicts_gives_single_process_logits() -> None:
    config = model_config(LLAMA)
    model = randomised_model(config)
    megatron = to_megatron(
        model.state_dict(), config, spec="transformer_engine", tensor_parallel_size=2, padded_vocab_size=640
    )
    results = run_on_ranks(2, tensor_parallel_case, megatron, config)
    for result in results:
        torch.testing.assert_close(result["logits"], logits(model), rtol=0, atol=1e-5)
        assert result["same"]


# --- errors -----------------------------------------------------------------------------------


def megatron_of(
    arguments: MegatronArguments, spec: MegatronSpec = "local", size: int = 1
) -> list[dict[str, Any]]:
    config = model_config(arguments)
    state_dict = randomised_model(config).state_dict()
    return list(to_megatron(state_dict, config, spec=spec, tensor_parallel_size=size))


def conversion_error(
    state_dicts: list[dict[str, Any]], arguments: MegatronArguments, spec: MegatronSpec = "local"
) -> str:
    with pytest.raises(ValueError) as error:
        from_megatron(state_dicts, model_config(arguments), spec=spec)
    return str(error.value)


def test_missing_key_is_named() -> None:
    (state_dict,) = megatron_of(LLAMA)
    del state_dict["decoder.layers.1.mlp.linear_fc2.weight"]
    assert conversion_error([state_dict], LLAMA) == (
        "Megatron state dict: missing key 'decoder.layers.1.mlp.linear_fc2.weight': the configured "
        "model has this weight"
    )


def test_wrong_shape_is_named_with_both_shapes_and_the_rank() -> None:
    ranks = megatron_of(LLAMA, size=2)
    ranks[1]["decoder.layers.0.self_attention.linear_qkv.weight"] = torch.zeros(16, 32)
    assert conversion_error(ranks, LLAMA) == (
        "Megatron state dict of tensor-parallel rank 1: 'decoder.layers.0.self_attention.linear_qkv."
        "weight' has shape (16, 32), expected (32, 32)"
    )


def test_mixture_of_experts_is_refused() -> None:
    (state_dict,) = megatron_of(LLAMA)
    state_dict["decoder.layers.0.mlp.router.weight"] = torch.zeros(8, 32)
    assert conversion_error([state_dict], LLAMA) == (
        "Megatron state dict: unexpected key 'decoder.layers.0.mlp.router.weight': megaspec does not "
        "support mixture-of-experts layers (num_moe_experts)"
    )


def test_the_other_specs_dict_is_refused_with_a_hint() -> None:
    assert conversion_error(megatron_of(LLAMA, "transformer_engine"), LLAMA, "local") == (
        "Megatron state dict: unexpected key 'decoder.layers.0.self_attention.linear_qkv.layer_norm_weight': "
        "it belongs to the 'transformer_engine' spec; pass spec='transformer_engine'"
    )


def test_tied_and_untied_embeddings_must_agree() -> None:
    tied = replace(LLAMA, share_embeddings_and_output_weights=True)
    assert conversion_error(megatron_of(LLAMA), tied) == (
        "Megatron state dict: unexpected key 'output_layer.weight': the config shares the embedding "
        "with the output layer (share_embeddings_and_output_weights)"
    )
    assert conversion_error(megatron_of(tied), LLAMA) == (
        "Megatron state dict: missing key 'output_layer.weight': the config does not share the "
        "embedding with the output layer (share_embeddings_and_output_weights)"
    )


def test_biases_and_norms_must_agree() -> None:
    assert conversion_error(megatron_of(replace(LLAMA, add_bias_linear=True)), LLAMA) == (
        "Megatron state dict: unexpected key 'decoder.layers.0.self_attention.linear_qkv.bias': the "
        "config has no bias on this linear (add_bias_linear, add_qkv_bias)"
    )
    layer_norm = replace(GPT, share_embeddings_and_output_weights=False)
    rms_norm = replace(layer_norm, normalization="RMSNorm")
    assert conversion_error(megatron_of(layer_norm), rms_norm) == (
        "Megatron state dict: unexpected key 'decoder.layers.0.input_layernorm.bias': the config's "
        "normalization is RMSNorm, which has no bias"
    )


def test_too_few_vocabulary_rows_are_refused() -> None:
    (state_dict,) = megatron_of(LLAMA)
    for name in ("embedding.word_embeddings.weight", "output_layer.weight"):
        state_dict[name] = state_dict[name][:256]
    assert conversion_error([state_dict], LLAMA) == (
        "Megatron state dict: 'embedding.word_embeddings.weight' has 256 vocabulary rows, fewer than "
        "the config's vocab_size 300"
    )


def test_sizes_that_do_not_split_over_the_ranks_are_refused() -> None:
    config = model_config(LLAMA)
    with pytest.raises(ValueError) as error:
        to_megatron(randomised_model(config).state_dict(), config, spec="local", tensor_parallel_size=3)
    assert str(error.value) == (
        "'decoder.layers.0.self_attention.linear_qkv.weight': dimension 0 of size 64 does not split "
        "into 1 part(s) of 3 equal shard(s)"
    )


def test_megaspec_state_dict_of_another_model_is_refused() -> None:
    config = model_config(LLAMA)
    state_dict = dict(randomised_model(config).state_dict())
    state_dict["blocks.layers.2.input_norm.weight"] = torch.ones(32)
    with pytest.raises(ValueError) as error:
        to_megatron(state_dict, config, spec="local")
    assert str(error.value) == (
        "megaspec state dict: unexpected key 'blocks.layers.2.input_norm.weight': the configured model "
        "has no such weight"
    )


def test_transformer_engine_spec_needs_transformer_engine() -> None:
    config = model_config(LLAMA)
    with pytest.raises(ValueError) as error:
        state_dict = randomised_model(config).state_dict()
        to_megatron(state_dict, config, spec="transformer_engine", transformer_engine_installed=False)
    assert str(error.value) == "the Transformer Engine spec needs Transformer Engine installed"


def test_extra_state_is_accepted_whatever_it_holds() -> None:
    # FP8 metadata (a pickled dict in a uint8 tensor) has no megaspec counterpart: dropped.
    (state_dict,) = megatron_of(LLAMA, "transformer_engine")
    state_dict["decoder.layers.0.mlp.linear_fc1._extra_state"] = torch.arange(10, dtype=torch.uint8)
    (converted,) = from_megatron([state_dict], model_config(LLAMA), spec="transformer_engine")
    assert not any("extra_state" in key for key in converted)
    assert math.isfinite(float(converted["final_norm.weight"].sum()))
