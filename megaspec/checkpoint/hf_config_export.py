"""megaspec model configs -> Hugging Face ``config.json`` data of the Llama family.

The inverse of :func:`megaspec.checkpoint.hf_config.model_data_from_hf`: a ``ModelConfig``
whose decoder repeats one RMSNorm / RoPE attention / gated MLP block becomes a ``llama``,
``mistral``, ``qwen2`` or ``qwen3`` config; anything else is refused with the path of the
setting no such checkpoint can hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import torch

from megaspec.checkpoint.errors import CheckpointError, show
from megaspec.checkpoint.hf_config import (
    DEFAULT_MAX_POSITION_EMBEDDINGS,
    EXPORTED_ACTIVATIONS,
    FAMILIES,
    HfFamily,
    LlamaArchitecture,
)
from megaspec.checkpoint.hf_rope import rope_to_hf
from megaspec.config import (
    AttentionMixerConfig,
    FeedForwardConfig,
    LinearConfig,
    ModelConfig,
    NormConfig,
    RepeatSequenceConfig,
    RMSNormConfig,
)
from megaspec.transformer_config import Llama3RotaryScaling

_NOT_CARRIED: Final = frozenset(
    {
        "transformers_version", "_name_or_path", "architectures", "model_type", "torch_dtype",
        "dtype", "rope_parameters", "rope_theta", "rope_scaling", "attention_bias", "mlp_bias",
        "sliding_window", "use_sliding_window", "max_window_layers", "layer_types",
        "partial_rotary_factor",
    }
)  # fmt: skip
"""Template keys that describe the architecture: always written from the megaspec config."""


def _unexportable(path: str, value: object, supported: str) -> CheckpointError:
    return CheckpointError(
        f"model config: {path}: {show(value)} cannot be written as a Hugging Face checkpoint "
        f"({supported})"
    )


def _bias(linear: LinearConfig, default: bool) -> bool:
    return default if linear.bias is None else linear.bias


def llama_block(config: ModelConfig) -> tuple[AttentionMixerConfig, FeedForwardConfig]:
    """The attention and MLP settings of ``config``'s one repeated block.

    Raises:
        CheckpointError: for a config no Llama-family checkpoint can hold (a pattern of
            blocks, another mixer or norm, post-norms, a non-gated MLP, partial or scaled
            RoPE of another kind, a bias on the output layer, ...), naming its path.
    """
    decoder = config.decoder
    if not isinstance(decoder, RepeatSequenceConfig):
        raise _unexportable("decoder.type", decoder.type_name, "supported: repeat")
    block = decoder.block
    for path, norm in (("decoder.block.norm", block.norm), ("final_norm", config.final_norm)):
        _require_rms_norm(path, norm)
    if block.post_norms:
        raise _unexportable("decoder.block.post_norms", True, "supported: false")
    mixer, mlp = block.mixer, block.mlp
    if not isinstance(mixer, AttentionMixerConfig):
        raise _unexportable("decoder.block.mixer.type", mixer.type_name, "supported: attention")
    if not isinstance(mlp, FeedForwardConfig):
        raise _unexportable("decoder.block.mlp.type", mlp.type_name, "supported: mlp")
    checks: tuple[tuple[str, object, object, str], ...] = (
        ("mixer.causal", mixer.causal, True, "supported: true"),
        ("mixer.rotary_fraction", mixer.rotary_fraction, 1.0, "supported: 1.0"),
        ("mlp.gated", mlp.gated, True, "supported: true"),
        ("mlp.fc2.bias", _bias(mlp.fc2, mlp.bias), _bias(mlp.fc1, mlp.bias), "one mlp_bias for all"),
    )
    for path, value, expected, supported in checks:
        if value != expected:
            raise _unexportable(f"decoder.block.{path}", value, supported)
    scaling = mixer.rotary_scaling
    if scaling is not None and not isinstance(scaling, Llama3RotaryScaling):
        path = "decoder.block.mixer.rotary_scaling.type"
        raise _unexportable(path, scaling.type_name, "supported: llama3")
    if not isinstance(mlp.activation, str) or mlp.activation not in EXPORTED_ACTIVATIONS:
        supported = f"supported: {', '.join(EXPORTED_ACTIVATIONS)}"
        raise _unexportable("decoder.block.mlp.activation", str(mlp.activation), supported)
    if config.output_layer.bias:
        raise _unexportable("output_layer.bias", True, "supported: false")
    return mixer, mlp


def _require_rms_norm(path: str, norm: NormConfig) -> None:
    if not isinstance(norm, RMSNormConfig):
        raise _unexportable(f"{path}.type", norm.type_name, "supported: rms_norm")


def llama_architecture(config: ModelConfig) -> LlamaArchitecture:
    """The Llama-family shapes of ``config``: what its weights hold.

    Raises:
        CheckpointError: as :func:`llama_block`.
    """
    mixer, mlp = llama_block(config)
    return LlamaArchitecture(
        hidden_size=config.hidden_size,
        vocab_size=config.vocab_size,
        num_layers=config.decoder.num_layers,
        num_heads=mixer.num_heads,
        num_query_groups=mixer.query_groups,
        head_dim=mixer.resolved_head_dim(config.hidden_size),
        ffn_hidden_size=mlp.ffn_hidden_size,
        qkv_bias=_bias(mixer.qkv, mixer.bias),
        proj_bias=_bias(mixer.proj, mixer.bias),
        mlp_bias=_bias(mlp.fc1, mlp.bias),
        qk_norm=mixer.qk_norm,
        tie_embeddings=config.tie_embeddings,
    )


def infer_model_type(architecture: LlamaArchitecture) -> str:
    """The plainest family that holds ``architecture``: ``qwen3`` for QK-norm, ``qwen2`` for
    biases on q/k/v only, else ``llama`` (Mistral checkpoints are Llama checkpoints without
    biases; ask for ``mistral`` explicitly)."""
    if architecture.qk_norm:
        return "qwen3"
    if architecture.qkv_bias and not architecture.proj_bias:
        return "qwen2"
    return "llama"


def check_family(family: HfFamily, architecture: LlamaArchitecture) -> None:
    """Refuse what ``family`` cannot express of ``architecture``.

    Raises:
        CheckpointError: naming the setting, its value and what the family supports.
    """
    name = f"Hugging Face {family.model_type!r}"
    biases = (architecture.qkv_bias, architecture.proj_bias)
    if family.fixed_attention_biases is not None and biases != family.fixed_attention_biases:
        qkv, proj = family.fixed_attention_biases
        raise CheckpointError(
            f"model config: decoder.block.mixer: biases on qkv {show(biases[0])} and proj "
            f"{show(biases[1])} cannot be written as {name} (it has qkv {show(qkv)}, proj "
            f"{show(proj)})"
        )
    if family.fixed_attention_biases is None and biases[0] != biases[1]:
        raise CheckpointError(
            f"model config: decoder.block.mixer.qkv.bias: {show(biases[0])} with proj.bias "
            f"{show(biases[1])} cannot be written as {name} (one attention_bias for all four)"
        )
    if architecture.mlp_bias and not family.has_mlp_bias:
        raise CheckpointError(
            f"model config: decoder.block.mlp.bias: true cannot be written as {name} (no MLP biases)"
        )
    if architecture.qk_norm != family.qk_norm:
        raise CheckpointError(
            f"model config: decoder.block.mixer.qk_norm: {show(architecture.qk_norm)} cannot be "
            f"written as {name} (supported: {show(family.qk_norm)})"
        )


def hf_config_from_model(
    config: ModelConfig,
    *,
    model_type: str | None = None,
    dtype: torch.dtype = torch.float32,
    template: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``config.json`` data of a Hugging Face checkpoint of ``config``.

    ``model_type`` defaults to ``template``'s, else to :func:`infer_model_type`'s choice.
    ``template`` (e.g. the imported checkpoint's ``config.json``) supplies the keys megaspec
    does not define (token ids, ``max_position_embeddings``, ...); the architecture always
    comes from ``config``.

    Raises:
        CheckpointError: for a config the chosen family cannot express (see
            :func:`llama_block` and :func:`check_family`), or an unknown ``model_type``.
    """
    mixer, mlp = llama_block(config)
    architecture = llama_architecture(config)
    template = template or {}
    chosen = model_type or template.get("model_type") or infer_model_type(architecture)
    family = FAMILIES.get(chosen)
    if family is None:
        raise CheckpointError(
            f"model_type: {show(chosen)} is not supported (supported: {', '.join(FAMILIES)})"
        )
    check_family(family, architecture)
    scaling = mixer.rotary_scaling
    assert scaling is None or isinstance(scaling, Llama3RotaryScaling)  # llama_block checked
    assert isinstance(mlp.activation, str)
    dtype_name = str(dtype).removeprefix("torch.")
    data = {key: value for key, value in template.items() if key not in _NOT_CARRIED}
    data.setdefault("max_position_embeddings", DEFAULT_MAX_POSITION_EMBEDDINGS)
    data.update(
        architectures=[family.architecture],
        model_type=family.model_type,
        vocab_size=architecture.vocab_size,
        hidden_size=architecture.hidden_size,
        intermediate_size=architecture.ffn_hidden_size,
        num_hidden_layers=architecture.num_layers,
        num_attention_heads=architecture.num_heads,
        num_key_value_heads=architecture.num_query_groups,
        head_dim=architecture.head_dim,
        hidden_act=EXPORTED_ACTIVATIONS[mlp.activation],
        rms_norm_eps=config.norm_epsilon,
        initializer_range=config.init_std,
        tie_word_embeddings=architecture.tie_embeddings,
        attention_dropout=0.0,
        torch_dtype=dtype_name,
        dtype=dtype_name,
        **rope_to_hf(mixer.rotary_base, scaling),
    )
    data.update(_family_flags(family, architecture))
    return data


def _family_flags(family: HfFamily, architecture: LlamaArchitecture) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    if family.fixed_attention_biases is None:
        flags["attention_bias"] = architecture.qkv_bias
    if family.has_mlp_bias:
        flags["mlp_bias"] = architecture.mlp_bias
    if family.model_type == "mistral":
        flags["sliding_window"] = None
    if family.model_type in ("qwen2", "qwen3"):
        flags.update(use_sliding_window=False, sliding_window=None)
    return flags
