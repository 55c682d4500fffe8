"""Checkpoint directories appear atomically, replace only when asked, and split weights into
files of a size limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from megaspec.checkpoint import CheckpointError
from megaspec.checkpoint.writing import StagedDirectory, check_target, plan_shards, shard_file_names


def test_plan_shards() -> None:
    assert plan_shards([4, 4, 4], 100) == [[0, 1, 2]]
    assert plan_shards([4, 4, 4], 8) == [[0, 1], [2]]
    assert plan_shards([4, 20, 4], 8) == [[0], [1], [2]]  # too large: a file of its own
    with pytest.raises(ValueError) as error:
        plan_shards([1], 0)
    assert str(error.value) == "max_shard_bytes must be positive, got 0"


def test_shard_file_names() -> None:
    assert shard_file_names(1) == ["model.safetensors"]
    assert shard_file_names(2) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]


def test_staged_directory_appears_only_on_commit(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "out"
    staged = StagedDirectory(target, overwrite=False)
    (staged.path / "config.json").write_text("{}")
    assert not target.exists() and staged.path.name.startswith(".out.partial-")
    staged.commit()
    assert [path.name for path in target.iterdir()] == ["config.json"]
    assert [path.name for path in target.parent.iterdir()] == ["out"]


def test_replacing_needs_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    StagedDirectory(target, overwrite=False).commit()  # an empty directory is replaced freely
    (target / "old.txt").write_text("old")
    with pytest.raises(CheckpointError) as error:
        StagedDirectory(target, overwrite=False)
    assert str(error.value) == (
        f"{target}: directory exists and is not empty; pass overwrite=True to replace it"
    )
    staged = StagedDirectory(target, overwrite=True)
    (staged.path / "new.txt").write_text("new")
    staged.commit()
    assert [path.name for path in target.iterdir()] == ["new.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


def test_discard_and_file_target(tmp_path: Path) -> None:
    staged = StagedDirectory(tmp_path / "out", overwrite=False)
    staged.discard()
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("")
    with pytest.raises(CheckpointError) as error:
        check_target(tmp_path / "file", overwrite=True)
    assert str(error.value) == f"{tmp_path / 'file'}: exists and is not a directory"
