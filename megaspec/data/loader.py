"""Shuffled batches of packed sequences with a resumable position.

The order of the training sequences is a fixed function of the seed: epoch ``e`` visits
every sequence once, in the order of ``torch.randperm(rows)`` drawn from a generator seeded
with :func:`epoch_seed` ``(seed, e)``, and the epochs follow one another forever. Global
batch ``b`` is the ``batch_size`` sequences at positions ``[b * batch_size, (b + 1) *
batch_size)`` of that endless order (a batch may straddle two epochs), and data-parallel
replica ``r`` of ``n`` trains on its ``r``-th slice of ``batch_size // n`` rows.

The loader's :attr:`SequenceLoader.position` is the number of sequences consumed in global
batches, a plain int to store in a checkpoint: a loader moved there with
:meth:`SequenceLoader.seek` yields exactly the batches an uninterrupted loader yields from
that point, with any number of replicas that divides the batch size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s permutation: a hash of both, so no two pairs collide
    the way ``seed + epoch`` would (seed 1 epoch 0 and seed 0 epoch 1)."""
    digest = hashlib.blake2b(f"megaspec-data:{seed}:{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # manual_seed takes [0, 2**63)


def replica_rows(batch_size: int, dp_rank: int, dp_size: int) -> slice:
    """The rows of a global batch that replica ``dp_rank`` of ``dp_size`` trains on.

    Raises:
        ValueError: if ``dp_size`` does not divide ``batch_size`` or the rank is out of range.
    """
    if dp_size <= 0 or not 0 <= dp_rank < dp_size:
        raise ValueError(f"dp_rank must lie in [0, dp_size), got rank {dp_rank} of {dp_size}")
    if batch_size <= 0 or batch_size % dp_size != 0:
        raise ValueError(
            f"batch_size {batch_size} must be a positive multiple of the data-parallel size "
            f"{dp_size}"
        )
    local = batch_size // dp_size
    return slice(dp_rank * local, (dp_rank + 1) * local)


class SequenceLoader:
    """Endless shuffled ``(inputs, labels)`` batches of one replica, each ``[rows, seq]``.

    Args:
        sequences: ``[num_sequences, sequence_length + 1]`` int64 packed rows.
        batch_size: the global batch (all replicas together).
        seed: fixes the order of every epoch.
        dp_rank, dp_size: this replica and the number of replicas; each batch holds
            ``batch_size // dp_size`` rows.

    Raises:
        ValueError: if ``sequences`` is not 2-D with at least two columns and one row, or as
            :func:`replica_rows`.
    """

    def __init__(
        self, sequences: Tensor, *, batch_size: int, seed: int, dp_rank: int = 0, dp_size: int = 1
    ) -> None:
        _check_sequences(sequences)
        self.rows = replica_rows(batch_size, dp_rank, dp_size)
        self.sequences = sequences
        self.batch_size = batch_size
        self.seed = seed
        self._position = 0
        self._permutation: tuple[int, Tensor] | None = None  # (epoch, its order), reused

    def __repr__(self) -> str:
        return (
            f"SequenceLoader(sequences={self.num_sequences}, batch_size={self.batch_size}, "
            f"seed={self.seed}, rows={self.rows.start}:{self.rows.stop}, "
            f"position={self.position})"
        )

    @property
    def num_sequences(self) -> int:
        """The rows of one epoch."""
        return int(self.sequences.shape[0])

    @property
    def position(self) -> int:
        """Sequences consumed so far, in global batches (all replicas together)."""
        return self._position

    @property
    def epoch(self) -> int:
        """The epoch the next sequence comes from (0 first)."""
        return self._position // self.num_sequences

    def seek(self, position: int) -> None:
        """Continue from ``position`` (a saved :attr:`position`).

        Raises:
            ValueError: if ``position`` is negative.
        """
        if position < 0:
            raise ValueError(f"position must be >= 0, got {position}")
        self._position = position

    def state_dict(self) -> dict[str, int]:
        """The position and what it means: plain ints for a checkpoint's metadata."""
        return {
            "position": self._position,
            "seed": self.seed,
            "num_sequences": self.num_sequences,
            "sequence_length": int(self.sequences.shape[1]) - 1,
        }

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """:meth:`seek` a saved :meth:`state_dict`'s position, if it describes this data.

        A position only means the same batches over the same sequences in the same order.

        Raises:
            ValueError: naming each of seed, sequence count and length that differs.
        """
        mine = self.state_dict()
        differences = [
            f"{key} {state[key]} (now {mine[key]})"
            for key in ("seed", "num_sequences", "sequence_length")
            if state[key] != mine[key]
        ]
        if differences:
            raise ValueError(
                "the saved data position belongs to other data: saved with "
                + ", ".join(differences)
            )
        self.seek(state["position"])

    def next_batch(self) -> tuple[Tensor, Tensor]:
        """This replica's rows of the next global batch: ``(inputs, labels)``, each
        ``[batch_size // dp_size, sequence_length]``, ``labels[:, t] == inputs[:, t + 1]``."""
        positions = range(self._position + self.rows.start, self._position + self.rows.stop)
        indices = torch.tensor([self._sequence_index(position) for position in positions])
        self._position += self.batch_size
        rows = self.sequences[indices]  # [local_batch, sequence_length + 1]
        return rows[:, :-1], rows[:, 1:]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        """:meth:`next_batch` forever."""
        while True:
            yield self.next_batch()

    def _sequence_index(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_sequences)
        if self._permutation is None or self._permutation[0] != epoch:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
            self._permutation = (epoch, torch.randperm(self.num_sequences, generator=generator))
        return int(self._permutation[1][offset])


def evaluation_batches(
    sequences: Tensor, *, batch_size: int, count: int, dp_rank: int = 0, dp_size: int = 1
) -> list[tuple[Tensor, Tensor]]:
    """The first ``count`` global batches of ``sequences`` in stored order (wrapping around
    when there are fewer rows than ``count * batch_size``), this replica's rows of each.

    No shuffling: validation measures the same rows at every evaluation.

    Raises:
        ValueError: as :class:`SequenceLoader`.
    """
    _check_sequences(sequences)
    replica = replica_rows(batch_size, dp_rank, dp_size)
    batches = []
    for batch in range(count):
        positions = torch.arange(replica.start, replica.stop) + batch * batch_size
        rows = sequences[positions % sequences.shape[0]]  # [local_batch, sequence_length + 1]
        batches.append((rows[:, :-1], rows[:, 1:]))
    return batches


def _check_sequences(sequences: Tensor) -> None:
    if sequences.dim() != 2 or sequences.shape[0] == 0 or sequences.shape[1] < 2:
        raise ValueError(
            f"sequences must be [rows >= 1, sequence_length + 1 >= 2], got shape "
            f"{tuple(sequences.shape)}"
        )
