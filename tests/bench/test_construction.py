"""``python bench/construction.py --small`` runs, measuring the old code (from git) and this
tree in fresh processes, and prints one row per code and size with time and peak memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]


def test_small_construction_bench_reports_every_code_and_size() -> None:
    result = subprocess.run(
        [sys.executable, "bench/construction.py", "--small", "--sizes", "2", "--threads", "1"],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [cells[0].strip() for cells in rows[2:]] == ["before", "after (meta)", "after (eager)"] 
    for cells in rows[2:]:
        peak, shard, target = float(cells[5]), float(cells[7]), float(cells[8])
        assert 0 < peak and 0 <= shard and abs(target - (shard + 1.0)) < 0.0015
        assert cells[9].strip() in ("yes", "no")
