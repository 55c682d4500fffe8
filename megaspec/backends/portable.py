"""Portable state dicts: a model's weights under the torch backend's names, whatever backend.

Both backends hold the same tensors in the same layouts (fused QKV packed per KV group, a
gated fc1 ``[gate_r; up_r]`` per rank); only the names differ on the te backend:

* an adapter holds its Transformer Engine module as ``te_module``: ``linear_qkv.weight`` is
  ``linear_qkv.te_module.weight`` there (the segment is dropped);
* a norm fused into ``linear_qkv`` / ``linear_fc1`` (``LayerNormLinear``) stores the layer's
  ``input_norm`` / ``pre_mlp_norm`` scale as ``...mixer.linear_qkv.te_module.layer_norm_weight``
  / ``...mlp.linear_fc1.te_module.layer_norm_weight`` (and ``layer_norm_bias``);
* ``_extra_state`` entries (FP8 scaling history) belong to one backend and are left out.

:func:`portable_state_dict` and :func:`load_portable_state_dict` work on any model, of either
backend or a mix of both, and need no Transformer Engine: the names are mapped by
:func:`portable_key` alone. A model's own ``state_dict()`` (with ``_extra_state``) remains the
way to checkpoint a te model for the same backend, FP8 history included.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

TE_MODULE_SEGMENT = "te_module"
EXTRA_STATE = "_extra_state"

# Where a norm-fused linear's norm lives on the torch backend: (linear's path inside the
# layer, the layer's norm slot).
_FUSED_NORM_SLOTS = {
    ("mixer", "linear_qkv"): "input_norm",
    ("mlp", "linear_fc1"): "pre_mlp_norm",
}
_FUSED_NORM_PARAMETERS = {"layer_norm_weight": "weight", "layer_norm_bias": "bias"}


def portable_key(key: str) -> str | None:
    """The torch-backend name of state-dict entry ``key``, or ``None`` for ``_extra_state``.

    Raises:
        ValueError: for a fused norm's parameter anywhere but ``mixer.linear_qkv`` or
            ``mlp.linear_fc1`` of a layer (no torch-backend slot to name it by).
    """
    parts = key.split(".")
    if parts[-1] == EXTRA_STATE:
        return None
    parts = [part for part in parts if part != TE_MODULE_SEGMENT]
    name = parts[-1]
    if name not in _FUSED_NORM_PARAMETERS:
        return ".".join(parts)
    slot = _FUSED_NORM_SLOTS.get((parts[-3], parts[-2])) if len(parts) >= 3 else None
    if slot is None:
        raise ValueError(
            f"portable_key: {key!r} is a fused norm's parameter outside mixer.linear_qkv and "
            f"mlp.linear_fc1, so it has no torch-backend name"
        )
    return ".".join([*parts[:-3], slot, _FUSED_NORM_PARAMETERS[name]])


def portable_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """``model``'s state dict under torch-backend names, without ``_extra_state`` (detached)."""
    portable: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        name = portable_key(key)
        if name is not None:
            portable[name] = value
    return portable


def load_portable_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Load ``state_dict`` (torch-backend names, e.g. from :func:`portable_state_dict` or a
    torch-backend model's ``state_dict()``) into ``model`` of any backend.

    Every parameter and buffer of ``model`` must be given and every entry used. ``model``'s
    ``_extra_state`` entries are not touched: they are not handed back to Transformer Engine
    (which refuses to unpickle FP8 state unless told it is safe), so the FP8 history stays.

    Raises:
        KeyError: naming the entries ``model`` needs that ``state_dict`` lacks, and those it
            has that ``model`` does not take (the message lists both).
    """
    converted: dict[str, Tensor] = {}
    missing: list[str] = []
    for key in model.state_dict():
        name = portable_key(key)
        if name is None:
            continue
        if name in state_dict:
            converted[key] = state_dict[name]
        else:
            missing.append(name)
    used = {portable_key(key) for key in converted}
    unexpected = sorted(set(state_dict) - used)
    if missing or unexpected:
        raise KeyError(
            f"load_portable_state_dict: missing {sorted(missing)}, unexpected {unexpected}"
        )
    # strict=False only for the _extra_state entries left out above; everything else was
    # matched one to one.
    model.load_state_dict(converted, strict=False)
