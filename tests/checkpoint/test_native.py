"""megaspec run-directory weights into a model: the parameters a file lacks, holds extra, or
holds in another shape are named. (Loading at TP=1 is in test_pretrained.py, at TP=2 in
test_tensor_parallel.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from megaspec.checkpoint import CheckpointError, SafetensorsSource, load_megaspec_weights
from megaspec.config import RunConfig, resolve
from megaspec.parallel import seeded_initialization
from megaspec.training import build_model, preset_run, save_trained_model


@pytest.fixture(scope="module")
def run_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = preset_run("tiny")  # hidden 64, 2 blocks, MLP 128 (gated: fc1 has 256 rows)
    directory = tmp_path_factory.mktemp("run")
    save_trained_model(build_model(run), run, directory)
    return directory


def load_into(directory: Path, *overrides: str) -> None:
    run = resolve(RunConfig, pretrained=preset_run("tiny"), overrides=list(overrides))
    with seeded_initialization(0):
        model = run.model.build()
    with SafetensorsSource(directory) as source:
        load_megaspec_weights(model, source)


def test_matching_model_loads(run_directory: Path) -> None:
    load_into(run_directory)


def test_shape_mismatch(run_directory: Path) -> None:
    with pytest.raises(CheckpointError) as error:
        load_into(run_directory, "model.decoder.block.mlp.ffn_hidden_size=96")
    assert str(error.value) == (
        "model.safetensors: blocks.layers.0.mlp.linear_fc1.weight: shape [256, 64] does not match "
        "the config (expected [192, 64])"
    )


def test_missing_and_unexpected_tensors(run_directory: Path) -> None:
    with pytest.raises(CheckpointError) as error:
        load_into(run_directory, "model.decoder.num_blocks=3")
    assert str(error.value) == (
        f"{run_directory}: missing tensors the config needs: blocks.layers.2.input_norm.weight, "
        f"blocks.layers.2.mixer.linear_proj.weight, blocks.layers.2.mixer.linear_qkv.weight, "
        f"blocks.layers.2.mlp.linear_fc1.weight, ... (6 in all)"
    )
    with pytest.raises(CheckpointError) as error:
        load_into(run_directory, "model.tie_embeddings=true")
    assert str(error.value) == (
        f"{run_directory}: unexpected tensors the config does not describe: output_layer.weight"
    )
