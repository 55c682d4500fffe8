#!/usr/bin/env python3
"""Training-step throughput and peak memory: megaspec against its peers.

One run builds, times and frees each framework in turn on the same Llama-style config
(``--size 1b``, the default: 16 layers, hidden 2048, 16 heads with 16 KV heads, gated SiLU MLP
5632, RMSNorm 1e-5, RoPE 10000, vocab 32000 untied, sequence 2048, micro-batch 4, no biases, no
dropout; ``--size hidden4096``: 8 layers, hidden 4096, 32 heads, MLP 11008, the rest alike):

- ``megaspec``: megaspec ``GPTModel`` from ``megaspec.backends.torch.llama_submodules`` (bf16),
  with ``fuse_elementwise``; ``megaspec-eager`` without it;
- ``hf``: Hugging Face ``LlamaForCausalLM`` with ``attn_implementation="sdpa"`` in bf16;
  ``hf-compile`` (opt-in) the same under ``model.compile()``;
- ``hf-liger``: the same HF model with Liger kernels (RoPE, SwiGLU, RMSNorm, fused linear
  cross-entropy); CUDA only;
- ``megatron``: Megatron-core ``GPTModel`` with the Transformer Engine layer spec (bf16, TP=1)
  and Megatron-LM's default fusions; ``megatron-fp8`` and ``megatron-fp8-current`` the same
  in FP8 (format hybrid; recipe delayed, or tensorwise current scaling).

A step is forward + backward of the mean token cross-entropy (float32 softmax in every
framework) on the same (input, next token) pairs, gradients set to ``None`` before each step,
no optimizer. Steps are timed with CUDA events after warm-up; the median is reported as
tokens/s (= batch * sequence / step time). Peak memory is ``torch.cuda.max_memory_allocated``
over the steps, reset after the model was built and the previous framework freed: weights +
gradients + activations. A peer that cannot run here is listed as ``not run: <reason>``.
Model TFLOP/s counts ``6N + 12 x layers x hidden x sequence`` FLOPs per token (``N``: the
parameters without the input embedding); MFU divides it by a bf16 matmul peak measured at the
start of the run; issue 10's targets are printed last as ``met`` or ``missed``.

Usage::

    python bench/train_step.py                  # full config, needs a CUDA GPU
    python bench/train_step.py --small          # tiny config, CPU smoke test
    python bench/train_step.py --profile        # + torch.profiler kernel summary
    python bench/train_step.py --all            # every framework, hf-compile included
    python bench/train_step.py --size hidden4096

On CUDA the results are also written as JSON to bench/results/<date>-<gpu>.json (``--json``
chooses another file or folder). See bench/README.md for the device machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

# The repository root, so `python bench/train_step.py` finds megaspec and bench without installing.
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPOSITORY not in sys.path:
    sys.path.insert(0, REPOSITORY)

from bench import environment, timing  # noqa: E402
from bench.config import SIZES, BenchConfig  # noqa: E402
from bench.peak import MatmulPeak, measure_matmul_peak  # noqa: E402
from bench.peers import PEERS, Built, Peer, PeerUnavailable  # noqa: E402
from bench.report import Result, record, record_path, report, write_record  # noqa: E402
from bench.targets import check_targets  # noqa: E402

RESULTS_FOLDER = Path(REPOSITORY) / "bench" / "results"


@dataclass
class Measurement:
    """What one peer's run needs: the inputs, the options, where the profile details go."""

    config: BenchConfig
    device: torch.device
    inputs: Tensor  # [batch, sequence] token ids
    labels: Tensor  # [batch, sequence] the token after each input token
    args: argparse.Namespace
    peak: MatmulPeak | None = None  # one GPU's bf16 matmul peak (CUDA only), for MFU

    @property
    def peak_tflops(self) -> float | None:
        """The bf16 matmul peak of the GPUs running one model: one GPU's times the
        tensor-parallel size (model TFLOP/s count the whole model's work)."""
        return None if self.peak is None else self.peak.tflops * self.config.tensor_parallel


@dataclass
class Started:
    """A peer that built and took its first step (which starts the warm-up)."""

    built: Built
    step: Callable[[], Tensor]
    note: str
    parameters: int
    weights_gib: float | None
    first_loss: float


def _start_variant(peer: Peer, index: int, run: Measurement, note: str) -> Started:
    """Build ``peer``'s ``index``-th variant and take the first step."""
    started = time.perf_counter()
    built = peer.variants[index].build(run.config, run.device)
    try:
        parameters = sum(p.numel() for p in built.model.parameters())
        print(f"built in {time.perf_counter() - started:.1f} s; parameters: {parameters:,}")
        step = timing.make_step(built, run.inputs, run.labels)
        timing.free_memory(run.device)
        timing.reset_peak_memory(run.device)
        weights = timing.allocated_gib(run.device)
        first_loss = float(step().item())
    except BaseException:
        if built.cleanup is not None:
            built.cleanup()
        raise
    return Started(built, step, note, parameters, weights, first_loss)


