"""Fine-tuning runs: a pretrained base trained further, whole or through adapters only.

A fine-tuning run starts from a base directory (a megaspec run directory or a Hugging Face
checkpoint, as :func:`megaspec.from_pretrained` reads them) whose architecture is the run's
``model``. Without ``run.peft`` every weight trains and the output is an ordinary run
directory. With ``run.peft`` the adapter is added (its initial weights seeded by
``training.seed``), only the adapter trains, and the output directory is an *adapter run*:

    config.yaml                 the run config: the base's model, peft:, training:
    adapter_config.json         megaspec.checkpoint.save_adapters' files: the adapter
    adapter_model.safetensors   configs, the linears they adapt, their weights
    base_model.json             {"base": the base directory's absolute path}
    progress.json, metrics.jsonl  as in a plain run (see megaspec.training.files)

The base's weights are not copied. :func:`load_adapter_run` rebuilds the adapted model from
these files and the base; :func:`merge_adapter_run` folds the adapters into the base and
writes a plain run directory, which :func:`megaspec.training.load_trained_model` (and
``megaspec generate``) loads.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import torch
from torch import nn

from megaspec.checkpoint import (
    CheckpointError,
    check_same_architecture,
    from_pretrained,
    load_adapters,
    model_data_from_hf,
    save_adapters,
)
from megaspec.checkpoint.adapters import CONFIG_FILE as ADAPTER_CONFIG_FILE
from megaspec.checkpoint.adapters import WEIGHTS_FILE as ADAPTER_WEIGHTS_FILE
from megaspec.checkpoint.hf import CONFIG_FILE as HF_CONFIG_FILE
from megaspec.checkpoint.writing import StagedDirectory, check_target
from megaspec.config import (
    AdapterConfig,
    ConfigError,
    ModelConfig,
    PathLike,
    RunConfig,
    from_data,
    load,
    resolve,
    save,
    to_data,
)
from megaspec.config.resolve import Override, parse_override, read_config_file
from megaspec.models import GPTModel
from megaspec.parallel import ParallelGroups, seeded_initialization
from megaspec.peft import add_adapter, merge_and_unload, train_adapters_only
from megaspec.training import CONFIG_FILE, TrainResult, save_trained_model, train
from megaspec.training.loop import MULTI_PROCESS_PEFT
from megaspec.training.files import write_progress

BASE_FILE: Final = "base_model.json"


def base_config(base: PathLike) -> ModelConfig:
    """The model config of a base directory, read without its weights.

    Raises:
        CheckpointError: for a directory that is neither a Hugging Face checkpoint nor a
            megaspec run directory with weights (an adapter run must be merged first).
        ConfigError: for an invalid saved config.
    """
    directory = Path(base)
    hf_config, run_config = directory / HF_CONFIG_FILE, directory / CONFIG_FILE
    if hf_config.is_file() and not run_config.is_file():
        data = model_data_from_hf(json.loads(hf_config.read_text()), where=str(hf_config))
        return from_data(ModelConfig, data)
    if not run_config.is_file():
        raise CheckpointError(
            f"{directory}: neither {HF_CONFIG_FILE} (a Hugging Face checkpoint) nor "
            f"{CONFIG_FILE} (a megaspec run directory)"
        )
    run = load(RunConfig, run_config)
    if run.peft is not None:
        raise CheckpointError(
            f"{directory}: an adapter run, not a model; merge it first (megaspec merge) and "
            f"start from the merged directory"
        )
    return run.model


def resolve_finetune_run(
    base: PathLike, *, files: Sequence[PathLike] = (), overrides: Sequence[Override] = ()
) -> RunConfig:
    """The run config of ``megaspec train --from base``: the base's model, then ``files``,
    then ``overrides``, none of which may touch ``model`` (the base decides it).

    Raises:
        ConfigError: for a ``model`` section or override (naming it), or a bad value.
        CheckpointError: as :func:`base_config`.
        OSError: if a file cannot be read.
    """
    for path in files:
        if "model" in read_config_file(path):
            raise ConfigError("model", f"{path}: the base (--from) decides the model; remove "
                              "this file's model: section")  # fmt: skip
    for override in overrides:
        layer = parse_override(override) if isinstance(override, str) else override
        if "model" in layer:
            shown = override if isinstance(override, str) else dict(layer)
            raise ConfigError("model", f"the base (--from) decides the model; remove the "
                              f"override {shown!r}")  # fmt: skip
    pretrained = RunConfig(model=base_config(base))
    return resolve(RunConfig, pretrained=pretrained, files=files, overrides=overrides)


def attach_adapter(model: nn.Module, config: AdapterConfig, *, seed: int) -> list[str]:
    """Add adapter ``config`` (initial weights from ``seed``) and freeze everything else.

    Returns the adapted linears' names; afterwards only adapter parameters have
    ``requires_grad``, so :func:`megaspec.optim.parameter_groups` holds only them.

    Raises:
        ValueError: as :func:`megaspec.peft.add_adapter` (targets that match nothing, ...).
    """
    with seeded_initialization(seed):
        names = add_adapter(model, config)
    train_adapters_only(model)
    return names


def finetune(
    run: RunConfig,
    *,
    base: PathLike,
    device: str | torch.device = "cpu",
    output_dir: PathLike | None = None,
    progress: bool = True,
    groups: ParallelGroups | None = None,
) -> TrainResult:
    """Train ``run`` starting from the weights in ``base``; with ``run.peft``, only the adapter.

    The output directory is a plain run directory, or with ``run.peft`` an adapter run (see
    the module). Base weights stay bitwise unchanged when ``run.peft`` is set.

    With ``groups`` spanning several processes (a torchrun job's), call it on every rank:
    each reads its tensor-parallel shards of the base, and training goes on as
    :func:`megaspec.training.train`'s; adapters (``run.peft``) are refused there.

    Raises:
        ConfigError: if ``run.model`` computes another function than the base, or as
            :func:`megaspec.training.train`.
        CheckpointError: for an unreadable base.
        ValueError: for adapter targets that match no linear.
    """
    groups = ParallelGroups.single() if groups is None else groups
    if run.peft is not None and groups.data_size * groups.tensor_size > 1:
        raise ValueError(MULTI_PROCESS_PEFT)  # before reading the base
    model = _load_base(base, run, device, groups)
    if run.peft is not None:
        attach_adapter(model, run.peft, seed=run.training.seed)
        result = train(
            run, device=device, output_dir=output_dir, progress=progress, model=model, save_model=False
        )
        if output_dir is not None:
            save_adapter_run(result.model, run, output_dir, base=base)
            write_progress(run, output_dir, steps_done=len(result.losses),
                           stopped_by=_signal_name(result.stop_signal))  # fmt: skip
        return result
    return train(run, device=device, output_dir=output_dir, progress=progress, model=model,
                 groups=groups)  # fmt: skip


def _signal_name(number: int | None) -> str | None:
    return None if number is None else signal.Signals(number).name


def _load_base(base: PathLike, run: RunConfig, device: str | torch.device, groups: ParallelGroups) -> GPTModel:
    pretrained = from_pretrained(base, device=device, groups=groups,
                                 sequence_parallel=run.parallel.sequence_parallel)  # fmt: skip
    try:
        check_same_architecture(pretrained.config, run.model)
    except ConfigError as error:
        raise error.under("model") from None
    return pretrained.model


def save_adapter_run(model: nn.Module, run: RunConfig, directory: PathLike, *, base: PathLike) -> Path:
    """Write the adapter run of ``model`` (trained on ``base``) to ``directory`` (see the module).

    ``directory`` and its parents are created; other files in it are kept, and the files
    written replace their namesakes, each atomically.

    Raises:
        ValueError: if ``model`` has no adapters.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # save_adapters replaces the whole directory it writes; stage there, then move the files.
    staging = Path(tempfile.mkdtemp(prefix=".adapters-", dir=directory))
    try:
        save_adapters(model, staging / "adapters")
        for name in (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE):
            os.replace(staging / "adapters" / name, directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    pointer = json.dumps({"base": str(Path(base).resolve())}, indent=2) + "\n"
    (directory / BASE_FILE).write_text(pointer)
    save(run, directory / CONFIG_FILE)
    return directory


def adapter_run_config(directory: PathLike) -> RunConfig:
    """The run config of an adapter run directory.

    Raises:
        CheckpointError: if ``directory`` has no ``config.yaml`` or its run has no ``peft``.
        ConfigError: for an invalid saved config.
    """
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file():
        raise CheckpointError(
            f"{directory}: {CONFIG_FILE} is missing; expected an adapter run of megaspec train"
        )
    run = load(RunConfig, directory / CONFIG_FILE)
    if run.peft is None:
        raise CheckpointError(
            f"{directory}: not an adapter run: its {CONFIG_FILE} has no peft: section"
        )
    return run


def load_adapter_run(
    directory: PathLike, *, base: PathLike | None = None, device: str | torch.device = "cpu"
) -> tuple[GPTModel, RunConfig]:
    """The adapted model of an adapter run (eval mode, adapters active) and its run config.

    ``base`` replaces the base directory recorded in ``base_model.json`` (one that moved).

    Raises:
        CheckpointError: for a directory that is not an adapter run, a missing base or
            adapter file, or a base of another architecture.
    """
    directory = Path(directory)
    run = adapter_run_config(directory)
    source = _recorded_base(directory) if base is None else Path(base)
    if not source.is_dir():
        raise CheckpointError(
            f"{directory}: its base {source} is not a directory; pass the base's current place"
        )
    pretrained = from_pretrained(source, device=device)
    try:
        check_same_architecture(run.model, pretrained.config)
    except ConfigError as error:
        raise CheckpointError(f"{source}: not the base of {directory}: {error}") from None
    load_adapters(pretrained.model, directory)
    return pretrained.model.eval(), run


def _recorded_base(directory: Path) -> Path:
    try:
        recorded = json.loads((directory / BASE_FILE).read_text())["base"]
    except FileNotFoundError:
        raise CheckpointError(
            f"{directory}: {BASE_FILE} is missing; pass the base directory explicitly"
        ) from None
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(f"{directory / BASE_FILE}: unreadable ({error!r})") from None
    return Path(recorded)


def merge_adapter_run(
    directory: PathLike,
    output_dir: PathLike,
    *,
    base: PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Fold an adapter run's adapters into its base; write the plain model as a run directory.

    ``output_dir`` is checked before any work and written atomically; the merge is safe
    (a non-finite merged weight is refused). Its ``config.yaml`` is the run's without
    ``peft``.

    Raises:
        CheckpointError: if ``output_dir`` is a file, or a non-empty directory and
            ``overwrite`` is false; as :func:`load_adapter_run`.
        ValueError: for a merge that would write a non-finite weight.
    """
    target = Path(output_dir)
    check_target(target, overwrite=overwrite)
    model, run = load_adapter_run(directory, base=base)
    merge_and_unload(model, safe=True)
    data = to_data(run, explicit_only=True)
    data.pop("peft")
    merged_run = from_data(RunConfig, data)
    staging = StagedDirectory(target, overwrite=overwrite)
    try:
        save_trained_model(model, merged_run, staging.path)
        staging.commit()
    except BaseException:
        staging.discard()
        raise
    return target
