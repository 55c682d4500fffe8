"""Documents to one token stream, cut into fixed-length training sequences.

Each document's ids are followed by the tokenizer's separator
(:func:`megaspec.data.tokenization.document_separator`), and the documents are concatenated
in their source order into one stream. The stream is cut into sequences of
``sequence_length + 1`` tokens, each starting where the previous one's inputs end::

    stream:     t0 t1 t2 t3 t4 t5 t6 t7 t8 t9 t10      (sequence_length = 4)
    sequence 0: t0 t1 t2 t3 t4                         inputs t0..t3, labels t1..t4
    sequence 1:             t4 t5 t6 t7 t8             inputs t4..t7, labels t5..t8
    dropped:                            t9 t10         too short for a sequence

so consecutive sequences share one token and every token after the first is a label exactly
once per epoch. A sequence may span the end of one document and the start of the next
(attention is not masked at the separator). The tail too short for a whole sequence, fewer
than ``sequence_length`` tokens, is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from megaspec.data.config import DataConfig
from megaspec.data.sources import read_documents
from megaspec.data.tokenization import Tokenizer, document_separator


def tokenize_documents(documents: Iterable[str], tokenizer: Tokenizer) -> Tensor:
    """The ``[tokens]`` int64 stream of ``documents``, each followed by the separator.

    Documents that encode to no ids are skipped, so they add no lone separators.
    """
    separator = document_separator(tokenizer)
    stream: list[int] = []
    for document in documents:
        ids = tokenizer.encode(document)
        if ids:
            stream.extend(ids)
            stream.extend(separator)
    return torch.tensor(stream, dtype=torch.int64)


def pack_sequences(tokens: Tensor, sequence_length: int) -> Tensor:
    """``[num_sequences, sequence_length + 1]`` rows cut from the ``[tokens]`` stream.

    Row ``i`` is ``tokens[i * sequence_length : (i + 1) * sequence_length + 1]``; the tail
    that does not fill a row is dropped.

    Raises:
        ValueError: if ``sequence_length`` is not positive or the stream is shorter than one
            row.
    """
    if sequence_length <= 0:
        raise ValueError(f"sequence_length must be positive, got {sequence_length}")
    if tokens.dim() != 1 or tokens.numel() < sequence_length + 1:
        raise ValueError(
            f"the data holds {tokens.numel()} tokens, fewer than the {sequence_length + 1} "
            f"(sequence_length + 1) one sequence needs"
        )
    # unfold views overlapping windows; contiguous() gives the rows their own memory.
    return tokens.unfold(0, sequence_length + 1, sequence_length).contiguous()


def split_sequences(sequences: Tensor, validation_fraction: float) -> tuple[Tensor, Tensor]:
    """``(train, validation)`` rows: validation is the last ``ceil(fraction * rows)`` rows.

    A contiguous tail of the stream (rather than rows scattered through it) keeps the
    validation text out of the training documents, except a document that straddles the
    boundary; the choice depends on nothing but the data, so every run and every seed
    validates on the same rows.

    Raises:
        ValueError: if the fraction is not in ``(0, 1)`` or either part would be empty.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must lie in (0, 1), got {validation_fraction}")
    rows = sequences.shape[0]
    validation_rows = math.ceil(validation_fraction * rows)
    if validation_rows >= rows:
        raise ValueError(
            f"{rows} sequences cannot be split into training and validation "
            f"(validation_fraction {validation_fraction}); use more data or a shorter "
            f"sequence_length"
        )
    return sequences[: rows - validation_rows], sequences[rows - validation_rows :]


@dataclass(frozen=True)
class PackedData:
    """A source's training and validation sequences and the tokenizer that made them.

    Attributes:
        train, validation: ``[rows, sequence_length + 1]`` int64 token ids.
        tokens: the length of the whole stream (before packing dropped its tail).
    """

    train: Tensor
    validation: Tensor
    tokenizer: Tokenizer
    tokens: int


def load_packed_data(
    config: DataConfig, tokenizer: Tokenizer, *, sequence_length: int, validation_fraction: float
) -> PackedData:
    """Read, tokenize, pack and split ``config``'s documents.

    Raises:
        DataSourceError: as :func:`megaspec.data.read_documents`.
        ValueError: as :func:`pack_sequences` and :func:`split_sequences`.
    """
    tokens = tokenize_documents(read_documents(config), tokenizer)
    sequences = pack_sequences(tokens, sequence_length)
    train, validation = split_sequences(sequences, validation_fraction)
    return PackedData(
        train=train, validation=validation, tokenizer=tokenizer, tokens=tokens.numel()
    )
