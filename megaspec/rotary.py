"""Rotary position embedding (RoPE): cosine/sine tables and the rotation.

Convention: rotate-half (Llama, GPT-NeoX, Megatron-LM). Dimension ``i`` and ``i + d / 2`` of
the rotated part (``d = rotary_dim``) form a pair turning at ``base ** (-2i / d)`` radians per
position; a partial rotary (``rotary_fraction < 1``) rotates the first ``d`` dimensions of
each head and passes the rest through.

Eager PyTorch runs the rotation as six kernels, a noticeable share of a GPU training step (see
bench/results); with ``TransformerConfig.fuse_elementwise`` self-attention compiles it, with
the split of the fused QKV output and QK-norm, into one kernel
(:func:`megaspec.layers.attention.split_heads`). Eager and fused compute the same function;
the flag is explicit because compiling needs a working ``torch.compile`` toolchain (Triton on
GPUs, a C++ compiler on CPUs) and takes seconds on the first call.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor


class FrequencyScaling(Protocol):
    """Rescales RoPE's inverse frequencies for long contexts (e.g. Llama 3's scheme).

    Implementations are hashable values (frozen configs): the tables of a call are cached
    per ``(rotary_dim, base, dtype, scaling)``.
    """

    def __call__(self, inverse_frequency: Tensor) -> Tensor: ...

    def __hash__(self) -> int: ...


def rotary_dim(head_dim: int, fraction: float) -> int:
    """Dimensions of a head that RoPE rotates: ``head_dim * fraction``, rounded down to even."""
    return int(head_dim * fraction) // 2 * 2


class RotaryTables:
    """Cosines and sines for one batch of positions, computed once per forward pass.

    Every attention layer of a forward pass asks for its ``(rotary_dim, base)``; layers that
    share settings share the tables.
    """

    def __init__(self, position_ids: Tensor) -> None:
        self._position_ids = position_ids
        self._tables: dict[
            tuple[int, float, torch.dtype, FrequencyScaling | None], tuple[Tensor, Tensor]
        ] = {}

    def cos_sin(
        self,
        rotary_dim: int,
        base: float,
        dtype: torch.dtype,
        scaling: FrequencyScaling | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(cos, sin)``, each ``[sequence, batch, 1, rotary_dim]`` in ``dtype``.

        Angles are computed in float32; ``scaling`` rescales the inverse frequencies first.

        Raises:
            ValueError: if ``rotary_dim`` is odd or not positive.
        """
        if rotary_dim <= 0 or rotary_dim % 2 != 0:
            raise ValueError(f"rotary_dim must be a positive even number, got {rotary_dim}")
        key = (rotary_dim, base, dtype, scaling)
        if key not in self._tables:
            device = self._position_ids.device
            exponents = torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=device)
            inverse_frequency = 1.0 / (base ** (exponents / rotary_dim))
            if scaling is not None:
                inverse_frequency = scaling(inverse_frequency)
            # [batch, sequence, rotary_dim / 2] -> [sequence, batch, 1, rotary_dim]
            angles = self._position_ids.float().unsqueeze(-1) * inverse_frequency
            angles = torch.cat((angles, angles), dim=-1).transpose(0, 1).unsqueeze(2)
            self._tables[key] = (angles.cos().to(dtype), angles.sin().to(dtype))
        return self._tables[key]


def rotate(hidden: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first ``cos.shape[-1]`` dimensions of ``hidden`` (rotate-half convention).

    Shapes: ``hidden [s, b, heads, head_dim]``, ``cos``/``sin`` ``[s, b, 1, rotary_dim]``.
    """
    width = cos.shape[-1]
    rotated, passed = hidden[..., :width], hidden[..., width:]
    first, second = rotated.chunk(2, dim=-1)
    rotated = rotated * cos + torch.cat((-second, first), dim=-1) * sin
    return rotated if passed.shape[-1] == 0 else torch.cat((rotated, passed), dim=-1)
