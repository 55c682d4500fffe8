"""The residual add followed by the next norm: ``hidden + branch`` then ``norm(...)``.

Eager, the add and the norm are separate kernels: the sum is written to memory and read back.
``fused`` (``TransformerConfig.fuse_elementwise``) runs both in one ``torch.compile``'d
region. The norm is an argument, whatever module its slot built: dynamo traces into its
``forward`` and lifts its parameters to graph inputs, so every layer's norm of one class and
configuration shares one compiled graph (no recompilation per layer; tested).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from megaspec.builders import Norm

AddAndNorm = Callable[[Tensor, Tensor, Norm], tuple[Tensor, Tensor]]
"""``(hidden, branch, norm) -> (hidden + branch, norm(hidden + branch))``."""


def add_and_norm(hidden: Tensor, branch: Tensor, norm: Norm) -> tuple[Tensor, Tensor]:
    """The new residual stream ``hidden + branch`` and its normalised form."""
    hidden = hidden + branch
    return hidden, norm(hidden)


# Not ``fullgraph``: a user's norm may hold code dynamo cannot trace; it then runs eagerly
# for that part, with the same result.
_fused_add_and_norm: AddAndNorm = torch.compile(add_and_norm)


def residual_add_and_norm(fused: bool) -> AddAndNorm:
    """:func:`add_and_norm`: compiled into one region when ``fused``, eager otherwise."""
    return _fused_add_and_norm if fused else add_and_norm
