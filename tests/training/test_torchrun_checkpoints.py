"""Training checkpoints of ``megaspec train`` under torchrun (CPU ranks, gloo): a data x
tensor-parallel (FSDP) run killed with SIGKILL resumes to exactly the uninterrupted run's
losses, its checkpoints load, export and resume in one process (another layout), and SIGTERM
sent to torchrun or to one worker stops every rank with a final checkpoint that a DDP job
resumes (exactly, at the same layout)."""

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

from megaspec.checkpoint import export_consolidated, latest_checkpoint, load_training_checkpoint
from megaspec.cli import main
from megaspec.config import RunConfig, load
from megaspec.parallel import ParallelGroups
from megaspec.training import build_model, load_trained_model, make_optimizer

REPOSITORY = Path(__file__).resolve().parents[2]
STEPS = 8
# A validation forward before every checkpoint: FSDP's root is unsharded then, and the save
# must still write every rank's logical shards.
RUN = [
    "train", "--preset", "tiny", "--threads", "1", "--steps", str(STEPS), "--batch-size", "8",
    "--seq-length", "64", "--sample-tokens", "0", "--no-progress", "training.eval_batches=1",
    "training.eval_interval=2", "training.checkpoint_interval=2",
]  # fmt: skip
DATA_X_TENSOR = ["--tensor-parallel-size", "2"]  # with 4 processes: DP=2 x TP=2, FSDP
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]


def _environment() -> dict[str, str]:
    # torchrun's WORLD_SIZE must not leak from one job into the next.
    environment = {key: value for key, value in os.environ.items() if key != "WORLD_SIZE"}
    return environment | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPOSITORY)}


def _command(processes: int, output: Path, extra: list[str]) -> list[str]:
    return [*TORCHRUN, str(processes), "-m", "megaspec", *RUN, "--output-dir", str(output), *extra]


