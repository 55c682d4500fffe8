"""What a run config builds, described without building its weights.

The model is built on the meta device (no memory; the one integer each parameter takes from
the CPU generator is drawn under a forked random state, so the caller's is untouched) with
:meth:`ParallelGroups.layout_only`, so a 70B config is described in a second and rank 0's
shard shapes at any tensor-parallel size are the ones a real run would hold. The report has
four parts: the module in every slot, per block of the config (layers built from the same
block config and the same classes are shown once); parameter counts per block config; the
tensor-parallel sharding of each parameter; and the config's explicitly set fields.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import torch
from torch import nn

from megaspec.config import RunConfig, saved_text
from megaspec.models import GPTModel
from megaspec.parallel import ParallelGroups, sharding_of

_INDENT = "  "


def build_on_meta(run: RunConfig, tensor_parallel_size: int | None = None) -> GPTModel:
    """``run.model`` on the meta device, as rank 0 of ``tensor_parallel_size`` holds it.

    Raises:
        ValueError: for a size the model does not divide over (naming the setting).
    """
    size = run.parallel.tensor_parallel_size if tensor_parallel_size is None else tensor_parallel_size
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return run.model.build(
            ParallelGroups.layout_only(size), sequence_parallel=run.parallel.sequence_parallel
        )


def describe_run(run: RunConfig, tensor_parallel_size: int | None = None) -> str:
    """The four-part report (see the module docstring) for ``run``.

    Raises:
        ValueError: as :func:`build_on_meta`.
    """
    model = build_on_meta(run, tensor_parallel_size)
    block_paths = [f"decoder.{path}" for path in run.model.decoder.layer_block_paths()]
    sections = [
        model.summary().splitlines()[0],
        "",
        "modules (the class each builder put in each slot):",
        *_module_lines(model, block_paths),
        "",
        "parameters per block config:",
        *_parameter_lines(model, block_paths),
        "",
        f"tensor-parallel sharding (rank 0 of {model.groups.tensor_size}):",
        *_sharding_lines(model, block_paths),
        "",
        "explicitly set config fields:",
        *(_INDENT + line for line in saved_text(run).splitlines()),
    ]
    return "\n".join(sections)


def _tree(module: nn.Module, depth: int) -> Iterator[str]:
    for name, child in module.named_children():
        extra = child.extra_repr()
        yield f"{_INDENT * depth}{name}: {type(child).__name__}{f'({extra})' if extra else ''}"
        yield from _tree(child, depth + 1)


def _layer_groups(block_paths: list[str], layers: nn.ModuleList) -> dict[tuple[str, str], list[int]]:
    """Layer indices by (block config path, module tree): layers that look alike are one group."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, (path, layer) in enumerate(zip(block_paths, layers, strict=True)):
        groups[(path, "\n".join(_tree(layer, 2)))].append(index)
    return groups


def _spans(indices: list[int]) -> str:
    if len(indices) <= 4:
        return ", ".join(str(index) for index in indices)
    return f"{indices[0]}, {indices[1]}, ..., {indices[-1]} ({len(indices)} layers)"


def _module_lines(model: GPTModel, block_paths: list[str]) -> list[str]:
    lines: list[str] = []
    for name, child in model.named_children():
        if name != "blocks":
            extra = child.extra_repr()
            lines.append(f"{_INDENT}{name}: {type(child).__name__}{f'({extra})' if extra else ''}")
            continue
        for (path, tree), indices in _layer_groups(block_paths, model.blocks.layers).items():
            layer = model.blocks.layers[indices[0]]
            lines.append(f"{_INDENT}layers {_spans(indices)} ({path}): {type(layer).__name__}")
            lines.extend(tree.splitlines())
    return lines


def _parameter_lines(model: GPTModel, block_paths: list[str]) -> list[str]:
    per_block: dict[str, tuple[int, int]] = {}
    for path, layer in zip(block_paths, model.blocks.layers, strict=True):
        count = sum(parameter.numel() for parameter in layer.parameters())
        layers, total = per_block.get(path, (0, 0))
        per_block[path] = (layers + 1, total + count)
    lines = [
        f"{_INDENT}{path}: {layers} layers, {total:,} on this rank ({total // layers:,} each)"
        for path, (layers, total) in per_block.items()
    ]
    outside = sum(
        parameter.numel() for name, parameter in model.named_parameters() if not name.startswith("blocks.")
    )
    total = sum(parameter.numel() for parameter in model.parameters())
    lines.append(f"{_INDENT}embedding, final norm and output layer: {outside:,} on this rank")
    lines.append(f"{_INDENT}total: {total:,} on this rank")
    return lines


def _sharding_lines(model: GPTModel, block_paths: list[str]) -> list[str]:
    size = model.groups.tensor_size
    first_of_block = {path: index for index, path in reversed(list(enumerate(block_paths)))}
    shown = {f"blocks.layers.{index}." for index in first_of_block.values()}
    lines: list[str] = []
    for name, parameter in model.named_parameters():
        if name.startswith("blocks.layers.") and not any(name.startswith(prefix) for prefix in shown):
            continue
        sharding = sharding_of(parameter)
        local = list(parameter.shape)
        if sharding is None:
            lines.append(f"{_INDENT}{name}: {local}, replicated")
            continue
        full = list(local)
        full[sharding.dim] *= size
        parts = f" in {sharding.parts} stacked parts, each" if sharding.parts > 1 else ""
        lines.append(f"{_INDENT}{name}: {local} of {full},{parts} split on dim {sharding.dim}")
    if len(first_of_block) < len(block_paths):
        lines.append(f"{_INDENT}(other layers of the same block config are sharded alike)")
    return lines
