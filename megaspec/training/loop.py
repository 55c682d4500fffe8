"""The training loop: steps with gradient accumulation, validation, metrics, early stops."""

from __future__ import annotations

import contextlib
import math
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from megaspec.backends.fp8 import Fp8Config, check_fp8_model, fp8_autocast
from megaspec.config import ConfigError, PathLike, RunConfig, TrainingConfig, saved_text
from megaspec.models import GPTModel
from megaspec.parallel import ParallelGroups, clip_grad_norm, data_parallel, global_mean_loss, local_batch
from megaspec.training.batches import Batch, RunBatches, run_batches
from megaspec.training.checkpoints import (
    Checkpointer,
    check_checkpointing,
    remove_previous_checkpoints,
    restore,
)
from megaspec.training.distributed import agreed_signal, is_distributed, is_main_rank, save_gathered_model
from megaspec.training.files import MetricsLog, check_output_dir, save_trained_model
from megaspec.training.setup import (
    build_model,
    check_peft_base,
    learning_rate_at,
    make_optimizer,
    set_learning_rate,
)
from megaspec.training.stopping import NonFiniteLossError, StopRequest, stop_on_signals


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
        stop_signal: the signal (SIGINT, SIGTERM) that stopped the run early, or ``None``;
            ``first_step + len(losses)`` steps were done.
        first_step: the steps done before this call, by the checkpoint it resumed from.
    """

    run: RunConfig
    model: GPTModel
    losses: tuple[float, ...]
    validation_losses: tuple[tuple[int, float], ...]
    tokens_per_second: float
    seconds: float
    stop_signal: int | None = None
    first_step: int = 0


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
    save_model: bool = True,
    resume_from: PathLike | None = None,
    groups: ParallelGroups | None = None,
) -> TrainResult:
    """Train ``run.model`` per ``run.training`` on its data; save it to ``output_dir``.

    Deterministic for a given run, device and thread count. ``progress`` shows a tqdm bar
    with the loss, tokens/s and the last validation loss. ``model`` (built from ``run.model``,
    e.g. pretrained weights, perhaps with adapters) is trained instead of a fresh one; its
    parameters with ``requires_grad=False`` stay as they are. A run with ``peft`` needs
    pretrained weights: :func:`megaspec.finetune.finetune` adds the adapter and calls this.

    With ``output_dir``, it is checked before the first step (it must be a directory this
    process can write; previous files in it are replaced, a previous ``checkpoints/``
    deleted unless resuming), ``metrics.jsonl`` is written as training goes (see
    :mod:`megaspec.training.files`), training checkpoints are saved every
    ``training.checkpoint_interval`` steps (see :mod:`megaspec.training.checkpoints`) and
    unless ``save_model`` is false the model is saved at the end. SIGINT or SIGTERM stops
    the run after the current step; the model so far is saved (``progress.json`` says how
    many steps were done), so is a checkpoint, and the result's ``stop_signal`` is set.
    ``resume_from`` (a checkpoint directory) restores the model, optimizer, RNG, step and
    data position, and training continues to ``training.steps``.

    With ``groups`` spanning several processes (a torchrun job's,
    :func:`megaspec.training.distributed.training_groups`), call it on every rank: each
    builds its tensor-parallel shards, the replicas are made data parallel
    (``parallel.data_parallel_engine``) and take their rows of the global batch every rank
    draws alike, so the losses are one process's on the same batches. Rank 0 alone writes
    files and shows progress; the model is gathered and saved as one process's. Checkpoints
    are saved by every rank together, and ``resume_from`` may be one saved at another
    layout (data- and tensor-parallel sizes, engine). A given ``model`` must have been built
    over ``groups`` (e.g. ``megaspec.from_pretrained(..., groups=groups)``); adapters
    (``peft``) are refused.

    Raises:
        ConfigError: before the first step, for a run the main job cannot train (see
            :func:`build_model` and :func:`megaspec.training.batches.run_batches`), a
            ``peft`` run without ``model``, or a config that cannot be saved.
        CheckpointError: before the first step, for a checkpoint that cannot be resumed.
        OutputDirectoryError: before the first step, for an output directory that is a file
            or cannot be written.
        NonFiniteLossError: at the first NaN or infinite loss or gradient norm; that step's
            update is not applied and nothing is saved.
        ValueError: if ``model`` has no parameter to train.
    """
    started = perf_counter()
    saved_text(run)  # a config that cannot be saved fails now, not after training
    check_peft_base(run, has_base=model is not None)
    check_checkpointing(run)
    groups = ParallelGroups.single() if groups is None else groups
    if is_distributed(groups):
        _check_distributed(run, groups)
    batches = run_batches(run)
    if output_dir is not None:
        check_output_dir(output_dir, overwrite=True)  # a file or read-only place fails now
    model = (build_model(run, groups) if model is None else model).to(device)
    check_fp8_model(run.training.fp8, model)
    stepped = _data_parallel(model, run, groups)  # before the optimizer: FSDP replaces parameters
    state = _TrainingState(stepped, make_optimizer(model, run.training), batches, groups=groups)
    if resume_from is not None:
        state.first_step = restore(resume_from, run=run, model=model, optimizer=state.optimizer,
                                   batches=batches.train, groups=groups)  # fmt: skip
    elif output_dir is not None and is_main_rank():
        remove_previous_checkpoints(output_dir)
    if output_dir is not None and run.peft is None:
        state.checkpointer = Checkpointer(run, model, state.optimizer, batches.train,
                                          Path(output_dir), groups)  # fmt: skip
    metrics = MetricsLog(output_dir if is_main_rank() else None,
                         resumed_at=state.first_step if resume_from else None)  # fmt: skip
    try:
        with stop_on_signals() as stop:
            log = _run_steps(run, state, metrics, stop, progress=progress and is_main_rank())
            steps_done = state.first_step + len(log.losses)
            # Decided by all ranks alike: one rank alone saving would wait for the others.
            stop_signal = agreed_signal(stop.signal_number, groups)
            stopped_by = None if stop_signal is None else signal.Signals(stop_signal).name
            if stop_signal is not None and state.checkpointer is not None:
                state.checkpointer.save(steps_done)
            if output_dir is not None and save_model and is_distributed(groups):
                save_gathered_model(model, run, output_dir, groups, steps_done=steps_done,
                                    stopped_by=stopped_by)  # fmt: skip
            elif output_dir is not None and save_model:
                save_trained_model(
                    model, run, output_dir, steps_done=steps_done, stopped_by=stopped_by
                )
    finally:
        metrics.close()
    return TrainResult(
        run=run,
        model=model,
        losses=tuple(log.losses),
        validation_losses=tuple(log.validation),
        tokens_per_second=_tokens_per_step(run.training) * len(log.losses) / log.step_seconds,
        seconds=perf_counter() - started,
        stop_signal=stop_signal,
        first_step=state.first_step,
    )


MULTI_PROCESS_PEFT = (
    "multi-process (torchrun) runs do not train adapters (peft:) yet; train the adapter in one "
    "process (megaspec train --from DIR without torchrun), or drop peft: to train every weight"
)


def _check_distributed(run: RunConfig, groups: ParallelGroups) -> None:
    """Refuse, before the first step, what a multi-process run cannot do.

    Raises:
        ConfigError: for a batch the replicas cannot share.
        ValueError: for a peft run (:data:`MULTI_PROCESS_PEFT`).
    """
    if run.training.batch_size % groups.data_size != 0:
        raise ConfigError(
            "training.batch_size",
            f"{run.training.batch_size} sequences do not split over {groups.data_size} "
            f"data-parallel replicas",
        )
    if run.peft is not None:
        raise ValueError(MULTI_PROCESS_PEFT)


def _data_parallel(model: GPTModel, run: RunConfig, groups: ParallelGroups) -> nn.Module:
    """``model`` made data parallel over ``groups``' replicas (itself with one replica)."""
    if groups.data_size == 1:
        return model
    if run.parallel.data_parallel_engine == "ddp":
        return data_parallel(model, groups, engine="ddp")
    return data_parallel(model, groups, engine="fsdp")


