"""The main job: train a small Llama-style byte-level model on the bundled text, on one process.

A run is one :class:`~megaspec.config.RunConfig`: a packaged preset (``megaspec/data/
preset_<name>.yaml``: the model) under the user's YAML files and ``dotted.path=value``
overrides (:func:`resolve_run`); :class:`~megaspec.config.TrainingConfig`'s defaults are the
default run. :func:`train` builds ``run.model``, runs AdamW with linear warmup and cosine decay
(each weight's rate times its ``lr_scale``), clips gradients, reports loss and tokens/s on a
progress bar, measures validation loss periodically and saves ``model.safetensors`` and
``config.yaml`` (the run's explicitly set fields); :func:`load_trained_model` rebuilds the
model from them. No ``torch.distributed`` setup is needed (tensor-parallel size 1).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from time import perf_counter
from typing import Final

import safetensors.torch
import torch
from torch import Tensor

from tqdm import tqdm

from megaspec.config import (
    ConfigError,
    PathLike,
    RunConfig,
    TrainingConfig,
    load,
    resolve,
    save,
    saved_text,
)
from megaspec.config.resolve import Override
from megaspec.data import ByteTokenizer, WindowSampler, load_corpus, train_validation_split
from megaspec.models import GPTModel
from megaspec.optim import parameter_groups
from megaspec.parallel import seeded_initialization
from megaspec.peft import refuse_adapters

WEIGHTS_FILE: Final = "model.safetensors"
CONFIG_FILE: Final = "config.yaml"
PRESETS: Final = ("small", "tiny")
"""Packaged models: ``small`` (~1.7M parameters, the default run) and ``tiny`` (~0.1M)."""
ADAM_BETAS: Final = (0.9, 0.95)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` did.

    Attributes:
        run: the config it trained with.
        model: the trained model (on the training device, in train mode).
        losses: training loss of every step, in order.
        validation_losses: ``(steps done, validation loss)`` pairs, in order.
        tokens_per_second: training tokens per second of step time (validation excluded).
        seconds: wall time of the whole run, validation and saving included.
    """

    run: RunConfig
    model: GPTModel
    losses: tuple[float, ...]
    validation_losses: tuple[tuple[int, float], ...]
    tokens_per_second: float
    seconds: float


def preset_run(name: str = "small") -> RunConfig:
    """The packaged run config ``name`` (one of :data:`PRESETS`): the model, nothing else.

    Raises:
        ValueError: for an unknown preset name.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    resource = resources.files("megaspec.data").joinpath(f"preset_{name}.yaml")
    with resources.as_file(resource) as path:
        return resolve(RunConfig, files=[path])


def resolve_run(
    *, preset: str = "small", files: Sequence[PathLike] = (), overrides: Sequence[Override] = ()
) -> RunConfig:
    """The run config of ``megaspec train``: ``preset``, then ``files``, then ``overrides``.

    The preset is the ``pretrained`` layer of :func:`megaspec.config.resolve`, so its
    (explicit) fields are overridden like any other layer's and saved with the run.

    Raises:
        ConfigError: naming the full path of a bad value, or a malformed override.
        OSError: if a file cannot be read.
    """
    return resolve(RunConfig, pretrained=preset_run(preset), files=files, overrides=overrides)


def configure_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads to ``requested``, capped at the cores this process may use.

    Torch's default counts the machine's cores, which oversubscribes a container or a CPU
    affinity mask that allows fewer; returns the number set.

    Raises:
        ValueError: if ``requested`` is not positive.
    """
    if requested is not None and requested <= 0:
        raise ValueError(f"threads must be positive, got {requested}")
    if hasattr(os, "sched_getaffinity"):  # Linux: the affinity mask, not the machine
        available = len(os.sched_getaffinity(0))
    else:
        available = os.cpu_count() or 1
    threads = available if requested is None else min(requested, available)
    torch.set_num_threads(threads)
    return threads


def build_model(run: RunConfig) -> GPTModel:
    """A freshly initialised ``run.model`` on the CPU, weights from ``run.training.seed``.

    The global RNG state is left as it was.

    Raises:
        ConfigError: if the run asks for tensor parallelism (the main job is one process).
    """
    if run.parallel.tensor_parallel_size != 1:
        raise ConfigError(
            "parallel.tensor_parallel_size",
            f"megaspec train runs on one process; expected 1, got "
            f"{run.parallel.tensor_parallel_size}",
        )
    with seeded_initialization(run.training.seed):
        return run.model.build(sequence_parallel=run.parallel.sequence_parallel)


