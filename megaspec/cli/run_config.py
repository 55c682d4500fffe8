"""The run-config arguments that ``megaspec train`` and ``megaspec inspect`` share.

The run config is the ``--preset`` model, then the ``-c`` YAML files in order, then the
convenience flags, then the ``dotted.path=value`` OVERRIDEs in order; later layers win.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from megaspec.config import RunConfig, TrainingConfig
from megaspec.config.resolve import Override
from megaspec.finetune import resolve_finetune_run
from megaspec.training import PRESETS, resolve_run

DEFAULT_PRESET = "small"

_DEFAULTS = TrainingConfig()

# Convenience flags: each is the override ``training.<field>=value``.
_SHORTHANDS = {
    "steps": "steps",
    "seed": "seed",
    "batch_size": "batch_size",
    "seq_length": "sequence_length",
    "learning_rate": "learning_rate",
}


def add_run_config_arguments(parser: argparse.ArgumentParser) -> None:
    """OVERRIDEs, ``-c FILE.yaml``, ``--preset`` and the convenience flags."""
    option = parser.add_argument
    option("overrides", nargs="*", metavar="OVERRIDE",
           help="dotted.path=value (value parsed as YAML), e.g. training.steps=50 "
           "model.decoder.num_blocks=2")  # fmt: skip
    option("-c", "--config", action="append", default=[], type=Path, metavar="FILE.yaml",
           help="a YAML run config (model:, training:, parallel:) over the preset; repeatable")
    option("--preset", choices=PRESETS, default=None,
           help=f"the packaged model the run starts from ({DEFAULT_PRESET})")
    shorthands = parser.add_argument_group(
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


def run_from_arguments(arguments: argparse.Namespace) -> RunConfig:
    """The run config the arguments of :func:`add_run_config_arguments` ask for.

    With ``arguments.base`` (``megaspec train --from DIR``) the model is the base's and the
    layers above it must not touch it (:func:`megaspec.finetune.resolve_finetune_run`).

    Raises:
        ConfigError: naming the full path of a bad value, or a malformed override.
        CheckpointError: for a base directory that holds no model.
        ValueError: for ``--preset`` together with ``--from``.
        OSError: if a ``-c`` file cannot be read.
    """
    flags: dict[str, Any] = {
        field: getattr(arguments, flag)
        for flag, field in _SHORTHANDS.items()
        if getattr(arguments, flag) is not None
    }
    overrides: list[Override] = [{"training": flags}] if flags else []
    overrides += arguments.overrides
    base = getattr(arguments, "base", None)
    if base is None:
        preset = arguments.preset or DEFAULT_PRESET
        return resolve_run(preset=preset, files=arguments.config, overrides=overrides)
    if arguments.preset is not None:
        raise ValueError("--preset and --from both choose the model; give one of them")
    return resolve_finetune_run(base, files=arguments.config, overrides=overrides)
