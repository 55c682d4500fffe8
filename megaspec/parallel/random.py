"""Reproducible initialisation that does not depend on the tensor-parallel size.

Every parameter takes one integer (its stream) from torch's CPU generator at construction, on
every rank and device, meta included, and draws only its own shard from counter-based random
numbers numbered over the full tensor (see :mod:`megaspec.parallel.draws`): all ranks advance
the generator identically and TP=N holds exactly TP=1's weights. :func:`seeded_initialization`
scopes the seed to model construction, leaving the caller's global random state untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded_initialization(seed: int) -> Iterator[None]:
    """Build models inside this block to initialise them from ``seed``.

    The CPU generator is seeded on entry and restored on exit (GPU generators are not
    touched: initialisation never draws on the GPU). A model built on the meta device under
    the same seed and materialised later gets the same weights::

        with seeded_initialization(1234):
            model = GPTModel(...)
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