@dataclass
class _TrainingState:
    """What the steps update, and where they start."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    batches: RunBatches
    first_step: int = 0
    checkpointer: Checkpointer | None = None
    groups: ParallelGroups = field(default_factory=ParallelGroups.single)


def _run_steps(
    run: RunConfig, state: _TrainingState, metrics: MetricsLog, stop: StopRequest, *, progress: bool
) -> _Log:
    """The optimisation loop from ``state.first_step``; returns early (after a whole step)
    when ``stop`` fires."""
    training = run.training
    model, optimizer, batches = state.model, state.optimizer, state.batches
    model.train()
    log = _Log()
    steps = range(state.first_step, training.steps)
    with tqdm(steps, desc="train", unit="step", disable=not progress, initial=state.first_step,
              total=training.steps) as bar:  # fmt: skip
        for step in bar:
            step_started = perf_counter()
            # Every rank draws the same global batch; each replica keeps its rows.
            inputs, labels = (local_batch(rows, state.groups) for rows in batches.train.next_batch())
            learning_rate = learning_rate_at(step, training)
            set_learning_rate(optimizer, learning_rate)
            loss, grad_norm = _training_step(model, optimizer, inputs, labels, training, step + 1,
                                             state.groups)  # fmt: skip
            seconds = perf_counter() - step_started
            log.losses.append(loss)
            log.step_seconds += seconds
            metrics.write(step=step + 1, loss=loss, learning_rate=learning_rate,
                          tokens_per_second=_tokens_per_step(training) / seconds,
                          grad_norm=grad_norm)  # fmt: skip
            if agreed_signal(stop.signal_number, state.groups) is not None:
                break  # train() saves the final checkpoint
            if (step + 1) % training.eval_interval == 0 or step + 1 == training.steps:
                value = validation_loss(model, batches.validation, training)
                log.validation.append((step + 1, value))
                metrics.write(step=step + 1, validation_loss=value)
            if state.checkpointer is not None:
                state.checkpointer.after_step(step + 1)
            bar.set_postfix(_postfix(log, training), refresh=False)
    return log


def forward_precision(
    training: TrainingConfig | None,
    device: torch.device,
    *,
    amax_group: dist.ProcessGroup | None = None,
) -> contextlib.ExitStack:
    """The forward's precision as ``training`` asks: ``torch.autocast`` to bfloat16 on
    ``device`` for ``mixed_precision: bfloat16``, and Transformer Engine's FP8 autocast for
    ``fp8`` (amaxes reduced over ``amax_group``); nothing for neither (the weights' dtype)."""
    stack = contextlib.ExitStack()
    if training is None:
        return stack
    if training.mixed_precision == "bfloat16":
        stack.enter_context(torch.autocast(device_type=device.type, dtype=torch.bfloat16))
    stack.enter_context(fp8_autocast(training.fp8, amax_reduction_group=amax_group))
    return stack


def _tokens_per_step(training: TrainingConfig) -> int:
    return training.batch_size * training.sequence_length


def _postfix(log: _Log, training: TrainingConfig) -> dict[str, str]:
    tokens_per_second = _tokens_per_step(training) * len(log.losses) / log.step_seconds
    postfix = {"loss": f"{log.losses[-1]:.3f}", "tok/s": f"{tokens_per_second:,.0f}"}
    if log.validation:
        postfix["val"] = f"{log.validation[-1][1]:.3f}"
    return postfix


def _training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: Tensor,
    labels: Tensor,
    training: TrainingConfig,
    step: int,
    groups: ParallelGroups,
) -> tuple[float, float]:
    """One update over ``training.gradient_accumulation_steps`` equal micro-batches of
    ``inputs`` (``[batch, seq]``); returns the batch's mean loss and the gradient norm.

    Each micro-batch's mean loss is divided by their count before its backward, so the
    summed gradients are those of the whole batch's mean loss. With several processes
    (``groups``) ``inputs`` are this replica's rows; the engine averages gradients over the
    replicas, and the loss and norm returned are global, so every rank takes the same
    non-finite decision.

    Raises:
        NonFiniteLossError: before the update, for a NaN or infinite loss or gradient norm.
    """
    device = next(model.parameters()).device
    micro_batches = training.gradient_accumulation_steps
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), dtype=torch.float64)  # summed as Python floats were
    for micro_inputs, micro_labels in zip(
        inputs.tensor_split(micro_batches), labels.tensor_split(micro_batches), strict=True
    ):
        with forward_precision(training, device, amax_group=_amax_group(groups)):
            # [batch / micro_batches, seq] float32
            losses: Tensor = model(micro_inputs.to(device), labels=micro_labels.to(device))
        loss = losses.mean() / micro_batches
        # torch.autograd.backward is typed; Tensor.backward is not.
        torch.autograd.backward(loss)
        total += loss.item()
    mean_loss = float(global_mean_loss(total, groups))
    if not math.isfinite(mean_loss):
        raise NonFiniteLossError(step, "loss", mean_loss)
    if is_distributed(groups):  # the norm over every rank's shards, equal on all of them
        grad_norm = float(clip_grad_norm(model, training.grad_clip, groups))
    else:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), training.grad_clip))
    if not math.isfinite(grad_norm):
        raise NonFiniteLossError(step, "gradient norm", grad_norm)
    optimizer.step()
    return mean_loss, grad_norm


@torch.no_grad()
def validation_loss(
    model: nn.Module, batches: Sequence[Batch], training: TrainingConfig | None = None
) -> float:
    """Mean loss over ``batches`` (a run's fixed validation batches, so successive
    validation losses are measured on the same text), in ``training``'s mixed precision;
    the model's mode is restored."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    for inputs, labels in batches:
        with forward_precision(training, device):  # [batch, seq]
            losses: Tensor = model(inputs.to(device), labels=labels.to(device))
        total += float(losses.mean().item())
    model.train(was_training)
    return total / len(batches)


def _amax_group(groups: ParallelGroups) -> dist.ProcessGroup | None:
    """Every process of a distributed run: delayed-scaling FP8 scales then agree on all."""
    return dist.group.WORLD if is_distributed(groups) else None
