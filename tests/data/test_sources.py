"""Documents from text files, directories and JSONL files, and the errors of bad sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from megaspec.data import (
    DataConfig,
    DataSourceError,
    load_corpus,
    read_documents,
    tokenizer_name,
)
from megaspec.schema import ConfigError, from_data, to_data


def test_no_path_reads_the_bundled_corpus_as_one_document() -> None:
    assert read_documents(DataConfig()) == [load_corpus()]


def test_a_text_file_is_one_document_without_its_byte_order_mark(tmp_path: Path) -> None:
    file = tmp_path / "notes.log"  # a named file is read whatever its extension
    file.write_bytes("\ufeffcaf\u00e9\nline two\n".encode())
    assert read_documents(DataConfig(path=str(file))) == ["caf\u00e9\nline two\n"]


def test_a_directory_reads_its_text_files_recursively_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "b" / "inner.md").write_text("inner")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "c.RST").write_text("last")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\x00")
    (tmp_path / ".git" / "HEAD.txt").write_text("hidden")
    assert read_documents(DataConfig(path=str(tmp_path))) == ["first", "inner", "last"]


def test_jsonl_reads_the_text_field_of_each_line_and_skips_blank_lines(tmp_path: Path) -> None:
    file = tmp_path / "docs.jsonl"
    lines = [json.dumps({"body": "one", "id": 1}), "", json.dumps({"body": "two\u2028lines"})]
    file.write_text("\n".join(lines) + "\n")
    config = DataConfig(path=str(file), format="jsonl", text_field="body")
    assert read_documents(config) == ["one", "two\u2028lines"]


def test_non_utf8_and_binary_files_are_refused_by_name(tmp_path: Path) -> None:
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\u00e9".encode("latin-1"))
    with pytest.raises(DataSourceError) as error:
        read_documents(DataConfig(path=str(tmp_path)))
    assert str(error.value) == f"{latin}: not UTF-8 text (byte 0xe9 at offset 3)"
    latin.unlink()
    utf16 = tmp_path / "wide.txt"
    utf16.write_bytes("hi".encode("utf-16-le"))
    with pytest.raises(DataSourceError) as error:
        read_documents(DataConfig(path=str(utf16)))
    assert str(error.value) == f"{utf16}: binary file (NUL byte at offset 1), expected UTF-8 text"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "ok"', "not valid JSON (Expecting ',' delimiter)"),
        ('["text"]', "expected a JSON object, got array"),
        ('{"title": "x", "body": "y"}', "no field 'text' (fields: body, title)"),
        ('{"text": null}', "field 'text' must be a string, got null"),
    ],
)
def test_a_bad_jsonl_line_names_the_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    file = tmp_path / "docs.jsonl"
    file.write_text('{"text": "fine"}\n\n' + line + "\n")
    with pytest.raises(DataSourceError) as error:
        read_documents(DataConfig(path=str(file), format="jsonl"))
    assert str(error.value) == f"{file}:3: {message}"


def test_empty_and_missing_sources_are_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataSourceError) as error:
        read_documents(DataConfig(path=str(empty)))
    assert str(error.value) == f"{empty}: holds no text"
    (tmp_path / "data.csv").write_text("a,b")
    (tmp_path / "empty.txt").unlink()
    with pytest.raises(DataSourceError) as error:
        read_documents(DataConfig(path=str(tmp_path)))
    assert str(error.value) == f"{tmp_path}: no text files (.md, .rst, .txt) in this directory"
    with pytest.raises(DataSourceError) as error:
        read_documents(DataConfig(path=str(tmp_path / "nope.jsonl"), format="jsonl"))
    assert str(error.value) == f"{tmp_path / 'nope.jsonl'}: no such file or directory"


def test_config_checks_name_the_field() -> None:
    with pytest.raises(ConfigError) as error:
        DataConfig(format="jsonl")
    assert str(error.value) == "DataConfig.path: format 'jsonl' needs a path to a .jsonl file"
    with pytest.raises(ConfigError) as error:
        DataConfig(path="x.jsonl", format="jsonl", text_field="")
    assert str(error.value) == "DataConfig.text_field: must not be empty"


def test_config_reads_from_plain_data_as_a_run_config_section() -> None:
    config = from_data(DataConfig, {"path": "docs.jsonl", "format": "jsonl"}, "training.data")
    assert (config.path, config.format, config.text_field) == ("docs.jsonl", "jsonl", "text")
    assert to_data(config) == {"path": "docs.jsonl", "format": "jsonl"}
    with pytest.raises(ConfigError) as error:
        from_data(DataConfig, {"path": "a.csv", "format": "csv"}, "training.data")
    assert str(error.value) == (
        "training.data.format: expected one of 'text', 'jsonl', got 'csv' (str)"
    )
    assert tokenizer_name("byte") is None and tokenizer_name("tok/tokenizer.json") is None
    assert tokenizer_name("gpt2") == (
        "must be 'byte' or a path to a tokenizer.json file, got 'gpt2'"
    )
