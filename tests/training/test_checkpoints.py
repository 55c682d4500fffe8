"""Training checkpoints of `megaspec train` (megaspec.training.checkpoints): a run killed with
SIGKILL resumes to exactly the uninterrupted run's losses, a non-finite step leaves the last
good checkpoint loadable, and what --resume refuses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from megaspec.checkpoint import latest_checkpoint, load_training_checkpoint
from megaspec.cli import main
from megaspec.config import RunConfig, load
from megaspec.parallel import ParallelGroups
from megaspec.training import build_model, make_optimizer

REPOSITORY = Path(__file__).resolve().parents[2]
# Steps of ~0.1 s on one thread: the killed run is still stepping when its first checkpoint
# appears, so the kill lands between checkpoints.
RUN = [
    "train", "--preset", "tiny", "--steps", "8", "--batch-size", "64", "--seq-length", "128",
    "--sample-tokens", "0", "--no-progress", "--threads", "1", "training.eval_batches=1",
    "training.eval_interval=4", "training.checkpoint_interval=3",
]  # fmt: skip


def step_losses(output: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return {line["step"]: line["loss"] for line in lines if "loss" in line}


def test_a_run_killed_after_a_checkpoint_resumes_to_exactly_the_uninterrupted_losses(tmp_path: Path) -> None:
    assert main([*RUN, "--output-dir", str(tmp_path / "whole")]) == 0
    uninterrupted = step_losses(tmp_path / "whole")
    output = tmp_path / "killed"
    command = [sys.executable, "-m", "megaspec", *RUN, "--output-dir", str(output)]
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (output / "checkpoints" / "step-00000003").is_dir():
            assert process.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL
    checkpoint = latest_checkpoint(output / "checkpoints")
    assert checkpoint is not None
    resumed_at = int(checkpoint.name.removeprefix("step-"))
    assert resumed_at in (3, 6)  # the run was killed before its end
    result = subprocess.run([*command, "--resume"], env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"resuming from {checkpoint}\n")
    resumed = step_losses(output)
    assert list(resumed) == list(range(1, 9))  # the killed run's steps after the checkpoint are gone
    assert [resumed[step] for step in range(resumed_at + 1, 9)] == [
        uninterrupted[step] for step in range(resumed_at + 1, 9)
    ]
    assert sorted(path.name for path in (output / "checkpoints").iterdir()) == ["step-00000003", "step-00000006"]


def test_a_non_finite_step_leaves_the_last_good_checkpoint_loadable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "run"
    huge = ["--steps", "20", "--batch-size", "2", "--seq-length", "16", "--learning-rate", "1e6",
            "training.warmup_steps=0", "training.checkpoint_interval=1", "training.keep_checkpoints=1"]  # fmt: skip
    assert main([*RUN, *huge, "--output-dir", str(output)]) == 1
    finite_steps = len(step_losses(output))
    assert capsys.readouterr().err.startswith(f"megaspec train: step {finite_steps + 1}: the ")
    checkpoint = latest_checkpoint(output / "checkpoints")
    assert checkpoint is not None and checkpoint.name == f"step-{finite_steps:08d}"
    run = load(RunConfig, checkpoint / "config.yaml")
    model = build_model(run)
    state = load_training_checkpoint(
        checkpoint, model=model, optimizer=make_optimizer(model, run.training), run=run,
        groups=ParallelGroups.single(),
    )  # fmt: skip
    assert state.step == finite_steps
    assert all(torch.isfinite(parameter).all() for parameter in model.parameters())


def test_resume_refuses_a_directory_without_checkpoints_and_another_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "run"
    quick = [*RUN, "--steps", "2", "--batch-size", "2", "--seq-length", "16", "--output-dir", str(output)]
    assert main([*quick, "training.checkpoint_interval=null", "--resume"]) == 2
    assert capsys.readouterr().err == (
        f"megaspec train: --resume: no complete checkpoint in {output / 'checkpoints'} (set "
        "training.checkpoint_interval, or stop a run with Ctrl-C, to make one)\n"
    )
    assert main([*quick, "training.checkpoint_interval=1"]) == 0
    capsys.readouterr()
    assert main([*quick, "--steps", "3", "--resume", "model.decoder.num_blocks=1"]) == 2
    assert capsys.readouterr().err == (
        "megaspec train: --resume model.decoder.num_blocks=1: no such checkpoint directory; put "
        "overrides before --resume\n"
    )
    assert main([*quick, "--steps", "3", "model.decoder.num_blocks=1", "--resume"]) == 2
    checkpoint = output / "checkpoints" / "step-00000002"
    assert capsys.readouterr().err == (
        f"megaspec train: {checkpoint}: saved for another architecture: model.decoder.num_blocks "
        "is 2 in the checkpoint, 1 in the model being loaded\n"
    )
    assert main([*quick, "--steps", "3", "--seed", "5", "--resume"]) == 2
    assert capsys.readouterr().err == (
        f"megaspec train: {checkpoint}: its data position counts other batches: training.seed "
        "is 0 in the checkpoint, 5 now\n"
    )
    assert main([*quick, "--resume", str(checkpoint)]) == 2
    assert capsys.readouterr().err == (
        f"megaspec train: {checkpoint}: nothing to resume: its 2 steps reach training.steps (2)\n"
    )
