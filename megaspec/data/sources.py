"""Documents from the bundled corpus, text files, directories of text files or JSONL files.

A *document* is one piece of text that the packer ends with a separator token (see
:mod:`megaspec.data.packing`): a whole text file, or the text field of one JSONL line. The
documents of a source come in a fixed order, so the same source always packs to the same
sequences:

- no path: the bundled corpus, one document;
- a text file: one document, whatever its extension;
- a directory: every file under it (recursively) whose extension is in
  :data:`TEXT_EXTENSIONS`, one document each, in sorted order of their paths relative to the
  directory; other files and hidden files and directories (``.git``) are skipped;
- a JSONL file: one JSON object per line, its ``text_field`` a document; blank lines are
  skipped.

Errors are :class:`DataSourceError` and name the file (and the line of a JSONL file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from megaspec.data.config import DataConfig

TEXT_EXTENSIONS: Final = frozenset({".txt", ".md", ".rst"})
"""The extensions of the files a directory source reads."""


class DataSourceError(ValueError):
    """A data source that cannot be read as documents: missing, binary, not UTF-8, bad JSONL."""


def read_documents(config: DataConfig) -> list[str]:
    """The documents of ``config``'s source, in their fixed order.

    Raises:
        DataSourceError: if the path does not exist, a file is binary or not UTF-8, a JSONL
            line is not an object with a string ``text_field``, or the source holds no text.
    """
    if config.path is None:
        from megaspec.data import load_corpus  # the package imports this module

        return [load_corpus()]
    path = Path(config.path)
    if not path.exists():
        raise DataSourceError(f"{path}: no such file or directory")
    if config.format == "jsonl":
        if path.is_dir():
            raise DataSourceError(f"{path}: format 'jsonl' needs a file, got a directory")
        documents = jsonl_documents(path, config.text_field)
    elif path.is_dir():
        documents = [read_text_file(file) for file in directory_files(path)]
    else:
        documents = [read_text_file(path)]
    if not any(documents):
        raise DataSourceError(f"{path}: holds no text")
    return documents


def directory_files(directory: Path) -> list[Path]:
    """The text files under ``directory``, sorted by their relative paths.

    Raises:
        DataSourceError: if there are none.
    """
    files = [
        file
        for file in directory.rglob("*")
        if file.is_file()
        and file.suffix.lower() in TEXT_EXTENSIONS
        # Hidden entries are tool state (.git, .ipynb_checkpoints), not text to learn.
        and not any(part.startswith(".") for part in file.relative_to(directory).parts)
    ]
    if not files:
        extensions = ", ".join(sorted(TEXT_EXTENSIONS))
        raise DataSourceError(f"{directory}: no text files ({extensions}) in this directory")
    # Relative POSIX paths sort the same on every platform and wherever the directory lives.
    return sorted(files, key=lambda file: file.relative_to(directory).as_posix())


def read_text_file(path: Path) -> str:
    """The text of a UTF-8 file (a leading byte-order mark is dropped).

    Raises:
        DataSourceError: if the file holds a NUL byte (binary) or is not UTF-8.
    """
    raw = path.read_bytes()
    nul = raw.find(b"\x00")
    # UTF-8 text never holds NUL; a NUL means an image, archive or UTF-16 file.
    if nul >= 0:
        raise DataSourceError(
            f"{path}: binary file (NUL byte at offset {nul}), expected UTF-8 text"
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataSourceError(
            f"{path}: not UTF-8 text (byte 0x{raw[error.start]:02x} at offset {error.start})"
        ) from None


def jsonl_documents(path: Path, text_field: str) -> list[str]:
    """The ``text_field`` strings of the JSON objects on the lines of ``path``.

    Raises:
        DataSourceError: naming the file and line of a line that is not a JSON object or
            lacks a string ``text_field``.
    """
    documents = []
    # split("\n"), not splitlines(): JSON strings may hold U+2028, which splitlines breaks at.
    for number, line in enumerate(read_text_file(path).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataSourceError(f"{where}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise DataSourceError(f"{where}: expected a JSON object, got {_json_kind(record)}")
        if text_field not in record:
            keys = ", ".join(sorted(record)) or "none"
            raise DataSourceError(f"{where}: no field {text_field!r} (fields: {keys})")
        text = record[text_field]
        if not isinstance(text, str):
            raise DataSourceError(
                f"{where}: field {text_field!r} must be a string, got {_json_kind(text)}"
            )
        documents.append(text)
    return documents


def _json_kind(value: object) -> str:
    """The JSON name of a decoded value's type, as a JSONL author knows it."""
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number"}
    return "null" if value is None else kinds.get(type(value), "number")
