"""Counter-based random numbers for initialisation: any shard, drawn alone, equals its slice
of the full tensor.

The scheme (one for eager and meta-device construction, so both give the same weights):

* At construction every parameter takes one integer, its *stream*, from torch's global CPU
  generator (:func:`draw_stream`). All ranks build the same parameters in the same order, so
  streams do not depend on the tensor-parallel size; ``seeded_initialization`` scopes them.
* The full tensor's elements are numbered in *canonical order*: row-major order with the
  sharded dimension moved first (dimension 0 for a replicated tensor). A *slice* is one index
  of that dimension (a row for dimension 0, a column for dimension 1), so a rank's shard is a
  few runs of whole slices, each a contiguous range of element numbers.
* Element ``k`` of a stream owns the 64-bit word ``k`` of a PCG64 generator seeded with the
  stream, split into two float32 uniforms in ``[0, 1)``. ``PCG64.advance`` jumps to word
  ``k`` in ``O(log k)`` steps, so a rank draws exactly its own elements and never a full weight.
* An :data:`InitMethod` maps each element's uniforms to its value, elementwise, so any block
  of elements gets the values the full tensor has there.

Why numpy's PCG64 and not ``torch.Generator``: torch's CPU generator (mt19937) keeps only the
low 32 bits of a seed (``manual_seed(1)`` and ``manual_seed(1 + 2**32)`` draw the same), so
seeding one per slice would give identical slices by birthday collisions (about 300 pairs in a
7B model), and it cannot jump ahead. numpy's ``SeedSequence`` hashes the stream into PCG64's
128-bit state, so neighbouring streams give unrelated sequences with no hand-written mixing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

_STREAM_LIMIT = 2**63 - 1
# Elements drawn at once: the uniforms and the init method's float32 temporaries (about 20
# bytes an element) stay near the CPU caches, a few MiB; 2**24 was 60% slower (7B bench).
CHUNK_ELEMENTS = 1 << 18


class UniformDraws:
    """The random numbers behind a block of one parameter's elements, for an init method.

    ``shape`` is the block's shape (in the parameter's dimension order). :meth:`first` and
    :meth:`second` are each element's two independent uniforms in ``[0, 1)`` (float32, drawn
    on first use, so an init method that draws nothing costs nothing); :attr:`rows` are the
    block's global indices along dimension 0 (for :func:`padded_rows_init`).
    """

    def __init__(self, stream: int, full_shape: tuple[int, ...], dim: int, start: int, stop: int) -> None:
        self._stream = stream
        self._dim = dim
        self._start = start
        self._full_shape = full_shape
        shape = list(full_shape)
        shape[dim] = stop - start
        self.shape: tuple[int, ...] = tuple(shape)
        self._uniforms: tuple[Tensor, Tensor] | None = None

    @property
    def rows(self) -> Tensor:
        """Global indices along dimension 0 of the block's rows, ``[shape[0]]`` (int64)."""
        first = self._start if self._dim == 0 else 0
        return torch.arange(first, first + self.shape[0], device="cpu")

    def first(self) -> Tensor:
        """The first uniform of every element, ``shape``, float32 in ``[0, 1)``."""
        return self._draw()[0]

    def second(self) -> Tensor:
        """The second uniform of every element, independent of the first."""
        return self._draw()[1]

    def _draw(self) -> tuple[Tensor, Tensor]:
        if self._uniforms is None:
            slice_elements = math.prod(self.shape) // max(self.shape[self._dim], 1)
            count = math.prod(self.shape)
            bits = np.random.PCG64(self._stream).advance(self._start * slice_elements)
            # numpy splits each 64-bit word into two float32s: element k owns word k.
            pairs = np.random.Generator(bits).random(2 * count, dtype=np.float32)
            pairs_tensor = torch.from_numpy(pairs).view(count, 2)
            canonical = (self.shape[self._dim], *(n for i, n in enumerate(self.shape) if i != self._dim))
            first, second = (pairs_tensor[:, i].reshape(canonical).movedim(0, self._dim) for i in (0, 1))
            self._uniforms = (first, second)
        return self._uniforms


InitMethod = Callable[[UniformDraws], Tensor]
"""Maps a block's :class:`UniformDraws` to its values (float32 on the CPU, the block's shape;
make new tensors with ``device="cpu"``: the default device may be ``meta``).

It must be *elementwise*: an element's value depends only on its own uniforms (and its row
index), never on the block's size or other elements. That is what makes a shard drawn alone
equal to its slice of the full tensor; :mod:`megaspec.parallel.initializers` has the standard ones.
"""


def draw_stream() -> int:
    """One stream for a new parameter, from torch's global CPU generator (see the module doc)."""
    return int(torch.randint(0, _STREAM_LIMIT, (), dtype=torch.int64, device="cpu").item())


def draw_slices(
    stream: int, init_method: InitMethod, full_shape: tuple[int, ...], dim: int, start: int, stop: int
) -> Iterator[tuple[int, Tensor]]:
    """Values of slices ``[start, stop)`` along ``dim`` of a full tensor, a chunk at a time.

    Yields ``(offset, values)``: ``values`` (float32, on the CPU) are slices ``start + offset``
    onward, at most about :data:`CHUNK_ELEMENTS` elements (at least one slice).
    """
    slice_elements = math.prod(full_shape) // max(full_shape[dim], 1)
    step = max(1, CHUNK_ELEMENTS // max(slice_elements, 1))
    for first in range(start, stop, step):
        last = min(first + step, stop)
        draws = UniformDraws(stream, full_shape, dim, first, last)
        values = init_method(draws)
        if values.shape != draws.shape:
            raise ValueError(f"init method returned shape {tuple(values.shape)} for a block of {draws.shape}")
        yield first - start, values
