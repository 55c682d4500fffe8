"""``megaspec merge``: fold an adapter run's adapters into its base and write the plain model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from megaspec.cli.convert import refuse_overwrite
from megaspec.finetune import BASE_FILE, merge_adapter_run
from megaspec.training import CONFIG_FILE, WEIGHTS_FILE

DESCRIPTION = (
    "Merge the adapters of an adapter run (the output directory of megaspec train --from DIR "
    f"with a peft: section) into its base model and write the result as a run directory "
    f"({WEIGHTS_FILE} and {CONFIG_FILE}, without peft:) that megaspec generate loads. The "
    "merge is safe: a non-finite merged weight is refused."
)


def add_merge_arguments(merge_parser: argparse.ArgumentParser) -> None:
    """The arguments of ``megaspec merge``."""
    option = merge_parser.add_argument
    option("run_dir", type=Path, metavar="ADAPTER_RUN_DIR",
           help="an adapter run directory written by megaspec train")
    option("--output-dir", type=Path, required=True, metavar="DIR",
           help="where to write the merged model")
    option("--base", type=Path, default=None, metavar="DIR",
           help=f"the base model directory (default: the one recorded in {BASE_FILE})")
    option("--overwrite", action="store_true", help="replace a non-empty output directory")


def run_merge(arguments: argparse.Namespace) -> int:
    """Run ``megaspec merge``; returns the exit code (2 for a refused input or output)."""
    try:
        refuse_overwrite(arguments.output_dir, arguments.overwrite)  # before loading anything
        target = merge_adapter_run(
            arguments.run_dir, arguments.output_dir, base=arguments.base, overwrite=arguments.overwrite
        )
    except (ValueError, OSError) as error:  # CheckpointError and ConfigError are ValueErrors
        print(f"megaspec merge: {error}", file=sys.stderr)
        return 2
    print(f"merged the adapters of {arguments.run_dir} into its base; wrote {WEIGHTS_FILE} and "
          f"{CONFIG_FILE} to {target}")  # fmt: skip
    return 0
