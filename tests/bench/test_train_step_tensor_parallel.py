"""``torchrun --nproc-per-node 2 bench/train_step.py --small --tensor-parallel 2`` on CPU (gloo).

The TP=2 variant of the benchmark (issue 10) runs on two GPUs; here its driver is exercised on
two CPU processes: megaspec builds rank 0's shard with sequence parallelism and takes the TP=1
run's first loss, peers without a tensor-parallel build say so, and only rank 0 reports.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.config import SMALL
from tests.helpers.bench_runs import BenchRun, run_bench

ARGUMENTS = ["--small", "--only", "megaspec-eager,hf", "--steps", "2", "--warmup", "1"]
TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[BenchRun, BenchRun]:
    """(TP=2 under torchrun, TP=1 in one process) on the same config and seed."""
    folder = tmp_path_factory.mktemp("bench_tp")
    tp2 = run_bench("train_step.py", [*ARGUMENTS, "--tensor-parallel", "2"], folder / "tp2.json", TORCHRUN)
    return tp2, run_bench("train_step.py", ARGUMENTS, folder / "tp1.json")


def test_megaspec_at_tp2_takes_the_tp1_first_loss(runs: tuple[BenchRun, BenchRun]) -> None:
    tp2, tp1 = runs
    assert tp2.returncode == 0, tp2.output[-3000:]
    sharded, single = tp2.record["results"]["megaspec-eager"], tp1.record["results"]["megaspec-eager"]
    assert sharded["status"] == "ok"
    assert tp2.record["config"]["tensor_parallel"] == 2
    # Same seed, same full weights drawn on every rank: only bf16 rounding of the split sums differs.
    assert sharded["first_loss"] == pytest.approx(single["first_loss"], abs=1e-3)


def test_parameters_are_rank_0s_shard(runs: tuple[BenchRun, BenchRun]) -> None:
    tp2, _ = runs
    replicated = (2 * SMALL.num_layers + 1) * SMALL.hidden_size  # the RMSNorm weights
    shard = (SMALL.expected_parameters() - replicated) // 2 + replicated
    assert tp2.record["results"]["megaspec-eager"]["parameters"] == shard
    assert f"rank 0's shard of 2 (one framework): megaspec (eager) {shard:,}" in tp2.output


def test_peers_without_a_tensor_parallel_build_say_so(runs: tuple[BenchRun, BenchRun]) -> None:
    tp2, _ = runs
    expected = "not run: no tensor-parallel build (--tensor-parallel)"
    assert tp2.record["results"]["hf"]["status"] == expected


def test_only_rank_0_reports(runs: tuple[BenchRun, BenchRun]) -> None:
    tp2, _ = runs
    assert tp2.output.count("framework                    parameters") == 1


def test_tensor_parallel_without_torchrun_is_refused(tmp_path: Path) -> None:
    done = run_bench("train_step.py", [*ARGUMENTS, "--tensor-parallel", "2"], tmp_path / "r.json")
    assert done.returncode == 2
    assert (
        "--tensor-parallel 2 needs 2 processes, one per rank, and this is 1 (WORLD_SIZE): start it "
        "with torchrun --nproc-per-node 2 bench/train_step.py --tensor-parallel 2 ..."
    ) in done.output
    assert done.record == {}
