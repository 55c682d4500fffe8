"""The ``megaspec`` command: its parser and the dispatch to subcommands."""

from __future__ import annotations

import argparse
import sys
from importlib import metadata

from megaspec.cli import convert as convert_command
from megaspec.cli import generate as generate_command
from megaspec.cli import inspect as inspect_command
from megaspec.cli import merge as merge_command
from megaspec.cli import train as train_command
from megaspec.cli.run_config import run_from_arguments

# Subcommands whose positional arguments are OVERRIDEs, which may come after options.
_TAKES_OVERRIDES = frozenset({"train", "inspect"})


def _version() -> str:
    try:
        return metadata.version("megaspec")
    except metadata.PackageNotFoundError:  # run from a checkout that was not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``megaspec`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="megaspec", description="Megatron-style transformers whose construction mypy checks."
    )
    parser.add_argument("--version", action="version", version=f"megaspec {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    train_command.add_train_arguments(
        commands.add_parser(
            "train",
            help="train a small byte-level language model on the bundled text",
            description=train_command.DESCRIPTION,
        )
    )
    inspect_command.add_inspect_arguments(
        commands.add_parser(
            "inspect",
            help="show what a config builds: spec tree, parameters, sharding, explicit fields",
            description=inspect_command.DESCRIPTION,
        )
    )
    convert_command.add_convert_arguments(
        commands.add_parser(
            "convert",
            help="convert a model between megaspec, Hugging Face and Megatron-core formats",
            description=convert_command.DESCRIPTION,
        )
    )
    generate_command.add_generate_arguments(
        commands.add_parser(
            "generate",
            help="continue prompts with a megaspec or Hugging Face model",
            description=generate_command.DESCRIPTION,
        )
    )
    merge_command.add_merge_arguments(
        commands.add_parser(
            "merge",
            help="merge an adapter run's adapters into its base model",
            description=merge_command.DESCRIPTION,
        )
    )
    return parser


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """``argv`` parsed; OVERRIDEs may appear anywhere among the options.

    Exits through argparse (code 2) for unknown options.
    """
    parser = build_parser()
    arguments, extras = parser.parse_known_args(argv)
    # argparse takes positionals in one run; overrides after an option arrive as extras.
    stray = [extra for extra in extras if extra.startswith("-")]
    if stray or (extras and arguments.command not in _TAKES_OVERRIDES):
        parser.error(f"unrecognized arguments: {' '.join(stray or extras)}")
    if arguments.command in _TAKES_OVERRIDES:
        arguments.overrides = [*arguments.overrides, *extras]
    return arguments


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``megaspec`` command; returns the process exit code.

    With no subcommand, prints help and returns 0. Invalid options exit through argparse
    with code 2; an invalid config prints ``megaspec COMMAND: <message>`` and returns 2.
    """
    arguments = parse_arguments(argv)
    if arguments.command == "train":
        return train_command.run_train(arguments)
    if arguments.command == "inspect":
        return inspect_command.run_inspect(arguments)
    if arguments.command == "convert":
        return convert_command.run_convert(arguments)
    if arguments.command == "generate":
        return generate_command.run_generate(arguments)
    if arguments.command == "merge":
        return merge_command.run_merge(arguments)
    build_parser().print_help()
    return 0


__all__ = ["build_parser", "main", "parse_arguments", "run_from_arguments"]

if __name__ == "__main__":
    sys.exit(main())
