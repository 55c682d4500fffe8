"""Tensor sources: a state dict, and safetensors directories (one file or shards with an
index) read in part, with the bytes they read counted and broken indexes named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

from megaspec.checkpoint import CheckpointError, SafetensorsSource, StateDictSource

TENSORS = {"a": torch.arange(12.0).reshape(4, 3), "b": torch.arange(5.0)}


def write_sharded(directory: Path) -> Path:
    safetensors.torch.save_file({"a": TENSORS["a"]}, directory / "one.safetensors")
    safetensors.torch.save_file({"b": TENSORS["b"]}, directory / "two.safetensors")
    index = {"weight_map": {"a": "one.safetensors", "b": "two.safetensors"}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    return directory


def test_state_dict_source_reads_parts() -> None:
    source = StateDictSource(TENSORS, "state dict of Toy")
    assert source.names() == {"a", "b"} and source.shape("a") == (4, 3)
    assert torch.equal(source.read("a", (slice(1, 3),)), TENSORS["a"][1:3])
    assert torch.equal(source.read("a", (slice(None), slice(2, 3))), TENSORS["a"][:, 2:])
    assert source.bytes_read == (6 + 4) * 4
    assert source.location("a") == "state dict of Toy"


@pytest.mark.parametrize("sharded", [False, True])
def test_safetensors_source_reads_only_what_is_asked(tmp_path: Path, sharded: bool) -> None:
    if sharded:
        write_sharded(tmp_path)
    else:
        safetensors.torch.save_file(TENSORS, tmp_path / "model.safetensors")
    with SafetensorsSource(tmp_path) as source:
        assert source.names() == {"a", "b"} and source.shape("a") == (4, 3)
        assert source.location("b") == ("two.safetensors" if sharded else "model.safetensors")
        assert torch.equal(source.read("a", (slice(2, 4), slice(0, 2))), TENSORS["a"][2:, :2])
        assert torch.equal(source.read("b"), TENSORS["b"])
        assert source.bytes_read == (4 + 5) * 4


def test_index_placing_a_tensor_in_the_wrong_shard(tmp_path: Path) -> None:
    write_sharded(tmp_path)
    index = {"weight_map": {"a": "one.safetensors", "b": "one.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError) as error:
        SafetensorsSource(tmp_path).__enter__()
    assert str(error.value) == (
        "one.safetensors: does not hold b, which model.safetensors.index.json places there"
    )


def test_missing_weights_and_malformed_index(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as error:
        SafetensorsSource(tmp_path).__enter__()
    assert str(error.value) == (
        f"{tmp_path}: no model.safetensors or model.safetensors.index.json (only safetensors "
        f"checkpoints are supported)"
    )
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["a"]}))
    with pytest.raises(CheckpointError) as error:
        SafetensorsSource(tmp_path).__enter__()
    assert str(error.value) == (
        "model.safetensors.index.json: weight_map: expected a mapping of tensor names to files"
    )
