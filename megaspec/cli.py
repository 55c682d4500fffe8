"""The ``megaspec`` command.

``megaspec train`` trains a small Llama-style byte-level model on the bundled text (about two
minutes on two CPU cores with the defaults), saves it and prints a generated sample. Its run
config is a packaged preset, then ``-c`` YAML files, then ``dotted.path=value`` overrides
(see :func:`megaspec.training.resolve_run`). ``megaspec`` alone prints help.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from megaspec.config import ConfigError, RunConfig, TrainingConfig
from megaspec.config.resolve import Override
from megaspec.generate import generate_text
from megaspec.training import (
    CONFIG_FILE,
    PRESETS,
    WEIGHTS_FILE,
    TrainResult,
    configure_threads,
    resolve_run,
    train,
)

SAMPLE_TEMPERATURE = 0.8
SAMPLE_TOP_K = 40
DEFAULT_OUTPUT_DIR = Path("runs/train")
_DEFAULTS = TrainingConfig()

# Convenience flags: each is the override ``training.<field>=value``.
_SHORTHANDS = {
    "steps": "steps",
    "seed": "seed",
    "batch_size": "batch_size",
    "seq_length": "sequence_length",
    "learning_rate": "learning_rate",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``megaspec`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="megaspec", description="Megatron-style transformers whose construction mypy checks."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train_arguments(
        commands.add_parser(
            "train",
            help="train a small byte-level language model on the bundled text",
            description="Train a small Llama-style byte-level model on the bundled text "
            "(Python's licence and standard-library documentation), save model.safetensors "
            "and config.yaml, and print a generated sample. The run config is the --preset "
            "model, then the -c files in order, then the convenience flags, then the "
            "OVERRIDEs in order; later layers override earlier ones.",
        )
    )
    return parser


def _add_train_arguments(train_parser: argparse.ArgumentParser) -> None:
    option = train_parser.add_argument
    option("overrides", nargs="*", metavar="OVERRIDE",
           help="dotted.path=value (value parsed as YAML), e.g. training.steps=50 "
           "model.decoder.num_blocks=2")  # fmt: skip
    option("-c", "--config", action="append", default=[], type=Path, metavar="FILE.yaml",
           help="a YAML run config (model:, training:, parallel:) over the preset; repeatable")
    option("--preset", choices=PRESETS, default="small",
           help="the packaged model the run starts from (%(default)s)")
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
    shorthands = train_parser.add_argument_group(
        "convenience flags", "each is the override training.<field>=VALUE, applied after the "
        "-c files and before the OVERRIDEs",
    )  # fmt: skip
    shorthand = shorthands.add_argument
    shorthand("--steps", type=int, metavar="N",
              help=f"training.steps: optimizer steps ({_DEFAULTS.steps})")
    shorthand("--seed", type=int, metavar="N",
              help=f"training.seed: seeds weights, batches and the sample ({_DEFAULTS.seed})")
    shorthand("--batch-size", type=int, metavar="N",
              help=f"training.batch_size: sequences per step ({_DEFAULTS.batch_size})")
    shorthand("--seq-length", type=int, metavar="N",
              help=f"training.sequence_length: tokens (bytes) per sequence "
              f"({_DEFAULTS.sequence_length})")
    shorthand("--learning-rate", type=float, metavar="LR",
              help=f"training.learning_rate: peak learning rate ({_DEFAULTS.learning_rate})")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """``argv`` parsed; OVERRIDEs may appear anywhere among the options.

    Exits through argparse (code 2) for unknown options.
    """
    parser = build_parser()
    arguments, extras = parser.parse_known_args(argv)
    # argparse takes positionals in one run; overrides after an option arrive as extras.
    stray = [extra for extra in extras if extra.startswith("-")]
    if stray or (extras and arguments.command != "train"):
        parser.error(f"unrecognized arguments: {' '.join(stray or extras)}")
    if arguments.command == "train":
        arguments.overrides = [*arguments.overrides, *extras]
    return arguments


def run_from_arguments(arguments: argparse.Namespace) -> RunConfig:
    """The run config ``megaspec train`` arguments ask for.

    Raises:
        ConfigError: naming the full path of a bad value, or a malformed override.
        OSError: if a ``-c`` file cannot be read.
    """
    flags: dict[str, Any] = {
        field: getattr(arguments, flag)
        for flag, field in _SHORTHANDS.items()
        if getattr(arguments, flag) is not None
    }
    overrides: list[Override] = [{"training": flags}] if flags else []
    overrides += arguments.overrides
    return resolve_run(preset=arguments.preset, files=arguments.config, overrides=overrides)


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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``megaspec`` command; returns the process exit code.

    With no subcommand, prints help and returns 0. Invalid options exit through argparse
    with code 2; an invalid run config prints ``megaspec train: <message>`` and returns 2.
    """
    arguments = parse_arguments(argv)
    if arguments.command == "train":
        return run_train(arguments)
    build_parser().print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
