"""The ``megaspec`` command.

``megaspec train`` trains a small Llama-style byte-level model on the bundled text (about two
minutes on two CPU cores with the defaults), saves it and prints a generated sample.
``megaspec`` alone prints help.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from megaspec.generate import generate_text
from megaspec.training import MODEL_PRESETS, TrainSettings, configure_threads, train

_DEFAULTS = TrainSettings()
SAMPLE_TEMPERATURE = 0.8
SAMPLE_TOP_K = 40


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``megaspec`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="megaspec", description="Megatron-style transformers whose construction mypy checks."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    train_parser = commands.add_parser(
        "train",
        help="train a small byte-level language model on the bundled text",
        description="Train a small Llama-style byte-level model on the bundled text (Python's "
        "licence and standard-library documentation), save model.safetensors and "
        "config.json, and print a generated sample.",
    )
    option = train_parser.add_argument
    option("--steps", type=int, default=_DEFAULTS.steps, help="optimizer steps (%(default)s)")
    option("--output-dir", type=Path, default=Path("megaspec-train"),
           help="directory for model.safetensors and config.json (%(default)s)")
    option("--seed", type=int, default=_DEFAULTS.seed,
           help="seeds weights, batches and the sample (%(default)s)")
    option("--batch-size", type=int, default=_DEFAULTS.batch_size,
           help="sequences per step (%(default)s)")
    option("--seq-length", type=int, default=_DEFAULTS.seq_length,
           help="tokens (bytes) per sequence (%(default)s)")
    option("--device", default=_DEFAULTS.device, help="torch device, e.g. cuda (%(default)s)")
    option("--model", choices=sorted(MODEL_PRESETS), default="small",
           help="model size preset (%(default)s)")
    option("--learning-rate", type=float, default=_DEFAULTS.learning_rate,
           help="peak learning rate (%(default)s)")
    option("--eval-interval", type=int, default=_DEFAULTS.eval_interval,
           help="steps between validation losses (%(default)s)")
    option("--threads", type=int, default=None,
           help="CPU threads (default: every core this process may use)")
    option("--prompt", default="Return the ", help="start of the sample (%(default)r)")
    option("--sample-tokens", type=int, default=200,
           help="bytes to generate after training, 0 for none (%(default)s)")
    option("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def settings_from_arguments(arguments: argparse.Namespace) -> TrainSettings:
    """The :class:`TrainSettings` that ``megaspec train`` arguments ask for.

    Raises:
        ValueError: for invalid settings (the message names the field).
    """
    # Keep the default peak-to-floor learning-rate ratio when the peak changes.
    floor_ratio = _DEFAULTS.min_learning_rate / _DEFAULTS.learning_rate
    return TrainSettings(
        model=MODEL_PRESETS[arguments.model],
        steps=arguments.steps,
        batch_size=arguments.batch_size,
        seq_length=arguments.seq_length,
        learning_rate=arguments.learning_rate,
        min_learning_rate=arguments.learning_rate * floor_ratio,
        eval_interval=arguments.eval_interval,
        seed=arguments.seed,
        device=arguments.device,
        output_dir=arguments.output_dir,
        progress=not arguments.no_progress,
    )


def run_train(arguments: argparse.Namespace) -> int:
    """Run ``megaspec train``; returns the exit code."""
    try:
        settings = settings_from_arguments(arguments)
        threads = configure_threads(arguments.threads)
        if arguments.sample_tokens > 0 and not arguments.prompt:
            # Checked now rather than after minutes of training.
            raise ValueError("--prompt must not be empty when --sample-tokens is positive")
    except ValueError as error:
        print(f"megaspec train: error: {error}", file=sys.stderr)
        return 2
    print(f"training the {arguments.model!r} model for {settings.steps} steps of "
          f"{settings.batch_size} x {settings.seq_length} tokens on {settings.device} "
          f"({threads} CPU threads)")
    result = train(settings)
    losses = result.losses
    tail = losses[-min(10, len(losses)):]
    print(result.model.summary())
    print(f"trained {len(losses)} steps in {result.seconds:.1f} s at "
          f"{result.tokens_per_second:,.0f} tokens/s: loss {losses[0]:.3f} -> {losses[-1]:.3f} "
          f"(mean of last {len(tail)}: {sum(tail) / len(tail):.3f}), "
          f"validation {result.validation_losses[-1][1]:.3f}")
    print(f"saved model.safetensors and config.json to {settings.output_dir}")
    if arguments.sample_tokens > 0:
        sample = generate_text(
            result.model,
            arguments.prompt,
            max_new_tokens=arguments.sample_tokens,
            context_length=settings.seq_length,
            temperature=SAMPLE_TEMPERATURE,
            top_k=SAMPLE_TOP_K,
            seed=settings.seed,
        )
        print(f"sample (seed {settings.seed}, temperature {SAMPLE_TEMPERATURE}, "
              f"top-k {SAMPLE_TOP_K}):\n{sample}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``megaspec`` command; returns the process exit code.

    With no subcommand, prints help and returns 0. Invalid arguments exit through argparse
    with code 2.
    """
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if arguments.command == "train":
        return run_train(arguments)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
