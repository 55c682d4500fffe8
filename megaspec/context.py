"""Per-call information handed to every layer and mixer as one typed value.

A mixer's forward is ``forward(hidden, *, context: LayerContext)``. New per-call information
(caches, packed-sequence boundaries, ...) becomes a new field here, so a mixer written today
keeps working when the model starts passing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from megaspec.inference import InferenceState
from megaspec.rotary import RotaryTables


@dataclass(frozen=True)
class LayerContext:
    """What a layer needs to know about the current call besides its hidden states.

    Attributes:
        position_ids: ``[batch, sequence]`` int64 positions of the *full* sequence (also under
            sequence parallelism, where hidden states hold a slice of it).
        rotary: rotary tables for ``position_ids``.
        attention_mask: ``[batch, cached + sequence]`` bool, ``True`` for real tokens and
            ``False`` for (left) padding, over the cached tokens and this call's; ``None``
            when no row is padded. A mixer that mixes tokens must keep padding out of what
            real tokens see (attention masks those keys).
        inference: the caches of an incremental decoding (see :mod:`megaspec.inference`);
            ``None`` for a plain forward over the whole sequence. Only mixers that declare
            ``supports_inference_cache`` are called with one.
    """

    position_ids: Tensor
    rotary: RotaryTables = field(repr=False)
    attention_mask: Tensor | None = field(default=None, repr=False)
    inference: InferenceState | None = field(default=None, repr=False)

    @staticmethod
    def for_positions(
        position_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        inference: InferenceState | None = None,
    ) -> LayerContext:
        """A context for ``position_ids`` (``[batch, sequence]``), with rotary tables for them."""
        return LayerContext(
            position_ids=position_ids,
            rotary=RotaryTables(position_ids),
            attention_mask=attention_mask,
            inference=inference,
        )
