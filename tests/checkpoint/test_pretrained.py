"""from_pretrained: sources (Hugging Face directory or model object, megaspec run directory),
overrides that change training settings (allowed) or the architecture (refused), and the
config it returns."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import megaspec
from megaspec.checkpoint import CheckpointError, PretrainedModel
from megaspec.config import AttentionMixerConfig, ConfigError, ModelConfig, load, save
from megaspec.parameter_settings import parameter_settings
from megaspec.training import build_model, load_trained_model, preset_run, save_trained_model
from tests.helpers.hf_models import tiny_model, tokens

REFUSAL_TAIL = (
    "growing or reshaping a pretrained model is not available yet (overrides may change "
    "apply_peft, cross_entropy_chunk_tokens, fuse_elementwise, fused_cross_entropy, init, "
    "init_std, lr_scale, recompute, recompute_core_attention, sdpa_backend, weight_decay)"
)


@pytest.fixture(scope="module")
def run_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A megaspec run directory (config.yaml + model.safetensors) of the tiny preset."""
    run = preset_run("tiny")
    directory = tmp_path_factory.mktemp("run")
    save_trained_model(build_model(run), run, directory)
    return directory


def mixer_of(result: PretrainedModel) -> AttentionMixerConfig:
    mixer = result.config.decoder.named_blocks()[0][1].mixer
    assert isinstance(mixer, AttentionMixerConfig)
    return mixer


def test_run_directory_with_training_overrides(run_directory: Path) -> None:
    saved, _ = load_trained_model(run_directory)
    result = megaspec.from_pretrained(
        run_directory,
        overrides=["decoder.block.mixer.lr_scale=0.5", {"embedding": {"lr_scale": 0.0}}, "init_std=0.01"],
    )
    assert result.source_format == "megaspec" and result.hf_config is None
    assert mixer_of(result).lr_scale == 0.5 and result.config.init_std == 0.01
    model = result.model
    qkv = "blocks.layers.1.mixer.linear_qkv.weight"
    settings = [parameter_settings(model.get_parameter(name)) for name in (qkv, "embedding.weight")]
    assert [None if tag is None else tag.lr_scale for tag in settings] == [0.5, 0.0]
    input_ids = tokens(sequence=16) % 256
    with torch.no_grad():
        assert torch.equal(model(input_ids), saved(input_ids))


def test_run_directory_refuses_an_architecture_change(run_directory: Path) -> None:
    with pytest.raises(ConfigError) as error:
        megaspec.from_pretrained(run_directory, overrides=["hidden_size=128"])
    assert str(error.value) == (
        f"hidden_size: changes the architecture of the pretrained model (64 -> 128); {REFUSAL_TAIL}"
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("decoder.num_blocks=3",
         "decoder.num_blocks: changes the architecture of the pretrained model (2 -> 3)"),
        ("tie_embeddings=true",
         "tie_embeddings: changes the architecture of the pretrained model (false -> true)"),
        ("decoder.block.add_linear_biases=true",
         "decoder.block.mixer.qkv.bias: changes the architecture of the pretrained model (false "
         "-> true)"),
        ("decoder.block.norm={type: layer_norm}",
         "decoder.block.norm.type: changes the architecture of the pretrained model ('rms_norm' -> "
         "'layer_norm')"),
        ("decoder.block.mixer.rotary_scaling={type: llama3}",
         "decoder.block.mixer.rotary_scaling: changes the architecture of the pretrained model "
         "(null -> {\"type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
         "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192})"),
    ],
)  # fmt: skip
def test_hf_source_refuses_architecture_overrides(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        megaspec.from_pretrained(tiny_model("mistral"), overrides=[override])
    assert str(error.value) == f"{message}; {REFUSAL_TAIL}"


def test_hf_source_allows_training_settings_and_unchanged_values(tmp_path: Path) -> None:
    model = tiny_model("qwen2")
    result = megaspec.from_pretrained(
        model,
        overrides=[
            "decoder.block.mixer.apply_peft=false",
            "decoder.block.mlp.fc1.weight_decay=true",
            "decoder.block.mixer.qkv.bias=true",  # what Qwen2 has already
            "decoder.block.mixer.qkv.init={type: zeros}",
        ],
    )
    assert not mixer_of(result).apply_peft
    # The returned config saves and loads back to itself.
    save(result.config, tmp_path / "model.yaml")
    assert load(ModelConfig, tmp_path / "model.yaml") == result.config


def test_bad_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as error:
        megaspec.from_pretrained(tiny_model("qwen3"), overrides=["decoder.block.mixer.lr_scale=-1"])
    assert str(error.value) == "decoder.block.mixer.lr_scale: must be >= 0, got -1.0"


def test_directory_kind_must_be_clear(tmp_path: Path, run_directory: Path) -> None:
    with pytest.raises(CheckpointError) as error:
        megaspec.from_pretrained(tmp_path)
    assert str(error.value) == (
        f"{tmp_path}: neither config.json (a Hugging Face checkpoint) nor config.yaml (a megaspec "
        f"run directory)"
    )
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "config.yaml").write_text("")
    with pytest.raises(CheckpointError) as error:
        megaspec.from_pretrained(tmp_path)
    assert str(error.value) == (
        f"{tmp_path}: holds both config.json (Hugging Face) and config.yaml (megaspec run); which "
        f"one is meant is unclear"
    )


def test_model_without_hf_config_is_refused() -> None:
    with pytest.raises(TypeError) as error:
        megaspec.from_pretrained(torch.nn.Linear(2, 2))
    assert str(error.value) == (
        "Linear has no Hugging Face config (model.config.to_dict()); pass a transformers model "
        "or a checkpoint directory"
    )
