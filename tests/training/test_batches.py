"""A run's batches (megaspec.training.batches): the bundled text in random windows that resume
exactly, `training.data` (a path or a DataConfig mapping) packed through the data library,
`training.tokenizer`, and the errors `megaspec train` prints for them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from megaspec.cli import main
from megaspec.config import ConfigError
from megaspec.data import DataConfig, SequenceLoader
from megaspec.training import resolve_run
from megaspec.training.batches import RandomWindows, run_batches

QUICK = ["train", "--preset", "tiny", "--steps", "2", "--batch-size", "2", "--seq-length", "16",
         "--sample-tokens", "0", "--no-progress", "--threads", "1", "training.eval_batches=1",
         "training.validation_fraction=0.2"]  # fmt: skip


def write_corpus(directory: Path) -> Path:
    (directory / "b").mkdir(parents=True)
    (directory / "a.txt").write_text("first document\n" + "words " * 40)
    (directory / "b" / "c.md").write_text("second document\n")
    (directory / "b" / "ignored.csv").write_text("not,text\n")
    return directory


def test_random_windows_seek_replays_exactly_the_batches_an_uninterrupted_run_draws() -> None:
    run = resolve_run(preset="tiny", overrides=["training.batch_size=3", "training.sequence_length=8"])
    uninterrupted = run_batches(run).train
    assert isinstance(uninterrupted, RandomWindows)
    expected = [uninterrupted.next_batch() for _ in range(4)]
    resumed = run_batches(run).train
    resumed.seek(6)
    assert resumed.position == 6
    for inputs, labels in expected[2:]:
        next_inputs, next_labels = resumed.next_batch()
        assert torch.equal(next_inputs, inputs) and torch.equal(next_labels, labels)
    with pytest.raises(ValueError, match="^position 4 is not a whole number of batches of 3$"):
        resumed.seek(4)


def test_a_path_is_short_for_a_data_config_and_packs_through_the_sequence_loader(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    run = resolve_run(preset="tiny", overrides=[f"training.data={corpus}", "training.sequence_length=8"])
    assert run.training.data == DataConfig(path=str(corpus), format="text")
    batches = run_batches(run)
    assert isinstance(batches.train, SequenceLoader)
    stream = "first document\n" + "words " * 40 + "\n" + "second document\n" + "\n"  # a.txt, b/c.md
    rows = (len(stream.encode()) - 1) // 8  # 34 rows of 8 + 1 tokens sharing one token
    assert batches.train.num_sequences == rows - 2  # ceil(0.05 * 34) held out
    records = tmp_path / "docs.jsonl"
    records.write_text("".join(json.dumps({"body": "words " * 20}) + "\n" for _ in range(3)))
    jsonl = resolve_run(preset="tiny", overrides=[f"training.data={records}"])
    assert jsonl.training.data == DataConfig(path=str(records), format="jsonl")
    with pytest.raises(ConfigError) as error:
        run_batches(jsonl)
    assert str(error.value) == f"training.data: {records}:1: no field 'text' (fields: body)"


def test_the_model_vocabulary_must_cover_the_tokenizer() -> None:
    run = resolve_run(preset="tiny", overrides=["model.vocab_size=200"])
    with pytest.raises(ConfigError) as error:
        run_batches(run)
    assert str(error.value) == "model.vocab_size: must be >= 256 for the tokenizer byte, got 200"
    with pytest.raises(ConfigError) as error:
        resolve_run(preset="tiny", overrides=["training.tokenizer=gpt2"])
    assert str(error.value) == (
        "training.tokenizer: must be 'byte' or a path to a tokenizer.json file, got 'gpt2'"
    )


def test_train_on_a_directory_of_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    quick = [*QUICK, "--output-dir", str(tmp_path / "run")]
    assert main([*quick, f"training.data.path={corpus}"]) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    missing = tmp_path / "missing"
    assert main([*quick, "--overwrite", f"training.data={missing}"]) == 2
    assert capsys.readouterr().err == f"megaspec train: training.data: {missing}: no such file or directory\n"
