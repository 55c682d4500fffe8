"""Running a bench script as its smoke tests do: a subprocess on the CPU with a JSON record."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class BenchRun:
    """A finished bench run: exit status, printed output, JSON record (``{}`` if none)."""

    returncode: int
    output: str
    record: dict[str, Any]


def run_bench(script: str, arguments: list[str], record: Path, launcher: Sequence[str] = ()) -> BenchRun:
    """``python [LAUNCHER] bench/SCRIPT ARGUMENTS --json RECORD`` from the repository root
    (``launcher``: e.g. ``-m torch.distributed.run --nproc-per-node 2``)."""
    done = subprocess.run(
        [sys.executable, *launcher, f"bench/{script}", *arguments, "--json", str(record)],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    data = json.loads(record.read_text()) if record.exists() else {}
    return BenchRun(done.returncode, done.stdout + done.stderr, data)
