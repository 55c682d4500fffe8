"""The README's install reaches mypy: a user's file outside the repository is checked against
megaspec's Protocols (the editable install is a path entry mypy follows, not an import hook)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
EXAMPLE = REPOSITORY / "examples" / "custom_mixer.py"


def run_mypy(directory: Path, *files: str) -> subprocess.CompletedProcess[str]:
    """Strict mypy in ``directory``, seeing megaspec only as an installed package."""
    environment = {key: value for key, value in os.environ.items() if key not in ("MYPYPATH", "PYTHONPATH")}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--no-error-summary", *files],
        cwd=directory, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_mypy_checks_a_users_file_outside_the_repository(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "my_mixer.py")
    source = (tmp_path / "my_mixer.py").read_text()
    # The same mixer without its sequence-parallel declaration must be a type error there.
    broken = source.replace("    handles_sequence_parallel = True\n", "")
    assert broken != source
    (tmp_path / "my_broken_mixer.py").write_text(broken)
    result = run_mypy(tmp_path, "my_mixer.py", "my_broken_mixer.py")
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert not any("my_mixer.py" in line for line in errors), result.stdout + result.stderr
    assert not any("import-not-found" in line or "import-untyped" in line for line in errors), errors
    assert len(errors) == 1, result.stdout
    assert errors[0].startswith("my_broken_mixer.py:")
    assert 'expected "MixerBuilder"' in errors[0]
