"""``megaspec convert``: a model between megaspec, Hugging Face and Megatron-core formats."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from megaspec.checkpoint import (
    MegatronSpec,
    export_hf,
    from_pretrained,
    load_from_megatron,
    model_config,
    model_to_megatron,
    megatron_arguments,
)
from megaspec.checkpoint.megatron_files import SPECS, is_megatron_directory, read_megatron, write_megatron
from megaspec.config import ModelConfig, RunConfig, resolve
from megaspec.models import GPTModel
from megaspec.parallel import seeded_initialization
from megaspec.training import save_trained_model

DESCRIPTION = (
    "Convert a model between formats. SOURCE is a Hugging Face directory (config.json and "
    "safetensors), a megaspec run directory (config.yaml and model.safetensors, as `megaspec "
    "train` writes) or a Megatron directory (megatron_arguments.json and one "
    "mp_rank_XX.safetensors per tensor-parallel rank). OUTPUT is written in the --to format; "
    "an existing non-empty OUTPUT is refused unless --overwrite. Weights are copied exactly: "
    "a Hugging Face import followed by an export gives bitwise-equal tensors."
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class LoadedModel:
    """A model, its config, and the Hugging Face config it came from (if any)."""

    model: GPTModel
    config: ModelConfig
    hf_config: Mapping[str, Any] | None


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``megaspec convert``."""
    option = parser.add_argument
    option("source", type=Path, metavar="SOURCE", help="the model to read (a directory)")
    option("output", type=Path, metavar="OUTPUT", help="the directory to write")
    option("--to", required=True, choices=("megaspec", "hf", "megatron"),
           help="the format to write")  # fmt: skip
    option("--dtype", choices=tuple(DTYPES), default="float32",
           help="dtype of the weights (%(default)s); the same dtype copies bit for bit")  # fmt: skip
    option("--megatron-spec", choices=SPECS, default="local",
           help="with --to megatron: the layer spec whose key names to write (%(default)s)")  # fmt: skip
    option("--tensor-parallel-size", type=int, default=1, metavar="N",
           help="with --to megatron: write one state dict per rank of this size (%(default)s)")  # fmt: skip
    option("--overwrite", action="store_true", help="replace a non-empty OUTPUT")


def load_model(source: Path, dtype: torch.dtype) -> LoadedModel:
    """The model in ``source`` (any of the three formats), in eval mode on the CPU.

    Raises:
        CheckpointError: for a source that cannot be read exactly (naming what and why).
        ConfigError: for a bad config in a megaspec run directory.
    """
    if is_megatron_directory(source):
        files = read_megatron(source)
        config = model_config(files.arguments)
        with seeded_initialization(0):
            model = config.build(params_dtype=dtype)
        load_from_megatron(model, files.state_dicts, config, spec=files.spec)
        return LoadedModel(model.eval(), config, None)
    pretrained = from_pretrained(source, dtype=dtype)
    return LoadedModel(pretrained.model, pretrained.config, pretrained.hf_config)


def refuse_overwrite(output: Path, overwrite: bool) -> None:
    """Refuse (``ValueError``) a non-empty ``output`` unless ``overwrite``: before any work."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not overwrite:
        raise ValueError(f"{output} exists and is not empty; pass --overwrite to replace it")


def write_model(loaded: LoadedModel, output: Path, arguments: argparse.Namespace) -> None:
    """Write ``loaded`` to ``output`` in the ``--to`` format."""
    if arguments.to == "hf":
        export_hf(loaded.model, loaded.config, output, template=loaded.hf_config, overwrite=arguments.overwrite)
    elif arguments.to == "megatron":
        spec: MegatronSpec = arguments.megatron_spec
        state_dicts = model_to_megatron(
            loaded.model, loaded.config, spec=spec, tensor_parallel_size=arguments.tensor_parallel_size
        )
        write_megatron(output, state_dicts, megatron_arguments(loaded.config), spec, overwrite=arguments.overwrite)
    else:
        run = resolve(RunConfig, overrides=[{"model": loaded.config}])
        save_trained_model(loaded.model, run, output)


def run_convert(arguments: argparse.Namespace) -> int:
    """Run ``megaspec convert``; returns the exit code (2 for what cannot be converted)."""
    try:
        if arguments.tensor_parallel_size < 1:
            raise ValueError(f"--tensor-parallel-size: must be >= 1, got {arguments.tensor_parallel_size}")
        if arguments.source.resolve() == arguments.output.resolve():
            raise ValueError("OUTPUT must differ from SOURCE")
        refuse_overwrite(arguments.output, arguments.overwrite)  # before any long work
        loaded = load_model(arguments.source, DTYPES[arguments.dtype])
        write_model(loaded, arguments.output, arguments)
    except (ValueError, OSError) as error:  # CheckpointError and ConfigError are ValueErrors
        print(f"megaspec convert: {error}", file=sys.stderr)
        return 2
    parameters = sum(parameter.numel() for parameter in loaded.model.parameters())
    print(f"converted {arguments.source} ({parameters:,} parameters) to {arguments.to} in {arguments.output}")
    return 0
