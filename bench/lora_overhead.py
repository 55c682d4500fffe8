#!/usr/bin/env python3
"""LoRA's training-step overhead: megaspec + ``megaspec.peft`` and HF + PEFT, each over its base.

One run builds, times and frees four models in turn, on bench/train_step.py's config and batch
(``--small``: its tiny CPU config), each built from seed 0:

- ``megaspec``: train_step.py's megaspec ``GPTModel`` (bf16, ``fuse_elementwise``), all trained;
- ``megaspec-lora``: the same with LoRA rank 16, alpha 32 on ``linear_qkv``, ``linear_proj``,
  ``linear_fc1`` and ``linear_fc2`` of every layer, everything else frozen;
- ``hf``: train_step.py's HF ``LlamaForCausalLM`` (sdpa, bf16), all trained;
- ``hf-peft``: the same in PEFT's ``get_peft_model`` with LoRA rank 16, alpha 32 on ``q_proj``,
  ``k_proj``, ``v_proj``, ``o_proj``, ``gate_proj``, ``up_proj`` and ``down_proj``, base frozen,
  adapters bf16 like megaspec's (``autocast_adapter_dtype=False``).

A step is train_step.py's (gradients set to ``None``, forward + backward of the mean token
cross-entropy, no optimizer), timed and reported the same way (median step time, tokens/s, peak
memory on CUDA). The report adds the trainable weights (checked against the count each library
should hold: megaspec's fused qkv and gate/up linears have one LoRA ``A`` each, PEFT's separate
ones three and two, see bench/peers/lora.py), whether the fresh adapters left the first loss
unchanged, LoRA's overhead over its own base, and megaspec + LoRA against HF + PEFT.

Usage::

    python bench/lora_overhead.py --small        # tiny config on a CPU, about a minute
    python bench/lora_overhead.py                # train_step.py's 1B config, needs a CUDA GPU

``--json`` writes the record (on CUDA always; by default bench/results/<date>-peft-<gpu>.json).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import torch

# `python bench/lora_overhead.py` puts bench/ first on sys.path; the repository root must be
# there too for `bench` and `megaspec`. (This file was bench/peft.py, whose name shadowed the
# `peft` package for every script under bench/, HF + Liger's import of it included.)
BENCH = os.path.dirname(os.path.abspath(__file__))
REPOSITORY = os.path.dirname(BENCH)
if REPOSITORY not in sys.path:
    sys.path.insert(0, REPOSITORY)

from bench import environment  # noqa: E402
from bench.config import FULL, SMALL, BenchConfig  # noqa: E402
from bench.peers import Built, Peer, Variant  # noqa: E402
from bench.peers.hf_llama import HF  # noqa: E402
from bench.peers.lora import (  # noqa: E402
    ALPHA,
    HF_PEFT,
    MEGASPEC_LORA,
    MEGASPEC_TARGETS,
    PEFT_TARGETS,
    RANK,
    LoraParameters,
    counted_lora_parameters,
    lora_parameters,
)
from bench.peers.megaspec_gpt import MEGASPEC  # noqa: E402
from bench.report import Result, finite, record_path, write_record  # noqa: E402
from bench.train_step import Measurement, run_peer, start_device, token_batch  # noqa: E402

FORMAT = "megaspec-bench-peft/1"
RESULTS_FOLDER = Path(REPOSITORY) / "bench" / "results"
# Each LoRA model after its base, so that a base's numbers are at hand for the overhead.
PEERS: tuple[Peer, ...] = (MEGASPEC, MEGASPEC_LORA, HF, HF_PEFT)
BASE_OF = {"megaspec-lora": "megaspec", "hf-peft": "hf"}
RESULT_FIELDS = (
    "label", "status", "parameters", "trainable", "lora_a", "lora_b", "expected_trainable",
    "step_ms", "step_ms_min", "step_ms_max", "tokens_per_s", "weights_gib", "peak_gib",
    "first_loss", "last_loss",
)  # fmt: skip


@dataclass(frozen=True)
class Trainable:
    """What a build left trainable: all of it, and for a LoRA model its adapter weights."""

    total: int
    lora: LoraParameters | None


@dataclass
class Row:
    """One model's timing (train_step.py's ``Result``) and its trainable weights."""

    result: Result
    trainable: Trainable | None = None
    expected: LoraParameters | None = None  # LoRA models only

    @property
    def counts_match(self) -> bool:
        """Whether a LoRA model holds the adapter weights it should (``True`` for a base)."""
        lora = self.trainable.lora if self.trainable else None
        return self.expected is None or lora is None or lora == self.expected


def counting(peer: Peer, found: dict[str, Trainable]) -> Peer:
    """``peer`` whose builds also record the model's trainable weights in ``found[peer.name]``."""

    def recorded(variant: Variant) -> Variant:
        def build(config: BenchConfig, device: torch.device) -> Built:
            built = variant.build(config, device)
            total = sum(p.numel() for p in built.model.parameters() if p.requires_grad)
            lora = counted_lora_parameters(built.model) if peer.name in BASE_OF else None
            found[peer.name] = Trainable(total, lora)
            return built

        return Variant(variant.change, build)

    return replace(peer, variants=[recorded(variant) for variant in peer.variants])


