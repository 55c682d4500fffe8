"""`megaspec train` (megaspec.cli): train, save and reload, YAML files and overrides,
config errors with their path and exit code 2, help."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from megaspec.cli import main, parse_arguments, run_from_arguments
from megaspec.data import ByteTokenizer
from megaspec.training import build_model, load_trained_model, resolve_run, train
from tests.helpers.presets import TINY_MODEL_DATA

# Convenience flags and an override mixed, as a user would type them.
TINY_CLI_ARGUMENTS = [
    "--preset", "tiny", "--steps", "3", "--batch-size", "4", "--seq-length", "32",
    "training.eval_interval=2", "--sample-tokens", "16", "--seed", "3", "--no-progress",
]  # fmt: skip


def saved_config(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((directory / "config.yaml").read_text())
    return data


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
