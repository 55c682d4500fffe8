"""Hyperparameters of the layers: one definition of each setting and each check.

``TransformerConfig`` holds what every slot of every layer may need (model width, depth,
precision, sequence parallelism); the per-slot configs (``AttentionConfig``, ``MlpConfig``)
are bound into the builders of the slots that use them, so a hybrid stack can mix mixers
with different settings.

They are :class:`megaspec.schema.Config` values, and the YAML front end
(:mod:`megaspec.config`) *is* them: ``AttentionMixerConfig`` is an ``AttentionConfig`` plus
per-weight settings, ``FeedForwardConfig`` an ``MlpConfig``, and ``ModelConfig`` shares
``ModelWideSettings`` with ``TransformerConfig``. Single-field checks are declared on the
fields; checks that need the model width or the tensor-parallel size live in
``check_model``, which the layers and the front end both call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from megaspec.rotary import rotary_dim
from megaspec.schema import Config, ConfigError, DynamicConfig, checks, optional, positive, within

Activation = Callable[[Tensor], Tensor]
"""An elementwise activation function, e.g. ``torch.nn.functional.silu``."""

ActivationName = Literal["silu", "gelu", "gelu_tanh", "relu"]
"""The activations a config can name (and therefore save)."""


def _gelu_tanh(hidden: Tensor) -> Tensor:
    return F.gelu(hidden, approximate="tanh")


ACTIVATIONS: Mapping[ActivationName, Activation] = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": _gelu_tanh,
    "relu": F.relu,
}


def _known_activation(activation: object) -> str | None:
    if isinstance(activation, str) and activation not in ACTIVATIONS:
        return f"unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}"
    return None


RecomputedSlot = Literal["input_norm", "mixer", "pre_mlp_norm", "mlp"]
"""A slot of :class:`~megaspec.layers.TransformerLayer` whose activations can be recomputed."""

RECOMPUTED_SLOTS: tuple[RecomputedSlot, ...] = get_args(RecomputedSlot)


def _known_slots(slots: object) -> str | None:
    if isinstance(slots, str) or not isinstance(slots, (tuple, list)):
        return f"must be a list of slot names ({', '.join(RECOMPUTED_SLOTS)}), got {slots!r}"
    unknown = [slot for slot in slots if slot not in RECOMPUTED_SLOTS]
    if unknown:
        return (
            f"unknown slot {', '.join(repr(slot) for slot in unknown)}; expected any of "
            f"{', '.join(RECOMPUTED_SLOTS)}"
        )
    if len(set(slots)) != len(slots):
        return f"names a slot twice: {list(slots)}"
    return None


SdpaBackend = Literal["auto", "flash", "cudnn", "efficient", "math"]
"""Which ``scaled_dot_product_attention`` kernel attention may use (``auto``: PyTorch picks)."""


@dataclass(frozen=True, kw_only=True)
class ModelWideSettings(Config):
    """Settings that hold for every layer of a model (shared by ``TransformerConfig`` and the
    front end's ``ModelConfig``).

    Attributes:
        hidden_size: width of the residual stream.
        init_std: standard deviation of the normal initialisation; output projections use
            ``init_std / sqrt(2 * num_layers)``.
        norm_epsilon: epsilon of every norm.
        fuse_elementwise: run RoPE, gated activations, each layer's residual add with the
            norm after it, and the fused loss's softmax passes as single fused kernels
            through ``torch.compile``; about 1.2x faster training steps on a GPU, compiled
            on the first call.
        recompute: slots of every :class:`~megaspec.layers.TransformerLayer` whose
            activations are not kept for the backward pass but recomputed from the slot's
            input (``torch.utils.checkpoint``, non-reentrant, dropout RNG replayed): any of
            ``input_norm``, ``mixer``, ``pre_mlp_norm``, ``mlp``. Trades compute for memory.
        fused_cross_entropy: compute a language model's training loss chunk by chunk
            together with its gradients (``megaspec.parallel.linear_cross_entropy``), never
            holding the full ``[tokens, vocab]`` logits; ``False``: logits, then the loss.
        cross_entropy_chunk_tokens: at most this many tokens per chunk of the fused loss
            (split into equal chunks); ``None``: as many
            as keep a chunk's float32 logits under 256 MiB per rank.
    """

    hidden_size: int = field(default=256, metadata=checks(positive))
    init_std: float = field(default=0.02, metadata=checks(positive))
    norm_epsilon: float = field(default=1e-5, metadata=checks(positive))
    fuse_elementwise: bool = False
    recompute: tuple[RecomputedSlot, ...] = field(default=(), metadata=checks(_known_slots))
    fused_cross_entropy: bool = True
    cross_entropy_chunk_tokens: int | None = field(default=None, metadata=checks(optional(positive)))


@dataclass(frozen=True, kw_only=True)
class TransformerConfig(ModelWideSettings):
    """What every layer of a model receives.

    Attributes:
        num_layers: number of layers the model's block sequence must build (checked).
        sequence_parallel: split activations outside tensor-parallel regions along the
            sequence (needs tensor-parallel size > 1 to have an effect).
        params_dtype: dtype parameters are created in.
    """

    num_layers: int = field(metadata=checks(positive))
    sequence_parallel: bool = False
    params_dtype: torch.dtype = torch.float32


@dataclass(frozen=True, kw_only=True)
class RotaryScalingConfig(DynamicConfig, registry_base=True):
    """How RoPE's inverse frequencies are rescaled for long contexts, chosen by ``type:``.

    A hashable callable (see :class:`megaspec.rotary.FrequencyScaling`).
    """

    def __call__(self, inverse_frequency: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__}.__call__")


@RotaryScalingConfig.register("llama3")
@dataclass(frozen=True, kw_only=True)
class Llama3RotaryScaling(RotaryScalingConfig):
    """Llama 3.1's scaling: wavelengths longer than ``original_max_position_embeddings /
    low_freq_factor`` are stretched by ``factor``, shorter than ``... / high_freq_factor`` kept,
    and those between interpolated smoothly (``rope_type: llama3`` in Hugging Face configs).
    """

    factor: float = field(default=8.0, metadata=checks(positive))
    low_freq_factor: float = field(default=1.0, metadata=checks(positive))
    high_freq_factor: float = field(default=4.0, metadata=checks(positive))
    original_max_position_embeddings: int = field(default=8192, metadata=checks(positive))

    def validate(self) -> None:
        super().validate()
        if self.high_freq_factor <= self.low_freq_factor:
            raise ConfigError(
                "high_freq_factor",
                f"must be greater than low_freq_factor ({self.low_freq_factor}), got "
                f"{self.high_freq_factor}",
            )

    def __call__(self, inverse_frequency: Tensor) -> Tensor:
        context = self.original_max_position_embeddings
        wavelength = 2 * math.pi / inverse_frequency
        stretched = torch.where(
            wavelength > context / self.low_freq_factor, inverse_frequency / self.factor, inverse_frequency
        )
        smooth = (context / wavelength - self.low_freq_factor) / (
            self.high_freq_factor - self.low_freq_factor
        )
        interpolated = (1 - smooth) * stretched / self.factor + smooth * stretched
        medium = (wavelength >= context / self.high_freq_factor) & (
            wavelength <= context / self.low_freq_factor
        )
        return torch.where(medium, interpolated, stretched)


def _known_sdpa_backend(backend: object) -> str | None:
    if backend not in get_args(SdpaBackend):
        return f"unknown backend {backend!r}; expected one of {', '.join(get_args(SdpaBackend))}"
    return None


@dataclass(frozen=True, kw_only=True)
class AttentionConfig(Config):
    """Settings of one self-attention mixer.

    Attributes:
        num_heads: query heads.
        num_query_groups: key/value heads (grouped-query attention); ``None`` means
            ``num_heads`` (multi-head attention), 1 means multi-query attention.
        head_dim: width of one head; ``None`` means ``hidden_size // num_heads``.
        rotary_base: RoPE base (theta).
        rotary_fraction: fraction of each head's dimensions that RoPE rotates (partial rotary,
            e.g. 0.25 in GPT-NeoX-style models); 0 disables RoPE.
        rotary_scaling: rescaling of RoPE's frequencies for long contexts (``None``: none).
        bias: biases on the QKV and output projections.
        causal: mask future positions.
        sdpa_backend: the kernel of ``scaled_dot_product_attention``: ``auto`` lets PyTorch
            choose; ``flash``, ``cudnn``, ``efficient`` or ``math`` allow only that one, and a
            call it cannot run is an error (``RuntimeError`` from PyTorch), never a fallback.
        recompute_core_attention: recompute the ``core_attention`` slot in the backward pass
            instead of keeping its activations (Megatron's "selective" recomputation; worth it
            where the kernel keeps ``[s, s]`` scores, as the ``math`` kernel does).
    """

    num_heads: int = field(default=8, metadata=checks(positive))
    num_query_groups: int | None = None
    head_dim: int | None = field(default=None, metadata=checks(optional(positive)))
    rotary_base: float = field(default=10000.0, metadata=checks(positive))
    rotary_fraction: float = field(default=1.0, metadata=checks(within(0, 1)))
    rotary_scaling: RotaryScalingConfig | None = None
    bias: bool = False
    causal: bool = True
    sdpa_backend: SdpaBackend = field(default="auto", metadata=checks(_known_sdpa_backend))
    recompute_core_attention: bool = False

    def validate(self) -> None:
        super().validate()
        groups = self.query_groups
        if groups <= 0 or self.num_heads % groups != 0:
            raise ConfigError(
                "num_query_groups", f"{groups} must be positive and divide num_heads ({self.num_heads})"
            )

    @property
    def query_groups(self) -> int:
        """The number of key/value heads."""
        return self.num_heads if self.num_query_groups is None else self.num_query_groups

    def resolved_head_dim(self, hidden_size: int) -> int:
        """The head width for a model of ``hidden_size``.

        Raises:
            ConfigError: (``num_heads``) if ``head_dim`` is unset and ``hidden_size`` is not
                divisible by ``num_heads``.
        """
        if self.head_dim is not None:
            return self.head_dim
        if hidden_size % self.num_heads != 0:
            raise ConfigError(
                "num_heads", f"{self.num_heads} does not divide hidden_size ({hidden_size}); set head_dim"
            )
        return hidden_size // self.num_heads

    def check_model(self, hidden_size: int, tensor_parallel_size: int) -> None:
        """Checks against the model width and the tensor-parallel size (ranks own whole KV
        groups and their query heads).

        Raises:
            ConfigError: naming the field.
        """
        head_dim = self.resolved_head_dim(hidden_size)
        for name, count in (("num_heads", self.num_heads), ("num_query_groups", self.query_groups)):
            if count % tensor_parallel_size != 0:
                raise ConfigError(
                    name, f"{count} is not divisible by the tensor-parallel size ({tensor_parallel_size})"
                )
        if self.rotary_fraction > 0 and rotary_dim(head_dim, self.rotary_fraction) == 0:
            raise ConfigError(
                "rotary_fraction",
                f"{self.rotary_fraction} of head_dim {head_dim} rotates no dimension; use 0 to "
                f"disable RoPE",
            )


@dataclass(frozen=True, kw_only=True)
class MlpConfig(Config):
    """Settings of one feed-forward block.

    Attributes:
        ffn_hidden_size: width of the intermediate activation.
        activation: a name (``"silu"``, ``"gelu"``, ``"gelu_tanh"``, ``"relu"``), or any
            ``Tensor -> Tensor`` function from Python (such a config cannot be saved to YAML).
        gated: gated linear unit (``activation(gate) * up``, as SwiGLU/GeGLU).
        bias: biases on fc1 and fc2.
    """

    ffn_hidden_size: int = field(default=1024, metadata=checks(positive))
    activation: ActivationName | Activation = field(default="silu", metadata=checks(_known_activation))
    gated: bool = True
    bias: bool = False

    @property
    def activation_function(self) -> Activation:
        """The activation as a function."""
        if isinstance(self.activation, str):
            return ACTIVATIONS[self.activation]
        return self.activation

    def check_model(self, hidden_size: int, tensor_parallel_size: int) -> None:
        """Checks against the tensor-parallel size (each rank holds a slice of the
        intermediate features).

        Raises:
            ConfigError: naming the field.
        """
        if self.ffn_hidden_size % tensor_parallel_size != 0:
            raise ConfigError(
                "ffn_hidden_size",
                f"{self.ffn_hidden_size} is not divisible by the tensor-parallel size "
                f"({tensor_parallel_size})",
            )


__all__ = [
    "ACTIVATIONS",
    "Activation",
    "ActivationName",
    "AttentionConfig",
    "MlpConfig",
    "Llama3RotaryScaling",
    "ModelWideSettings",
    "RECOMPUTED_SLOTS",
    "RecomputedSlot",
    "SdpaBackend",
    "RotaryScalingConfig",
    "TransformerConfig",
]