def start_peer(peer: Peer, run: Measurement) -> Started:
    """The first variant of ``peer`` that builds and steps; the status note names a retry."""
    note = ""
    for index, variant in enumerate(peer.variants):
        try:
            return _start_variant(peer, index, run, note)
        except PeerUnavailable:
            raise
        except Exception as error:
            if index + 1 == len(peer.variants):
                raise
            traceback.print_exc()
            retry = peer.variants[index + 1].change
            print(f"{peer.label} failed ({type(error).__name__}: {error}); retrying with {retry}", flush=True)
            note = f"{retry} after {type(error).__name__}: {error}"
            timing.free_memory(run.device)
    raise AssertionError(f"{peer.name} has no variants")


def measure(peer: Peer, started: Started, run: Measurement) -> Result:
    """Warm up, time the steps, read the peak memory, and profile if asked."""
    for _ in range(max(run.args.warmup - 1, 0)):
        started.step()
    times, last = timing.time_steps(started.step, run.args.steps, run.device)
    median = statistics.median(times)
    model_tflops = run.config.model_flops_per_step() / (median / 1e3) / 1e12
    result = Result(
        name=peer.name,
        label=peer.label,
        status=f"ok ({started.note})" if started.note else "ok",
        parameters=started.parameters,
        step_ms=median,
        step_ms_min=min(times),
        step_ms_max=max(times),
        tokens_per_s=run.config.tokens / (median / 1e3),
        model_tflops=model_tflops,
        mfu=model_tflops / run.peak_tflops if run.peak_tflops is not None else None,
        weights_gib=started.weights_gib,
        peak_gib=timing.peak_gib(run.device),
        first_loss=started.first_loss,
        last_loss=float(last.item()),
    )
    memory = "n/a"
    if result.peak_gib is not None and result.weights_gib is not None:
        memory = f"{result.peak_gib:.2f} GiB (weights {result.weights_gib:.2f} GiB)"
    print(
        f"step {median:.2f} ms median (min {min(times):.2f}, max {max(times):.2f}, {len(times)} steps); "
        f"{result.tokens_per_s:,.0f} tokens/s; loss {result.first_loss:.4f} (first) -> "
        f"{result.last_loss:.4f}; peak {memory}",
        flush=True,
    )
    uniform = math.log(run.config.vocab_size)  # a fresh model's loss
    if not math.isfinite(started.first_loss) or abs(started.first_loss - uniform) > 1.0:
        print(f"WARNING: initial loss {started.first_loss} is far from ln(vocab) = {uniform:.3f}")
    if profiled(peer, run.args):
        folder = run.args.profile_dir
        detail = os.path.join(folder, f"profile_{peer.name}.txt") if folder else None
        result.profile = timing.profile_steps(
            started.step, run.device, run.args.profile_steps, step_ms=median, detail_path=detail
        )
        print(result.profile, flush=True)
    return result


def profiled(peer: Peer, args: argparse.Namespace) -> bool:
    """Whether ``peer`` runs under the profiler: ``--profile``, and named by ``--profile-only``."""
    return bool(args.profile) and (args.profile_only is None or peer.name in args.profile_only.split(","))


