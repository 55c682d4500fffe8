"""Megatron-core's model arguments to and from megaspec's ModelConfig (checkpoint.megatron_config)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch.nn.functional as F

from megaspec.checkpoint import MegatronArguments, megatron_arguments, model_config
from megaspec.config import (
    AttentionMixerConfig,
    BlockConfig,
    FeedForwardConfig,
    LayerNormConfig,
    LinearConfig,
    ModelConfig,
    PatternSequenceConfig,
    RepeatSequenceConfig,
    RMSNormConfig,
)
from megaspec.transformer_config import Llama3RotaryScaling

LLAMA = MegatronArguments(
    num_layers=3, hidden_size=64, num_attention_heads=8, num_query_groups=2, ffn_hidden_size=160,
    vocab_size=1000, normalization="RMSNorm", layernorm_epsilon=1e-6, gated_linear_unit=True,
    activation_func=F.silu, add_bias_linear=False, qk_layernorm=True, init_method_std=0.01,
    position_embedding_type="rope", rotary_base=500000, rope_scaling=True, rope_scaling_factor=32.0,
)  # fmt: skip


def test_llama_arguments_become_a_llama_config() -> None:
    config = model_config(LLAMA)
    block = config.decoder.named_blocks()[0][1]
    mixer, mlp = block.mixer, block.mlp
    assert isinstance(mixer, AttentionMixerConfig) and isinstance(mlp, FeedForwardConfig)
    assert (config.hidden_size, config.vocab_size, config.decoder.num_layers) == (64, 1000, 3)
    assert (config.norm_epsilon, config.init_std, config.tie_embeddings) == (1e-6, 0.01, False)
    assert isinstance(block.norm, RMSNormConfig) and isinstance(config.final_norm, RMSNormConfig)
    assert (mixer.num_heads, mixer.query_groups, mixer.resolved_head_dim(64)) == (8, 2, 8)
    assert (mixer.rotary_base, mixer.rotary_fraction) == (500000.0, 1.0)
    assert (mixer.qk_norm, mixer.bias) == (True, False)
    assert mixer.rotary_scaling == Llama3RotaryScaling(factor=32.0)
    assert (mlp.ffn_hidden_size, mlp.activation, mlp.gated, mlp.bias) == (160, "silu", True, False)


def test_megatron_defaults_are_megatrons() -> None:
    arguments = MegatronArguments(
        num_layers=2, hidden_size=64, num_attention_heads=4, vocab_size=1000, position_embedding_type="rope"
    )
    assert arguments.transformer_config_kwargs() == {
        "num_layers": 2,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_query_groups": 4,
        "ffn_hidden_size": 256,
        "kv_channels": 16,
        "normalization": "LayerNorm",
        "layernorm_epsilon": 1e-5,
        "gated_linear_unit": False,
        "activation_func": F.gelu,
        "add_bias_linear": True,
        "add_qkv_bias": False,
        "qk_layernorm": False,
        "init_method_std": 0.02,
    }
    config = model_config(arguments)
    block = config.decoder.named_blocks()[0][1]
    mixer, mlp = block.mixer, block.mlp
    assert isinstance(block.norm, LayerNormConfig) and isinstance(mlp, FeedForwardConfig)
    assert isinstance(mixer, AttentionMixerConfig) and mixer.bias
    assert (mlp.activation, mlp.gated, mlp.bias) == ("gelu", False, True)


def test_gpt_model_kwargs_pad_the_vocabulary_as_megatron_lm() -> None:
    assert LLAMA.gpt_model_kwargs(tensor_parallel_size=2) == {
        "vocab_size": 1024,
        "share_embeddings_and_output_weights": False,
        "position_embedding_type": "rope",
        "rotary_percent": 1.0,
        "rotary_base": 500000,
        "rope_scaling": True,
        "rope_scaling_factor": 32.0,
    }
    padded = LLAMA.gpt_model_kwargs(tensor_parallel_size=4, make_vocab_size_divisible_by=64)["vocab_size"]
    assert padded == 1024
    assert LLAMA.padded_vocab_size(3) == 1152


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"kv_channels": 16},  # heads wider than hidden / heads
        {"hidden_size": 60, "num_attention_heads": 8, "kv_channels": 8},
        {"add_qkv_bias": True},
        {"add_bias_linear": True, "normalization": "LayerNorm", "qk_layernorm": False},
        {"position_embedding_type": "none"},
        {"rotary_percent": 0.25, "rope_scaling": False, "rope_scaling_factor": 8.0},
        {"share_embeddings_and_output_weights": True, "gated_linear_unit": False, "activation_func": F.relu},
    ],
)
def test_arguments_survive_a_round_trip_through_the_config(changes: dict[str, object]) -> None:
    arguments = replace(LLAMA, **changes)
    back = megatron_arguments(model_config(arguments))
    assert back.transformer_config_kwargs() == arguments.transformer_config_kwargs()
    if arguments.rotary:  # without RoPE, Megatron's rotary arguments mean nothing
        assert back.gpt_model_kwargs() == arguments.gpt_model_kwargs()
    assert back.position_embedding_type == arguments.position_embedding_type
    assert model_config(back) == model_config(arguments)


def test_qkv_bias_alone_is_a_bias_on_linear_qkv() -> None:
    mixer = model_config(replace(LLAMA, add_qkv_bias=True)).decoder.named_blocks()[0][1].mixer
    assert isinstance(mixer, AttentionMixerConfig)
    assert (mixer.bias, mixer.qkv.bias, mixer.proj.bias) == (False, True, None)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"position_embedding_type": "learned_absolute"},
            "position_embedding_type 'learned_absolute' is not supported: megaspec has RoPE ('rope') or "
            "no position embedding ('none')",
        ),
        (
            {"normalization": "LayerNorm"},
            "qk_layernorm with normalization 'LayerNorm' is not supported: megaspec's QK-norm is RMSNorm",
        ),
        (
            {"rotary_percent": 0.3, "kv_channels": 10},
            "rotary_percent 0.3 of kv_channels 10 rotates an odd number of dimensions (3); megaspec "
            "rotates pairs",
        ),
    ],
)
def test_arguments_megaspec_cannot_represent_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as error:
        model_config(replace(LLAMA, **changes))
    assert str(error.value) == message


def test_unknown_activation_is_refused() -> None:
    with pytest.raises(ValueError) as error:
        model_config(replace(LLAMA, activation_func=F.softplus))
    assert str(error.value) == (
        f"activation_func {F.softplus!r} is not supported; megaspec has silu, gelu, gelu_tanh, relu "
        f"(megaspec.transformer_config.ACTIVATIONS)"
    )


def llama_config(**block_changes: object) -> ModelConfig:
    config = model_config(LLAMA)
    block = config.decoder.named_blocks()[0][1]
    return replace(config, decoder=RepeatSequenceConfig(num_blocks=3, block=replace(block, **block_changes)))


def refusal(config: ModelConfig) -> str:
    with pytest.raises(ValueError) as error:
        megatron_arguments(config)
    return str(error.value)


def test_configs_megatron_cannot_represent_are_refused() -> None:
    base = model_config(LLAMA)
    block = base.decoder.named_blocks()[0][1]
    mixer = block.mixer
    assert isinstance(mixer, AttentionMixerConfig)
    pattern = PatternSequenceConfig(blocks={"a": block}, pattern=("a",))
    assert refusal(replace(base, decoder=pattern)) == (
        "decoder: a Megatron-core GPTModel repeats one block; got a PatternSequenceConfig"
    )
    assert refusal(llama_config(post_norms=True)) == (
        "decoder.block.post_norms: Megatron-core's GPT layer has no post-norms"
    )
    assert refusal(replace(base, final_norm=LayerNormConfig())) == (
        "final_norm: Megatron-core uses one normalization for every norm; the blocks use RMSNorm, "
        "the final norm LayerNormConfig"
    )
    assert refusal(llama_config(norm=LayerNormConfig())).startswith("final_norm:")
    assert refusal(replace(base, output_layer=LinearConfig(bias=True))) == (
        "output_layer.bias: Megatron-core's output layer has no bias"
    )
    assert refusal(llama_config(mixer=replace(mixer, proj=LinearConfig(bias=True)))) == (
        "decoder.block: biases qkv=False, proj=True, fc1=False, fc2=False cannot be expressed by "
        "Megatron's add_bias_linear (every linear) and add_qkv_bias (linear_qkv only)"
    )
    assert refusal(llama_config(mixer=replace(mixer, causal=False))) == (
        "decoder.block.mixer.causal: a Megatron-core GPTModel is causal"
    )


def test_rotary_settings_megatron_cannot_express_are_refused() -> None:
    mixer = model_config(LLAMA).decoder.named_blocks()[0][1].mixer
    assert isinstance(mixer, AttentionMixerConfig)
    scaling = Llama3RotaryScaling(factor=8.0, original_max_position_embeddings=4096)
    assert refusal(llama_config(mixer=replace(mixer, rotary_scaling=scaling))).startswith(
        "decoder.block.mixer.rotary_scaling: Megatron's rope_scaling is Llama 3.1's with low_freq_factor "
        "1.0, high_freq_factor 4.0 and original_max_position_embeddings 8192; got "
    )
    assert refusal(llama_config(mixer=replace(mixer, head_dim=10, rotary_fraction=0.5))) == (
        "decoder.block.mixer.rotary_fraction: Megatron would rotate 5 dimensions of each head, an odd "
        "number; megaspec rotates 4"
    )


def test_qk_norm_with_layer_norm_is_refused() -> None:
    config = llama_config(norm=LayerNormConfig())
    assert refusal(replace(config, final_norm=LayerNormConfig())) == (
        "decoder.block.mixer.qk_norm: megaspec's QK-norm is RMSNorm, and Megatron's follows the model's "
        "normalization, LayerNorm here"
    )
