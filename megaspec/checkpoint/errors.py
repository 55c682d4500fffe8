"""The error of checkpoint import and export."""

from __future__ import annotations

import json
from collections.abc import Iterable


class CheckpointError(ValueError):
    """A checkpoint megaspec cannot read or write exactly: an unsupported architecture or
    setting, a missing file or tensor, a shape that does not match the config.

    The message names where (``config.json``, a file, ``model config``), the field or tensor,
    the value found and what is supported, e.g. ``config.json: rope_parameters.rope_type:
    'yarn' is not supported (supported: default, llama3)``. Nothing is ever approximated.
    """


def show(value: object) -> str:
    """A config value as a message shows it: strings quoted, everything else as JSON
    (``true``, ``null``, ``4096``, ``["LlamaForCausalLM"]``)."""
    if isinstance(value, str):
        return repr(value)
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def listed_names(names: Iterable[str], shown: int = 4) -> str:
    """Sorted names, comma-separated; past ``shown`` of them, ``..., (N in all)``."""
    ordered = sorted(names)
    text = ", ".join(ordered[:shown])
    return text if len(ordered) <= shown else f"{text}, ... ({len(ordered)} in all)"
