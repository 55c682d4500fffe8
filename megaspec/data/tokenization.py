"""The tokenizer interface of the data pipeline and a Hugging Face ``tokenizer.json`` wrapper.

:class:`megaspec.data.ByteTokenizer` (UTF-8 bytes, the default) and
:class:`HuggingFaceTokenizer` (any ``tokenizer.json``; needs the optional ``tokenizers``
package) both satisfy :class:`Tokenizer`. :func:`load_tokenizer` builds one from the
``tokenizer`` setting of a run config (``byte`` or a path).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Protocol

from megaspec.data.config import BYTE_TOKENIZER

EOS_TOKENS: Final = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "[SEP]")
"""Tokens that :class:`HuggingFaceTokenizer` takes as end of document, first found first."""


class Tokenizer(Protocol):
    """Text to token ids and back.

    ``eos_id`` is the id that ends a document, or ``None`` when the vocabulary has none.
    """

    @property
    def vocab_size(self) -> int: ...

    @property
    def eos_id(self) -> int | None: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class HuggingFaceTokenizer:
    """A Hugging Face ``tokenizer.json`` (BPE, WordPiece, Unigram, ...) as a :class:`Tokenizer`.

    Args:
        path: the ``tokenizer.json`` file, or a directory holding one.
        eos_token: the token that ends a document; ``None`` takes the first of
            :data:`EOS_TOKENS` in the vocabulary, if any.

    Raises:
        ImportError: if the ``tokenizers`` package is not installed.
        FileNotFoundError: if there is no such file.
        ValueError: if the file is not a tokenizer.json, or ``eos_token`` is not in it.
    """

    def __init__(self, path: str | Path, *, eos_token: str | None = None) -> None:
        file = Path(path)
        if file.is_dir():
            file = file / "tokenizer.json"
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no such tokenizer file")
        self.path = file
        self._tokenizer = _load_tokenizer_file(file)
        self._eos_id = _find_eos(self._tokenizer, eos_token, file)

    @property
    def vocab_size(self) -> int:
        """Ids lie in ``[0, vocab_size)``, added (special) tokens included."""
        size: int = self._tokenizer.get_vocab_size(with_added_tokens=True)
        return size

    @property
    def eos_id(self) -> int | None:
        """The id of the end-of-document token, or ``None``."""
        return self._eos_id

    def encode(self, text: str) -> list[int]:
        """The ids of ``text``, without the special tokens a post-processor would add.

        The packer adds its own separators between documents; a post-processor's BOS or
        ``[CLS]`` on every document would double them.
        """
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``, special tokens included."""
        text: str = self._tokenizer.decode(list(ids), skip_special_tokens=False)
        return text

    def __repr__(self) -> str:
        return f"HuggingFaceTokenizer({str(self.path)!r}, vocab_size={self.vocab_size})"


def _load_tokenizer_file(file: Path) -> Any:
    """``tokenizers.Tokenizer.from_file(file)``, importing the optional package here."""
    try:
        # Imported by name, typed Any: the package is optional and ships no py.typed.
        tokenizers = importlib.import_module("tokenizers")
    except ImportError:
        raise ImportError(
            f"the tokenizer {file} needs the Hugging Face 'tokenizers' package: "
            "pip install tokenizers (or use tokenizer: byte)"
        ) from None
    try:
        return tokenizers.Tokenizer.from_file(str(file))
    except Exception as error:  # the Rust side raises a bare Exception for every parse error
        raise ValueError(f"{file}: not a Hugging Face tokenizer.json ({error})") from None


def _find_eos(tokenizer: Any, eos_token: str | None, file: Path) -> int | None:
    """The id of ``eos_token``, or of the first of :data:`EOS_TOKENS` the vocabulary has."""
    if eos_token is not None:
        token_id: int | None = tokenizer.token_to_id(eos_token)
        if token_id is None:
            raise ValueError(f"{file}: eos_token {eos_token!r} is not in the vocabulary")
        return token_id
    for candidate in EOS_TOKENS:
        token_id = tokenizer.token_to_id(candidate)
        if token_id is not None:
            return token_id
    return None


def load_tokenizer(name: str) -> Tokenizer:
    """The tokenizer a run config names: ``byte``, or a path to a ``tokenizer.json``.

    Raises:
        ImportError, FileNotFoundError, ValueError: as :class:`HuggingFaceTokenizer`.
    """
    if name == BYTE_TOKENIZER:
        from megaspec.data import ByteTokenizer  # the package imports this module

        return ByteTokenizer()
    return HuggingFaceTokenizer(name)


def document_separator(tokenizer: Tokenizer) -> list[int]:
    """The ids that end every document: ``[eos_id]``, else the encoding of a newline.

    The byte tokenizer has no spare id for an end-of-document token, so its documents end
    with a newline byte (10): it keeps the last word of one document from running into the
    first of the next, and after a file that ends with a newline it makes a blank line, the
    paragraph break the model already knows. A tokenizer whose encoding of a newline is
    empty separates nothing.
    """
    if tokenizer.eos_id is not None:
        return [tokenizer.eos_id]
    return tokenizer.encode("\n")