def _run(processes: int, output: Path, extra: list[str]) -> str:
    result = subprocess.run(_command(processes, output, extra), cwd=REPOSITORY, env=_environment(),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "terminate called" not in output, output  # a rank aborted at exit
    return result.stdout


def step_losses(output: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return {line["step"]: line["loss"] for line in lines if "loss" in line}


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (torchrun starts each worker in its own session,
    so killing torchrun's process group would leave them running)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _wait_for(path: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.002)


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted DP=2 x TP=2 run (checkpoints at steps 6 and 8 kept)."""
    output = tmp_path_factory.mktemp("whole")
    _run(4, output, DATA_X_TENSOR)
    return output


def test_a_killed_data_x_tensor_parallel_run_resumes_to_exactly_the_uninterrupted_losses(
    whole: Path, tmp_path: Path
) -> None:
    output = tmp_path / "killed"
    command = _command(4, output, DATA_X_TENSOR)
    process = subprocess.Popen(command, cwd=REPOSITORY, env=_environment(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_for(output / "checkpoints" / "step-00000002", process)
        workers = _children(process.pid)
        assert len(workers) == 4
        for pid in [*workers, process.pid]:  # every process of the job at once, as a lost node
            os.kill(pid, signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
    checkpoint = latest_checkpoint(output / "checkpoints")
    assert checkpoint is not None
    resumed_at = int(checkpoint.name.removeprefix("step-"))
    assert resumed_at < STEPS, "the run ended before it was killed"
    stdout = _run(4, output, [*DATA_X_TENSOR, "--resume"])
    assert stdout.startswith(f"resuming from {checkpoint}\n")
    resumed, uninterrupted = step_losses(output), step_losses(whole)
    assert list(resumed) == list(range(1, STEPS + 1))
    assert [resumed[step] for step in range(resumed_at + 1, STEPS + 1)] == [
        uninterrupted[step] for step in range(resumed_at + 1, STEPS + 1)
    ]
    # (A save the kill interrupted would have left a hidden staging directory: not counted.)
    kept = sorted(path.name for path in (output / "checkpoints").iterdir() if not path.name.startswith("."))
    assert kept == ["step-00000006", "step-00000008"]


def test_a_data_x_tensor_parallel_checkpoint_loads_and_exports_in_one_process(whole: Path, tmp_path: Path) -> None:
    checkpoint = whole / "checkpoints" / "step-00000008"
    saved_run = load(RunConfig, checkpoint / "config.yaml")
    assert saved_run.parallel.tensor_parallel_size == 2
    gathered, run = load_trained_model(whole)  # the model the job saved at its end, step 8
    model = build_model(run)
    state = load_training_checkpoint(checkpoint, model=model, optimizer=make_optimizer(model, run.training),
                                     run=run, groups=ParallelGroups.single())  # fmt: skip
    assert (state.step, state.rng_restored) == (STEPS, False)  # 4 ranks saved, 1 loads
    tokens = torch.randint(0, run.model.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), gathered(tokens), rtol=0, atol=1e-6)
    exported, _ = load_trained_model(export_consolidated(checkpoint, tmp_path / "exported"))
    for name, value in gathered.state_dict().items():
        assert torch.equal(exported.state_dict()[name], value), name


def test_one_process_resumes_a_data_x_tensor_parallel_checkpoint(whole: Path, tmp_path: Path) -> None:
    # Another layout: the optimizer state and data position carry over, the losses match to
    # float tolerance (the reductions run in another order).
    one = [*RUN[:-1], "training.checkpoint_interval=100"]
    assert main([*one, "--output-dir", str(tmp_path), "--resume", str(whole / "checkpoints" / "step-00000006")]) == 0
    resumed, uninterrupted = step_losses(tmp_path), step_losses(whole)
    assert list(resumed) == [7, 8]
    torch.testing.assert_close(torch.tensor([resumed[7], resumed[8]]),
                               torch.tensor([uninterrupted[7], uninterrupted[8]]), rtol=1e-5, atol=0)  # fmt: skip


def test_sigterm_to_torchrun_leaves_a_final_checkpoint_that_a_ddp_job_resumes(tmp_path: Path) -> None:
    # Too many steps to end before the signal; resuming runs two more.
    ddp = ["parallel.data_parallel_engine=ddp", "training.checkpoint_interval=1000"]
    process = subprocess.Popen(_command(2, tmp_path, [*ddp, "--steps", "1000"]), cwd=REPOSITORY,
                               env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        _wait_for(tmp_path / "metrics.jsonl", process)
        while not step_losses(tmp_path):  # a step done: every worker is in the loop
            assert process.poll() is None, "the run ended before SIGTERM"
            time.sleep(0.002)
        process.send_signal(signal.SIGTERM)  # torchrun forwards it to every worker
        _, errors = process.communicate(timeout=60)
    finally:
        process.kill()
    assert "stopped by SIGTERM" in errors.decode(), errors.decode()
    progress = json.loads((tmp_path / "progress.json").read_text())
    steps_done = progress["steps_done"]
    assert progress["stopped_by"] == "SIGTERM" and 1 <= steps_done < 1000
    checkpoint = latest_checkpoint(tmp_path / "checkpoints")
    assert checkpoint is not None and checkpoint.name == f"step-{steps_done:08d}"
    # The checkpoint holds the model saved at the stop.
    saved, _ = load_trained_model(tmp_path)
    exported, _ = load_trained_model(export_consolidated(checkpoint, tmp_path / "exported"))
    for name, value in saved.state_dict().items():
        assert torch.equal(exported.state_dict()[name], value), name
    stdout = _run(2, tmp_path, [*ddp, "--steps", str(steps_done + 2), "--resume"])
    assert stdout.startswith(f"resuming from {checkpoint}\n")
    assert list(step_losses(tmp_path)) == list(range(1, steps_done + 3))


def test_sigterm_to_one_worker_stops_every_rank_and_a_ddp_job_resumes_exactly(tmp_path: Path) -> None:
    # The other worker never sees the signal: it must still stop after the same step and join
    # the save (a rank saving alone would wait for it forever). A checkpoint every step: the
    # first one, resumed at the same layout, gives exactly the stopped run's next losses
    # (during the 20 warmup steps the rate does not depend on training.steps).
    ddp = ["parallel.data_parallel_engine=ddp", "training.checkpoint_interval=1",
           "training.keep_checkpoints=1000"]  # fmt: skip
    stopped = tmp_path / "stopped"
    process = subprocess.Popen(_command(2, stopped, [*ddp, "--steps", "1000"]), cwd=REPOSITORY,
                               env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        _wait_for(stopped / "metrics.jsonl", process)
        while len(step_losses(stopped)) < 2:
            assert process.poll() is None, "the run ended before SIGTERM"
            time.sleep(0.002)
        workers = _children(process.pid)
        assert len(workers) == 2
        os.kill(max(workers), signal.SIGTERM)
        _, errors = process.communicate(timeout=60)
    finally:
        process.kill()
    assert "stopped by SIGTERM" in errors.decode(), errors.decode()
    progress = json.loads((stopped / "progress.json").read_text())
    steps_done = progress["steps_done"]
    assert progress["stopped_by"] == "SIGTERM" and 2 <= steps_done < 20
    final = latest_checkpoint(stopped / "checkpoints")
    assert final == stopped / "checkpoints" / f"step-{steps_done:08d}"
    # Both ranks took part in the final save (each wrote its RNG state).
    assert sorted(path.name for path in (final / "rng").iterdir()) == ["rank-00000.bin", "rank-00001.bin"]
    resumed = tmp_path / "resumed"
    _run(2, resumed, [*ddp, "--steps", str(steps_done), "--resume", str(stopped / "checkpoints" / "step-00000001")])
    expected = step_losses(stopped)
    assert step_losses(resumed) == {step: expected[step] for step in range(2, steps_done + 1)}
