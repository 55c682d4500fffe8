"""Hugging Face configs of the Llama family <-> megaspec model configs.

Supported: Llama 2/3 (``llama``, with ``llama3`` RoPE scaling), Mistral (``mistral``), Qwen2
(``qwen2``: biases on q/k/v, none on o_proj) and Qwen3 (``qwen3``: QK-norm, explicit
``head_dim``); tied or untied embeddings, grouped-query attention. Every one is a stack of
identical pre-norm layers (RMSNorm, RoPE self-attention, SwiGLU-style gated MLP), which is a
megaspec ``ModelConfig`` with a ``repeat`` decoder.

:func:`model_data_from_hf` reads a config (``config.json`` data, or a
``transformers.PretrainedConfig``) into the data of a ``ModelConfig``;
:func:`megaspec.checkpoint.hf_config_export.hf_config_from_model` writes a ``ModelConfig``
back as ``config.json`` data. Both refuse what they cannot carry over exactly with a
:class:`CheckpointError` naming the field, the value and what is supported: nothing is
approximated. RoPE is read from transformers 5's ``rope_parameters`` or transformers 4's
``rope_theta`` + ``rope_scaling`` (both must agree if both are present) and written in both
forms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final


from megaspec.checkpoint.errors import CheckpointError, show
from megaspec.checkpoint.hf_fields import HasToDict, HfFields, as_mapping
from megaspec.checkpoint.hf_rope import rope_from_hf
from megaspec.transformer_config import ActivationName

DEFAULT_MAX_POSITION_EMBEDDINGS: Final = 4096
"""``max_position_embeddings`` written when no template gives one (megaspec sets no limit)."""


@dataclass(frozen=True)
class HfFamily:
    """What one Hugging Face ``model_type`` can express.

    Attributes:
        fixed_attention_biases: ``(q/k/v, o_proj)`` biases fixed by the modelling code, or
            ``None`` when one ``attention_bias`` flag sets all four.
        has_mlp_bias: whether an ``mlp_bias`` flag exists (else the MLP has no biases).
        qk_norm: whether every layer has ``q_norm`` and ``k_norm``.
    """

    model_type: str
    architecture: str
    fixed_attention_biases: tuple[bool, bool] | None
    has_mlp_bias: bool
    qk_norm: bool


FAMILIES: Final[Mapping[str, HfFamily]] = {
    "llama": HfFamily("llama", "LlamaForCausalLM", None, True, False),
    "mistral": HfFamily("mistral", "MistralForCausalLM", (False, False), False, False),
    "qwen2": HfFamily("qwen2", "Qwen2ForCausalLM", (True, False), False, False),
    "qwen3": HfFamily("qwen3", "Qwen3ForCausalLM", None, False, True),
}

HF_ACTIVATIONS: Final[Mapping[str, ActivationName]] = {
    "silu": "silu",
    "swish": "silu",
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
}
"""``hidden_act`` names and the megaspec activation that computes the same function."""

EXPORTED_ACTIVATIONS: Final[Mapping[str, str]] = {  # the inverse, one name each
    "silu": "silu",
    "gelu": "gelu",
    "gelu_tanh": "gelu_pytorch_tanh",
    "relu": "relu",
}


@dataclass(frozen=True)
class LlamaArchitecture:
    """The shapes and optional tensors of a Llama-family model: what its weights hold."""

    hidden_size: int
    vocab_size: int
    num_layers: int
    num_heads: int
    num_query_groups: int
    head_dim: int
    ffn_hidden_size: int
    qkv_bias: bool
    proj_bias: bool
    mlp_bias: bool
    qk_norm: bool
    tie_embeddings: bool


def hf_family(fields: HfFields) -> HfFamily:
    """The family of a config's ``model_type``, checked against its ``architectures``.

    Raises:
        CheckpointError: for an unknown ``model_type`` or an architecture other than the
            family's causal language model.
    """
    model_type = fields.get("model_type")
    if model_type is None:
        raise fields.error("model_type", f"missing (supported: {', '.join(FAMILIES)})")
    family = FAMILIES.get(model_type) if isinstance(model_type, str) else None
    if family is None:
        raise fields.unsupported("model_type", model_type, f"supported: {', '.join(FAMILIES)}")
    architectures = fields.get("architectures")
    if architectures is not None and architectures != [family.architecture]:
        raise fields.unsupported(
            "architectures", architectures, f"supported for {model_type}: {[family.architecture]}"
        )
    return family


def refuse_unsupported_features(fields: HfFields, family: HfFamily, num_layers: int) -> None:
    """Refuse settings megaspec cannot reproduce exactly: sliding-window attention, per-layer
    attention types, attention dropout, partial rotary, unknown activations.

    Raises:
        CheckpointError: naming the first such field and its value.
    """
    if family.model_type == "mistral" and fields.get("sliding_window") is not None:
        value = fields.get("sliding_window")
        raise fields.unsupported(
            "sliding_window", value, "sliding-window attention; supported: null"
        )
    if family.model_type in ("qwen2", "qwen3") and fields.flag("use_sliding_window"):
        raise fields.unsupported(
            "use_sliding_window", True, "sliding-window attention; supported: false"
        )
    layer_types = fields.get("layer_types")
    if layer_types is not None:
        if not isinstance(layer_types, list) or len(layer_types) != num_layers:
            raise fields.error(
                "layer_types", f"expected {num_layers} entries, got {show(layer_types)}"
            )
        for index, layer_type in enumerate(layer_types):
            if layer_type != "full_attention":
                raise fields.unsupported(
                    f"layer_types[{index}]", layer_type, "supported: full_attention in every layer"
                )
    dropout = fields.number("attention_dropout", 0.0)
    if dropout != 0.0:
        raise fields.unsupported("attention_dropout", dropout, "supported: 0.0")
    partial = fields.number("partial_rotary_factor", 1.0)
    if partial != 1.0:
        raise fields.unsupported(
            "partial_rotary_factor", partial, "supported: 1.0; the Llama family rotates whole heads"
        )
    activation = fields.get("hidden_act", "silu")
    if activation not in HF_ACTIVATIONS:
        supported = f"supported: {', '.join(HF_ACTIVATIONS)}"
        raise fields.unsupported("hidden_act", activation, supported)


def model_data_from_hf(
    hf_config: Mapping[str, Any] | HasToDict, *, where: str = "config.json"
) -> dict[str, Any]:
    """The data of the megaspec ``ModelConfig`` a Hugging Face config describes.

    Resolve it with ``megaspec.config.resolve(ModelConfig, ...)`` or ``from_data``; every field
    is set explicitly, so a saved config holds the whole architecture.

    Raises:
        CheckpointError: for an unsupported family, setting or value, naming ``where`` and the
            field, e.g. ``config.json: sliding_window: 4096 is not supported (sliding-window
            attention; supported: null)``.
    """
    fields = HfFields(as_mapping(hf_config), where)
    family = hf_family(fields)
    num_layers = fields.integer("num_hidden_layers")
    refuse_unsupported_features(fields, family, num_layers)
    hidden = fields.integer("hidden_size")
    mlp = {
        "type": "mlp",
        "ffn_hidden_size": fields.integer("intermediate_size"),
        "activation": HF_ACTIVATIONS[fields.get("hidden_act", "silu")],
        "gated": True,
        "bias": fields.flag("mlp_bias") if family.has_mlp_bias else False,
    }
    block = {
        "mixer": _attention_data(fields, family, hidden),
        "mlp": mlp,
        "norm": {"type": "rms_norm"},
        "post_norms": False,
    }
    return {
        "hidden_size": hidden,
        "vocab_size": fields.integer("vocab_size"),
        "norm_epsilon": fields.number("rms_norm_eps", 1e-6),
        "init_std": fields.number("initializer_range", 0.02),
        "tie_embeddings": fields.flag("tie_word_embeddings"),
        "decoder": {"type": "repeat", "num_blocks": num_layers, "block": block},
        "final_norm": {"type": "rms_norm"},
    }


def _attention_data(fields: HfFields, family: HfFamily, hidden: int) -> dict[str, Any]:
    heads = fields.integer("num_attention_heads")
    if family.fixed_attention_biases is None:
        attention_bias = fields.flag("attention_bias")
        qkv_bias, proj_bias = attention_bias, attention_bias
    else:
        qkv_bias, proj_bias = family.fixed_attention_biases
    rotary_base, rotary_scaling = rope_from_hf(fields)
    mixer: dict[str, Any] = {
        "type": "attention",
        "num_heads": heads,
        "num_query_groups": fields.integer("num_key_value_heads", heads),
        "head_dim": _head_dim(fields, hidden, heads),
        "rotary_base": rotary_base,
        "rotary_fraction": 1.0,
        "rotary_scaling": rotary_scaling,
        "qk_norm": family.qk_norm,
        "bias": proj_bias,
    }
    if qkv_bias != proj_bias:  # Qwen2: biases on q/k/v only
        mixer["qkv"] = {"bias": qkv_bias}
    return mixer


def _head_dim(fields: HfFields, hidden: int, heads: int) -> int:
    if fields.get("head_dim") is not None:
        return fields.integer("head_dim")
    if hidden % heads != 0:
        raise fields.error(
            "head_dim",
            f"missing, and num_attention_heads ({heads}) does not divide hidden_size ({hidden})",
        )
    return hidden // heads


