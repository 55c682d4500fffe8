#!/usr/bin/env python3
"""Generation throughput: megaspec's key/value-cache decoding, recomputation, and transformers.

One run builds megaspec's Llama-style ``GPTModel`` and times ``megaspec.generate.generate``
with its key/value caches (``megaspec-cache``) and with ``use_cache=False``, recomputing the
whole sequence for every new token (``megaspec-recompute``); then it builds Hugging Face's
``LlamaForCausalLM`` of the same shape and times its ``generate`` (``hf``: greedy,
``use_cache=True``). All decode greedily from the same random prompts, with random weights
(speed does not depend on them; see bench/decoders.py), for the same number of new tokens.

A run of a decoder is one whole generation, prefill included; after ``--warmup`` runs the
median of ``--repeats`` runs is reported as tokens/s (``batch * new_tokens / seconds``) and
ms per new token. On CUDA peak memory is reported as well.

Usage::

    python bench/generate.py --small            # tiny model, seconds on a CPU (the test's run)
    python bench/generate.py                    # 50M GQA model on a CPU (float32)
    python bench/generate.py --device cuda      # the 1B model of bench/train_step.py in bf16

``--json`` writes the record to a file or folder (on CUDA it is always written, by default to
bench/results/<date>-generate-<gpu>.json). See bench/README.md.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import Tensor

# The repository root, so `python bench/generate.py` finds megaspec and bench without installing.
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPOSITORY not in sys.path:
    sys.path.insert(0, REPOSITORY)

from bench import environment  # noqa: E402
from bench.decoders import (  # noqa: E402
    CPU,
    GPU,
    SMALL,
    DecodeConfig,
    Decoder,
    PeerUnavailable,
    hf_decoder,
    hf_model,
    megaspec_decoders,
    megaspec_model,
    random_prompts,
)
from bench.report import record_path, write_record  # noqa: E402

FORMAT = "megaspec-bench-generate/1"
NAMES = ("megaspec-cache", "megaspec-recompute", "hf")
LABELS = dict(
    zip(NAMES, ("megaspec (KV cache)", "megaspec (recompute)", "HF transformers (generate)"))
)
RESULTS_FOLDER = Path(REPOSITORY) / "bench" / "results"


@dataclass
class Timing:
    """One decoder's row; numbers are ``None`` where not measured (memory on a CPU)."""

    name: str
    label: str
    status: str
    parameters: int | None = None
    seconds: float | None = None  # median of the timed runs
    seconds_min: float | None = None
    seconds_max: float | None = None
    tokens_per_s: float | None = None
    ms_per_token: float | None = None  # per new token of the whole batch
    peak_gib: float | None = None
    tokens: Tensor | None = None  # what the last run generated; not part of the record


