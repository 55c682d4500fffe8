#!/usr/bin/env python3
"""Construction cost: time and peak host memory to build a model and materialise one rank's
weights, before (every parameter drew its full weight) and after meta-device construction.

Shape: Llama-2-7B (32 layers, hidden 4096, 32 heads, MLP 11008, vocab 32000), weights in
bfloat16 on the CPU, as tensor-parallel rank 0 of each size (``ParallelGroups.layout_only``:
no processes; every rank does the same work). Each measurement runs in a fresh process:

* ``before``: eager construction by megaspec before meta construction (commit
  :data:`BEFORE_REVISION`, or ``--before-rev``), extracted with ``git archive``.
* ``after (meta)``: ``with torch.device("meta")`` construction, then ``materialize``.
* ``after (eager)``: eager construction by this tree, which draws only the shard too.

It reports wall seconds, the peak resident set (VmHWM) of the whole process and above its
resident set after imports, the shard's size, and the target: shard + 1 GiB. A size whose
shard does not fit in the machine's available memory (+ 3 GiB) is skipped, saying so.

Usage::

    python bench/construction.py                  # 7B shape, sizes 1 and 4 (minutes)
    python bench/construction.py --small          # a tiny shape, seconds (tests/bench)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
GIB = 1024**3
MODES = ("before", "after-meta", "after-eager")
LABELS = {"before": "before", "after-meta": "after (meta)", "after-eager": "after (eager)"}


@dataclass(frozen=True)
class Shape:
    """A Llama-style model shape."""

    num_layers: int
    hidden_size: int
    num_heads: int
    ffn_hidden_size: int
    vocab_size: int


LLAMA_2_7B = Shape(num_layers=32, hidden_size=4096, num_heads=32, ffn_hidden_size=11008, vocab_size=32000)
SMALL = Shape(num_layers=2, hidden_size=128, num_heads=4, ffn_hidden_size=352, vocab_size=512)


def _status_gib(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmHWM``, ``VmRSS``) in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / GIB
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(mode: str, shape: Shape, size: int, threads: int | None) -> dict[str, float]:
    """Build (and materialise) rank 0 of ``size`` in this process; its time and memory."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)

    from megaspec.backends import torch as torch_backend
    from megaspec.models import GPTModel
    from megaspec.parallel import ParallelGroups
    from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig

    config = TransformerConfig(
        hidden_size=shape.hidden_size, num_layers=shape.num_layers, params_dtype=torch.bfloat16
    )
    submodules = torch_backend.llama_submodules(
        AttentionConfig(num_heads=shape.num_heads), MlpConfig(ffn_hidden_size=shape.ffn_hidden_size),
        shape.num_layers,
    )
    groups = ParallelGroups.layout_only(size, 0)
    baseline = _status_gib("VmRSS")
    start = time.perf_counter()
    with torch.device("meta" if mode == "after-meta" else "cpu"):
        model = GPTModel(config=config, vocab_size=shape.vocab_size, submodules=submodules, groups=groups)
    built = time.perf_counter()
    if mode == "after-meta":
        from megaspec.parallel import materialize

        materialize(model, device="cpu")
    end = time.perf_counter()
    shard_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "build_s": built - start, "materialize_s": end - built, "total_s": end - start,
        "peak_gib": _status_gib("VmHWM"), "baseline_gib": baseline, "shard_gib": shard_bytes / GIB,
    }  # fmt: skip


# The last commit whose construction drew every full weight (float32, on the CPU) and kept
# its shard; the next one introduced shard-only draws and meta materialisation.
BEFORE_REVISION = "cda23deb9bc65a9d3e032e305d9607aee9c966a3"


@contextmanager
def before_tree(revision: str | None) -> Iterator[Path]:
    """A folder holding ``megaspec/`` as it was at ``revision`` (default: BEFORE_REVISION)."""
    if revision is None:
        revision = BEFORE_REVISION
    with tempfile.TemporaryDirectory(prefix="megaspec-before-") as folder:
        archive = Path(folder) / "before.tar"
        _git("archive", "--format=tar", f"--output={archive}", revision, "megaspec")
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
        yield Path(folder)


def _git(*arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=REPOSITORY, check=True, capture_output=True, text=True
    ).stdout.strip()


def _available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / GIB
    return float("inf")


def run_one(mode: str, size: int, options: argparse.Namespace, code: Path) -> dict[str, float]:
    """:func:`measure` in a fresh process importing megaspec from ``code``."""
    command = [sys.executable, str(Path(__file__).resolve()), "--measure", mode, "--size", str(size)]
    command += ["--small"] if options.small else []
    command += [] if options.threads is None else ["--threads", str(options.threads)]
    environment = {**os.environ, "PYTHONPATH": str(code)}
    result = subprocess.run(command, env=environment, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{mode} at size {size} failed:\n{result.stderr[-3000:]}")
    measured: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return measured


def _row(label: str, size: int, result: dict[str, float]) -> str:
    target = result["shard_gib"] + 1.0
    verdict = "yes" if result["peak_gib"] <= target else "no"
    return (
        f"| {label} | {size} | {result['build_s']:.1f} | {result['materialize_s']:.1f} | "
        f"{result['total_s']:.1f} | {result['peak_gib']:.3f} | "
        f"{result['peak_gib'] - result['baseline_gib']:.3f} | {result['shard_gib']:.3f} | "
        f"{target:.3f} | {verdict} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="a tiny shape (smoke test)")
    parser.add_argument("--sizes", default="1,4", help="tensor-parallel sizes, rank 0 of each (%(default)s)")
    parser.add_argument("--before-rev", default=None, help=f"git revision of 'before' ({BEFORE_REVISION[:10]})")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--measure", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=1, help=argparse.SUPPRESS)
    options = parser.parse_args()
    shape = SMALL if options.small else LLAMA_2_7B
    if options.measure is not None:
        print(json.dumps(measure(options.measure, shape, options.size, options.threads)))
        return
    threads = "torch's default" if options.threads is None else options.threads
    print(f"shape {shape}, bfloat16 weights on the CPU, rank 0 of each tensor-parallel size, threads: {threads}")
    print(
        "| code | TP | build s | materialise s | total s | peak GiB | above imports GiB "
        "| shard GiB | target GiB | within |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with before_tree(options.before_rev) as before:
        for size in (int(text) for text in options.sizes.split(",")):
            # bf16 weights, 2 bytes for each of ~6.8e9 / size parameters, and room to spare.
            needed = 2 * 6.8e9 / size / GIB + 3 if not options.small else 0
            if _available_gib() < needed:
                print(f"| (size {size} skipped: {needed:.1f} GiB needed, {_available_gib():.1f} GiB available) |")
                continue
            for mode in MODES:
                code = before if mode == "before" else REPOSITORY
                print(_row(LABELS[mode], size, run_one(mode, size, options, code)), flush=True)


if __name__ == "__main__":
    main()