def run_peer(peer: Peer, run: Measurement) -> Result:
    """Build, time and free one peer; never raises (failures become the status)."""
    print(f"\n=== {peer.label} ===", flush=True)
    timing.free_memory(run.device)
    leftover = timing.allocated_gib(run.device)
    if leftover is not None:
        print(f"memory allocated before build: {leftover:.3f} GiB (inputs and leftovers)")
    started: Started | None = None
    try:
        started = start_peer(peer, run)
        return measure(peer, started, run)
    except PeerUnavailable as error:
        print(f"not run: {error}")
        return Result(name=peer.name, label=peer.label, status=f"not run: {error}")
    except Exception as error:  # report, keep benchmarking the others
        traceback.print_exc()
        return Result(name=peer.name, label=peer.label, status=f"failed: {type(error).__name__}: {error}")
    finally:
        if started is not None and started.built.cleanup is not None:
            try:
                started.built.cleanup()
            except Exception:
                traceback.print_exc()
        del started
        timing.free_memory(run.device)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see ``--help``)."""
    names = ",".join(peer.name for peer in PEERS)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", choices=sorted(SIZES), default=None,
        help="model and batch: 1b (default; 16 layers, hidden 2048), hidden4096 (8 layers, hidden "
        "4096, 32 heads, ffn 11008), small (CPU smoke test)",
    )
    parser.add_argument("--small", action="store_true", help="the same as --size small")
    parser.add_argument("--profile", action="store_true", help="torch.profiler summary per framework")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--profile-steps", type=int, default=3, help="steps under the profiler")
    parser.add_argument(
        "--profile-only", default=None, metavar="NAMES",
        help="with --profile: profile only these comma-separated frameworks (default: every one)",
    )
    parser.add_argument(
        "--profile-dir", default=None,
        help="with --profile: write profile_<framework>.txt (top 60 kernels, ops by input shape) here",
    )
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--only", default=None,
        help=f"comma-separated subset of {names} (default: all but the opt-in hf-compile; "
        "--small: no megatron)",
    )
    choice.add_argument("--all", action="store_true", help="every framework, the opt-in ones too")
    parser.add_argument(
        "--no-peak", action="store_true",
        help="skip measuring the bf16 matmul peak (then no MFU and no MFU target)",
    )
    parser.add_argument(
        "--tensor-parallel", type=int, default=1, metavar="K",
        help="K > 1: every framework with a tensor-parallel build runs on K processes (one GPU "
        "each) with sequence parallelism; start with torchrun --nproc-per-node K",
    )
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument(
        "--json", nargs="?", const="", default=None, metavar="FILE_OR_FOLDER",
        help="write the JSON record to FILE.json, or <date>-<gpu>.json in a folder "
        "(default folder bench/results/; on CUDA a record is written there even without --json)",
    )
    args = parser.parse_args(argv)
    if args.small and args.size not in (None, "small"):
        parser.error(f"--small contradicts --size {args.size}")
    args.size = "small" if args.small else args.size or "1b"
    args.small = args.size == "small"
    if args.steps < 1 or args.warmup < 1 or args.profile_steps < 1:
        parser.error("--steps, --warmup and --profile-steps must be at least 1")
    for option in ("only", "profile_only"):
        value = getattr(args, option)
        unknown = sorted(set(value.split(",")) - {p.name for p in PEERS}) if value else []
        if unknown:
            parser.error(
                f"unknown framework(s) {', '.join(unknown)} in --{option.replace('_', '-')}; "
                f"the frameworks are {names}"
            )
    if args.profile_only is not None and not args.profile:
        parser.error("--profile-only needs --profile")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.tensor_parallel < 1:
        parser.error("--tensor-parallel must be at least 1")
    if world != args.tensor_parallel:
        parser.error(
            f"--tensor-parallel {args.tensor_parallel} needs {args.tensor_parallel} processes, one per "
            f"rank, and this is {world} (WORLD_SIZE): start it with torchrun --nproc-per-node "
            f"{args.tensor_parallel} bench/train_step.py --tensor-parallel {args.tensor_parallel} ..."
        )
    return args


def choose_device(requested: str | None) -> torch.device:
    """``requested``, else the current CUDA device, else the CPU."""
    device = torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))
    if str(device) == "cuda":  # no index given
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def start_device(requested: str | None, *, small: bool) -> torch.device | None:
    """The device to run on (:func:`choose_device`), made current and printed; ``None``, with
    the reason on stderr, for the full config on a CPU (it needs a CUDA GPU)."""
    device = choose_device(requested)
    if device.type == "cpu" and not small:
        print("the full config needs a CUDA GPU; use --small on a CPU", file=sys.stderr)
        return None
    if device.type == "cuda":
        torch.cuda.set_device(device)
        print(f"device: {torch.cuda.get_device_name(device)}")
    return device


def start_tensor_parallel(args: argparse.Namespace) -> None:
    """Under ``--tensor-parallel K > 1``: the default process group over torchrun's K processes
    (NCCL, each on the GPU ``LOCAL_RANK``; gloo without CUDA), and rank 0 alone printing."""
    if args.tensor_parallel == 1:
        return
    cuda = torch.cuda.is_available() and (args.device or "cuda").startswith("cuda")
    if cuda:
        args.device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    dist.init_process_group("nccl" if cuda else "gloo")
    if not reporting_rank():  # every rank runs the same steps; rank 0 reports them
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (for the life of the process)


def reporting_rank() -> bool:
    """Whether this process prints and writes the record: the only one, or rank 0."""
    return not dist.is_initialized() or dist.get_rank() == 0


def skip_reason(peer: Peer, args: argparse.Namespace) -> str | None:
    """Why ``peer`` is left out of this run, or ``None`` if it runs."""
    reason = _selection(peer, args)
    if reason is None and args.tensor_parallel > 1 and not peer.tensor_parallel:
        return "not run: no tensor-parallel build (--tensor-parallel)"
    return reason


def _selection(peer: Peer, args: argparse.Namespace) -> str | None:
    """Why ``--only``, ``--all`` or ``--small`` leave ``peer`` out, or ``None``."""
    if args.all:
        return None
    if args.only:
        return None if peer.name in args.only.split(",") else "skipped (--only)"
    if peer.opt_in:
        return "skipped (opt-in: --only)"
    return "skipped (--small)" if args.small and not peer.in_small else None


def run_all(run: Measurement) -> list[Result]:
    """Every peer in order, each from the same seed; opt-in peers not asked for are left out."""
    results = []
    for peer in PEERS:
        reason = skip_reason(peer, run.args)
        if reason is None:
            torch.manual_seed(0)
            results.append(run_peer(peer, run))
        elif not peer.opt_in or reason.startswith("not run"):
            results.append(Result(name=peer.name, label=peer.label, status=reason))
    return results


def matmul_peak(device: torch.device, skip: bool) -> MatmulPeak | None:
    """The bf16 matmul peak on a CUDA device, measured before any peer runs (``None`` on a
    CPU, where a peak says little, or with ``--no-peak``)."""
    if skip or device.type != "cuda":
        print("bf16 matmul peak: not measured" + (" (--no-peak)" if skip else " (CUDA only)"))
        return None
    peak = measure_matmul_peak(device)
    print(
        f"bf16 matmul peak: {peak.tflops:.1f} TFLOP/s (best of {peak.rounds} x {peak.repeats} "
        f"products {peak.m}x{peak.k} @ {peak.k}x{peak.n})",
        flush=True,
    )
    timing.free_memory(device)
    return peak


def token_batch(config: BenchConfig, device: torch.device) -> tuple[Tensor, Tensor]:
    """Random tokens from a fixed seed: (inputs, labels), labels the inputs shifted by one."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.vocab_size, (config.batch, config.sequence + 1), generator=generator)
    return tokens[:, :-1].contiguous().to(device), tokens[:, 1:].contiguous().to(device)


