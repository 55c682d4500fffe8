"""``megaspec inspect``: what a run config builds, without building its weights."""

from __future__ import annotations

import argparse
import sys

from megaspec.cli.run_config import add_run_config_arguments, run_from_arguments
from megaspec.inspection import describe_run

DESCRIPTION = (
    "Show what a run config builds: the module in every slot (per block config), parameter "
    "counts per block config, each parameter's tensor-parallel sharding (rank 0) and the "
    "explicitly set config fields. The model is built on the meta device, so any size is "
    "described in seconds with no memory. The config is resolved as for `megaspec train`."
)


def add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``megaspec inspect``."""
    add_run_config_arguments(parser)
    parser.add_argument(
        "--tensor-parallel-size", type=int, default=None, metavar="K",
        help="show rank 0's shards at this size: the override parallel.tensor_parallel_size=K, "
        "so the config's own checks (heads, KV groups, MLP width) apply",
    )  # fmt: skip


def run_inspect(arguments: argparse.Namespace) -> int:
    """Run ``megaspec inspect``; returns the exit code (2 for a bad config or size)."""
    if arguments.tensor_parallel_size is not None:
        arguments.overrides.append(f"parallel.tensor_parallel_size={arguments.tensor_parallel_size}")
    try:
        report = describe_run(run_from_arguments(arguments))
    except (ValueError, OSError) as error:  # ConfigError is a ValueError
        print(f"megaspec inspect: {error}", file=sys.stderr)
        return 2
    print(report)
    return 0
