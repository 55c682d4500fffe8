"""Per-call information handed to every layer and mixer as one typed value.

A mixer's forward is ``forward(hidden, *, context: LayerContext)``. New per-call information
(caches, packed-sequence boundaries, ...) becomes a new field here, so a mixer written today
keeps working when the model starts passing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from megaspec.rotary import RotaryTables


@dataclass(frozen=True)
class LayerContext:
    """What a layer needs to know about the current call besides its hidden states.

    Attributes:
        position_ids: ``[batch, sequence]`` int64 positions of the *full* sequence (also under
            sequence parallelism, where hidden states hold a slice of it).
        rotary: rotary tables for ``position_ids``.
    """

    position_ids: Tensor
    rotary: RotaryTables = field(repr=False)

    @staticmethod
    def for_positions(position_ids: Tensor) -> LayerContext:
        """A context for ``position_ids`` (``[batch, sequence]``)."""
        return LayerContext(position_ids=position_ids, rotary=RotaryTables(position_ids))
