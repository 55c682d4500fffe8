"""The results: one ``Result`` per peer, the printed table with its ratio lines, the JSON record.

The JSON record (``FORMAT``) holds ``format``, ``source``, ``date``, ``command``, ``machine``,
``versions``, ``config``, ``run``, ``peak`` (the measured bf16 matmul peak), ``results`` and
``targets``; ``results`` maps each peer's name to its ``RESULT_FIELDS``. bench/README.md
documents them; bench/results/ keeps the GPU runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

from bench.config import BenchConfig

# /2: ``tflops`` (matrix products, causal attention halved) became ``model_tflops`` (issue 10's
# 6N + 12 L h s) and ``mfu``; ``peak`` and ``targets`` were added.
FORMAT = "megaspec-bench-train-step/2"


@dataclass
class Result:
    """One peer's row: ``status`` is ``ok``, ``ok (<retry>)``, ``not run: ...``, ``skipped ...``
    or ``failed: ...``; the numbers are ``None`` where not measured (memory on a CPU)."""

    name: str
    label: str
    status: str
    parameters: int | None = None
    step_ms: float | None = None
    step_ms_min: float | None = None
    step_ms_max: float | None = None
    tokens_per_s: float | None = None
    model_tflops: float | None = None  # BenchConfig.model_flops_per_step over the median step
    mfu: float | None = None  # model_tflops / the measured bf16 matmul peak
    weights_gib: float | None = None
    peak_gib: float | None = None
    first_loss: float | None = None
    last_loss: float | None = None
    profile: str | None = None  # printed; not part of the JSON record

    @property
    def ok(self) -> bool:
        """Whether the peer was measured."""
        return self.status == "ok" or self.status.startswith("ok (")


RESULT_FIELDS = tuple(f.name for f in fields(Result) if f.name not in ("name", "profile"))


def _cell(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(results: list[Result], config: BenchConfig, peak_tflops: float | None = None) -> list[str]:
    """The header and one line per peer: parameters, step time, speed, model TFLOP/s and MFU,
    memory, first loss."""
    peak = "not measured: CUDA only" if peak_tflops is None else f"{peak_tflops:.0f} TFLOP/s"
    lines = [
        f"Training step (fwd+bwd, bf16, mean CE), batch {config.batch} x sequence "
        f"{config.sequence} = {config.tokens} tokens, {config.num_layers} layers, hidden "
        f"{config.hidden_size}, ffn {config.ffn_hidden_size}, vocab {config.vocab_size}",
        f"model TFLOP/s: tokens/s x (6N + 12 x layers x hidden x sequence) per token, N = "
        f"{config.non_embedding_parameters():,} parameters without the input embedding "
        f"({config.model_flops_per_token() / 1e9:.4g} GFLOP/token); MFU: model TFLOP/s / bf16 "
        f"matmul peak measured in this run ({peak})",
        *_tensor_parallel_lines(config),
        f"{'framework':<24} {'parameters':>14} {'step ms':>9} {'tokens/s':>10} "
        f"{'TFLOP/s':>8} {'MFU %':>6} {'peak GiB':>9} {'loss0':>7}  status",
    ]
    for r in results:
        mfu = None if r.mfu is None else 100.0 * r.mfu
        lines.append(
            f"{r.label:<24} {_cell(r.parameters, ',d'):>14} {_cell(r.step_ms, '.1f'):>9} "
            f"{_cell(r.tokens_per_s, ',.0f'):>10} {_cell(r.model_tflops, '.1f'):>8} "
            f"{_cell(mfu, '.1f'):>6} {_cell(r.peak_gib, '.2f'):>9} {_cell(r.first_loss, '.3f'):>7}  "
            f"{r.status}"
        )
    return lines


def _tensor_parallel_lines(config: BenchConfig) -> list[str]:
    """What the columns mean under tensor parallelism (nothing at 1)."""
    k = config.tensor_parallel
    if k == 1:
        return []
    return [
        f"tensor parallel {k} with sequence parallelism, one process (GPU) per rank: parameters and "
        f"peak GiB are rank 0's; tokens/s and model TFLOP/s the whole model's; MFU over {k} x the "
        "measured peak"
    ]


def parameter_line(results: list[Result], config: BenchConfig) -> str:
    """Whether the peers that ran have one parameter count, and the count expected."""
    counted = [r for r in results if r.parameters is not None]
    counts = {r.parameters for r in counted}
    verdict = "DIFFER" if len(counts) > 1 else "equal" if counts else "none measured"
    if len(counted) == 1:
        verdict = "(one framework)"
    listed = ", ".join(f"{r.label} {r.parameters:,}" for r in counted)
    shard = f", rank 0's shard of {config.tensor_parallel}" if config.tensor_parallel > 1 else ""
    return (
        f"parameter counts{shard} {verdict}: {listed} (expected {config.expected_parameters():,} "
        "for the whole model)"
    )


def ratio_lines(results: list[Result]) -> list[str]:
    """``megaspec/<peer>: tokens/s x.., peak memory x..`` for every other peer."""
    mine = next((r for r in results if r.name == "megaspec" and r.ok), None)
    lines = []
    for r in results:
        if r.name == "megaspec":
            continue
        if mine is None or not r.ok or not mine.tokens_per_s or not r.tokens_per_s:
            lines.append(f"megaspec/{r.label}: - ({r.status if not r.ok else 'megaspec not ok'})")
            continue
        memory = (
            f", peak memory x{mine.peak_gib / r.peak_gib:.3f}"
            if mine.peak_gib is not None and r.peak_gib
            else ""
        )
        lines.append(f"megaspec/{r.label}: tokens/s x{mine.tokens_per_s / r.tokens_per_s:.3f}{memory}")
    return lines


def report(results: list[Result], config: BenchConfig, peak_tflops: float | None = None) -> str:
    """The final printout: table, parameter check, ratio lines."""
    return "\n".join([
        "", *table(results, config, peak_tflops), parameter_line(results, config), *ratio_lines(results)
    ])  # fmt: skip


def finite(value: object) -> object:
    """``value``, or ``None`` for a float NaN or infinity (JSON has neither; a diverged loss
    becomes null)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def record(
    results: list[Result],
    config: BenchConfig,
    *,
    command: str,
    machine: dict[str, object],
    versions: dict[str, object],
    run: dict[str, object],
    peak: dict[str, object] | None = None,
    targets: dict[str, dict[str, object]] | None = None,
) -> dict[str, object]:
    """The JSON record of one run (see the module docstring for its keys); ``peak`` is
    ``None`` where not measured, ``targets`` maps each target's name to its entry."""
    return {
        "format": FORMAT,
        "source": "measured by bench/train_step.py",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine,
        "versions": versions,
        "config": asdict(config),
        "run": run,
        "peak": peak,
        "results": {
            r.name: {key: finite(getattr(r, key)) for key in RESULT_FIELDS} for r in results
        },
        "targets": targets or {},
    }


def record_path(requested: str, default_folder: Path, slug: str) -> Path:
    """Where to write: ``requested`` if it names a file, else ``<date>-<slug>.json`` in the folder.

    ``requested`` may be a ``.json`` path, an existing folder, or ``""`` for ``default_folder``.
    An existing file of the generated name gets ``-2``, ``-3``... rather than being overwritten.
    """
    if requested.endswith(".json"):
        return Path(requested)
    folder = Path(requested) if requested else default_folder
    stem = f"{datetime.now().strftime('%Y-%m-%d')}-{slug}"
    path, index = folder / f"{stem}.json", 2
    while path.exists():
        path, index = folder / f"{stem}-{index}.json", index + 1
    return path


def write_record(data: dict[str, object], path: Path) -> None:
    """Write ``data`` as indented JSON to ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
