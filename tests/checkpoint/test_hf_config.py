"""Hugging Face configs -> megaspec model config data: what each family maps to, and the exact
refusal of everything megaspec cannot reproduce."""

from __future__ import annotations

from typing import Any

import pytest
from transformers import MistralConfig

from megaspec.checkpoint import CheckpointError, model_data_from_hf
from megaspec.config import AttentionMixerConfig, FeedForwardConfig, ModelConfig, from_data
from megaspec.transformer_config import Llama3RotaryScaling
from tests.helpers.hf_models import family_config


def config_json(family: str, **changes: Any) -> dict[str, Any]:
    """``family``'s config as ``config.json`` data, with ``changes``."""
    data: dict[str, Any] = family_config(family).to_dict()
    data.update(changes)
    return data


def mapped(family: str, **changes: Any) -> ModelConfig:
    return from_data(ModelConfig, model_data_from_hf(config_json(family, **changes)))


def attention_and_mlp(config: ModelConfig) -> tuple[AttentionMixerConfig, FeedForwardConfig]:
    block = config.decoder.named_blocks()[0][1]
    assert isinstance(block.mixer, AttentionMixerConfig) and isinstance(block.mlp, FeedForwardConfig)
    return block.mixer, block.mlp


def test_llama3_maps_every_setting() -> None:
    config = mapped("llama3", rms_norm_eps=1e-5)
    mixer, mlp = attention_and_mlp(config)
    assert (config.hidden_size, config.vocab_size, config.norm_epsilon) == (64, 300, 1e-5)
    assert config.decoder.num_layers == 2 and not config.tie_embeddings
    assert (mixer.num_heads, mixer.query_groups, mixer.head_dim) == (4, 2, 16)
    assert mixer.rotary_base == 500000.0 and mixer.rotary_fraction == 1.0
    assert mixer.rotary_scaling == Llama3RotaryScaling(
        factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16
    )
    assert (mixer.bias, mixer.qkv.bias, mixer.proj.bias, mixer.qk_norm) == (False, None, None, False)
    assert (mlp.ffn_hidden_size, mlp.activation, mlp.gated, mlp.bias) == (96, "silu", True, False)


def test_family_specifics() -> None:
    tied = mapped("llama_tied")
    mixer, mlp = attention_and_mlp(tied)
    assert tied.tie_embeddings and mixer.bias and mlp.bias  # attention_bias, mlp_bias
    mixer, mlp = attention_and_mlp(mapped("qwen2"))
    assert (mixer.qkv.bias, mixer.bias, mlp.bias) == (True, False, False)  # no o_proj bias
    mixer, _ = attention_and_mlp(mapped("qwen3"))
    assert mixer.qk_norm and mixer.head_dim == 32  # hidden / heads would be 16
    mixer, _ = attention_and_mlp(mapped("mistral"))
    assert (mixer.bias, mixer.qk_norm, mixer.rotary_scaling) == (False, False, None)
    # Qwen2 and Qwen3 configs keep a sliding_window value even when it is not in use.
    assert attention_and_mlp(mapped("qwen2", use_sliding_window=False, sliding_window=4096))


def test_a_pretrained_config_object_is_read_too() -> None:
    assert model_data_from_hf(family_config("qwen3")) == model_data_from_hf(config_json("qwen3"))
    with pytest.raises(CheckpointError) as error:
        model_data_from_hf(MistralConfig(), where="MistralConfig")  # default window 4096
    assert str(error.value) == (
        "MistralConfig: sliding_window: 4096 is not supported (sliding-window attention; "
        "supported: null)"
    )


@pytest.mark.parametrize(
    ("family", "changes", "message"),
    [
        ("llama3", {"model_type": "gpt2"},
         "model_type: 'gpt2' is not supported (supported: llama, mistral, qwen2, qwen3)"),
        ("llama3", {"model_type": None}, "model_type: missing (supported: llama, mistral, qwen2, qwen3)"),
        ("llama3", {"architectures": ["LlamaForSequenceClassification"]},
         "architectures: [\"LlamaForSequenceClassification\"] is not supported (supported for "
         "llama: ['LlamaForCausalLM'])"),
        ("mistral", {"sliding_window": 4096},
         "sliding_window: 4096 is not supported (sliding-window attention; supported: null)"),
        ("qwen2", {"use_sliding_window": True, "sliding_window": 4096},
         "use_sliding_window: true is not supported (sliding-window attention; supported: false)"),
        ("qwen3", {"layer_types": ["full_attention", "sliding_attention"]},
         "layer_types[1]: 'sliding_attention' is not supported (supported: full_attention in "
         "every layer)"),
        ("llama3", {"hidden_act": "gelu_new"},
         "hidden_act: 'gelu_new' is not supported (supported: silu, swish, gelu, "
         "gelu_pytorch_tanh, relu)"),
        ("llama3", {"attention_dropout": 0.1}, "attention_dropout: 0.1 is not supported (supported: 0.0)"),
        ("llama3", {"partial_rotary_factor": 0.5},
         "partial_rotary_factor: 0.5 is not supported (supported: 1.0; the Llama family rotates "
         "whole heads)"),
        ("llama3", {"num_hidden_layers": "2"}, "num_hidden_layers: expected a positive integer, got '2'"),
        ("qwen2", {"head_dim": None, "num_attention_heads": 3, "num_key_value_heads": 3},
         "head_dim: missing, and num_attention_heads (3) does not divide hidden_size (64)"),
    ],
)  # fmt: skip
def test_unsupported_settings_are_refused(family: str, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(CheckpointError) as error:
        model_data_from_hf(config_json(family, **changes))
    assert str(error.value) == f"config.json: {message}"
