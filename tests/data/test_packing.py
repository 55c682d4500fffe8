"""Documents to a token stream, fixed-length sequences and the validation split."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from megaspec.data import (
    ByteTokenizer,
    DataConfig,
    load_packed_data,
    pack_sequences,
    split_sequences,
    tokenize_documents,
)


def test_documents_are_concatenated_each_followed_by_the_separator() -> None:
    stream = tokenize_documents(["ab", "", "c\u00e9"], ByteTokenizer())
    assert stream.dtype == torch.int64
    # The empty document adds no lone separator; the byte tokenizer's separator is "\n".
    assert stream.tolist() == [97, 98, 10, 99, 0xC3, 0xA9, 10]


def test_sequences_share_one_token_and_the_short_tail_is_dropped() -> None:
    sequences = pack_sequences(torch.arange(11), sequence_length=4)
    assert sequences.tolist() == [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8]]  # 9 and 10 dropped
    inputs, labels = sequences[:, :-1], sequences[:, 1:]
    assert torch.equal(labels[:, :-1], inputs[:, 1:])
    assert pack_sequences(torch.arange(9), sequence_length=4).shape == (2, 5)
    with pytest.raises(ValueError) as error:
        pack_sequences(torch.arange(4), sequence_length=4)
    assert str(error.value) == (
        "the data holds 4 tokens, fewer than the 5 (sequence_length + 1) one sequence needs"
    )


def test_validation_is_the_tail_of_the_sequences() -> None:
    sequences = torch.arange(10).unsqueeze(1).repeat(1, 3)
    train, validation = split_sequences(sequences, 0.25)
    assert train[:, 0].tolist() == list(range(7)) and validation[:, 0].tolist() == [7, 8, 9]
    with pytest.raises(ValueError) as error:
        split_sequences(sequences[:1], 0.5)
    assert str(error.value) == (
        "1 sequences cannot be split into training and validation (validation_fraction 0.5); "
        "use more data or a shorter sequence_length"
    )


def test_a_directory_packs_to_the_expected_stream(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("abcd\n")
    (tmp_path / "b.md").write_text("efgh")
    packed = load_packed_data(
        DataConfig(path=str(tmp_path)),
        ByteTokenizer(),
        sequence_length=3,
        validation_fraction=0.25,
    )
    # Stream "abcd\n\nefgh\n" (11 bytes) -> rows start at 0, 3, 6; the last row is validation.
    assert packed.tokens == 11
    assert [bytes(row).decode() for row in packed.train.tolist()] == ["abcd", "d\n\ne"]
    assert [bytes(row).decode() for row in packed.validation.tolist()] == ["efgh"]
