"""The arguments of a Megatron-core GPT model, to and from a megaspec :class:`ModelConfig`.

megatron-core is an optional dependency, so nothing here imports it:
:class:`MegatronArguments` holds the handful of ``TransformerConfig`` and ``GPTModel``
arguments that decide a GPT model's weights and what it computes, under Megatron's names
and with Megatron-core 0.19's defaults, and hands them back as plain keyword dicts.
Everything else Megatron takes (precision, parallel sizes, dropout, fusions, sequence length)
is the caller's, and changes no weight.

Megatron-LM's ``--swiglu`` is ``gated_linear_unit=True, activation_func=F.silu``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch.nn.functional as F

from megaspec.checkpoint.errors import CheckpointError
from megaspec.config import (
    AttentionMixerConfig,
    BlockConfig,
    FeedForwardConfig,
    LayerNormConfig,
    LinearConfig,
    ModelConfig,
    NormConfig,
    RepeatSequenceConfig,
    RMSNormConfig,
)
from megaspec.parallel import padded_vocab_rows
from megaspec.transformer_config import ACTIVATIONS, Activation, ActivationName, Llama3RotaryScaling

Normalization = Literal["LayerNorm", "RMSNorm"]
PositionEmbeddingType = Literal["learned_absolute", "rope", "mrope", "yarn", "none"]

# Megatron's rope_scaling is Llama 3.1's scheme with these fixed (RotaryEmbedding._apply_scaling).
_MEGATRON_LLAMA3 = Llama3RotaryScaling()


@dataclass(frozen=True, kw_only=True)
class MegatronArguments:
    """The arguments of a Megatron-core ``GPTModel`` (and its ``TransformerConfig``) that
    decide its weights and function. Names and defaults are Megatron-core 0.19's.

    ``vocab_size`` is the real vocabulary; :meth:`gpt_model_kwargs` pads it as Megatron-LM
    does. ``None`` for ``num_query_groups``, ``ffn_hidden_size`` and ``kv_channels`` means
    Megatron's default (``num_attention_heads``, ``4 * hidden_size``,
    ``hidden_size // num_attention_heads``).
    """

    num_layers: int
    hidden_size: int
    num_attention_heads: int
    vocab_size: int
    num_query_groups: int | None = None
    ffn_hidden_size: int | None = None
    kv_channels: int | None = None
    normalization: Normalization = "LayerNorm"
    layernorm_epsilon: float = 1e-5
    gated_linear_unit: bool = False
    activation_func: Activation = F.gelu
    add_bias_linear: bool = True
    add_qkv_bias: bool = False
    qk_layernorm: bool = False
    init_method_std: float = 0.02
    position_embedding_type: PositionEmbeddingType = "learned_absolute"
    rotary_percent: float = 1.0
    rotary_base: float = 10000
    rope_scaling: bool = False
    rope_scaling_factor: float = 8.0
    share_embeddings_and_output_weights: bool = False

    @property
    def query_groups(self) -> int:
        """Key/value heads, after Megatron's default."""
        return self.num_attention_heads if self.num_query_groups is None else self.num_query_groups

    @property
    def head_dim(self) -> int:
        """``kv_channels`` after Megatron's default."""
        return self.hidden_size // self.num_attention_heads if self.kv_channels is None else self.kv_channels

    @property
    def feed_forward_size(self) -> int:
        """``ffn_hidden_size`` after Megatron's default."""
        return 4 * self.hidden_size if self.ffn_hidden_size is None else self.ffn_hidden_size

    @property
    def qkv_bias(self) -> bool:
        """Whether ``linear_qkv`` has a bias (Megatron: ``add_bias_linear or add_qkv_bias``)."""
        return self.add_bias_linear or self.add_qkv_bias

    @property
    def rotary(self) -> bool:
        """Whether the model uses RoPE (``position_embedding_type='rope'``)."""
        return self.position_embedding_type == "rope"

    def padded_vocab_size(
        self, tensor_parallel_size: int = 1, make_vocab_size_divisible_by: int = 128
    ) -> int:
        """The rows of Megatron-LM's embedding: ``vocab_size`` padded to a multiple of
        ``make_vocab_size_divisible_by`` x ``tensor_parallel_size``."""
        return padded_vocab_rows(self.vocab_size, tensor_parallel_size, make_vocab_size_divisible_by)

    def transformer_config_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``megatron.core.transformer.TransformerConfig`` (defaults
        resolved); add precision, parallel sizes, dropout and fusions as you need them."""
        return {
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_attention_heads,
            "num_query_groups": self.query_groups,
            "ffn_hidden_size": self.feed_forward_size,
            "kv_channels": self.head_dim,
            "normalization": self.normalization,
            "layernorm_epsilon": self.layernorm_epsilon,
            "gated_linear_unit": self.gated_linear_unit,
            "activation_func": self.activation_func,
            "add_bias_linear": self.add_bias_linear,
            "add_qkv_bias": self.add_qkv_bias,
            "qk_layernorm": self.qk_layernorm,
            "init_method_std": self.init_method_std,
        }

    def gpt_model_kwargs(
        self, *, tensor_parallel_size: int = 1, make_vocab_size_divisible_by: int = 128
    ) -> dict[str, Any]:
        """Keyword arguments for ``megatron.core.models.gpt.GPTModel`` besides ``config``,
        ``transformer_layer_spec`` and ``max_sequence_length``; ``vocab_size`` is padded as
        Megatron-LM pads it (:meth:`padded_vocab_size`)."""
        base = self.rotary_base
        return {
            "vocab_size": self.padded_vocab_size(tensor_parallel_size, make_vocab_size_divisible_by),
            "share_embeddings_and_output_weights": self.share_embeddings_and_output_weights,
            "position_embedding_type": self.position_embedding_type,
            "rotary_percent": self.rotary_percent,
            # GPTModel annotates rotary_base as int; keep a fractional base as it is.
            "rotary_base": int(base) if float(base).is_integer() else base,
            "rope_scaling": self.rope_scaling,
            "rope_scaling_factor": self.rope_scaling_factor,
        }

    def check_supported(self) -> None:
        """Refuse what a megaspec model cannot compute the same way.

        Raises:
            CheckpointError: naming the argument and why.
        """
        if self.normalization not in ("LayerNorm", "RMSNorm"):
            raise CheckpointError(f"normalization {self.normalization!r}: expected 'LayerNorm' or 'RMSNorm'")
        if self.position_embedding_type not in ("rope", "none"):
            raise CheckpointError(
                f"position_embedding_type {self.position_embedding_type!r} is not supported: megaspec "
                f"has RoPE ('rope') or no position embedding ('none')"
            )
        if _activation_name(self.activation_func) is None:
            raise CheckpointError(
                f"activation_func {self.activation_func!r} is not supported; megaspec has "
                f"{', '.join(ACTIVATIONS)} (megaspec.transformer_config.ACTIVATIONS)"
            )
        if self.qk_layernorm and self.normalization != "RMSNorm":
            raise CheckpointError(
                "qk_layernorm with normalization 'LayerNorm' is not supported: megaspec's QK-norm is RMSNorm"
            )
        rotated = int(self.head_dim * self.rotary_percent)
        if self.rotary and rotated % 2 != 0:
            raise CheckpointError(
                f"rotary_percent {self.rotary_percent} of kv_channels {self.head_dim} rotates an odd "
                f"number of dimensions ({rotated}); megaspec rotates pairs"
            )


def _activation_name(activation: object) -> ActivationName | None:
    """The megaspec name of an activation given by name or as one of megaspec's functions."""
    for name, function in ACTIVATIONS.items():
        if activation == name or activation is function:
            return name
    return None


