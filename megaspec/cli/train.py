"""``megaspec train``: train a small Llama-style byte-level model on the bundled text (about two
minutes on two CPU cores with the defaults), save it and print a generated sample.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from megaspec.cli.run_config import add_run_config_arguments, run_from_arguments
from megaspec.config import ConfigError
from megaspec.generate import generate_text
from megaspec.training import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    TrainResult,
    configure_threads,
    train,
)

SAMPLE_TEMPERATURE = 0.8
SAMPLE_TOP_K = 40
DEFAULT_OUTPUT_DIR = Path("runs/train")
DESCRIPTION = (
    "Train a small Llama-style byte-level model on the bundled text (Python's licence and "
    "standard-library documentation), save model.safetensors and config.yaml, and print a "
    "generated sample. The run config is the --preset model, then the -c files in order, then "
    "the convenience flags, then the OVERRIDEs in order; later layers override earlier ones."
)


def add_train_arguments(train_parser: argparse.ArgumentParser) -> None:
    """The arguments of ``megaspec train``."""
    add_run_config_arguments(train_parser)
    option = train_parser.add_argument
    option("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR, metavar="DIR",
           help=f"directory for {WEIGHTS_FILE} and {CONFIG_FILE} (%(default)s)")
    option("--device", default="cpu", metavar="DEVICE",
           help="torch device, e.g. cuda (%(default)s)")
    option("--threads", type=int, default=None, metavar="N",
           help="CPU threads (default: every core this process may use)")
    option("--prompt", default="Return the ", metavar="TEXT",
           help="start of the sample (%(default)r)")
    option("--sample-tokens", type=int, default=200, metavar="N",
           help="bytes to generate after training, 0 for none (%(default)s)")
    option("--no-progress", action="store_true", help="hide the progress bar")


def _check_arguments(arguments: argparse.Namespace) -> None:
    """Checks of the arguments that are not part of the run config, before training."""
    try:
        torch.device(arguments.device)
    except RuntimeError as error:
        raise ValueError(f"--device: {error}") from None
    if arguments.sample_tokens > 0 and not arguments.prompt:
        raise ValueError("--prompt must not be empty when --sample-tokens is positive")


def run_train(arguments: argparse.Namespace) -> int:
    """Run ``megaspec train``; returns the exit code (2 for a bad config or argument)."""
    try:
        run = run_from_arguments(arguments)
        _check_arguments(arguments)
        threads = configure_threads(arguments.threads)
    except (ValueError, OSError) as error:  # ConfigError is a ValueError
        print(f"megaspec train: {error}", file=sys.stderr)
        return 2
    training = run.training
    print(f"training the {arguments.preset!r} preset"
          f"{''.join(f' + {path}' for path in arguments.config)} for {training.steps} steps of "
          f"{training.batch_size} x {training.sequence_length} tokens on {arguments.device} "
          f"({threads} CPU threads)")  # fmt: skip
    try:
        result = train(
            run,
            device=arguments.device,
            output_dir=arguments.output_dir,
            progress=not arguments.no_progress,
        )
    except ConfigError as error:  # raised before the first step
        print(f"megaspec train: {error}", file=sys.stderr)
        return 2
    _report(result, arguments)
    return 0


def _report(result: TrainResult, arguments: argparse.Namespace) -> None:
    losses = result.losses
    tail = losses[-min(10, len(losses)):]
    print(result.model.summary())
    print(f"trained {len(losses)} steps in {result.seconds:.1f} s at "
          f"{result.tokens_per_second:,.0f} tokens/s: loss {losses[0]:.3f} -> {losses[-1]:.3f} "
          f"(mean of last {len(tail)}: {sum(tail) / len(tail):.3f}), "
          f"validation {result.validation_losses[-1][1]:.3f}")  # fmt: skip
    print(f"saved {WEIGHTS_FILE} and {CONFIG_FILE} to {arguments.output_dir}")
    if arguments.sample_tokens > 0:
        seed = result.run.training.seed
        sample = generate_text(
            result.model,
            arguments.prompt,
            max_new_tokens=arguments.sample_tokens,
            context_length=result.run.training.sequence_length,
            temperature=SAMPLE_TEMPERATURE,
            top_k=SAMPLE_TOP_K,
            seed=seed,
        )
        print(f"sample (seed {seed}, temperature {SAMPLE_TEMPERATURE}, top-k {SAMPLE_TOP_K}):"
              f"\n{sample}")  # fmt: skip
