"""Where training text comes from and how it becomes tokens, as typed run-config sections.

These are the ``training.data`` and ``training.tokenizer`` settings of a run config::

    training:
      data: {path: notes/, format: text}         # or {path: docs.jsonl, format: jsonl}
      tokenizer: byte                            # or path/to/tokenizer.json

:func:`megaspec.data.read_documents` reads a :class:`DataConfig`'s documents and
:func:`megaspec.data.load_tokenizer` builds the tokenizer a ``tokenizer`` string names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from megaspec.schema import Config, ConfigError, checks

DataFormat = Literal["text", "jsonl"]

BYTE_TOKENIZER: str = "byte"
"""The ``tokenizer`` value naming :class:`megaspec.data.ByteTokenizer`."""


def tokenizer_name(value: str) -> str | None:
    """A declared check of a ``tokenizer`` field: ``byte`` or a path to a tokenizer.json.

    A run config declares it as
    ``tokenizer: str = field(default="byte", metadata=checks(tokenizer_name))``.

    The file itself is checked when the tokenizer is loaded, so a config can be validated
    on a machine that does not hold it.
    """
    if value == BYTE_TOKENIZER or value.endswith(".json"):
        return None
    return f"must be 'byte' or a path to a tokenizer.json file, got {value!r}"


def non_empty(value: str) -> str | None:
    """A declared check: the string is not empty."""
    return None if value else "must not be empty"


@dataclass(frozen=True, kw_only=True)
class DataConfig(Config):
    """The documents a run trains on.

    Attributes:
        path: a text file, a directory of text files (``.txt``, ``.md``, ``.rst``, searched
            recursively, read in sorted order), or a JSONL file; ``None`` means the corpus
            bundled with megaspec.
        format: ``text`` (each file is one document) or ``jsonl`` (each line is a JSON
            object and its ``text_field`` is one document).
        text_field: the key of a JSONL object that holds the document's text.
    """

    path: str | None = None
    format: DataFormat = "text"
    text_field: str = field(default="text", metadata=checks(non_empty))

    def validate(self) -> None:
        super().validate()
        if self.format == "jsonl" and self.path is None:
            raise ConfigError("path", "format 'jsonl' needs a path to a .jsonl file")
        if self.path == "":
            raise ConfigError("path", "must not be empty; leave it unset for the bundled corpus")
