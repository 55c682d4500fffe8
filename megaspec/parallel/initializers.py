"""Initialisation methods: each returns an :data:`InitMethod` that fills a *full* tensor.

They draw from torch's default CPU generator; seed it (``torch.manual_seed``) before building
a model to make initialisation reproducible. Shards are cut after drawing, so the result does
not depend on the tensor-parallel size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from megaspec.parallel.sharding import InitMethod


def normal_init(std: float) -> InitMethod:
    """Normal distribution with mean 0 and standard deviation ``std``."""
    if std <= 0:
        raise ValueError(f"normal_init: std must be positive, got {std}")

    def init(tensor: Tensor) -> None:
        torch.nn.init.normal_(tensor, mean=0.0, std=std)

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

    def init(tensor: Tensor) -> None:
        torch.nn.init.uniform_(tensor, low, high)

    return init


def zeros_init() -> InitMethod:
    """All zeros (biases)."""

    def init(tensor: Tensor) -> None:
        torch.nn.init.zeros_(tensor)

    return init


def ones_init() -> InitMethod:
    """All ones (norm scales)."""

    def init(tensor: Tensor) -> None:
        torch.nn.init.ones_(tensor)

    return init


def padded_rows_init(init: InitMethod, valid_rows: int) -> InitMethod:
    """Apply ``init`` to the first ``valid_rows`` rows and zero the rest.

    Used for vocabulary padding: the random draws do not depend on how much padding the
    tensor-parallel size asks for, and padded rows stay zero.
    """

    def padded(tensor: Tensor) -> None:
        init(tensor[:valid_rows])
        tensor[valid_rows:].zero_()

    return padded
