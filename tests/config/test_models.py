"""Models built from YAML configs: parameter counts, initialisation statistics, optimizer
groups with multiplied learning-rate scales, and training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from examples.yaml_model import resolve_run, train
from megaspec.config import ModelConfig, RunConfig, resolve
from megaspec.optim import parameter_groups
from megaspec.parallel import seeded_initialization

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "configs"


def attention_parameters(hidden: int, heads: int, groups: int) -> int:
    head_dim = hidden // heads
    qkv = hidden * groups * (heads // groups + 2) * head_dim
    return qkv + heads * head_dim * hidden


def mlp_parameters(hidden: int, ffn: int) -> int:
    return hidden * 2 * ffn + ffn * hidden  # gated fc1 [gate; up], fc2


def conv_parameters(hidden: int, kernel: int) -> int:
    return hidden * 2 * hidden + hidden * kernel + hidden * hidden  # in_proj, filter, out_proj


def model_parameters(hidden: int, vocab: int, layers: int) -> int:
    # embedding + output layer + final norm + two norms per layer
    return 2 * vocab * hidden + hidden + layers * 2 * hidden


def build(config: ModelConfig) -> torch.nn.Module:
    with seeded_initialization(0):
        return config.build()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "llama.yaml",
            model_parameters(256, 256, 4)
            + 4 * (attention_parameters(256, 8, 2) + mlp_parameters(256, 704)),
        ),
        (
            "hybrid.yaml",
            model_parameters(128, 256, 6)
            + 4 * attention_parameters(128, 4, 4)
            + 2 * conv_parameters(128, 4)
            + 6 * mlp_parameters(128, 384),
        ),
        (
            "lr_scales.yaml",
            model_parameters(128, 256, 4)
            + 2 * attention_parameters(128, 4, 4)
            + 2 * conv_parameters(128, 4)
            + 4 * mlp_parameters(128, 384),
        ),
    ],
)
def test_example_config_parameter_count(name: str, expected: int) -> None:
    config = resolve_run([str(CONFIGS / name)])
    model = build(config.model)
    assert sum(parameter.numel() for parameter in model.parameters()) == expected


def test_weights_follow_configured_initialisation() -> None:
    run = resolve(
        RunConfig,
        files=[CONFIGS / "llama.yaml"],
        overrides=[
            "model.decoder.block.mixer.qkv.init={type: normal, std: 0.05}",
            "model.decoder.block.mlp.fc1.init={type: uniform, low: -0.1, high: 0.1}",
            "model.decoder.block.mlp.fc2.init={type: zeros}",
            "model.decoder.block.norm.weight.init={type: normal, std: 0.5}",
            "model.embedding.init={type: normal, std: 0.01}",
            "model.final_norm.weight.init={type: zeros}",
        ],
    )
    model = build(run.model)
    weights = dict(model.named_parameters())
    vocab = run.model.vocab_size
    expected_std = {
        "blocks.layers.0.mixer.linear_qkv.weight": 0.05,
        # Defaults the parents supply: scaled init for output projections, init_std elsewhere.
        "blocks.layers.0.mixer.linear_proj.weight": 0.02 / math.sqrt(2 * 4),
        "blocks.layers.0.mlp.linear_fc1.weight": 0.2 / math.sqrt(12),
        "blocks.layers.0.input_norm.weight": 0.5,
        "output_layer.weight": 0.02,
    }
    for name, std in expected_std.items():
        weight = weights[name].detach()
        # The sample std of n normal draws has relative error about 1 / sqrt(2n): allow 4x.
        tolerance = 4 / math.sqrt(2 * weight.numel())
        assert weight.std().item() == pytest.approx(std, rel=tolerance), name
    assert torch.all(weights["blocks.layers.0.mlp.linear_fc2.weight"] == 0)
    assert torch.all(weights["final_norm.weight"] == 0)
    assert weights["embedding.weight"][:vocab].std().item() == pytest.approx(0.01, rel=0.05)
    fc1 = weights["blocks.layers.0.mlp.linear_fc1.weight"]
    assert fc1.min().item() >= -0.1 and fc1.max().item() < 0.1


def test_parameter_groups_carry_multiplied_lr_scales() -> None:
    run = resolve_run([str(CONFIGS / "lr_scales.yaml")])
    model = build(run.model)
    groups = parameter_groups(model, learning_rate=1.0, weight_decay=0.1)
    lr_of = {name: group["lr"] for group in groups for name in group["names"]}
    decay_of = {name: group["weight_decay"] for group in groups for name in group["names"]}
    # decoder 0.5 x block 1 x mixer 1 x qkv 0.5; mlp 0.5 x 2; conv block 0.5 x 0.1
    assert lr_of["blocks.layers.0.mixer.linear_qkv.weight"] == pytest.approx(0.25)
    assert lr_of["blocks.layers.0.mixer.linear_proj.weight"] == pytest.approx(0.5)
    assert lr_of["blocks.layers.0.mlp.linear_fc1.weight"] == pytest.approx(1.0)
    assert lr_of["blocks.layers.0.input_norm.weight"] == pytest.approx(0.5)
    conv_block = ("mixer.in_proj.weight", "mixer.filter", "mlp.linear_fc2.weight", "pre_mlp_norm.weight")
    for name in conv_block:
        assert lr_of[f"blocks.layers.1.{name}"] == pytest.approx(0.05), name
    assert lr_of["output_layer.weight"] == 1.0 and lr_of["final_norm.weight"] == 1.0
    # lr_scale 0 freezes; embeddings, norms and biases do not decay unless configured.
    assert "embedding.weight" not in lr_of
    assert not model.get_parameter("embedding.weight").requires_grad
    assert decay_of["output_layer.weight"] == 0.1
    assert decay_of["blocks.layers.0.mixer.linear_qkv.weight"] == 0.1
    assert decay_of["blocks.layers.0.input_norm.weight"] == 0.0
    assert decay_of["final_norm.weight"] == 0.0
    assert set(lr_of) | {"embedding.weight"} == {name for name, _ in model.named_parameters()}


def test_yaml_hybrid_model_trains() -> None:
    losses = train(resolve_run([str(CONFIGS / "hybrid.yaml")]), steps=20)
    assert len(losses) == 20
    assert losses[-1] < losses[0] - 2.0
    assert sum(later < earlier for earlier, later in zip(losses, losses[1:])) >= 18