def check_peft_base(run: RunConfig, *, has_base: bool) -> None:
    """Refuse a run with ``peft`` but no pretrained base: adapters on random weights.

    Raises:
        ConfigError: at ``peft``, saying how to start from a trained model.
    """
    if run.peft is not None and not has_base:
        raise ConfigError(
            "peft",
            "adapters train on pretrained weights, not freshly initialised ones; start from "
            "a trained model (megaspec train --from DIR, or megaspec.finetune.finetune)",
        )


def learning_rate_at(step: int, training: TrainingConfig) -> float:
    """The scheduled rate of update ``step`` (0-based): linear warmup, then cosine decay."""
    if step < training.warmup_steps:
        return training.learning_rate * (step + 1) / training.warmup_steps
    decay_steps = max(1, training.steps - 1 - training.warmup_steps)
    progress = min(1.0, (step - training.warmup_steps) / decay_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    floor = training.learning_rate_floor
    return floor + (training.learning_rate - floor) * cosine


def make_optimizer(model: GPTModel, training: TrainingConfig) -> torch.optim.AdamW:
    """AdamW over :func:`megaspec.optim.parameter_groups`: one group per (lr scale, decay).

    Weights with ``lr_scale: 0`` are frozen and left out.
    """
    groups = parameter_groups(
        model, learning_rate=training.learning_rate, weight_decay=training.weight_decay
    )
    return torch.optim.AdamW(groups, lr=training.learning_rate, betas=ADAM_BETAS)


def set_learning_rate(optimizer: torch.optim.Optimizer, learning_rate: float) -> None:
    """Give every group ``learning_rate`` times its ``lr_scale`` (1 if it has none)."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate * group.get("lr_scale", 1.0)


def corpus_windows(run: RunConfig) -> tuple[WindowSampler, WindowSampler]:
    """Training and validation samplers over the bundled text, byte-tokenized.

    Raises:
        ConfigError: if the model's vocabulary cannot hold bytes, or a split is too short
            for ``training.sequence_length``.
    """
    tokenizer = ByteTokenizer()
    if run.model.vocab_size < tokenizer.vocab_size:
        raise ConfigError(
            "model.vocab_size",
            f"must be >= {tokenizer.vocab_size} for the byte tokenizer, got {run.model.vocab_size}",
        )
    training = run.training
    windows = train_validation_split(
        tokenizer.encode_tensor(load_corpus()), training.validation_fraction
    )
    shortest = min(len(sampler) for sampler in windows)
    if training.sequence_length + 1 > shortest:
        raise ConfigError(
            "training.sequence_length",
            f"{training.sequence_length} needs windows of {training.sequence_length + 1} "
            f"tokens, but a split of the bundled text (validation_fraction "
            f"{training.validation_fraction}) holds only {shortest}",
        )
    return windows


@dataclass
class _Log:
    """What the training loop records."""

    losses: list[float] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)
    step_seconds: float = 0.0


def train(
    run: RunConfig,
    *,
    device: str | torch.device = "cpu",
    output_dir: PathLike | None = None,
    progress: bool = True,
    model: GPTModel | None = None,
) -> TrainResult:
    """Train ``run.model`` per ``run.training`` on the bundled text; save it to ``output_dir``.

    Deterministic for a given run, device and thread count. ``progress`` shows a tqdm bar
    with the loss, tokens/s and the last validation loss. ``model`` (built from ``run.model``,
    e.g. pretrained weights, perhaps with adapters) is trained instead of a fresh one; its
    parameters with ``requires_grad=False`` stay as they are. A run with ``peft`` needs
    pretrained weights: :func:`megaspec.finetune.finetune` adds the adapter and calls this.

    Raises:
        ConfigError: before the first step, for a run the main job cannot train (see
            :func:`build_model` and :func:`corpus_windows`), a ``peft`` run without
            ``model``, or a config that cannot be saved.
        ValueError: if ``model`` has no parameter to train.
    """
    started = perf_counter()
    saved_text(run)  # a config that cannot be saved fails now, not after training
    check_peft_base(run, has_base=model is not None)
    train_windows, validation_windows = corpus_windows(run)
    model = (build_model(run) if model is None else model).to(device)
    model.train()
    optimizer = make_optimizer(model, run.training)
    log = _Log()
    bar = tqdm(range(run.training.steps), desc="train", unit="step", disable=not progress)
    generator = torch.Generator().manual_seed(run.training.seed)
    for step in bar:
        step_started = perf_counter()
        inputs, labels = train_windows.sample(
            batch_size=run.training.batch_size,
            seq_length=run.training.sequence_length,
            generator=generator,
        )
        set_learning_rate(optimizer, learning_rate_at(step, run.training))
        loss = _training_step(model, optimizer, inputs, labels, run.training.grad_clip)
        log.losses.append(loss)
        log.step_seconds += perf_counter() - step_started
        if (step + 1) % run.training.eval_interval == 0 or step + 1 == run.training.steps:
            log.validation.append(
                (step + 1, validation_loss(model, validation_windows, run.training))
            )
        bar.set_postfix(_postfix(log, run.training), refresh=False)
    bar.close()
    if output_dir is not None:
        save_trained_model(model, run, output_dir)
    return TrainResult(
        run=run,
        model=model,
        losses=tuple(log.losses),
        validation_losses=tuple(log.validation),
        tokens_per_second=_tokens_per_step(run.training) * len(log.losses) / log.step_seconds,
        seconds=perf_counter() - started,
    )


def _tokens_per_step(training: TrainingConfig) -> int:
    return training.batch_size * training.sequence_length


def _postfix(log: _Log, training: TrainingConfig) -> dict[str, str]:
    tokens_per_second = _tokens_per_step(training) * len(log.losses) / log.step_seconds
    postfix = {"loss": f"{log.losses[-1]:.3f}", "tok/s": f"{tokens_per_second:,.0f}"}
    if log.validation:
        postfix["val"] = f"{log.validation[-1][1]:.3f}"
    return postfix


def _training_step(
    model: GPTModel,
    optimizer: torch.optim.Optimizer,
    inputs: Tensor,
    labels: Tensor,
    grad_clip: float,
) -> float:
    device = next(model.parameters()).device
    losses: Tensor = model(inputs.to(device), labels=labels.to(device))  # [batch, seq] float32
    loss = losses.mean()
    optimizer.zero_grad(set_to_none=True)
    # torch.autograd.backward is typed; Tensor.backward is not.
    torch.autograd.backward(loss)
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return float(loss.item())


@torch.no_grad()
def validation_loss(model: GPTModel, windows: WindowSampler, training: TrainingConfig) -> float:
    """Mean loss over ``training.eval_batches`` batches of ``windows``.

    The batches come from a generator seeded with ``training.seed + 1`` on every call, so
    successive validation losses of one run are measured on the same text. The model's
    train/eval mode is restored afterwards.
    """
    generator = torch.Generator().manual_seed(training.seed + 1)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    for _ in range(training.eval_batches):
        inputs, labels = windows.sample(
            batch_size=training.batch_size,
            seq_length=training.sequence_length,
            generator=generator,
        )
        losses: Tensor = model(inputs.to(device), labels=labels.to(device))
        total += float(losses.mean().item())
    model.train(was_training)
    return total / training.eval_batches


def save_trained_model(model: GPTModel, run: RunConfig, directory: PathLike) -> None:
    """Write ``model.safetensors`` and ``config.yaml`` (the run's explicit fields).

    ``directory`` and its parents are created; existing files are replaced, each file
    atomically (written under a temporary name, then renamed).

    Raises:
        ValueError: for a model with adapters (see :func:`megaspec.peft.refuse_adapters`).
    """
    refuse_adapters(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    temporary = weights.with_name(f".{WEIGHTS_FILE}.tmp")
    safetensors.torch.save_model(model, str(temporary))
    os.replace(temporary, weights)
    save(run, directory / CONFIG_FILE)


def load_trained_model(
    directory: PathLike, *, device: str | torch.device = "cpu"
) -> tuple[GPTModel, RunConfig]:
    """Rebuild the model saved by :func:`save_trained_model` in ``directory``; eval mode.

    Raises:
        FileNotFoundError: if ``config.yaml`` or ``model.safetensors`` is missing.
        ValueError: for an adapter run (see :mod:`megaspec.finetune`).
        ConfigError: if ``config.yaml`` is not a valid saved run config.
        RuntimeError: if the weights do not match the model the config describes.
    """
    directory = Path(directory)
    run = load(RunConfig, directory / CONFIG_FILE)
    if run.peft is not None:
        raise ValueError(
            f"{directory}: an adapter run (its {CONFIG_FILE} has a peft: section); load it "
            f"with megaspec.finetune.load_adapter_run, or merge it with megaspec merge"
        )
    model = build_model(run).to(device)
    safetensors.torch.load_model(
        model, str(directory / WEIGHTS_FILE), strict=True, device=str(device)
    )
    model.eval()
    return model, run