RECORD_FIELDS = tuple(f.name for f in fields(Timing) if f.name not in ("name", "tokens"))


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (nothing to wait for on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_decoder(
    decoder: Decoder, config: DecodeConfig, device: torch.device, args: argparse.Namespace
) -> Timing:
    """Warm up, then time ``args.repeats`` whole generations."""
    print(f"{decoder.label}: {args.warmup} warm-up, {args.repeats} timed runs", flush=True)
    for _ in range(args.warmup):
        decoder.run()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    tokens = None
    for _ in range(args.repeats):
        synchronize(device)
        start = time.perf_counter()
        tokens = decoder.run()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    expected = (config.batch, config.prompt_length + config.new_tokens)
    if tokens is None or tuple(tokens.shape) != expected:
        shape = None if tokens is None else tuple(tokens.shape)
        raise RuntimeError(f"{decoder.name} generated {shape}, expected {expected}")
    return Timing(
        name=decoder.name, label=decoder.label, status="ok", parameters=decoder.parameters,
        seconds=median, seconds_min=min(seconds), seconds_max=max(seconds),
        tokens_per_s=config.generated_tokens / median,
        ms_per_token=median / config.new_tokens * 1e3,
        peak_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        tokens=tokens.cpu(),
    )  # fmt: skip


def run_decoders(
    decoders: list[Decoder], config: DecodeConfig, device: torch.device, args: argparse.Namespace
) -> list[Timing]:
    """Time each selected decoder; a failure becomes a ``failed: ...`` row."""
    results = []
    for decoder in decoders:
        if decoder.name not in args.only:
            continue
        try:
            results.append(time_decoder(decoder, config, device, args))
        except Exception as error:
            traceback.print_exc()
            status = f"failed: {type(error).__name__}: {error}"
            results.append(Timing(decoder.name, decoder.label, status))
    return results


def run_all(
    config: DecodeConfig, device: torch.device, dtype: torch.dtype, args: argparse.Namespace
) -> list[Timing]:
    """megaspec's two decoders on one model, then transformers'; each model freed after use."""
    prompts = random_prompts(config, device)
    results = []
    if {"megaspec-cache", "megaspec-recompute"} & set(args.only):
        model = megaspec_model(config, device, dtype)
        results += run_decoders(megaspec_decoders(model, prompts, config), config, device, args)
        del model
        free_memory(device)
    if "hf" in args.only:
        try:
            model = hf_model(config, device, dtype)
        except PeerUnavailable as error:
            return [*results, Timing("hf", LABELS["hf"], f"not run: {error}")]
        results += run_decoders([hf_decoder(model, prompts, config)], config, device, args)
        del model
        free_memory(device)
    return results


def free_memory(device: torch.device) -> None:
    """Collect garbage and hand cached CUDA blocks back, so the next model starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _cell(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(
    results: list[Timing], config: DecodeConfig, device: torch.device, dtype: torch.dtype
) -> str:
    """The table, the speed-up lines and whether megaspec's two decoders agree."""
    lines = [
        "",
        f"Greedy generation, batch {config.batch} x prompt {config.prompt_length} + "
        f"{config.new_tokens} new tokens; {config.num_layers} layers, hidden {config.hidden_size}, "
        f"{config.num_heads} heads ({config.num_kv_heads} KV), ffn {config.ffn_hidden_size}, vocab "
        f"{config.vocab_size}; random weights; {device.type} {str(dtype).removeprefix('torch.')}",
        f"{'decoder':<28} {'parameters':>12} {'tokens/s':>10} {'ms/token':>9} {'run s':>8} "
        f"{'peak GiB':>9}  status",
    ]
    for r in results:
        lines.append(
            f"{r.label:<28} {_cell(r.parameters, ',d'):>12} {_cell(r.tokens_per_s, ',.1f'):>10} "
            f"{_cell(r.ms_per_token, '.2f'):>9} {_cell(r.seconds, '.3f'):>8} "
            f"{_cell(r.peak_gib, '.2f'):>9}  {r.status}"
        )
    by_name = {r.name: r for r in results}
    cache = by_name.get("megaspec-cache")
    for other in ("megaspec-recompute", "hf"):
        peer = by_name.get(other)
        if cache and peer and cache.tokens_per_s and peer.tokens_per_s:
            ratio = cache.tokens_per_s / peer.tokens_per_s
            lines.append(f"megaspec KV cache / {peer.label}: tokens/s x{ratio:.2f}")
    agree = tokens_agree(results)
    if agree is not None:
        lines.append(f"megaspec KV-cache tokens equal recomputation's: {'yes' if agree else 'no'}")
    return "\n".join(lines)


def tokens_agree(results: list[Timing]) -> bool | None:
    """Whether megaspec's two decoders generated the same tokens (``None``: not both ran)."""
    by_name = {r.name: r.tokens for r in results}
    cache, recompute = by_name.get("megaspec-cache"), by_name.get("megaspec-recompute")
    return None if cache is None or recompute is None else bool(torch.equal(cache, recompute))


def _finite(value: object) -> object:
    # JSON has no NaN or infinity.
    return None if isinstance(value, float) and not math.isfinite(value) else value


def record(
    results: list[Timing], config: DecodeConfig, run: dict[str, object], device: torch.device
) -> dict[str, object]:
    """The JSON record of one run (keys documented in bench/README.md)."""
    return {
        "format": FORMAT,
        "source": "measured by bench/generate.py",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": environment.command_line(),
        "machine": environment.machine(device),
        "versions": environment.versions(),
        "config": {**config.__dict__, "weights": "random"},
        "run": run,
        "results": {
            r.name: {key: _finite(getattr(r, key)) for key in RECORD_FIELDS} for r in results
        },
        "cache_tokens_equal_recompute": tokens_agree(results),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    option = parser.add_argument
    option("--small", action="store_true", help="tiny model, short generation (seconds on a CPU)")
    option("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    option("--dtype", choices=("float32", "bfloat16"), default=None,
           help="weights and activations (default: float32 on a CPU, bfloat16 on CUDA)")
    option("--batch", type=int, default=None, help="prompts per generation (config's default)")
    option("--prompt-length", type=int, default=None, help="tokens per prompt (config's default)")
    option("--new-tokens", type=int, default=None, help="tokens to generate (config's default)")
    option("--warmup", type=int, default=1, help="untimed runs per decoder (%(default)s)")
    option("--repeats", type=int, default=3,
           help="timed runs per decoder; the median is reported (%(default)s)")
    option("--only", default=",".join(NAMES), help=f"comma-separated subset of {','.join(NAMES)}")
    option("--json", nargs="?", const="", default=None, metavar="FILE.json|FOLDER",
           help="write the JSON record (default folder bench/results/; always on CUDA)")  # fmt: skip
    args = parser.parse_args(argv)
    args.only = [name for name in args.only.split(",") if name]
    unknown = set(args.only) - set(NAMES)
    if unknown or args.repeats < 1 or args.warmup < 0:
        parser.error(
            f"--only takes {', '.join(NAMES)} (got {sorted(unknown)}); --repeats >= 1; "
            f"--warmup >= 0"
        )
    return args


def chosen_config(args: argparse.Namespace, device: torch.device) -> DecodeConfig:
    """``SMALL``, ``CPU`` or ``GPU``, with the sizes the command line overrides."""
    config = SMALL if args.small else GPU if device.type == "cuda" else CPU
    overrides = {
        "batch": args.batch, "prompt_length": args.prompt_length, "new_tokens": args.new_tokens
    }  # fmt: skip
    return replace(config, **{key: value for key, value in overrides.items() if value is not None})


def save_record(
    results: list[Timing],
    config: DecodeConfig,
    device: torch.device,
    args: argparse.Namespace,
    dtype: torch.dtype,
) -> None:
    """Write the JSON record where ``--json`` says (on CUDA, by default to bench/results/)."""
    if args.json is None and device.type != "cuda":
        return
    slug = f"generate-{environment.gpu_slug(device)}"
    path = record_path(args.json or "", RESULTS_FOLDER, slug)
    run: dict[str, object] = {
        "device": str(device), "dtype": str(dtype).removeprefix("torch."), "small": args.small,
        "warmup": args.warmup, "repeats": args.repeats, "only": args.only,
    }  # fmt: skip
    write_record(record(results, config, run, device), path)
    print(f"results written to {path}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 unless a decoder failed (``not run`` is fine)."""
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
        # fp32 means fp32: no TF32 in the matrix products.
        torch.backends.cuda.matmul.allow_tf32 = False
        print(f"device: {torch.cuda.get_device_name(device)}")
    dtype_name = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    dtype = getattr(torch, dtype_name)
    config = chosen_config(args, device)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}, {threads} CPU threads")
    print(f"config: {config}", flush=True)
    results = run_all(config, device, dtype, args)
    print(report(results, config, device, dtype), flush=True)
    save_record(results, config, device, args, dtype)
    return 0 if not any(r.status.startswith("failed") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
