"""The run-config arguments that ``megaspec train`` and ``megaspec inspect`` share.

The run config is the ``--preset`` model, then the ``-c`` YAML files in order, then the
convenience flags, then the ``dotted.path=value`` OVERRIDEs in order; later layers win.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from megaspec.config import RunConfig, TrainingConfig, to_data
from megaspec.config.resolve import Override
from megaspec.finetune import resolve_finetune_run
from megaspec.schema import Config
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
    option("--import", dest="imports", action="append", default=[], metavar="MODULE",
           help="import the Python module MODULE (from the current directory or sys.path) "
           "before the config is read, so the mixers it registers can be named by type, e.g. "
           "--import examples.yaml_model for type: conv; repeatable")
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
        ValueError: for an ``--import`` module that cannot be imported, or a ``-c`` file that
            is not UTF-8 text, naming it.
    """
    import_modules(arguments.imports)
    for path in arguments.config:
        _check_utf8(path)
    flags: dict[str, Any] = {
        field: getattr(arguments, flag)
        for flag, field in _SHORTHANDS.items()
        if getattr(arguments, flag) is not None
    }
    overrides: list[Override] = [{"training": flags}] if flags else []
    # --tensor-parallel-size (megaspec train) is the override parallel.tensor_parallel_size=K.
    tensor_parallel_size = getattr(arguments, "tensor_parallel_size", None)
    if tensor_parallel_size is not None:
        overrides.append({"parallel": {"tensor_parallel_size": tensor_parallel_size}})
    overrides += arguments.overrides
    base = getattr(arguments, "base", None)
    if base is None:
        preset = arguments.preset or DEFAULT_PRESET
        return resolve_run(preset=preset, files=arguments.config, overrides=overrides)
    if arguments.preset is not None:
        raise ValueError("--preset and --from both choose the model; give one of them")
    return resolve_finetune_run(base, files=arguments.config, overrides=overrides)


def import_modules(names: list[str]) -> None:
    """Import each module of ``--import``, as ``python -m`` would from the current directory.

    Raises:
        ValueError: naming the module, for one that is missing or fails to import.
    """
    if names and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # the console script's path lacks the current directory
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            raise ValueError(f"--import {name}: no module named {error.name!r}") from None
        except Exception as error:  # the user's module failed: say which, keep its message
            raise ValueError(f"--import {name}: {type(error).__name__}: {error}") from None


def _check_utf8(path: Path) -> None:
    """Refuse a ``-c`` file that is not UTF-8 text, naming it (YAML's decoder does not)."""
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
            f"{error.start}); save the YAML file as UTF-8"
        ) from None


def training_fields_help() -> str:
    """Every ``training.*`` field with its default and meaning, from :class:`TrainingConfig`.

    Generated from the dataclass's fields and its docstring's ``Attributes:`` section, so
    it cannot drift from the code.

    Raises:
        AssertionError: if a field has no entry in the docstring (a test calls this).
    """
    meanings = _docstring_attributes(TrainingConfig.__doc__ or "")
    lines = ["training.* fields (set with -c FILE.yaml or training.FIELD=VALUE), default:"]
    for field in dataclasses.fields(TrainingConfig):
        assert field.name in meanings, f"TrainingConfig's docstring does not describe {field.name}"
        lines.append(f"  {field.name} ({_shown_default(getattr(_DEFAULTS, field.name))}): "
                     f"{meanings[field.name]}")  # fmt: skip
    return "\n".join(lines)


def _shown_default(default: object) -> str:
    """A default as YAML writes it: ``null``, or a section as ``{key: value, ...}``."""
    if isinstance(default, Config):
        text: str = yaml.safe_dump(to_data(default, explicit_only=False), default_flow_style=True)
        return text.strip()
    return "null" if default is None else str(default)


def _docstring_attributes(docstring: str) -> dict[str, str]:
    """``name -> first sentence`` of a Google-style ``Attributes:`` section; an entry may
    name several fields (``a, b: ...``)."""
    section = docstring.split("Attributes:", 1)[-1]
    entries = re.findall(r"^ {8}(\w+(?:, \w+)*): (.*?)(?=^ {8}\w|\Z)", section, re.M | re.S)
    meanings: dict[str, str] = {}
    for names, text in entries:
        plain = re.sub(r":\w+:`([^`]*)`|``([^`]*)``", lambda match: match[1] or match[2], text)
        sentence = " ".join(plain.split()).split(". ")[0].rstrip(".")
        for name in names.split(", "):
            meanings[name] = sentence
    return meanings
