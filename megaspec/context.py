"""Per-call information handed to every layer and mixer as one typed value.

A mixer's forward is ``forward(hidden, *, context: LayerContext)``. New per-call information
(caches, packed-sequence boundaries, ...) becomes a new field here, so a mixer written today
keeps working when the model starts passing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


class RotaryTables:
    """Rotary-embedding cosines and sines for one batch of positions, computed once per call.

    Every attention layer of a forward pass asks for its ``(rotary_dim, base)``; layers that
    share settings share the tables.
    """

    def __init__(self, position_ids: Tensor) -> None:
        self._position_ids = position_ids
        self._tables: dict[tuple[int, float, torch.dtype], tuple[Tensor, Tensor]] = {}

    def cos_sin(self, rotary_dim: int, base: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``(cos, sin)``, each ``[sequence, batch, 1, rotary_dim]`` in ``dtype``.

        Frequencies follow the rotate-half convention (Llama, GPT-NeoX, Megatron-LM):
        dimension ``i`` and ``i + rotary_dim / 2`` form a pair rotating at
        ``base ** (-2i / rotary_dim)``. Angles are computed in float32.

        Raises:
            ValueError: if ``rotary_dim`` is odd or not positive.
        """
        if rotary_dim <= 0 or rotary_dim % 2 != 0:
            raise ValueError(f"rotary_dim must be a positive even number, got {rotary_dim}")
        key = (rotary_dim, base, dtype)
        if key not in self._tables:
            device = self._position_ids.device
            exponents = torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=device)
            inverse_frequency = 1.0 / (base ** (exponents / rotary_dim))
            # [batch, sequence, rotary_dim / 2] -> [sequence, batch, 1, rotary_dim]
            angles = self._position_ids.float().unsqueeze(-1) * inverse_frequency
            angles = torch.cat((angles, angles), dim=-1).transpose(0, 1).unsqueeze(2)
            self._tables[key] = (angles.cos().to(dtype), angles.sin().to(dtype))
        return self._tables[key]


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
