"""Import Transformer Engine for the ``te`` backend, or fail with the install command.

Nothing in megaspec imports Transformer Engine except :mod:`megaspec.backends.te` (through
:func:`import_transformer_engine`) and :func:`megaspec.backends.fp8.fp8_autocast`, so
``import megaspec`` works without it. A missing package is an error naming the extra, never a
silent fallback to the torch backend.
"""

from __future__ import annotations

import importlib
from typing import Any

TE_MISSING_MESSAGE = (
    "megaspec's Transformer Engine backend needs transformer_engine.pytorch, which could not "
    "be imported ({error}); install it with `pip install 'megaspec[te]'` (the `te` extra: "
    "transformer-engine[pytorch]==2.20.2, needs CUDA), or use megaspec.backends.torch"
)


class TransformerEngineNotInstalled(ImportError):
    """Transformer Engine is missing (or cannot load): the message names the ``te`` extra."""


def import_transformer_engine() -> Any:
    """The ``transformer_engine.pytorch`` module.

    Typed ``Any``: Transformer Engine ships no type information, and megaspec's own signatures
    never expose its objects (the adapters in :mod:`megaspec.backends.te` wrap them).

    Raises:
        TransformerEngineNotInstalled: if it is not installed or fails to load (e.g. no CUDA
            libraries); the original error is chained.
    """
    try:
        return importlib.import_module("transformer_engine.pytorch")
    except (ImportError, OSError) as error:
        raise TransformerEngineNotInstalled(
            TE_MISSING_MESSAGE.format(error=f"{type(error).__name__}: {error}")
        ) from error
