"""What a result was measured on: the machine, the package versions, the command line.

Everything here is best effort: a value that cannot be found is ``None``, never an error.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

REPOSITORY = Path(__file__).resolve().parent.parent

# Distribution names as pip knows them; the first one installed gives the version.
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "transformers": ("transformers",),
    "megatron-core": ("megatron-core",),
    "transformer-engine": ("transformer-engine", "transformer-engine-cu13", "transformer-engine-cu12"),
    "liger-kernel": ("liger-kernel",),
    "triton": ("triton",),
}


def command_line() -> str:
    """The command as typed, interpreter and options included (``sys.orig_argv``)."""
    return shlex.join(sys.orig_argv)


def _output_of(command: list[str], cwd: Path | None = None) -> str | None:
    """A command's stripped stdout, or ``None`` if it is missing or fails."""
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def gpu_slug(device: torch.device) -> str:
    """A file-name part for the accelerator: ``h100-80gb-hbm3``, ``2x-h200``, ``cpu``."""
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device).lower().replace("nvidia", "")
    slug = "-".join("".join(c if c.isalnum() else " " for c in name).split())
    count = torch.cuda.device_count()
    return f"{count}x-{slug}" if count > 1 else slug


def _cudnn_version() -> int | None:
    # torch leaves both cudnn functions unannotated.
    if not torch.backends.cudnn.is_available():  # type: ignore[no-untyped-call]
        return None
    version: int | None = torch.backends.cudnn.version()  # type: ignore[no-untyped-call]
    return version


def machine(device: torch.device) -> dict[str, object]:
    """The machine: CPU count, platform and, on CUDA, GPU name, count, memory, driver and CUDA."""
    info: dict[str, object] = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "device": str(device),
        "gpu": None,
        "gpu_count": 0,
        "gpu_memory_gib": None,
        "gpu_capability": None,
        "driver_version": None,
        "cuda_version": torch.version.cuda,
        "cudnn_version": _cudnn_version(),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        driver = _output_of(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        info.update(
            gpu=properties.name,
            gpu_count=torch.cuda.device_count(),
            gpu_memory_gib=round(properties.total_memory / 2**30, 2),
            gpu_capability=f"{properties.major}.{properties.minor}",
            driver_version=driver.splitlines()[0] if driver else None,
        )
    return info


def distribution_version(names: tuple[str, ...]) -> str | None:
    """The version of the first of ``names`` (pip distribution names) installed, else ``None``."""
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def megaspec_source() -> dict[str, object]:
    """megaspec's git commit (``MEGASPEC_COMMIT`` if set, else ``git``), and a hash of its code.

    The device machine gets a copy of the working tree without ``.git``; the SHA-256 over
    ``megaspec/**/*.py`` and ``bench/**/*.py`` still tells whether two runs measured the same code.
    """
    digest = hashlib.sha256()
    for path in sorted([*REPOSITORY.glob("megaspec/**/*.py"), *REPOSITORY.glob("bench/**/*.py")]):
        digest.update(path.relative_to(REPOSITORY).as_posix().encode() + b"\0" + path.read_bytes())
    commit = os.environ.get("MEGASPEC_COMMIT") or _output_of(["git", "rev-parse", "HEAD"], REPOSITORY)
    status = _output_of(["git", "status", "--porcelain", "--", "megaspec", "bench"], REPOSITORY)
    return {
        "git_commit": commit,
        "git_dirty": None if commit is None or "MEGASPEC_COMMIT" in os.environ else status is not None,
        "source_sha256": digest.hexdigest(),
    }


def versions() -> dict[str, object]:
    """Python, torch, each peer's package (``None`` if not installed) and megaspec's source."""
    found: dict[str, object] = {"python": platform.python_version(), "torch": torch.__version__}
    for key, names in DISTRIBUTIONS.items():
        found[key] = distribution_version(names)
    found["megaspec"] = megaspec_source()
    return found
