"""The README's torchrun script: equal losses at TP=2 and in one process, and a clean exit
every time (a process group alive at interpreter exit made gloo abort about half the runs)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
RUNS = 5
LOSSES = re.compile(r"tensor-parallel size 2: loss (\S+); one process: loss (\S+)")


def test_torchrun_script_matches_one_process_and_exits_cleanly_every_time() -> None:
    # --standalone: a local rendezvous on a free port, so runs never collide.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               "2", "-m", "examples.tensor_parallel"]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    for run in range(RUNS):
        result = subprocess.run(
            command, cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=120
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"run {run}: exit code {result.returncode}\n{output}"
        assert "terminate called" not in output, f"run {run}\n{output}"
        match = LOSSES.search(result.stdout)
        assert match is not None, output
        parallel, single = float(match[1]), float(match[2])
        assert math.isclose(parallel, single, abs_tol=1e-5), (parallel, single)
