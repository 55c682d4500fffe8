"""The Transformer Engine module every adapter builds from, and how a parameter is handed to it.

Importing this module imports Transformer Engine, or raises
:class:`~megaspec.backends.te_import.TransformerEngineNotInstalled` naming the ``te`` extra.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from megaspec.backends.portable import TE_MODULE_SEGMENT
from megaspec.backends.te_import import import_transformer_engine

te_pytorch: Any = import_transformer_engine()

# The attribute under which an adapter holds its Transformer Engine module; its parameters'
# state-dict names carry this segment, which megaspec.backends.portable drops.
TE_MODULE = TE_MODULE_SEGMENT


def adopt_parameter(te_module: nn.Module, name: str, parameter: nn.Parameter) -> None:
    """Make ``parameter`` (made by ``new_sharded_parameter``) ``te_module``'s ``name``.

    The Transformer Engine module is built on the meta device (nothing allocated, nothing
    drawn) and its parameters are replaced by megaspec's, so they carry megaspec's
    initialisation (TP-invariant, the torch backend's values for the same seed), sharding
    records and meta-device recipes (:func:`megaspec.parallel.materialize`). Transformer
    Engine reads its weights by attribute name in every forward, so the replacement is what
    it computes with.
    """
    te_module.register_parameter(name, parameter)
