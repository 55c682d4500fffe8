"""RoPE in Hugging Face configs <-> ``AttentionConfig.rotary_base`` and ``rotary_scaling``.

transformers 5 writes ``rope_parameters: {rope_type, rope_theta, ...}``; transformers 4 wrote
``rope_theta`` and ``rope_scaling: {rope_type (or type), ...}`` (``null`` for plain RoPE).
Both are read (and must agree when a config has both); both are written, so transformers 4
and 5 load an exported checkpoint alike. Supported types: ``default`` and ``llama3``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from megaspec.checkpoint.errors import show
from megaspec.checkpoint.hf_fields import HfFields
from megaspec.transformer_config import Llama3RotaryScaling

HF_ROPE_TYPES: Final = ("default", "llama3")
DEFAULT_ROPE_THETA: Final = 10000.0
_LLAMA3_FACTORS: Final = ("factor", "low_freq_factor", "high_freq_factor")
_LLAMA3_CONTEXT: Final = "original_max_position_embeddings"
_TYPE_KEYS: Final = ("rope_type", "type")

RotarySettings = tuple[float, dict[str, Any] | None]
"""``(rotary_base, rotary_scaling data or None)``, as a ``ModelConfig``'s attention holds them."""


def rope_from_hf(fields: HfFields) -> RotarySettings:
    """The rotary base and scaling a config describes.

    Raises:
        CheckpointError: for a RoPE type other than default and llama3, a key the type does
            not have, a partial rotary factor other than 1, per-layer-type parameters, or
            ``rope_parameters`` disagreeing with ``rope_theta`` / ``rope_scaling``.
    """
    modern = fields.data.get("rope_parameters")
    legacy = _legacy_settings(fields)
    if modern is None:
        return (DEFAULT_ROPE_THETA, None) if legacy is None else legacy
    if not isinstance(modern, Mapping):
        raise fields.error("rope_parameters", f"expected a mapping, got {show(modern)}")
    parameters = fields.nested("rope_parameters", modern)
    theta = _positive(parameters, "rope_theta")
    settings = _read_parameters(parameters, theta, theta_in_mapping=True)
    if legacy is not None and legacy != settings:
        raise fields.error(
            "rope_parameters",
            f"{show(dict(modern))} disagrees with rope_theta {show(fields.get('rope_theta'))} and "
            f"rope_scaling {show(fields.get('rope_scaling'))}",
        )
    return settings


def _legacy_settings(fields: HfFields) -> RotarySettings | None:
    scaling = fields.data.get("rope_scaling")
    if scaling is None and fields.data.get("rope_theta") is None:
        return None
    if scaling is not None and not isinstance(scaling, Mapping):
        raise fields.error("rope_scaling", f"expected a mapping or null, got {show(scaling)}")
    theta = _positive(fields, "rope_theta")
    scaling_fields = fields.nested("rope_scaling", scaling or {})
    return _read_parameters(scaling_fields, theta, theta_in_mapping=False)


def _positive(fields: HfFields, name: str) -> float:
    value = fields.number(name, DEFAULT_ROPE_THETA)
    if value <= 0:
        raise fields.error(name, f"expected a positive number, got {show(value)}")
    return value


def _rope_type(parameters: HfFields) -> str:
    data = parameters.data
    if not any(key in data for key in _TYPE_KEYS) and any(
        isinstance(value, Mapping) for value in data.values()
    ):
        raise parameters.error("", "per-layer-type RoPE parameters are not supported")
    if data.get("type") is not None and data.get("rope_type") not in (None, data["type"]):
        raise parameters.error(
            "type", f"{show(data['type'])} disagrees with rope_type {show(data['rope_type'])}"
        )
    rope_type = parameters.get("rope_type", parameters.get("type", "default"))
    if rope_type not in HF_ROPE_TYPES:
        key = "rope_type" if "rope_type" in data else "type"
        raise parameters.unsupported(key, rope_type, f"supported: {', '.join(HF_ROPE_TYPES)}")
    assert isinstance(rope_type, str)
    return rope_type


def _read_parameters(
    parameters: HfFields, theta: float, *, theta_in_mapping: bool
) -> RotarySettings:
    """RoPE settings from a ``rope_parameters`` or ``rope_scaling`` mapping, with base ``theta``
    (read from the mapping itself or, for ``rope_scaling``, from the top level)."""
    rope_type = _rope_type(parameters)
    known = {*_TYPE_KEYS, "partial_rotary_factor", *(["rope_theta"] if theta_in_mapping else [])}
    if rope_type == "llama3":
        known |= {*_LLAMA3_FACTORS, _LLAMA3_CONTEXT}
    for key in parameters.data:
        if key not in known:
            raise parameters.error(
                key,
                f"is not supported with rope_type {show(rope_type)} (known: "
                f"{', '.join(sorted(known))})",
            )
    partial = parameters.number("partial_rotary_factor", 1.0)
    if partial != 1.0:
        raise parameters.unsupported(
            "partial_rotary_factor", partial, "supported: 1.0; the Llama family rotates whole heads"
        )
    if rope_type == "default":
        return theta, None
    data = parameters.data
    scaling: dict[str, Any] = {"type": "llama3"}
    for key in _LLAMA3_FACTORS:
        if data.get(key) is None:
            raise parameters.error(key, "missing (rope_type 'llama3' needs it)")
        scaling[key] = parameters.number(key, 0.0)
    if data.get(_LLAMA3_CONTEXT) is None:
        raise parameters.error(_LLAMA3_CONTEXT, "missing (rope_type 'llama3' needs it)")
    scaling[_LLAMA3_CONTEXT] = parameters.integer(_LLAMA3_CONTEXT)
    return theta, scaling


def rope_to_hf(rotary_base: float, scaling: Llama3RotaryScaling | None) -> dict[str, Any]:
    """The config keys for RoPE with ``rotary_base`` and ``scaling``: ``rope_parameters``
    (transformers 5) and the equal ``rope_theta`` + ``rope_scaling`` (transformers 4)."""
    if scaling is None:
        return {
            "rope_parameters": {"rope_type": "default", "rope_theta": rotary_base},
            "rope_theta": rotary_base,
            "rope_scaling": None,
        }
    llama3 = {
        "rope_type": "llama3",
        "factor": scaling.factor,
        "low_freq_factor": scaling.low_freq_factor,
        "high_freq_factor": scaling.high_freq_factor,
        _LLAMA3_CONTEXT: scaling.original_max_position_embeddings,
    }
    return {
        "rope_parameters": {**llama3, "rope_theta": rotary_base},
        "rope_theta": rotary_base,
        "rope_scaling": llama3,
    }