def model_config(arguments: MegatronArguments) -> ModelConfig:
    """The megaspec config of the Megatron-core GPT model that ``arguments`` describe.

    Raises:
        CheckpointError: for what megaspec cannot represent (see
            :meth:`MegatronArguments.check_supported`).
    """
    arguments.check_supported()
    norm: NormConfig = RMSNormConfig() if arguments.normalization == "RMSNorm" else LayerNormConfig()
    default_head_dim = arguments.hidden_size % arguments.num_attention_heads == 0 and (
        arguments.head_dim == arguments.hidden_size // arguments.num_attention_heads
    )
    activation = _activation_name(arguments.activation_func)
    assert activation is not None  # check_supported refused it otherwise
    mixer = AttentionMixerConfig(
        num_heads=arguments.num_attention_heads,
        num_query_groups=arguments.num_query_groups,
        head_dim=None if default_head_dim else arguments.head_dim,
        bias=arguments.add_bias_linear,
        qkv=LinearConfig(bias=True) if arguments.qkv_bias != arguments.add_bias_linear else LinearConfig(),
        qk_norm=arguments.qk_layernorm,
        **_rotary_settings(arguments),
    )
    mlp = FeedForwardConfig(
        ffn_hidden_size=arguments.feed_forward_size,
        activation=activation,
        gated=arguments.gated_linear_unit,
        bias=arguments.add_bias_linear,
    )
    return ModelConfig(
        hidden_size=arguments.hidden_size,
        init_std=arguments.init_method_std,
        norm_epsilon=arguments.layernorm_epsilon,
        vocab_size=arguments.vocab_size,
        tie_embeddings=arguments.share_embeddings_and_output_weights,
        decoder=RepeatSequenceConfig(
            num_blocks=arguments.num_layers, block=BlockConfig(mixer=mixer, mlp=mlp, norm=norm)
        ),
        final_norm=norm,
    )


