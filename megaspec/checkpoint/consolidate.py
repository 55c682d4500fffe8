"""Turning a sharded training checkpoint into a plain megaspec run directory."""

from __future__ import annotations

from pathlib import Path

import torch

from megaspec.checkpoint.training_state import load_weights, read_verified
from megaspec.config import PathLike, RunConfig, resolve
from megaspec.parallel import ParallelGroups, materialize


def export_consolidated(checkpoint: PathLike, output_dir: PathLike) -> Path:
    """Write ``model.safetensors`` and ``config.yaml`` into ``output_dir`` from a training
    checkpoint saved at any tensor-parallel size, in this one process (no
    ``torch.distributed`` needed): a tensor-parallel size 1 model is built on the meta
    device, materialised, and DCP-loaded with resharding. The result loads with
    :func:`megaspec.training.load_trained_model`. Returns ``output_dir``.

    Holds one full copy of the weights in memory; the optimizer state is not read.

    Raises:
        CheckpointError: as :func:`megaspec.checkpoint.load_training_checkpoint`.
    """
    from megaspec.training import save_trained_model  # training sits above checkpoint

    directory, output = Path(checkpoint), Path(output_dir)
    saved, _ = read_verified(directory, None, distributed=False)
    run = resolve(
        RunConfig, pretrained=saved,
        overrides=["parallel.tensor_parallel_size=1", "parallel.sequence_parallel=false"],
    )  # fmt: skip
    groups = ParallelGroups.single()
    with torch.device("meta"):
        model = run.model.build(groups)
    materialize(model, device="cpu")
    load_weights(directory, model, None, groups, distributed=False)
    save_trained_model(model, run, output)
    return output
