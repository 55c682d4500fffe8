"""`megaspec train` as a new user meets it: the output directory is checked before training
and a previous run is not overwritten silently, a non-finite loss stops the run without
saving, SIGINT / SIGTERM save the model so far, user mistakes are one-line errors (exit 2),
--import registers a user's mixer, --print-config and the training fields in --help."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import yaml

from megaspec.cli import main
from megaspec.config import TrainingConfig
from megaspec.training import load_trained_model

REPOSITORY = Path(__file__).resolve().parents[2]
QUICK = [
    "train", "--preset", "tiny", "--steps", "2", "--batch-size", "2", "--seq-length", "16",
    "--sample-tokens", "0", "--no-progress", "--threads", "1", "training.eval_batches=1",
]  # fmt: skip
"""A run of a few milliseconds: one thread is much faster than two on a busy two-core machine."""


def train_in(directory: Path, *arguments: str) -> int:
    return main([*QUICK, "--output-dir", str(directory), *arguments])


def metrics_lines(directory: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]


def test_an_output_directory_that_is_a_file_or_unwritable_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    assert train_in(a_file) == 2
    captured = capsys.readouterr()
    assert captured.err == f"megaspec train: output directory {a_file}: exists and is not a directory\n"
    assert captured.out == ""  # not even the "training ..." line: nothing ran
    assert train_in(a_file / "run") == 2
    assert capsys.readouterr().err == (
        f"megaspec train: output directory {a_file / 'run'}: cannot write there (Not a directory)\n"
    )


def test_a_previous_run_is_refused_unless_overwrite_and_other_files_are_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "run"
    output.mkdir()
    (output / "notes.txt").write_text("mine")  # not a run file: the directory is usable
    assert train_in(output) == 0
    assert sorted(path.name for path in output.iterdir()) == [
        "config.yaml", "metrics.jsonl", "model.safetensors", "notes.txt", "progress.json"
    ]  # fmt: skip
    assert json.loads((output / "progress.json").read_text()) == {
        "steps_done": 2, "steps": 2, "stopped_by": None
    }  # fmt: skip
    lines = metrics_lines(output)
    assert [sorted(line) for line in lines] == [
        ["grad_norm", "learning_rate", "loss", "step", "tokens_per_second"]
    ] * 2 + [["step", "validation_loss"]]
    assert [line["step"] for line in lines] == [1, 2, 2]
    weights = (output / "model.safetensors").read_bytes()
    capsys.readouterr()

    assert train_in(output, "--seed", "5") == 2
    assert capsys.readouterr().err == (
        f"megaspec train: output directory {output}: holds a previous run (config.yaml, "
        f"metrics.jsonl, model.safetensors, progress.json); pass --overwrite to replace it, or "
        f"choose another --output-dir\n"
    )
    assert (output / "model.safetensors").read_bytes() == weights
    assert train_in(output, "--seed", "5", "--overwrite") == 0
    assert (output / "model.safetensors").read_bytes() != weights
    assert (output / "notes.txt").read_text() == "mine"


def test_a_non_finite_loss_stops_with_exit_1_and_keeps_the_previous_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "run"
    assert train_in(output) == 0
    weights, config = (output / "model.safetensors").read_bytes(), (output / "config.yaml").read_text()
    capsys.readouterr()
    # An absurd peak rate with no warmup: the weights blow up within a few steps.
    huge = ["--overwrite", "--steps", "20", "--learning-rate", "1e6", "training.warmup_steps=0"]
    assert train_in(output, *huge) == 1
    error = capsys.readouterr().err
    step = len(metrics_lines(output)) + 1  # the lines written are the finite steps before
    assert step > 1
    assert error.startswith(f"megaspec train: step {step}: the ")
    assert error.endswith(
        " is nan; stopped training without saving (a smaller training.learning_rate or "
        f"training.grad_clip may help); metrics.jsonl in {output} has the steps before\n"
    )
    assert (output / "model.safetensors").read_bytes() == weights
    assert (output / "config.yaml").read_text() == config


def test_an_infinite_learning_rate_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*QUICK, "--learning-rate", "inf"]) == 2
    assert capsys.readouterr().err == "megaspec train: training.learning_rate: must be finite, got inf\n"


def wait_for_a_step(metrics: Path) -> None:
    """Return once ``metrics`` has a line: the run is stepping (its signal handlers are set)."""
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text()):
        assert time.monotonic() < deadline, "the run never stepped"
        time.sleep(0.02)


def check_stopped_run(output: Path, stderr: str, name: str) -> None:
    steps_done = sum("loss" in line for line in metrics_lines(output))
    assert stderr.endswith(
        f"megaspec train: stopped by {name} after {steps_done} of 100000 steps; saved the model "
        f"so far to {output} (progress.json records the steps done) and a checkpoint to --resume "
        f"from\n"
    )
    assert (output / "checkpoints" / f"step-{steps_done:08d}" / "manifest.json").is_file()
    assert "Traceback" not in stderr
    assert json.loads((output / "progress.json").read_text()) == {
        "steps_done": steps_done, "steps": 100000, "stopped_by": name
    }  # fmt: skip
    model, run = load_trained_model(output)
    assert run.training.steps == 100000
    assert all(torch.isfinite(parameter).all() for parameter in model.parameters())


def test_ctrl_c_stops_a_real_process_after_the_current_step_and_saves_the_model_so_far(
    tmp_path: Path,
) -> None:
    output = tmp_path / "run"
    command = [sys.executable, "-m", "megaspec", *QUICK, "--steps", "100000", "--output-dir", str(output)]
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_a_step(output / "metrics.jsonl")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()  # a no-op once it has exited
    assert process.returncode == 130, stderr
    check_stopped_run(output, stderr, "SIGINT")
    steps_done = json.loads((output / "progress.json").read_text())["steps_done"]
    # The checkpoint resumes; a shorter training.steps ends the run two steps later.
    assert train_in(output, "--resume", "--steps", str(steps_done + 2)) == 0
    assert [line["step"] for line in metrics_lines(output) if "loss" in line] == list(range(1, steps_done + 3))
    assert json.loads((output / "progress.json").read_text())["steps_done"] == steps_done + 2


def test_sigterm_stops_after_the_current_step_with_exit_143(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # In this process (no start-up cost): a thread sends the signal once stepping has begun;
    # the handler runs in the main thread, which is training.
    output = tmp_path / "run"

    def terminate_when_stepping() -> None:
        wait_for_a_step(output / "metrics.jsonl")
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=terminate_when_stepping, daemon=True)
    sender.start()
    assert train_in(output, "--steps", "100000") == 143
    sender.join()
    check_stopped_run(output, capsys.readouterr().err, "SIGTERM")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was removed


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_an_unavailable_device_is_an_error_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train_in(tmp_path / "run", "--device", "cuda") == 2
    assert capsys.readouterr().err == (
        "megaspec train: --device cuda: this torch cannot use it (Torch not compiled with CUDA enabled)\n"
    )
    assert not (tmp_path / "run").exists()


def test_a_yaml_file_that_is_not_utf8_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("# café\ntraining: {steps: 2}\n".encode("latin-1"))
    assert main([*QUICK, "-c", str(latin1)]) == 2
    assert capsys.readouterr().err == (
        f"megaspec train: {latin1}: not UTF-8 text (byte 0xe9 at offset 5); save the YAML file as UTF-8\n"
    )


def test_import_registers_a_users_mixer_for_the_config(tmp_path: Path) -> None:
    # A fresh process, so that no registration made by another test is there; main() runs
    # three times in it, without and with --import.
    hybrid = ["-c", "examples/configs/hybrid.yaml", *QUICK[3:], "--output-dir", str(tmp_path / "run")]
    script = (
        "import sys; from megaspec.cli import main; hybrid = sys.argv[1:]\n"
        "print(main(['train', *hybrid]), main(['train', *hybrid, '--import', 'examples.nope']),"
        " main(['train', *hybrid, '--import', 'examples.yaml_model']))"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    result = subprocess.run(
        [sys.executable, "-c", script, *hybrid],
        cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "2 2 0"
    assert result.stderr == (
        "megaspec train: model.decoder.blocks.conv.mixer.type: unknown type 'conv'; valid names: "
        "attention, te_attention\nmegaspec train: --import examples.nope: no module named "
        "'examples.nope'\n"
    )
    assert "trained 2 steps" in result.stdout and "mixer=CausalConvMixer" in result.stdout


def test_print_config_prints_every_field_and_trains_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train_in(tmp_path / "run", "--print-config", "training.gradient_accumulation_steps=2") == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert set(printed) == {"model", "parallel", "training", "peft"}
    assert printed["training"] == {
        **{field.name: field.default for field in fields(TrainingConfig)},
        "steps": 2, "batch_size": 2, "sequence_length": 16, "eval_batches": 1,
        "gradient_accumulation_steps": 2,
        "data": {"path": None, "format": "text", "text_field": "text"},
    }  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_help_lists_every_training_field_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for field in fields(TrainingConfig):
        default = "null" if field.default is None else field.default
        if field.name != "data":
            assert f"\n  {field.name} ({default}): " in text
    assert "\n  data ({format: text, path: null, text_field: text}): the documents to train on" in text
    assert "  learning_rate (0.003): peak AdamW learning rate, reached linearly over warmup_steps" in text
    assert "  130  stopped by SIGINT (Ctrl-C) after the current step; the model so far is saved" in text
