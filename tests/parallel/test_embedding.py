"""Vocabulary padding of megaspec.parallel.embedding: how many rows, and converting between paddings."""

from __future__ import annotations

import pytest
import torch

from megaspec.parallel import ParallelGroups, padded_vocab_rows, padded_vocab_size, repad_vocab_rows


def test_padded_rows_are_a_multiple_of_tensor_parallel_size_times_multiple() -> None:
    assert padded_vocab_rows(300, 1) == 384
    assert padded_vocab_rows(300, 2) == 512
    assert padded_vocab_rows(256, 2) == 256
    assert padded_vocab_rows(50257, 8, 128) == 51200  # GPT-2 at TP=8, as Megatron-LM pads it
    assert padded_vocab_rows(300, 3, 1) == 300
    assert padded_vocab_size(300, ParallelGroups.single()) == padded_vocab_rows(300, 1)


def test_padded_rows_refuse_sizes_below_one() -> None:
    with pytest.raises(ValueError) as error:
        padded_vocab_rows(300, 0)
    assert str(error.value) == "tensor_parallel_size must be >= 1, got 0"


def test_repad_keeps_real_rows_and_zeroes_new_padding() -> None:
    weight = torch.arange(12.0).reshape(6, 2)  # 4 real rows, 2 padded rows holding junk
    repadded = repad_vocab_rows(weight, vocab_size=4, rows=8)
    assert torch.equal(repadded[:4], weight[:4])
    assert torch.equal(repadded[4:], torch.zeros(4, 2))
    assert torch.equal(repad_vocab_rows(weight, vocab_size=4, rows=4), weight[:4])
    assert repadded.dtype == weight.dtype


def test_repad_without_padding_returns_the_weight_itself() -> None:
    weight = torch.ones(4, 2)
    assert repad_vocab_rows(weight, vocab_size=4, rows=4) is weight


def test_repad_refuses_fewer_rows_than_the_vocabulary() -> None:
    with pytest.raises(ValueError) as error:
        repad_vocab_rows(torch.zeros(3, 2), vocab_size=4, rows=8)
    assert str(error.value) == (
        "cannot repad 3 vocabulary rows to 8: both must be at least the vocabulary size 4"
    )
