"""init_parallel under torchrun (process group from the environment): FSDP2 over 2 ranks
trains like one process, and the job exits cleanly."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

REPOSITORY = Path(__file__).resolve().parents[2]
LOSSES = re.compile(r"data-parallel size 2: losses (\[.*\])\none process: losses (\[.*\])")


def test_torchrun_data_parallel_matches_one_process() -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               "2", "-m", "tests.parallel.torchrun_data_parallel"]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPOSITORY)}
    result = subprocess.run(
        command, cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=180
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "terminate called" not in output, output
    match = LOSSES.search(result.stdout)
    assert match is not None, output
    parallel, single = (torch.tensor(ast.literal_eval(text)) for text in match.groups())
    torch.testing.assert_close(parallel, single, rtol=1e-5, atol=1e-6)
