"""``megaspec train``: train a small Llama-style byte-level model on the bundled text (about two
minutes on two CPU cores with the defaults), save it and print a generated sample.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import signal
import sys
import textwrap
from pathlib import Path

import torch
import torch.distributed as dist
import yaml

from megaspec.checkpoint.adapters import CONFIG_FILE as ADAPTER_CONFIG_FILE
from megaspec.checkpoint.adapters import WEIGHTS_FILE as ADAPTER_WEIGHTS_FILE
from megaspec.cli.run_config import (
    DEFAULT_PRESET,
    add_run_config_arguments,
    run_from_arguments,
    training_fields_help,
)
from megaspec.config import RunConfig, to_data
from megaspec.data import BYTE_TOKENIZER
from megaspec.finetune import BASE_FILE, finetune
from megaspec.generate import generate_text
from megaspec.training import (
    CONFIG_FILE,
    METRICS_FILE,
    PROGRESS_FILE,
    RUN_FILES,
    WEIGHTS_FILE,
    NonFiniteLossError,
    TrainResult,
    check_output_dir,
    check_peft_base,
    configure_threads,
    train,
)
from megaspec.parallel import ParallelGroups
from megaspec.training.checkpoints import CHECKPOINTS_DIRECTORY, find_resume_checkpoint
from megaspec.training.distributed import is_distributed, is_main_rank, training_groups

SAMPLE_TEMPERATURE = 0.8
SAMPLE_TOP_K = 40
DEFAULT_OUTPUT_DIR = Path("runs/train")
DESCRIPTION = (
    "Train a small Llama-style byte-level model on the bundled text (Python's licence and "
    "standard-library documentation, or training.data), save model.safetensors, config.yaml, "
    "progress.json and metrics.jsonl to --output-dir (refusing a previous run there unless "
    "--overwrite), and print a "
    "generated sample; with --from DIR, start from DIR's weights (and with a peft: section "
    "train only an adapter, saved as adapter files). The run config is the --preset model "
    "(or DIR's), then the -c files in order, then "
    "the convenience flags, then the OVERRIDEs in order; later layers override earlier ones."
)
EXIT_CODES = """exit codes:
  0    trained and saved (or --print-config printed)
  1    stopped at a NaN or infinite loss; nothing saved, a previous model is left as it was
  2    a bad argument, config, -c file, --import module, output directory or --resume
       checkpoint: before training
  130  stopped by SIGINT (Ctrl-C) after the current step; the model so far is saved, and a
       checkpoint to --resume from
  143  stopped by SIGTERM after the current step; the model so far is saved, and a
       checkpoint to --resume from"""


def add_train_arguments(train_parser: argparse.ArgumentParser) -> None:
    """The arguments of ``megaspec train``; its help ends with the ``training.*`` fields."""
    add_run_config_arguments(train_parser)
    option = train_parser.add_argument
    option("--from", dest="base", type=Path, default=None, metavar="DIR",
           help="start from the weights in DIR (a megaspec run directory or a Hugging Face "
           "checkpoint), whose architecture the run keeps: no model: section or model.* "
           "override; with a peft: section only the adapter trains")  # fmt: skip
    option("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR, metavar="DIR",
           help=f"directory for {WEIGHTS_FILE}, {CONFIG_FILE}, {PROGRESS_FILE} and "
           f"{METRICS_FILE} (%(default)s); checked before training")  # fmt: skip
    option("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
           help="continue the run in --output-dir from its newest checkpoint (in "
           f"{CHECKPOINTS_DIRECTORY}/), or from the CHECKPOINT directory given: model, "
           "optimizer, step, RNG and data position, to training.steps; put overrides "
           "before it")  # fmt: skip
    option("--overwrite", action="store_true",
           help="replace the previous run in --output-dir (one holding any of "
           f"{', '.join(RUN_FILES)}), which is refused otherwise")  # fmt: skip
    option("--print-config", action="store_true",
           help="print the resolved run config, every field, as YAML and exit without training")
    option("--device", default="cpu", metavar="DEVICE",
           help="torch device, e.g. cuda (%(default)s)")
    option("--threads", type=int, default=None, metavar="N",
           help="CPU threads (default: every core this process may use)")
    option("--prompt", default="Return the ", metavar="TEXT",
           help="start of the sample (%(default)r)")
    option("--sample-tokens", type=int, default=200, metavar="N",
           help="bytes to generate after training, 0 for none (%(default)s)")
    option("--no-progress", action="store_true", help="hide the progress bar")
    option("--tensor-parallel-size", type=int, default=None, metavar="K",
           help="the override parallel.tensor_parallel_size=K: under torchrun, each model "
           "replica spans K ranks and the world / K replicas are data parallel "
           "(parallel.data_parallel_engine: fsdp or ddp); K > 1 needs torchrun")  # fmt: skip
    train_parser.formatter_class = argparse.RawDescriptionHelpFormatter
    train_parser.description = textwrap.fill(DESCRIPTION, width=88)
    train_parser.epilog = f"{training_fields_help()}\n\n{EXIT_CODES}"


def _check_arguments(arguments: argparse.Namespace) -> None:
    """Checks of the arguments that are not part of the run config, before training.

    Raises:
        ValueError: for a device this torch cannot use, or an empty prompt.
        OutputDirectoryError: as :func:`megaspec.training.check_output_dir`.
    """
    try:
        # Allocating proves the device exists here: torch.device("cuda") alone succeeds on a
        # CPU-only build, which then fails on the first step with a traceback.
        torch.empty(0, device=torch.device(arguments.device))
    except (RuntimeError, AssertionError) as error:  # CPU-only torch asserts for cuda
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"--device {arguments.device}: this torch cannot use it ({reason})") from None
    if arguments.sample_tokens > 0 and not arguments.prompt:
        raise ValueError("--prompt must not be empty when --sample-tokens is positive")
    if arguments.resume is not None and arguments.base is not None:
        raise ValueError("--resume continues a megaspec train run; it cannot be combined with --from")
    # Resuming continues the run in --output-dir: its files are this run's, not a previous one's.
    check_output_dir(arguments.output_dir, overwrite=arguments.overwrite or arguments.resume is not None)


def run_train(arguments: argparse.Namespace) -> int:
    """Run ``megaspec train``; returns the exit code (see :data:`EXIT_CODES`)."""
    try:
        run = run_from_arguments(arguments)
        if arguments.print_config:
            print(yaml.safe_dump(to_data(run, explicit_only=False), sort_keys=False), end="")
            return 0
        check_peft_base(run, has_base=arguments.base is not None)
        _check_arguments(arguments)
        threads = configure_threads(arguments.threads)
        resume_from = None
        if arguments.resume is not None:
            given = None if arguments.resume is True else arguments.resume
            resume_from = find_resume_checkpoint(arguments.output_dir, given)
        # Last: every rank has checked the output directory before rank 0 writes to it.
        groups = training_groups(run)
    except (ValueError, OSError) as error:  # ConfigError and CheckpointError are ValueErrors
        print(f"megaspec train: {error}", file=sys.stderr)
        return 2
    try:
        # Under torchrun rank 0 speaks for the job; the others' output would repeat it.
        quiet = contextlib.nullcontext() if is_main_rank() else contextlib.redirect_stdout(io.StringIO())
        with quiet:
            code = _train_and_report(run, arguments, groups, threads, resume_from)
        if dist.is_initialized():
            # Rank 0 still writes the last files when the others get here; a rank that tears
            # its gloo group down while a peer holds it open aborts now and then ("terminate
            # called without an active exception"). Only on a normal return: after an error
            # a peer may never arrive.
            dist.barrier()
        return code
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _train_and_report(
    run: RunConfig,
    arguments: argparse.Namespace,
    groups: ParallelGroups,
    threads: int,
    resume_from: Path | None,
) -> int:
    """Train (on every rank of a torchrun job) and report; returns the exit code."""
    training = run.training
    if resume_from is not None:
        print(f"resuming from {resume_from}")
    print(f"training {_what(run, arguments)}"
          f"{''.join(f' + {path}' for path in arguments.config)} for {training.steps} steps of "
          f"{training.batch_size} x {training.sequence_length} tokens on {arguments.device} "
          f"({threads} CPU threads{_layout(groups)})")  # fmt: skip
    device, output_dir, progress = arguments.device, arguments.output_dir, not arguments.no_progress
    try:
        if arguments.base is None:
            result = train(run, device=device, output_dir=output_dir, progress=progress,
                           resume_from=resume_from, groups=groups)  # fmt: skip
        else:
            result = finetune(run, base=arguments.base, device=device, output_dir=output_dir,
                              progress=progress, groups=groups)  # fmt: skip
    except KeyboardInterrupt:  # before stepping began, or a second Ctrl-C: no traceback
        print(f"megaspec train: interrupted before the model was saved to {output_dir}",
              file=sys.stderr)  # fmt: skip
        return 128 + signal.SIGINT
    except NonFiniteLossError as error:
        print(f"megaspec train: {error}; {METRICS_FILE} in {output_dir} has the steps before",
              file=sys.stderr)  # fmt: skip
        return 1
    except ValueError as error:  # a bad config or adapter target, before the first step
        print(f"megaspec train: {error}", file=sys.stderr)
        return 2
    if result.stop_signal is not None:
        name = signal.Signals(result.stop_signal).name
        print(f"megaspec train: stopped by {name} after {result.first_step + len(result.losses)} "
              f"of {training.steps} steps; saved the model so far to {output_dir} "
              f"({PROGRESS_FILE} records the steps done)"
              f"{' and a checkpoint to --resume from' if result.run.peft is None else ''}",
              file=sys.stderr)  # fmt: skip
        return 128 + result.stop_signal
    _report(result, arguments, groups)
    return 0


def _layout(groups: ParallelGroups) -> str:
    if not is_distributed(groups):
        return ""
    return (f" per rank; {groups.data_size} data-parallel x {groups.tensor_size} "
            f"tensor-parallel ranks")  # fmt: skip


def _what(run: RunConfig, arguments: argparse.Namespace) -> str:
    if arguments.base is None:
        return f"the {arguments.preset or DEFAULT_PRESET!r} preset"
    if run.peft is None:
        return f"every weight of {arguments.base}"
    return f"a {run.peft.type_name} adapter on {arguments.base} (base weights frozen)"


def _report(result: TrainResult, arguments: argparse.Namespace, groups: ParallelGroups) -> None:
    losses = result.losses
    tail = losses[-min(10, len(losses)):]
    if not is_distributed(groups):  # a summary of one rank's shards would mislead
        print(result.model.summary())
    print(f"trained {len(losses)} steps in {result.seconds:.1f} s at "
          f"{result.tokens_per_second:,.0f} tokens/s: loss {losses[0]:.3f} -> {losses[-1]:.3f} "
          f"(mean of last {len(tail)}: {sum(tail) / len(tail):.3f}), "
          f"validation {result.validation_losses[-1][1]:.3f}")  # fmt: skip
    if result.run.peft is None:
        saved = f"{WEIGHTS_FILE}, {CONFIG_FILE}, {PROGRESS_FILE} and {METRICS_FILE}"
    else:
        saved = (f"{ADAPTER_CONFIG_FILE}, {ADAPTER_WEIGHTS_FILE}, {BASE_FILE}, {CONFIG_FILE}, "
                 f"{PROGRESS_FILE} and {METRICS_FILE}")
    print(f"saved {saved} to {arguments.output_dir}")
    # generate_text speaks bytes; a run with another tokenizer has no sample to print.
    if is_distributed(groups) and arguments.sample_tokens > 0:
        print(f"no sample from a multi-process run: megaspec generate from {arguments.output_dir}")
    elif arguments.sample_tokens > 0 and result.run.training.tokenizer == BYTE_TOKENIZER:
        seed = result.run.training.seed
        sample = generate_text(
            result.model,
            arguments.prompt,
            max_new_tokens=arguments.sample_tokens,
            context_length=result.run.training.sequence_length,
            temperature=SAMPLE_TEMPERATURE,
            top_k=SAMPLE_TOP_K,
            seed=seed,
        )
        print(f"sample (seed {seed}, temperature {SAMPLE_TEMPERATURE}, top-k {SAMPLE_TOP_K}):"
              f"\n{sample}")  # fmt: skip