def _rotary_settings(arguments: MegatronArguments) -> dict[str, Any]:
    """The RoPE fields of ``AttentionMixerConfig`` (only the fraction, 0, without RoPE: base
    and scaling then mean nothing)."""
    if not arguments.rotary:
        return {"rotary_fraction": 0.0}
    return {
        "rotary_base": float(arguments.rotary_base),
        "rotary_fraction": arguments.rotary_percent,
        "rotary_scaling": _megatron_llama3(arguments.rope_scaling_factor) if arguments.rope_scaling else None,
    }


def _megatron_llama3(factor: float) -> Llama3RotaryScaling:
    return Llama3RotaryScaling(
        factor=factor,
        low_freq_factor=_MEGATRON_LLAMA3.low_freq_factor,
        high_freq_factor=_MEGATRON_LLAMA3.high_freq_factor,
        original_max_position_embeddings=_MEGATRON_LLAMA3.original_max_position_embeddings,
    )


def megatron_arguments(config: ModelConfig) -> MegatronArguments:
    """The Megatron-core arguments of the model ``config`` describes.

    Raises:
        CheckpointError: naming the config field, for what a Megatron-core ``GPTModel`` cannot
            represent: a decoder other than one repeated attention + MLP block, post-norms,
            non-causal attention, a final norm of another type than the blocks' norms, biases
            that Megatron's ``add_bias_linear`` / ``add_qkv_bias`` cannot express, an output
            layer bias, QK-norm with LayerNorm, an activation function given as a function
            that is not one of megaspec's, a RoPE scaling other than Megatron's, or a partial
            rotary that rotates an odd number of dimensions.
    """
    block = _repeated_block(config)
    mixer, mlp = block.mixer, block.mlp
    assert isinstance(mixer, AttentionMixerConfig) and isinstance(mlp, FeedForwardConfig)
    normalization = _normalization(config, block)
    add_bias_linear, add_qkv_bias = _linear_biases(mixer, mlp)
    activation = _activation_name(mlp.activation)
    if activation is None:
        raise CheckpointError(f"decoder.block.mlp.activation: {mlp.activation!r} has no name megaspec knows")
    if mixer.qk_norm and normalization == "LayerNorm":
        raise CheckpointError(
            "decoder.block.mixer.qk_norm: megaspec's QK-norm is RMSNorm, and Megatron's follows the "
            "model's normalization, LayerNorm here"
        )
    return MegatronArguments(
        num_layers=config.decoder.num_layers,
        hidden_size=config.hidden_size,
        num_attention_heads=mixer.num_heads,
        vocab_size=config.vocab_size,
        num_query_groups=mixer.num_query_groups,
        ffn_hidden_size=mlp.ffn_hidden_size,
        kv_channels=mixer.head_dim,
        normalization=normalization,
        layernorm_epsilon=config.norm_epsilon,
        gated_linear_unit=mlp.gated,
        activation_func=ACTIVATIONS[activation],
        add_bias_linear=add_bias_linear,
        add_qkv_bias=add_qkv_bias,
        qk_layernorm=mixer.qk_norm,
        init_method_std=config.init_std,
        share_embeddings_and_output_weights=config.tie_embeddings,
        **_rotary_arguments(mixer, config.hidden_size),
    )


