"""Deterministic shuffled batches, exact resume from a position, and replica slices."""

from __future__ import annotations

import pytest
import torch

from megaspec.data import SequenceLoader, epoch_seed, evaluation_batches, replica_rows

ROWS = 10


def numbered_sequences(rows: int = ROWS, length: int = 4) -> torch.Tensor:
    """Row ``i`` is ``[100 i, 100 i + 1, ...]``, so a batch's first column names its rows."""
    return (torch.arange(rows).unsqueeze(1) * 100 + torch.arange(length + 1)).contiguous()


def row_ids(inputs: torch.Tensor) -> list[int]:
    return (inputs[:, 0] // 100).tolist()


def epoch_orders(seed: int, epochs: int, batch_size: int = 5) -> list[list[int]]:
    loader = SequenceLoader(numbered_sequences(), batch_size=batch_size, seed=seed)
    batches = epochs * ROWS // batch_size
    order = [row for _ in range(batches) for row in row_ids(loader.next_batch()[0])]
    return [order[epoch * ROWS : (epoch + 1) * ROWS] for epoch in range(epochs)]


def test_batches_are_shifted_rows_and_every_epoch_covers_each_sequence_once() -> None:
    loader = SequenceLoader(numbered_sequences(), batch_size=4, seed=3)
    inputs, labels = loader.next_batch()
    assert inputs.shape == labels.shape == (4, 4)
    assert torch.equal(labels, inputs + 1)
    first, second = epoch_orders(seed=3, epochs=2)
    assert sorted(first) == sorted(second) == list(range(ROWS))
    assert first != second


def test_the_order_is_a_function_of_the_seed() -> None:
    assert epoch_orders(seed=7, epochs=2) == epoch_orders(seed=7, epochs=2)
    assert epoch_orders(seed=7, epochs=1) != epoch_orders(seed=8, epochs=1)
    # Epoch e of seed s is randperm under epoch_seed(s, e), whatever the batch size.
    expected = torch.randperm(ROWS, generator=torch.Generator().manual_seed(epoch_seed(7, 1)))
    assert epoch_orders(seed=7, epochs=2, batch_size=2)[1] == expected.tolist()
    assert epoch_seed(1, 0) != epoch_seed(0, 1) and 0 <= epoch_seed(2**62, 9) < 2**63


def test_seek_resumes_exactly_across_an_epoch_boundary() -> None:
    uninterrupted = SequenceLoader(numbered_sequences(), batch_size=3, seed=1)
    for _ in range(2):
        uninterrupted.next_batch()
    saved = uninterrupted.position
    expected = [uninterrupted.next_batch() for _ in range(5)]  # crosses into epochs 1 and 2
    resumed = SequenceLoader(numbered_sequences(), batch_size=3, seed=1)
    resumed.seek(saved)
    assert (saved, resumed.epoch) == (6, 0)
    # expected first: zip stops at its end before drawing another batch from the loader.
    for (want_inputs, want_labels), (inputs, labels) in zip(expected, resumed):
        assert torch.equal(inputs, want_inputs) and torch.equal(labels, want_labels)
    assert resumed.position == uninterrupted.position == 21 and resumed.epoch == 2
    with pytest.raises(ValueError) as error:
        resumed.seek(-1)
    assert str(error.value) == "position must be >= 0, got -1"


def test_replicas_split_the_global_batch_and_count_global_positions() -> None:
    whole = SequenceLoader(numbered_sequences(), batch_size=4, seed=2)
    replicas = [
        SequenceLoader(numbered_sequences(), batch_size=4, seed=2, dp_rank=rank, dp_size=2)
        for rank in range(2)
    ]
    for replica in replicas:
        replica.seek(4)
    whole.seek(4)
    global_rows = row_ids(whole.next_batch()[0])
    assert [row_ids(replica.next_batch()[0]) for replica in replicas] == [
        global_rows[:2],
        global_rows[2:],
    ]
    assert [replica.position for replica in replicas] == [8, 8]
    assert replica_rows(6, 2, 3) == slice(4, 6)
    with pytest.raises(ValueError) as error:
        SequenceLoader(numbered_sequences(), batch_size=5, seed=0, dp_size=2)
    assert str(error.value) == (
        "batch_size 5 must be a positive multiple of the data-parallel size 2"
    )


def test_evaluation_batches_are_fixed_rows_in_order_wrapping_around() -> None:
    batches = evaluation_batches(numbered_sequences(rows=3), batch_size=2, count=2)
    assert [row_ids(inputs) for inputs, _ in batches] == [[0, 1], [2, 0]]
    replica = evaluation_batches(
        numbered_sequences(rows=3), batch_size=2, count=2, dp_rank=1, dp_size=2
    )
    assert [row_ids(inputs) for inputs, _ in replica] == [[1], [0]]
    with pytest.raises(ValueError) as error:
        SequenceLoader(torch.zeros(0, 5, dtype=torch.int64), batch_size=1, seed=0)
    assert str(error.value) == (
        "sequences must be [rows >= 1, sequence_length + 1 >= 2], got shape (0, 5)"
    )


def test_state_dict_resumes_only_the_same_data() -> None:
    loader = SequenceLoader(numbered_sequences(), batch_size=2, seed=5)
    loader.next_batch()
    state = loader.state_dict()
    assert state == {"position": 2, "seed": 5, "num_sequences": 10, "sequence_length": 4}
    resumed = SequenceLoader(numbered_sequences(), batch_size=2, seed=5)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.next_batch()[0], loader.next_batch()[0])
    other = SequenceLoader(numbered_sequences(rows=12), batch_size=2, seed=6)
    with pytest.raises(ValueError) as error:
        other.load_state_dict(state)
    assert str(error.value) == (
        "the saved data position belongs to other data: saved with seed 5 (now 6), "
        "num_sequences 10 (now 12)"
    )
