"""The tensor mappings of every family name exactly the parameters megaspec builds, and
``local_tensor`` (one rank's read) and ``hf_tensors`` (export) are inverse at TP=1."""

from __future__ import annotations

import pytest
import torch

from megaspec.checkpoint import StateDictSource, llama_architecture, model_data_from_hf
from megaspec.checkpoint.hf_weights import (
    check_model_parameters,
    hf_tensors,
    hf_weight_mappings,
    local_tensor,
)
from megaspec.config import ModelConfig, from_data
from megaspec.parallel import ParallelGroups, seeded_initialization
from tests.helpers.hf_models import FAMILIES, family_config, tiny_model


@pytest.mark.parametrize("family", FAMILIES)
def test_mappings_cover_the_model_and_the_checkpoint(family: str) -> None:
    config = from_data(ModelConfig, model_data_from_hf(family_config(family)))
    with seeded_initialization(0):
        model = config.build()
    architecture = llama_architecture(config)
    mappings = hf_weight_mappings(architecture)
    assert [mapping.parameter for mapping in mappings] == [name for name, _ in model.named_parameters()]
    hf_state = tiny_model(family).state_dict()
    if config.tie_embeddings:
        del hf_state["lm_head.weight"]
    names = [name for mapping in mappings for name in mapping.hf_names]
    assert sorted(names) == sorted(hf_state)
    shapes = {name: tuple(tensor.shape) for name, tensor in hf_state.items()}
    for mapping in mappings:
        assert [shapes[name] for name in mapping.hf_names] == list(mapping.hf_shapes)
    # Reading a rank's shard (here: all of it) undoes writing the full tensor back.
    source, single = StateDictSource(hf_state, "state dict"), ParallelGroups.single()
    for mapping in mappings:
        local = local_tensor(mapping, source, architecture, single, model.padded_vocab_size)
        for name, tensor in hf_tensors(mapping, local, architecture).items():
            assert torch.equal(tensor, hf_state[name]), name


def test_a_model_of_another_config_is_refused() -> None:
    config = from_data(ModelConfig, model_data_from_hf(family_config("qwen3")))
    with seeded_initialization(0):
        model = from_data(ModelConfig, model_data_from_hf(family_config("llama_tied"))).build()
    with pytest.raises(ValueError) as error:
        check_model_parameters(model, hf_weight_mappings(llama_architecture(config)))
    assert str(error.value) == (
        "the model's parameters differ from the config's: missing blocks.layers.0.mixer.k_norm.weight, "
        "blocks.layers.0.mixer.q_norm.weight, blocks.layers.1.mixer.k_norm.weight, "
        "blocks.layers.1.mixer.q_norm.weight, ... (5 in all), unexpected "
        "blocks.layers.0.mixer.linear_proj.bias, blocks.layers.0.mixer.linear_qkv.bias, "
        "blocks.layers.0.mlp.linear_fc1.bias, blocks.layers.0.mlp.linear_fc2.bias, ... (8 in all)"
    )
