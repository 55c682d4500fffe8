"""The user's own training text: plain text files, JSONL files, or a directory of them,
packed into fixed-length sequences that are visited in a seeded shuffled order.

``training.data: PATH`` selects it (:func:`megaspec.training.corpus_windows`):

- ``*.jsonl``: one JSON object a line; its ``"text"`` field is a document.
- any other file: one document, read as UTF-8 text.
- a directory: every ``*.txt`` and ``*.jsonl`` file under it (recursively), in sorted path
  order, so the same directory gives the same stream on every machine.

Documents are joined with a blank line (``"\\n\\n"``) into one byte stream.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import torch
from torch import Tensor

TEXT_FIELD: Final = "text"
DOCUMENT_SEPARATOR: Final = "\n\n"
DIRECTORY_SUFFIXES: Final = (".txt", ".jsonl")


def read_documents(path: Path) -> list[str]:
    """The documents of ``path`` (see the module), in order.

    Raises:
        ValueError: naming the file (and line), for a missing path, a directory without
            ``*.txt`` / ``*.jsonl`` files, text that is not UTF-8, or a JSONL line that is
            not an object with a string ``"text"`` field.
    """
    if path.is_dir():
        files = sorted(file for file in path.rglob("*") if file.suffix in DIRECTORY_SUFFIXES)
        if not files:
            raise ValueError(f"{path}: holds no *.txt or *.jsonl file")
        return [document for file in files for document in read_documents(file)]
    if not path.is_file():
        raise ValueError(f"{path}: no such file or directory")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte offset {error.start})") from None
    if path.suffix != ".jsonl":
        return [text]
    return [_jsonl_text(line, f"{path}:{number}")
            for number, line in enumerate(text.splitlines(), start=1) if line.strip()]  # fmt: skip


def _jsonl_text(line: str, where: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not JSON ({error.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get(TEXT_FIELD), str):
        raise ValueError(f"{where}: expected an object with a string {TEXT_FIELD!r} field")
    text: str = record[TEXT_FIELD]
    return text


class PackedSampler:
    """Batches of consecutive, non-overlapping sequences of a token stream, in a shuffled
    order: every sequence is drawn once per epoch, and each epoch's order is a permutation
    drawn from the generator (so a seeded generator gives the same batches on every run).

    Args:
        tokens: ``[length]`` int64 token ids.

    Raises:
        ValueError: if ``tokens`` is not 1-D or holds fewer than two tokens.
    """

    def __init__(self, tokens: Tensor) -> None:
        if tokens.dim() != 1 or tokens.numel() < 2:
            raise ValueError(
                f"PackedSampler needs a 1-D stream of at least 2 tokens, got shape "
                f"{tuple(tokens.shape)}"
            )
        self.tokens = tokens
        self._order = torch.zeros(0, dtype=torch.int64)
        self._position = 0

    def __len__(self) -> int:
        return self.tokens.numel()

    def sample(
        self, *, batch_size: int, seq_length: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """``(inputs, labels)``, each ``[batch_size, seq_length]``: the next ``batch_size``
        sequences of ``seq_length + 1`` tokens in the shuffled order (a new permutation when
        an epoch ends; a batch may span two epochs).

        Raises:
            ValueError: if the stream is shorter than ``seq_length + 1`` tokens.
        """
        window = seq_length + 1
        count = len(self) // window  # the tail shorter than a window is left out
        if count == 0:
            raise ValueError(f"seq_length {seq_length} needs at least {window} tokens, the stream has {len(self)}")
        packed = self.tokens[: count * window].view(count, window)  # [sequences, seq + 1]
        chosen = []
        for _ in range(batch_size):
            if self._position >= self._order.numel() or self._order.numel() != count:
                self._order = torch.randperm(count, generator=generator)
                self._position = 0
            chosen.append(int(self._order[self._position]))
            self._position += 1
        windows = packed[torch.tensor(chosen)]  # [batch, seq + 1]
        return windows[:, :-1], windows[:, 1:]
