"""The main job end to end: bundled text, tokenizer, sampler, training loop, CLI, save/load."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from megaspec.cli import build_parser, main, settings_from_arguments
from megaspec.data import ByteTokenizer, WindowSampler, load_corpus, train_validation_split
from megaspec.generate import generate, generate_text
from megaspec.training import (
    MODEL_PRESETS,
    TrainSettings,
    build_model,
    learning_rate_at,
    load_trained_model,
    train,
)

TINY_CLI_ARGUMENTS = [
    "--model", "tiny", "--steps", "3", "--batch-size", "4", "--seq-length", "32",
    "--eval-interval", "2", "--sample-tokens", "16", "--seed", "3", "--no-progress",
]  # fmt: skip


def test_corpus_is_bundled_licensed_text_without_machine_paths() -> None:
    corpus = load_corpus()
    assert 300_000 <= len(corpus.encode("utf-8")) <= 600_000
    assert "PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2" in corpus
    assert "Python Library Documentation: module argparse" in corpus
    for machine_specific in ("/root/", "site-packages", "\nFILE\n", "MODULE REFERENCE", " at 0x"):
        assert machine_specific not in corpus


@pytest.mark.skipif(
    sys.version_info[:3] != (3, 11, 7), reason="pydoc text differs between Python releases"
)
def test_bundled_corpus_is_what_the_build_script_makes(tmp_path: Path) -> None:
    # A fresh interpreter, as documented: pydoc also shows attributes that caches add to
    # classes at run time (copyreg's __slotnames__ after a copy), so this process would not do.
    rebuilt = tmp_path / "corpus.txt"
    subprocess.run(
        [sys.executable, "-m", "megaspec.data.build_corpus", "--output", str(rebuilt)],
        check=True, capture_output=True,
    )  # fmt: skip
    assert rebuilt.read_text(encoding="utf-8") == load_corpus()


def test_tokenizer_round_trips_the_corpus() -> None:
    tokenizer = ByteTokenizer()
    sample = load_corpus()[:20_000] + " Fran\u00e7ois, \u4e2d\u6587, \U0001f600"
    ids = tokenizer.encode(sample)
    assert all(0 <= token < tokenizer.vocab_size for token in ids)
    assert tokenizer.decode(ids) == sample
    as_tensor = tokenizer.encode_tensor(sample)
    assert as_tensor.dtype == torch.int64 and as_tensor.tolist() == ids
    assert tokenizer.decode(as_tensor) == sample
    # A model can emit a broken multi-byte sequence; decoding must not raise.
    assert tokenizer.decode([0xE4, 0x41]) == "\ufffdA"
    with pytest.raises(ValueError, match="byte ids"):
        tokenizer.decode([256])


def test_sampler_gives_shifted_reproducible_windows_and_a_held_out_tail() -> None:
    tokens = torch.arange(1000)
    train_windows, validation_windows = train_validation_split(tokens, 0.1)
    assert len(train_windows) == 900 and validation_windows.tokens[0].item() == 900
    inputs, labels = train_windows.sample(
        batch_size=8, seq_length=16, generator=torch.Generator().manual_seed(1)
    )
    assert inputs.shape == labels.shape == (8, 16)
    assert torch.equal(labels, inputs + 1)  # contiguous windows, labels shifted by one
    assert int(labels.max()) < 900
    again, _ = train_windows.sample(
        batch_size=8, seq_length=16, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(inputs, again)
    with pytest.raises(ValueError, match="needs at least 101 tokens"):
        validation_windows.sample(batch_size=1, seq_length=100, generator=torch.Generator())
    with pytest.raises(ValueError, match="1-D"):
        WindowSampler(torch.zeros(2, 2, dtype=torch.int64))


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    settings = TrainSettings(steps=100, warmup_steps=10, learning_rate=1e-3, min_learning_rate=1e-4)
    rates = [learning_rate_at(step, settings) for step in range(settings.steps)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(later <= earlier for earlier, later in zip(rates[9:], rates[10:]))
    assert rates[-1] == pytest.approx(1e-4)


def test_fifty_adamw_steps_on_the_bundled_text_lower_the_loss() -> None:
    assert not (torch.distributed.is_available() and torch.distributed.is_initialized())
    settings = TrainSettings(
        model=MODEL_PRESETS["tiny"], steps=50, batch_size=16, seq_length=64, warmup_steps=5,
        eval_interval=25, progress=False,
    )  # fmt: skip
    result = train(settings)
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
    config = json.loads((output / "config.json").read_text())
    assert config["model"] == dataclasses.asdict(MODEL_PRESETS["tiny"])
    assert config["training"]["steps"] == 3 and config["tokenizer"] == "byte"

    loaded, model_settings = load_trained_model(output)
    assert model_settings == MODEL_PRESETS["tiny"]
    # Training is seeded, so the settings main() trained with (from the CLI's own parser)
    # train the same weights again in-process.
    settings = dataclasses.replace(
        settings_from_arguments(build_parser().parse_args(argv)), output_dir=None
    )
    trained = train(settings).model.eval()
    input_ids = ByteTokenizer().encode_tensor("The Python Software Foundation").unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids), trained(input_ids))
    fresh = build_model(model_settings, seed=12345).eval()
    with torch.no_grad():
        assert not torch.equal(fresh(input_ids), trained(input_ids))


def test_cli_without_a_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "train" in capsys.readouterr().out


def test_cli_rejects_invalid_settings_with_a_named_field(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["train", "--steps", "0", "--no-progress"]) == 2
    assert "TrainSettings.steps must be positive" in capsys.readouterr().err


def test_generation_is_seeded_and_greedy_is_deterministic() -> None:
    model = build_model(MODEL_PRESETS["tiny"], seed=0)
    prompt = ByteTokenizer().encode_tensor("def ").unsqueeze(0)
    greedy = generate(model, prompt, max_new_tokens=8, context_length=6, temperature=0.0)
    assert greedy.shape == (1, 12) and torch.equal(greedy[:, :4], prompt)
    assert torch.equal(
        greedy, generate(model, prompt, max_new_tokens=8, context_length=6, temperature=0.0)
    )
    first = generate_text(model, "def ", max_new_tokens=20, context_length=16, seed=5)
    assert first.startswith("def ")
    assert first == generate_text(model, "def ", max_new_tokens=20, context_length=16, seed=5)
    assert model.training  # generation restores the mode it found
