"""An optimizer's ``param_groups`` (learning rates, betas, parameter names) as JSON.

torch.distributed.checkpoint stores non-tensor values by pickling them and loads them with
``torch.load(weights_only=False)`` (torch 2.13, ``DefaultLoadPlanner.load_bytes``): full
pickle. megaspec keeps them out of DCP and writes this JSON file instead, so DCP only ever
sees tensors (read with ``weights_only=True``) and its own ``.metadata``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from megaspec.checkpoint.errors import CheckpointError

OPTIMIZER_GROUPS_FILE: Final = "optimizer_groups.json"
_TUPLE: Final = "__tuple__"  # JSON has no tuples; AdamW's betas is one


def _encode(value: Any) -> Any:
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(item) for item in value]}
    if isinstance(value, list):
        return [_encode(item) for item in value]
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError(
        f"optimizer param_groups: a {type(value).__name__} cannot be saved as JSON: {value!r}"
    )


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_TUPLE}:
            return tuple(_decode(item) for item in value[_TUPLE])
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


def write_optimizer_groups(directory: Path, groups: list[dict[str, Any]]) -> None:
    """Write ``groups`` (``optimizer.state_dict()["param_groups"]``, parameters by name).

    Raises:
        CheckpointError: for a value JSON cannot hold (a tensor learning rate, say).
    """
    (directory / OPTIMIZER_GROUPS_FILE).write_text(json.dumps(_encode(groups), indent=1) + "\n")


def read_optimizer_groups(directory: Path) -> list[dict[str, Any]]:
    """The groups :func:`write_optimizer_groups` wrote.

    Raises:
        CheckpointError: if the checkpoint was saved without an optimizer.
    """
    path = directory / OPTIMIZER_GROUPS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing: the checkpoint was saved without an optimizer")
    groups: list[dict[str, Any]] = _decode(json.loads(path.read_text()))
    return groups
