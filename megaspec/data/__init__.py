"""A bundled text corpus, a byte-level tokenizer and a random-window sampler for training.

The data pipeline of run configs lives in submodules and is exported here: document sources
(:mod:`~megaspec.data.sources`), tokenizers (:mod:`~megaspec.data.tokenization`), packing into
fixed-length sequences (:mod:`~megaspec.data.packing`) and the shuffled, resumable
:class:`SequenceLoader` (:mod:`~megaspec.data.loader`).

The corpus (``corpus.txt``, about 430 KB of English under the Python Software Foundation
License; see ``NOTICE.md`` and :mod:`megaspec.data.build_corpus`) ships with the package so
``megaspec train`` runs with no download.

Example::

    tokenizer = ByteTokenizer()
    train, validation = train_validation_split(tokenizer.encode_tensor(load_corpus()))
    inputs, labels = train.sample(batch_size=8, seq_length=128, generator=torch.Generator())
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Final

import torch
from torch import Tensor

CORPUS_FILE: Final = "corpus.txt"


class ByteTokenizer:
    """UTF-8 bytes as tokens: 256 ids, no special tokens, every string round-trips.

    Byte ids need no vocabulary file and never produce unknown tokens, at the price of
    sequences about 1x (English) to 3x (CJK) longer than characters.
    """

    vocab_size: Final = 256
    eos_id: Final = None
    """No end-of-document id: all 256 ids are bytes (documents end with a newline instead)."""

    def encode(self, text: str) -> list[int]:
        """The UTF-8 bytes of ``text`` as ids in ``[0, 256)``."""
        return list(text.encode("utf-8"))

    def encode_tensor(self, text: str) -> Tensor:
        """:meth:`encode` as a ``[len(bytes)]`` int64 tensor."""
        # frombuffer shares the bytes object's memory; the int64 copy owns its own.
        raw = text.encode("utf-8")
        if not raw:
            return torch.zeros(0, dtype=torch.int64)
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8).to(torch.int64)

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """The text of byte ids; byte sequences that are not valid UTF-8 become U+FFFD.

        A model may emit a multi-byte character's bytes in an invalid order, so decoding must
        not fail on them.

        Raises:
            ValueError: if an id lies outside ``[0, 256)`` or a tensor is not 1-D.
        """
        if isinstance(ids, Tensor):
            if ids.dim() != 1:
                raise ValueError(
                    f"decode expects a 1-D tensor of ids, got shape {tuple(ids.shape)}"
                )
            values: list[int] = [int(value) for value in ids.tolist()]
        else:
            values = list(ids)
        bad = [value for value in values if not 0 <= value < self.vocab_size]
        if bad:
            raise ValueError(f"byte ids must lie in [0, 256), got {bad[:5]}")
        return bytes(values).decode("utf-8", errors="replace")


def load_corpus() -> str:
    """The bundled training text (``megaspec/data/corpus.txt``).

    Raises:
        FileNotFoundError: if the package was installed without its data files.
    """
    return resources.files(__name__).joinpath(CORPUS_FILE).read_text(encoding="utf-8")


class WindowSampler:
    """Draws random contiguous windows of a token stream as next-token training batches.

    Args:
        tokens: ``[length]`` int64 token ids.

    Raises:
        ValueError: if ``tokens`` is not 1-D or holds fewer than two tokens.
    """

    def __init__(self, tokens: Tensor) -> None:
        if tokens.dim() != 1 or tokens.numel() < 2:
            raise ValueError(
                f"WindowSampler needs a 1-D stream of at least 2 tokens, got shape "
                f"{tuple(tokens.shape)}"
            )
        self.tokens = tokens

    def __len__(self) -> int:
        return self.tokens.numel()

    def sample(
        self, *, batch_size: int, seq_length: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """``(inputs, labels)``, each ``[batch_size, seq_length]`` int64 on the tokens' device.

        Window starts are uniform over every position that leaves room for the shifted labels
        (``labels[:, t] == inputs[:, t + 1]`` inside a window), drawn from ``generator``, so a
        seeded generator gives the same batches on every run.

        Raises:
            ValueError: if ``batch_size`` or ``seq_length`` is not positive, or the stream is
                shorter than ``seq_length + 1`` tokens.
        """
        if batch_size <= 0 or seq_length <= 0:
            raise ValueError(
                f"batch_size and seq_length must be positive, got {batch_size} and {seq_length}"
            )
        if seq_length + 1 > len(self):
            raise ValueError(
                f"seq_length {seq_length} needs at least {seq_length + 1} tokens, the stream has "
                f"{len(self)}"
            )
        starts = torch.randint(0, len(self) - seq_length, (batch_size,), generator=generator)
        offsets = torch.arange(seq_length + 1)
        windows = self.tokens[(starts.unsqueeze(1) + offsets).to(self.tokens.device)]
        return windows[:, :-1], windows[:, 1:]  # [batch, seq] each


def train_validation_split(
    tokens: Tensor, validation_fraction: float = 0.05
) -> tuple[WindowSampler, WindowSampler]:
    """Samplers over the first ``1 - validation_fraction`` and the last part of ``tokens``.

    A contiguous tail (rather than random windows) keeps validation text unseen in training,
    up to the repetition the text itself has.

    Raises:
        ValueError: if ``validation_fraction`` is not in ``(0, 1)`` or either part would hold
            fewer than two tokens.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must lie in (0, 1), got {validation_fraction}")
    boundary = int(tokens.numel() * (1.0 - validation_fraction))
    return WindowSampler(tokens[:boundary]), WindowSampler(tokens[boundary:])


# Imported last: these modules import ByteTokenizer and load_corpus from this package.
from megaspec.data.config import (  # noqa: E402
    BYTE_TOKENIZER,
    DataConfig,
    DataFormat,
    tokenizer_name,
)
from megaspec.data.loader import (  # noqa: E402
    SequenceLoader,
    epoch_seed,
    evaluation_batches,
    replica_rows,
)
from megaspec.data.packing import (  # noqa: E402
    PackedData,
    load_packed_data,
    pack_sequences,
    split_sequences,
    tokenize_documents,
)
from megaspec.data.sources import (  # noqa: E402
    TEXT_EXTENSIONS,
    DataSourceError,
    read_documents,
)
from megaspec.data.tokenization import (  # noqa: E402
    HuggingFaceTokenizer,
    Tokenizer,
    document_separator,
    load_tokenizer,
)

__all__ = [
    "BYTE_TOKENIZER",
    "TEXT_EXTENSIONS",
    "ByteTokenizer",
    "DataConfig",
    "DataFormat",
    "DataSourceError",
    "HuggingFaceTokenizer",
    "PackedData",
    "SequenceLoader",
    "Tokenizer",
    "WindowSampler",
    "document_separator",
    "epoch_seed",
    "evaluation_batches",
    "load_corpus",
    "load_packed_data",
    "load_tokenizer",
    "pack_sequences",
    "read_documents",
    "replica_rows",
    "split_sequences",
    "tokenize_documents",
    "tokenizer_name",
    "train_validation_split",
]
