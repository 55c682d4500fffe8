"""megaspec model configs -> Hugging Face config.json: a round trip for every family, the
family chosen, the template's keys carried over, and the exact refusals."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import AutoConfig

from megaspec.checkpoint import CheckpointError, hf_config_from_model, model_data_from_hf
from megaspec.config import ModelConfig, from_data
from tests.helpers.hf_models import FAMILIES, family_config

EXPECTED_MODEL_TYPE = {
    "llama3": "llama",
    "llama_tied": "llama",
    "mistral": "llama",  # a Mistral checkpoint without sliding window is a Llama checkpoint
    "qwen2": "qwen2",
    "qwen3": "qwen3",
}


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip(family: str) -> None:
    data = model_data_from_hf(family_config(family))
    written = hf_config_from_model(from_data(ModelConfig, data))
    assert written["model_type"] == EXPECTED_MODEL_TYPE[family]
    assert model_data_from_hf(written) == data
    # transformers reads what was written as the same architecture.
    loaded = AutoConfig.for_model(**written).to_dict()
    assert model_data_from_hf(loaded) == data


def test_model_type_and_template() -> None:
    hf = family_config("mistral").to_dict() | {"bos_token_id": 5}
    config = from_data(ModelConfig, model_data_from_hf(hf))
    template = hf | {"rope_theta": 1.0}  # stale: never carried over
    written = hf_config_from_model(config, template=template, dtype=torch.bfloat16)
    assert written["model_type"] == "mistral" and written["architectures"] == ["MistralForCausalLM"]
    assert written["bos_token_id"] == 5 and written["max_position_embeddings"] == 64  # carried
    assert written["rope_theta"] == 10000.0  # architecture keys come from the config
    assert written["dtype"] == written["torch_dtype"] == "bfloat16"
    assert hf_config_from_model(config, template=hf, model_type="llama")["model_type"] == "llama"


def config_with(**data: Any) -> ModelConfig:
    block = {"mixer": {"type": "attention", "num_heads": 4}, "mlp": {"type": "mlp"}}
    decoder = {"type": "repeat", "block": block}
    return from_data(ModelConfig, {"hidden_size": 64, "decoder": decoder} | data)


@pytest.mark.parametrize(
    ("data", "model_type", "message"),
    [
        ({"final_norm": {"type": "layer_norm"}}, None,
         "final_norm.type: 'layer_norm' cannot be written as a Hugging Face checkpoint "
         "(supported: rms_norm)"),
        ({"decoder": {"type": "pattern", "blocks": {"a": {}}, "pattern": ["a"]}}, None,
         "decoder.type: 'pattern' cannot be written as a Hugging Face checkpoint (supported: repeat)"),
        ({"decoder": {"block": {"mlp": {"gated": False}}}}, None,
         "decoder.block.mlp.gated: false cannot be written as a Hugging Face checkpoint "
         "(supported: true)"),
        ({"decoder": {"block": {"mixer": {"rotary_fraction": 0.5}}}}, None,
         "decoder.block.mixer.rotary_fraction: 0.5 cannot be written as a Hugging Face checkpoint "
         "(supported: 1.0)"),
        ({"decoder": {"block": {"mlp": {"fc2": {"bias": True}}}}}, None,
         "decoder.block.mlp.fc2.bias: true cannot be written as a Hugging Face checkpoint (one "
         "mlp_bias for all)"),
        ({"decoder": {"block": {"mixer": {"qk_norm": True}}}}, "llama",
         "decoder.block.mixer.qk_norm: true cannot be written as Hugging Face 'llama' "
         "(supported: false)"),
        ({}, "qwen2",
         "decoder.block.mixer: biases on qkv false and proj false cannot be written as Hugging "
         "Face 'qwen2' (it has qkv true, proj false)"),
        ({"decoder": {"block": {"mixer": {"qkv": {"bias": True}, "qk_norm": True}}}}, None,
         "decoder.block.mixer.qkv.bias: true with proj.bias false cannot be written as Hugging "
         "Face 'qwen3' (one attention_bias for all four)"),
        ({"decoder": {"block": {"mlp": {"bias": True}}}}, "mistral",
         "decoder.block.mlp.bias: true cannot be written as Hugging Face 'mistral' (no MLP biases)"),
    ],
)  # fmt: skip
def test_refusals(data: dict[str, Any], model_type: str | None, message: str) -> None:
    with pytest.raises(CheckpointError) as error:
        hf_config_from_model(config_with(**data), model_type=model_type)
    assert str(error.value) == f"model config: {message}"


def test_unknown_model_type_and_python_activation() -> None:
    with pytest.raises(CheckpointError) as error:
        hf_config_from_model(config_with(), model_type="gemma")
    assert str(error.value) == (
        "model_type: 'gemma' is not supported (supported: llama, mistral, qwen2, qwen3)"
    )
    with pytest.raises(CheckpointError) as error:
        hf_config_from_model(config_with(decoder={"block": {"mlp": {"activation": torch.tanh}}}))
    assert str(error.value).startswith(
        "model config: decoder.block.mlp.activation: '<built-in method tanh"
    )
