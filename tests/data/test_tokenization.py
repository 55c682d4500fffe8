"""The Tokenizer protocol, the Hugging Face tokenizer.json wrapper and document separators."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from megaspec.data import (
    ByteTokenizer,
    HuggingFaceTokenizer,
    Tokenizer,
    document_separator,
    load_tokenizer,
)


def write_word_tokenizer(directory: Path) -> Path:
    """A word-level tokenizer.json built with ``tokenizers`` itself (nothing downloaded)."""
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[UNK]": 0, "</s>": 1, "the": 2, "cat": 3, "sat": 4}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.decoder = tokenizers.decoders.WordPiece()  # joins words with spaces
    # A post-processor that would wrap every document in </s>; encode must not apply it.
    tokenizer.post_processor = tokenizers.processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    path = directory / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def test_hugging_face_tokenizer_encodes_and_decodes_a_tokenizer_json(tmp_path: Path) -> None:
    path = write_word_tokenizer(tmp_path)
    tokenizer = HuggingFaceTokenizer(path)
    assert tokenizer.encode("the cat sat") == [2, 3, 4]
    assert tokenizer.encode("the dog") == [2, 0]
    assert tokenizer.decode([2, 3, 4]) == "the cat sat"
    assert (tokenizer.vocab_size, tokenizer.eos_id) == (5, 1)
    assert document_separator(tokenizer) == [1]
    assert repr(tokenizer) == f"HuggingFaceTokenizer({str(path)!r}, vocab_size=5)"
    from_directory = load_tokenizer(str(tmp_path))
    assert isinstance(from_directory, HuggingFaceTokenizer) and from_directory.path == path
    assert HuggingFaceTokenizer(path, eos_token="[UNK]").eos_id == 0


def test_hugging_face_tokenizer_errors(tmp_path: Path) -> None:
    path = write_word_tokenizer(tmp_path)
    with pytest.raises(ValueError) as error:
        HuggingFaceTokenizer(path, eos_token="<|endoftext|>")
    assert str(error.value) == f"{path}: eos_token '<|endoftext|>' is not in the vocabulary"
    with pytest.raises(FileNotFoundError) as missing:
        HuggingFaceTokenizer(tmp_path / "absent.json")
    assert str(missing.value) == f"{tmp_path / 'absent.json'}: no such tokenizer file"
    broken = tmp_path / "broken.json"
    broken.write_text('{"model": 3}')
    with pytest.raises(ValueError) as error:
        HuggingFaceTokenizer(broken)
    assert str(error.value).startswith(f"{broken}: not a Hugging Face tokenizer.json (")


def test_missing_tokenizers_package_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_word_tokenizer(tmp_path)
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # makes `import tokenizers` fail
    with pytest.raises(ImportError) as error:
        load_tokenizer(str(path))
    assert str(error.value) == (
        f"the tokenizer {path} needs the Hugging Face 'tokenizers' package: "
        "pip install tokenizers (or use tokenizer: byte)"
    )


def test_byte_tokenizer_satisfies_the_protocol_and_separates_with_a_newline() -> None:
    tokenizer: Tokenizer = load_tokenizer("byte")
    assert isinstance(tokenizer, ByteTokenizer)
    assert (tokenizer.vocab_size, tokenizer.eos_id) == (256, None)
    assert document_separator(tokenizer) == [10]
