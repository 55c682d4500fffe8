"""``megaspec train`` under torchrun (2 CPU ranks, gloo) trains with the losses of one
process on the same global batches, data or tensor parallel, and saves a model that loads
in one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from megaspec.training import load_trained_model

REPOSITORY = Path(__file__).resolve().parents[2]
TINY_RUN = ["train", "--preset", "tiny", "--threads", "1", "--steps", "4", "--sample-tokens", "0",
            "--no-progress"]  # fmt: skip
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]


def _train(output_dir: Path, *, launcher: list[str], extra: list[str], base: Path | None = None) -> list[float]:
    """Run ``megaspec train`` tiny (or ``--from base``) into ``output_dir``; its training
    losses by step."""
    start = TINY_RUN if base is None else ["train", "--from", str(base), *TINY_RUN[3:]]
    command = [*launcher, "-m", "megaspec", *start, "--output-dir", str(output_dir), *extra]
    # torchrun's WORLD_SIZE must not leak into the one-process run, nor ours into torchrun's.
    environment = {key: value for key, value in os.environ.items() if key != "WORLD_SIZE"}
    environment |= {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPOSITORY)}
    result = subprocess.run(
        command, cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "terminate called" not in output, output
    lines = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return [line["loss"] for line in lines if "loss" in line]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    directory = tmp_path_factory.mktemp("one_process")
    return directory, _train(directory, launcher=[sys.executable], extra=[])


@pytest.mark.parametrize(
    ("processes", "extra"),
    [
        (2, []),
        (2, ["parallel.data_parallel_engine=ddp"]),
        (2, ["--tensor-parallel-size", "2"]),
        # FSDP's root keeps its parameters unsharded after the last (validation) forward;
        # the gathered model must still hold the full vocabulary rows of every TP rank.
        (4, ["--tensor-parallel-size", "2"]),
    ],
    ids=["data-parallel-fsdp", "data-parallel-ddp", "tensor-parallel", "data-x-tensor-parallel-fsdp"],
)
def test_torchrun_train_matches_one_process(
    processes: int, extra: list[str], one_process: tuple[Path, list[float]], tmp_path: Path
) -> None:
    single_dir, single_losses = one_process
    losses = _train(tmp_path, launcher=[*TORCHRUN, str(processes)], extra=extra)
    assert len(losses) == 4
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(single_losses), rtol=1e-5, atol=0)
    parallel_model, run = load_trained_model(tmp_path)  # gathered into one process's layout
    single_model, _ = load_trained_model(single_dir)
    assert run.parallel.tensor_parallel_size == 1
    for parallel, single in zip(parallel_model.parameters(), single_model.parameters(), strict=True):
        torch.testing.assert_close(parallel, single, rtol=1e-4, atol=1e-5)


def test_tensor_parallel_without_torchrun_is_refused(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "megaspec", *TINY_RUN, "--output-dir", str(tmp_path),
               "--tensor-parallel-size", "2"]  # fmt: skip
    environment = {key: value for key, value in os.environ.items() if key != "WORLD_SIZE"}
    environment["PYTHONPATH"] = str(REPOSITORY)
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "torchrun" in result.stderr


def test_torchrun_train_from_a_trained_model_matches_one_process(
    one_process: tuple[Path, list[float]], tmp_path: Path
) -> None:
    base, _ = one_process
    single = _train(tmp_path / "single", launcher=[sys.executable], extra=[], base=base)
    parallel = _train(tmp_path / "parallel", launcher=[*TORCHRUN, "4"], extra=["--tensor-parallel-size", "2"], base=base)
    torch.testing.assert_close(torch.tensor(parallel), torch.tensor(single), rtol=1e-5, atol=0)


def test_torchrun_refuses_adapter_training(one_process: tuple[Path, list[float]], tmp_path: Path) -> None:
    base, _ = one_process
    command = [*TORCHRUN, "2", "-m", "megaspec", "train", "--from", str(base), *TINY_RUN[3:],
               "--output-dir", str(tmp_path), "peft={type: lora, rank: 4}"]  # fmt: skip
    environment = {key: value for key, value in os.environ.items() if key != "WORLD_SIZE"}
    environment |= {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPOSITORY)}
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert (
        "megaspec train: multi-process (torchrun) runs do not train adapters (peft:) yet; train "
        "the adapter in one process (megaspec train --from DIR without torchrun), or drop peft: "
        "to train every weight"
    ) in result.stderr
    assert not (tmp_path / "metrics.jsonl").exists()
