"""The main job end to end: bundled text, tokenizer, sampler, training loop, CLI, save/load."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from megaspec.cli import main, parse_arguments, run_from_arguments
from megaspec.config import ConfigError, RunConfig, TrainingConfig, resolve, to_data
from megaspec.data import ByteTokenizer, WindowSampler, load_corpus, train_validation_split
from megaspec.generate import generate, generate_text
from megaspec.training import (
    build_model,
    learning_rate_at,
    load_trained_model,
    make_optimizer,
    preset_run,
    resolve_run,
    set_learning_rate,
    train,
)

# Convenience flags and an override mixed, as a user would type them.
TINY_CLI_ARGUMENTS = [
    "--preset", "tiny", "--steps", "3", "--batch-size", "4", "--seq-length", "32",
    "training.eval_interval=2", "--sample-tokens", "16", "--seed", "3", "--no-progress",
]  # fmt: skip
TINY_MODEL_DATA = {
    "hidden_size": 64,
    "vocab_size": 256,
    "decoder": {
        "type": "repeat",
        "block": {
            "mixer": {"type": "attention", "num_heads": 4, "num_query_groups": 2,
                      "rotary_base": 10000.0},
            "mlp": {"type": "mlp", "ffn_hidden_size": 128, "activation": "silu", "gated": True},
            "norm": {"type": "rms_norm"},
        },
        "num_blocks": 2,
    },
}  # fmt: skip


def tiny_run(**training: Any) -> RunConfig:
    """The tiny preset with ``training`` fields set."""
    return resolve_run(preset="tiny", overrides=[{"training": training}])


def saved_config(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((directory / "config.yaml").read_text())
    return data


def test_default_run_is_the_small_llama_model_with_the_documented_schedule() -> None:
    run = preset_run("small")
    model = build_model(run)
    assert sum(parameter.numel() for parameter in model.parameters()) == 1_672_896
    block = run.model.decoder.named_blocks()[0][1]
    assert (run.model.hidden_size, run.model.decoder.num_layers) == (192, 4)
    assert to_data(block.mixer) == {
        "type": "attention", "num_heads": 6, "num_query_groups": 2, "rotary_base": 10000.0
    }  # fmt: skip
    assert run.training == TrainingConfig()
    assert (run.training.steps, run.training.batch_size, run.training.sequence_length) == (
        250, 32, 128
    )  # fmt: skip
    assert run.training.learning_rate_floor == pytest.approx(3e-4)
    assert to_data(preset_run("tiny")) == {"model": TINY_MODEL_DATA}
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset_run("huge")


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    training = TrainingConfig(
        steps=100, warmup_steps=10, learning_rate=1e-3, min_learning_rate=1e-4
    )
    rates = [learning_rate_at(step, training) for step in range(training.steps)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(later <= earlier for earlier, later in zip(rates[9:], rates[10:]))
    assert rates[-1] == pytest.approx(1e-4)
    # Without a floor of its own, a lowered peak keeps a tenth of itself as the floor.
    lowered = TrainingConfig(steps=100, learning_rate=1e-5)
    assert learning_rate_at(99, lowered) == pytest.approx(1e-6)


def test_per_weight_learning_rate_scales_multiply_the_schedule() -> None:
    run = resolve_run(
        preset="tiny",
        overrides=["model.embedding.lr_scale=0", "model.output_layer.lr_scale=0.5"],
    )
    model = build_model(run)
    optimizer = make_optimizer(model, run.training)
    set_learning_rate(optimizer, 2e-3)
    rates = {name: group["lr"] for group in optimizer.param_groups for name in group["names"]}
    assert rates["output_layer.weight"] == pytest.approx(1e-3)
    assert rates["blocks.layers.0.mlp.linear_fc1.weight"] == pytest.approx(2e-3)
    assert not any(name.startswith("embedding") for name in rates)  # frozen: lr_scale 0
    trained = train(
        resolve_run(preset="tiny", overrides=["model.embedding.lr_scale=0", "training.steps=2",
                                              "training.batch_size=2"]),
        progress=False,
    ).model  # fmt: skip
    assert torch.equal(trained.embedding.weight, model.embedding.weight)


def test_fifty_adamw_steps_on_the_bundled_text_lower_the_loss() -> None:
    assert not (torch.distributed.is_available() and torch.distributed.is_initialized())
    run = tiny_run(steps=50, batch_size=16, sequence_length=64, warmup_steps=5, eval_interval=25)
    result = train(run, progress=False)
    losses = result.losses
    assert len(losses) == 50 and all(math.isfinite(loss) for loss in losses)
    # Untrained logits are near zero: the first loss is close to uniform over 256 bytes.
    assert losses[0] == pytest.approx(math.log(256), abs=0.1)
    assert sum(losses[-5:]) / 5 < losses[0] - 2.0
    assert [steps for steps, _ in result.validation_losses] == [25, 50]
    first_validation, last_validation = (loss for _, loss in result.validation_losses)
    assert last_validation < first_validation < losses[0] - 1.0


def test_cli_trains_saves_and_the_saved_model_reproduces_the_trained_logits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "run"
    argv = ["train", *TINY_CLI_ARGUMENTS, "--output-dir", str(output)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "trained 3 steps" in printed and "sample (seed 3" in printed
    assert (output / "model.safetensors").is_file()
    # Only explicit fields: the preset's model and what the command line set.
    assert saved_config(output) == {
        "format_version": 1,
        "model": TINY_MODEL_DATA,
        "training": {"steps": 3, "seed": 3, "batch_size": 4, "sequence_length": 32,
                     "eval_interval": 2},
    }  # fmt: skip

    loaded, run = load_trained_model(output)
    # Training is seeded, so the run main() trained (from the CLI's own parsing) trains the
    # same weights again in-process.
    assert run == run_from_arguments(parse_arguments(argv))
    trained = train(run, progress=False).model.eval()
    input_ids = ByteTokenizer().encode_tensor("The Python Software Foundation").unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids), trained(input_ids))
    fresh = build_model(resolve_run(preset="tiny", overrides=["training.seed=12345"])).eval()
    with torch.no_grad():
        assert not torch.equal(fresh(input_ids), trained(input_ids))


def test_cli_yaml_file_and_override_change_the_model_and_are_saved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = tmp_path / "narrow.yaml"
    config_file.write_text(
        "model:\n  decoder:\n    block:\n      mlp: {ffn_hidden_size: 96}\n"
        "training:\n  batch_size: 2\n  sequence_length: 16\n"
    )
    output = tmp_path / "run"
    argv = [
        "train", "--preset", "tiny", "-c", str(config_file), "model.decoder.num_blocks=1",
        "--steps", "2", "--sample-tokens", "0", "--no-progress", "--output-dir", str(output),
    ]  # fmt: skip
    assert main(argv) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    saved = saved_config(output)
    assert saved["model"]["decoder"]["num_blocks"] == 1
    assert saved["model"]["decoder"]["block"]["mlp"]["ffn_hidden_size"] == 96
    assert saved["training"] == {"batch_size": 2, "sequence_length": 16, "steps": 2}
    loaded, run = load_trained_model(output)
    assert run.model.decoder.num_layers == 1 and len(loaded.blocks.layers) == 1
    assert loaded.state_dict()["blocks.layers.0.mlp.linear_fc2.weight"].shape == (64, 96)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["training.steps=0"], "training.steps: must be >= 1, got 0"),
        (["--steps", "0"], "training.steps: must be >= 1, got 0"),
        (["model.decoder.num_block=1"],
         "model.decoder.num_block: unknown field; did you mean 'num_blocks'?"),
        (["model.decoder.block.mixer.num_heads=5"],
         "model.decoder.block.mixer.num_query_groups: 2 must be positive and divide "
         "num_heads (5)"),
        (["training.steps"],
         "malformed override 'training.steps': expected dotted.path=value, e.g. "
         "model.hidden_size=512"),
    ],
)  # fmt: skip
def test_cli_reports_a_config_error_with_its_path_and_exit_code_2(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--preset", "tiny", "--no-progress", "--sample-tokens", "0", *arguments]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"megaspec train: {message}\n"


def test_cli_rejects_a_sequence_longer_than_the_validation_text_before_training(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["train", "--preset", "tiny", "--seq-length", "100000", "--no-progress"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert re.fullmatch(
        r"megaspec train: training\.sequence_length: 100000 needs windows of 100001 tokens, "
        r"but a split of the bundled text \(validation_fraction 0\.05\) holds only \d+\n",
        captured.err,
    )
    assert "trained" not in captured.out


def test_cli_without_a_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "train" in capsys.readouterr().out