def run_all(run: Measurement) -> list[Row]:
    """The chosen models in order, each from seed 0, with their trainable weights."""
    found: dict[str, Trainable] = {}
    rows = []
    for peer in PEERS:
        if peer.name not in run.args.only:
            continue
        torch.manual_seed(0)
        result = run_peer(counting(peer, found), run)
        expected = None
        if peer.name in BASE_OF:
            expected = lora_parameters(run.config, fused=peer.name == "megaspec-lora")
        rows.append(Row(result, found.get(peer.name) if result.ok else None, expected))
    return rows


# --------------------------------------------------------------------------- report


def _cell(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def comparison(rows: list[Row]) -> dict[str, float | bool | None]:
    """The numbers the ratio lines print (``None``: not both measured).

    ``*_step_overhead``: a LoRA model's median step time over its base's, less 1 (negative when
    the frozen base's skipped weight gradients save more than the adapters cost);
    ``*_fresh_loss_equal``: whether its first loss equals its base's (fresh adapters are no-ops);
    ``megaspec_lora_over_hf_peft_*``: megaspec + LoRA divided by HF + PEFT.
    """
    by_name = {row.result.name: row.result for row in rows if row.result.ok}
    numbers: dict[str, float | bool | None] = {}
    for lora, base in BASE_OF.items():
        mine, theirs = by_name.get(lora), by_name.get(base)
        if mine is None or theirs is None:
            keys = ("step_overhead", "peak_memory_ratio", "fresh_loss_equal")
            numbers.update({f"{lora}_{key}": None for key in keys})
            continue
        step = _ratio(mine.step_ms, theirs.step_ms)
        numbers[f"{lora}_step_overhead"] = None if step is None else step - 1
        numbers[f"{lora}_peak_memory_ratio"] = _ratio(mine.peak_gib, theirs.peak_gib)
        numbers[f"{lora}_fresh_loss_equal"] = mine.first_loss == theirs.first_loss
    mine, theirs = by_name.get("megaspec-lora"), by_name.get("hf-peft")
    for key in ("step_ms", "tokens_per_s", "peak_gib"):
        value = _ratio(getattr(mine, key), getattr(theirs, key)) if mine and theirs else None
        numbers[f"megaspec_lora_over_hf_peft_{key}"] = value
    return numbers


def table(rows: list[Row], config: BenchConfig) -> list[str]:
    """The header and one line per model."""
    lines = [
        f"LoRA rank {RANK}, alpha {ALPHA:g} on every linear of every layer, base frozen; training "
        f"step (fwd+bwd, bf16, mean CE), batch {config.batch} x sequence {config.sequence} = "
        f"{config.tokens} tokens, {config.num_layers} layers, hidden {config.hidden_size}, ffn "
        f"{config.ffn_hidden_size}, vocab {config.vocab_size}",
        f"{'framework':<18} {'parameters':>14} {'trainable':>14} {'step ms':>9} {'tokens/s':>10} "
        f"{'peak GiB':>9} {'loss0':>9}  status",
    ]
    for row in rows:
        r, trainable = row.result, row.trainable.total if row.trainable else None
        lines.append(
            f"{r.label:<18} {_cell(r.parameters, ',d'):>14} {_cell(trainable, ',d'):>14} "
            f"{_cell(r.step_ms, '.1f'):>9} {_cell(r.tokens_per_s, ',.0f'):>10} "
            f"{_cell(r.peak_gib, '.2f'):>9} {_cell(r.first_loss, '.5f'):>9}  {r.status}"
        )
    return lines


def parameter_lines(rows: list[Row], config: BenchConfig) -> list[str]:
    """Each LoRA model's adapter weights against what it should hold, and why the two differ."""
    lines = []
    for row in rows:
        if row.expected is None:
            continue
        expected = row.expected
        wanted = f"expected {expected.total:,} = A {expected.a:,} + B {expected.b:,}"
        lora = row.trainable.lora if row.trainable else None
        if lora is None:
            lines.append(f"{row.result.label} adapter weights: - ({wanted})")
            continue
        verdict = "matches" if row.counts_match else "DIFFERS"
        lines.append(
            f"{row.result.label} adapter weights: {lora.total:,} = A {lora.a:,} + B {lora.b:,}; "
            f"{wanted} ({verdict})"
        )
    fused, separate = lora_parameters(config, fused=True), lora_parameters(config, fused=False)
    lines.append(
        f"The B weights are the same size; PEFT holds {separate.a - fused.a:,} more A weights "
        f"(3 x rank x hidden x layers): megaspec's fused linear_qkv and linear_fc1 ([gate; up]) "
        f"have one A [{RANK}, {config.hidden_size}] each, where PEFT's q/k/v_proj have three and "
        f"gate/up_proj two (each of their updates may have rank {RANK}, megaspec's joint one has "
        f"rank {RANK} in all)."
    )
    return lines


def ratio_lines(rows: list[Row]) -> list[str]:
    """Fresh adapters against their bases, LoRA's overhead, megaspec + LoRA against HF + PEFT."""
    numbers = comparison(rows)
    labels = {row.result.name: row.result.label for row in rows}
    lines = []
    for lora, base in BASE_OF.items():
        if lora not in labels:
            continue
        pair = f"{labels[lora]} over {labels.get(base, base)}"
        overhead, memory = numbers[f"{lora}_step_overhead"], numbers[f"{lora}_peak_memory_ratio"]
        equal = numbers[f"{lora}_fresh_loss_equal"]
        if overhead is None:
            lines.append(f"LoRA overhead, {pair}: - (not both measured)")
            continue
        memory_text = f", peak memory x{memory:.3f}" if memory is not None else ""
        lines.append(f"LoRA overhead, {pair}: step time {100 * overhead:+.1f}%{memory_text}")
        lines.append(f"fresh adapters, {pair}: first loss {'equal' if equal else 'DIFFERS'}")
    step = numbers["megaspec_lora_over_hf_peft_step_ms"]
    if step is None:
        lines.append("megaspec + LoRA / HF + PEFT: - (not both measured)")
    else:
        speed = numbers["megaspec_lora_over_hf_peft_tokens_per_s"]
        memory = numbers["megaspec_lora_over_hf_peft_peak_gib"]
        memory_text = f", peak memory x{memory:.3f}" if memory is not None else ""
        lines.append(
            f"megaspec + LoRA / HF + PEFT: step time x{step:.3f}, tokens/s x{speed:.3f}{memory_text}"
        )
    return lines


def report(rows: list[Row], config: BenchConfig) -> str:
    """The final printout: table, adapter weights, ratio lines."""
    return "\n".join(["", *table(rows, config), *parameter_lines(rows, config), *ratio_lines(rows)])


# --------------------------------------------------------------------------- record


def record(rows: list[Row], run: Measurement) -> dict[str, object]:
    """The JSON record of one run (keys documented in bench/README.md)."""
    versions = environment.versions()
    versions.update(peft=environment.distribution_version(("peft",)),
                    accelerate=environment.distribution_version(("accelerate",)))  # fmt: skip
    results: dict[str, object] = {}
    for row in rows:
        r, trainable = row.result, row.trainable
        lora = trainable.lora if trainable else None
        values: dict[str, object] = {
            **{key: getattr(r, key) for key in RESULT_FIELDS if hasattr(r, key)},
            "trainable": trainable.total if trainable else None,
            "lora_a": lora.a if lora else None,
            "lora_b": lora.b if lora else None,
            "expected_trainable": row.expected.total if row.expected else None,
        }
        results[r.name] = {key: finite(values[key]) for key in RESULT_FIELDS}
    return {
        "format": FORMAT,
        "source": "measured by bench/lora_overhead.py",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": environment.command_line(),
        "machine": environment.machine(run.device),
        "versions": versions,
        "config": asdict(run.config),
        "lora": {
            "rank": RANK, "alpha": ALPHA, "dropout": 0.0, "megaspec_targets": list(MEGASPEC_TARGETS),
            "peft_targets": list(PEFT_TARGETS), "peft_autocast_adapter_dtype": False,
        },  # fmt: skip
        "run": {"device": str(run.device), "small": run.args.small, "steps": run.args.steps,
                "warmup": run.args.warmup, "only": run.args.only},  # fmt: skip
        "results": results,
        "comparison": comparison(rows),
    }


def save_record(rows: list[Row], run: Measurement) -> None:
    """Write the JSON record where ``--json`` says (on CUDA, by default to bench/results/)."""
    if run.args.json is None and run.device.type != "cuda":
        return
    slug = f"peft-{environment.gpu_slug(run.device)}"
    path = record_path(run.args.json or "", RESULTS_FOLDER, slug)
    write_record(record(rows, run), path)
    print(f"results written to {path}")


# --------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see ``--help``)."""
    names = [peer.name for peer in PEERS]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    option = parser.add_argument
    option("--small", action="store_true", help="tiny config (CPU, about a minute)")
    option("--steps", type=int, default=20, help="timed steps (median reported)")
    option("--warmup", type=int, default=5, help="untimed steps first")
    option("--only", default=",".join(names), help=f"comma-separated subset of {','.join(names)}")
    option("--device", default=None, help="default: cuda if available, else cpu")
    option("--profile", action="store_true", help="torch.profiler summary per model")
    option("--profile-steps", type=int, default=3, help="steps under the profiler")
    option("--json", nargs="?", const="", default=None, metavar="FILE_OR_FOLDER",
           help="write the JSON record to FILE.json, or <date>-peft-<gpu>.json in a folder "
           "(default folder bench/results/; on CUDA written there even without --json)")  # fmt: skip
    args = parser.parse_args(argv)
    args.only = [name for name in args.only.split(",") if name]
    args.profile_dir = None  # train_step.measure's option: the summary is printed only
    unknown = sorted(set(args.only) - set(names))
    if unknown or args.steps < 1 or args.warmup < 1 or args.profile_steps < 1:
        parser.error(f"--only takes {','.join(names)} (got {unknown}); --steps, --warmup >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 unless a model failed or holds other adapter weights than it should."""
    args = parse_args(argv)
    config = SMALL if args.small else FULL
    device = start_device(args.device, small=args.small)
    if device is None:
        return 2
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}, {threads} CPU threads")
    print(f"config: {config}; warm-up {args.warmup} steps, timed {args.steps} steps", flush=True)
    inputs, labels = token_batch(config, device)
    run = Measurement(config, device, inputs, labels, args)
    rows = run_all(run)
    print(report(rows, config), flush=True)
    save_record(rows, run)
    failed = any(row.result.status.startswith("failed") or not row.counts_match for row in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
