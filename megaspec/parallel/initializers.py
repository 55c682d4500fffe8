"""Initialisation methods: each returns an :data:`InitMethod`, an elementwise map from an
element's two uniforms (see :mod:`megaspec.parallel.draws`) to its value.

Being elementwise is what lets each rank draw only its own shard and still hold exactly the
tensor-parallel size 1 weights for a seed; a new init method must keep that property.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from megaspec.parallel.draws import InitMethod, UniformDraws


def normal_init(std: float) -> InitMethod:
    """Normal distribution with mean 0 and standard deviation ``std`` (Box-Muller, so a value
    lies within about 5.8 ``std``: float32 uniforms are multiples of ``2**-24``)."""
    if std <= 0:
        raise ValueError(f"normal_init: std must be positive, got {std}")

    def init(draws: UniformDraws) -> Tensor:
        # log1p(-u) = log(1 - u), finite because u < 1.
        radius = torch.log1p(-draws.first()).mul_(-2.0).sqrt_()
        return radius.mul_(draws.second().mul(2.0 * math.pi).cos_()).mul_(std)

    return init


def scaled_normal_init(std: float, num_layers: int) -> InitMethod:
    """Megatron's init for output projections: ``std / sqrt(2 * num_layers)``.

    Each layer adds two residual branches; scaling keeps the residual stream's variance
    independent of depth.
    """
    if num_layers < 1:
        raise ValueError(f"scaled_normal_init: num_layers must be >= 1, got {num_layers}")
    return normal_init(std / math.sqrt(2.0 * num_layers))


def uniform_init(low: float, high: float) -> InitMethod:
    """Uniform distribution on ``[low, high)``."""
    if not low < high:
        raise ValueError(f"uniform_init: low ({low}) must be less than high ({high})")

    def init(draws: UniformDraws) -> Tensor:
        return draws.first().mul(high - low).add_(low)

    return init


def zeros_init() -> InitMethod:
    """All zeros (biases); draws nothing."""

    def init(draws: UniformDraws) -> Tensor:
        return torch.zeros(draws.shape, device="cpu")

    return init


def ones_init() -> InitMethod:
    """All ones (norm scales); draws nothing."""

    def init(draws: UniformDraws) -> Tensor:
        return torch.ones(draws.shape, device="cpu")

    return init


def padded_rows_init(init: InitMethod, valid_rows: int) -> InitMethod:
    """Apply ``init`` to the first ``valid_rows`` rows (dimension 0) and zero the rest.

    Used for vocabulary padding: a row's draws depend on its index, not on how much padding
    the tensor-parallel size asks for, and padded rows stay zero.
    """

    def padded(draws: UniformDraws) -> Tensor:
        values = init(draws)
        padding = (draws.rows >= valid_rows).view(-1, *([1] * (values.dim() - 1)))
        return values.masked_fill(padding, 0.0)

    return padded