def _repeated_block(config: ModelConfig) -> BlockConfig:
    decoder = config.decoder
    if not isinstance(decoder, RepeatSequenceConfig):
        raise CheckpointError(
            f"decoder: a Megatron-core GPTModel repeats one block; got a {type(decoder).__name__}"
        )
    block = decoder.block
    if type(block.mixer) is not AttentionMixerConfig:
        raise CheckpointError(
            f"decoder.block.mixer: Megatron-core has self-attention only, got {type(block.mixer).__name__}"
        )
    if type(block.mlp) is not FeedForwardConfig:
        raise CheckpointError(
            f"decoder.block.mlp: Megatron-core's MLP is the standard one, got {type(block.mlp).__name__}"
        )
    if block.post_norms:
        raise CheckpointError("decoder.block.post_norms: Megatron-core's GPT layer has no post-norms")
    if not block.mixer.causal:
        raise CheckpointError("decoder.block.mixer.causal: a Megatron-core GPTModel is causal")
    if config.output_layer.bias:
        raise CheckpointError("output_layer.bias: Megatron-core's output layer has no bias")
    return block


def _normalization(config: ModelConfig, block: BlockConfig) -> Normalization:
    names: dict[type[NormConfig], Normalization] = {RMSNormConfig: "RMSNorm", LayerNormConfig: "LayerNorm"}
    block_norm, final_norm = names.get(type(block.norm)), names.get(type(config.final_norm))
    if block_norm is None:
        raise CheckpointError(
            f"decoder.block.norm: Megatron-core has LayerNorm or RMSNorm, got {type(block.norm).__name__}"
        )
    if final_norm != block_norm:
        raise CheckpointError(
            f"final_norm: Megatron-core uses one normalization for every norm; the blocks use "
            f"{block_norm}, the final norm {type(config.final_norm).__name__}"
        )
    return block_norm


def _linear_biases(mixer: AttentionMixerConfig, mlp: FeedForwardConfig) -> tuple[bool, bool]:
    """``(add_bias_linear, add_qkv_bias)`` for the biases the config gives each linear."""

    def bias(linear: LinearConfig, default: bool) -> bool:
        return default if linear.bias is None else linear.bias

    qkv, proj = bias(mixer.qkv, mixer.bias), bias(mixer.proj, mixer.bias)
    fc1, fc2 = bias(mlp.fc1, mlp.bias), bias(mlp.fc2, mlp.bias)
    if not proj == fc1 == fc2 or (proj and not qkv):
        raise CheckpointError(
            f"decoder.block: biases qkv={qkv}, proj={proj}, fc1={fc1}, fc2={fc2} cannot be expressed "
            f"by Megatron's add_bias_linear (every linear) and add_qkv_bias (linear_qkv only)"
        )
    return proj, qkv and not proj


def _rotary_arguments(mixer: AttentionMixerConfig, hidden_size: int) -> dict[str, Any]:
    if mixer.rotary_fraction == 0:
        return {"position_embedding_type": "none"}
    rotated = int(mixer.resolved_head_dim(hidden_size) * mixer.rotary_fraction)
    if rotated % 2 != 0:
        raise CheckpointError(
            f"decoder.block.mixer.rotary_fraction: Megatron would rotate {rotated} dimensions of "
            f"each head, an odd number; megaspec rotates {rotated - 1}"
        )
    scaling = mixer.rotary_scaling
    if scaling is not None and not (
        isinstance(scaling, Llama3RotaryScaling) and scaling == _megatron_llama3(scaling.factor)
    ):
        raise CheckpointError(
            f"decoder.block.mixer.rotary_scaling: Megatron's rope_scaling is Llama 3.1's with "
            f"low_freq_factor {_MEGATRON_LLAMA3.low_freq_factor}, high_freq_factor "
            f"{_MEGATRON_LLAMA3.high_freq_factor} and original_max_position_embeddings "
            f"{_MEGATRON_LLAMA3.original_max_position_embeddings}; got {scaling}"
        )
    return {
        "position_embedding_type": "rope",
        "rotary_percent": mixer.rotary_fraction,
        "rotary_base": mixer.rotary_base,
        "rope_scaling": scaling is not None,
        "rope_scaling_factor": _MEGATRON_LLAMA3.factor if scaling is None else scaling.factor,
    }