def print_profiles(results: list[Result]) -> None:
    """megaspec's profile and the fastest peer's, again, next to each other at the end."""
    mine = next((r for r in results if r.name == "megaspec" and r.ok), None)
    peers = [r for r in results if r.name != "megaspec" and r.ok and r.tokens_per_s]
    fastest = max(peers, key=lambda r: r.tokens_per_s or 0.0) if peers else None
    for chosen in (mine, fastest):
        if chosen is not None and chosen.profile is not None:
            print(f"\n--- profile: {chosen.label} ---\n{chosen.profile}")


def save_record(results: list[Result], run: Measurement, targets: dict[str, dict[str, object]]) -> None:
    """Write the JSON record where ``--json`` says (on CUDA, by default to bench/results/)."""
    if run.args.json is None and run.device.type != "cuda":
        return
    path = record_path(run.args.json or "", RESULTS_FOLDER, environment.gpu_slug(run.device))
    options: dict[str, object] = {
        "device": str(run.device),
        "size": run.args.size,
        "small": run.args.small,
        "steps": run.args.steps,
        "warmup": run.args.warmup,
        "profile": run.args.profile,
    }
    data = record(
        results,
        run.config,
        command=environment.command_line(),
        machine=environment.machine(run.device),
        versions=environment.versions(),
        run=options,
        peak=run.peak.as_record() if run.peak is not None else None,
        targets=targets,
    )
    write_record(data, path)
    print(f"results written to {path}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 unless a peer failed (``not run`` and ``skipped`` are fine)."""
    args = parse_args(argv)
    config = dataclasses.replace(SIZES[args.size], tensor_parallel=args.tensor_parallel)
    start_tensor_parallel(args)
    try:
        device = start_device(args.device, small=args.small)
        if device is None:
            return 2
        print(f"torch {torch.__version__}, python {sys.version.split()[0]}")
        print(f"config ({args.size}): {config}; parameters expected {config.expected_parameters():,}")
        peak = matmul_peak(device, args.no_peak)
        print(f"warm-up {args.warmup} steps, timed {args.steps} steps", flush=True)
        inputs, labels = token_batch(config, device)
        run = Measurement(config, device, inputs, labels, args, peak)
        results = run_all(run)
        if args.profile:
            print_profiles(results)
        print(report(results, config, run.peak_tflops), flush=True)
        targets = check_targets(results, run.peak_tflops)
        print("\n".join(target.line() for target in targets), flush=True)
        if reporting_rank():
            save_record(results, run, {target.name: target.as_record() for target in targets})
        if dist.is_initialized():
            # The other ranks wait while rank 0 writes the record: a rank that destroys its
            # gloo group while a peer holds it open can abort at exit (as in megaspec train).
            dist.barrier()
        return 0 if not any(r.status.startswith("failed") for r in results) else 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
