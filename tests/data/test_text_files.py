"""The user's training text (megaspec.data.text_files): .txt, .jsonl and directories read in a
fixed order, errors naming the file and line, packed sequences in a seeded shuffled order, and
`megaspec train training.data=PATH`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from megaspec.cli import main
from megaspec.data.text_files import PackedSampler, read_documents
from megaspec.training import corpus_windows, resolve_run


def write_corpus(directory: Path) -> Path:
    (directory / "b").mkdir(parents=True)
    (directory / "a.txt").write_text("first document\n")
    records = [{"text": "second"}, {"text": "third", "id": 3}]
    (directory / "b" / "c.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records) + "\n")
    (directory / "b" / "ignored.csv").write_text("not,text\n")
    return directory


def test_a_directory_is_read_in_sorted_order_with_jsonl_text_fields(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    assert read_documents(corpus) == ["first document\n", "second", "third"]
    assert read_documents(corpus / "a.txt") == ["first document\n"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", b'{"text": "ok"}\n[1]\n', "{path}:2: expected an object with a string 'text' field"),
        ("bad.jsonl", b'{"text": \n', "{path}:1: not JSON (Expecting value)"),
        ("bad.txt", b"caf\xe9", "{path}: not UTF-8 text (byte offset 3)"),
    ],
)
def test_a_bad_file_is_named(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError) as error:
        read_documents(path)
    assert str(error.value) == message.format(path=path)


def test_packed_sequences_are_each_drawn_once_per_epoch_in_a_seeded_order() -> None:
    tokens = torch.arange(31)  # 7 sequences of 4 tokens (3 + the shifted label); 3 left out
    batches = [
        PackedSampler(tokens).sample(batch_size=7, seq_length=3, generator=torch.Generator().manual_seed(0))
        for _ in range(2)
    ]
    inputs, labels = batches[0]
    assert torch.equal(inputs, batches[1][0])  # deterministic
    assert sorted(inputs[:, 0].tolist()) == [0, 4, 8, 12, 16, 20, 24]
    assert torch.equal(labels, inputs + 1)
    sampler, generator = PackedSampler(tokens), torch.Generator().manual_seed(0)
    first = [sampler.sample(batch_size=1, seq_length=3, generator=generator)[0][0, 0].item() for _ in range(14)]
    assert sorted(first[:7]) == sorted(first[7:]) == [0, 4, 8, 12, 16, 20, 24]
    assert first[:7] != first[7:]  # a new permutation each epoch


def test_train_on_a_directory_of_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    (corpus / "more.txt").write_text("words " * 40)
    run = resolve_run(preset="tiny", overrides=[f"training.data={corpus}", "training.sequence_length=8"])
    train_windows, validation_windows = corpus_windows(run)
    assert isinstance(train_windows, PackedSampler)
    assert len(train_windows) + len(validation_windows) == len(
        "\n\n".join(["first document\n", "second", "third", "words " * 40]).encode()
    )
    quick = ["train", "--preset", "tiny", "--steps", "2", "--batch-size", "2", "--seq-length", "16",
             "--sample-tokens", "0", "--no-progress", "--threads", "1", "training.eval_batches=1",
             "training.validation_fraction=0.2", "--output-dir", str(tmp_path / "run")]  # fmt: skip
    assert main([*quick, f"training.data={corpus}"]) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    assert main([*quick, "--overwrite", f"training.data={tmp_path / 'missing'}"]) == 2
    assert capsys.readouterr().err == f"megaspec train: training.data: {tmp_path / 'missing'}: no such file or directory\n"
