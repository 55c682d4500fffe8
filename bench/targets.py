"""Issue 10's performance targets, checked against one run's results.

Each target is a ratio of two measured numbers and a threshold; its verdict is ``met``,
``missed``, or ``not measured: <why>`` when a number it needs is missing (a peer not run, no
CUDA, so no peak memory or matmul peak). bench/README.md lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.report import Result

# The bf16 peers megaspec's speed and memory targets compare with (FP8 peers do other arithmetic).
BF16_PEERS = ("hf", "hf-compile", "hf-liger", "megatron")
# (megaspec's TE FP8 peer, Megatron's FP8 peer with the same recipe): delayed scaling, then
# current (per-tensor) scaling, which Megatron calls "tensorwise".
FP8_PAIRS = (("megaspec-te-fp8", "megatron-fp8"), ("megaspec-te-fp8-current", "megatron-fp8-current"))


@dataclass(frozen=True)
class Target:
    """``value`` (``None``: not measured) against ``threshold``; ``at_least`` says which way."""

    name: str
    description: str
    value: float | None
    threshold: float
    at_least: bool
    missing: str = ""  # why value is None

    @property
    def verdict(self) -> str:
        """``met``, ``missed`` or ``not measured: <why>``."""
        if self.value is None:
            return f"not measured: {self.missing}"
        met = self.value >= self.threshold if self.at_least else self.value <= self.threshold
        return "met" if met else "missed"

    def line(self) -> str:
        """``target <description>: <value> (target >= <threshold>) <verdict>``."""
        value = "-" if self.value is None else f"{self.value:.3f}"
        sign = ">=" if self.at_least else "<="
        return f"target {self.description}: {value} (target {sign} {self.threshold:.2f}) {self.verdict}"

    def as_record(self) -> dict[str, object]:
        """The JSON record's entry for this target."""
        return {
            "description": self.description,
            "value": self.value,
            "threshold": self.threshold,
            "comparison": ">=" if self.at_least else "<=",
            "verdict": self.verdict,
        }


def _ok(results: Sequence[Result], name: str) -> Result | None:
    return next((r for r in results if r.name == name and r.ok), None)


def _why_missing(results: Sequence[Result], names: Sequence[str]) -> str:
    """What keeps ``names`` from being compared: each one's status, or that it was not asked for."""
    statuses = {r.name: r.status for r in results}
    missing = [name for name in names if _ok(results, name) is None]
    return "; ".join(f"{name} {statuses.get(name, 'not in this run')}" for name in missing)


def _ratio(
    results: Sequence[Result], mine: str, theirs: str, field: Callable[[Result], float | None]
) -> tuple[float | None, str]:
    """``field(mine) / field(theirs)`` and, if either is missing, why."""
    a, b = _ok(results, mine), _ok(results, theirs)
    if a is None or b is None:
        return None, _why_missing(results, [mine, theirs])
    x, y = field(a), field(b)
    if x is None or y is None or y == 0:
        return None, "not measured on this device"
    return x / y, ""


def _tokens(r: Result) -> float | None:
    return r.tokens_per_s


def _peak(r: Result) -> float | None:
    return r.peak_gib


def _best_peer(
    results: Sequence[Result], field: Callable[[Result], float | None], lowest: bool
) -> Result | None:
    """The bf16 peer with the highest (``lowest``: lowest) ``field``, among those measured."""
    measured = [r for r in results if r.name in BF16_PEERS and r.ok and field(r) is not None]
    if not measured:
        return None
    key: Callable[[Result], float] = lambda r: field(r) or 0.0  # noqa: E731
    return min(measured, key=key) if lowest else max(measured, key=key)


def _versus_best_peer(
    results: Sequence[Result], field: Callable[[Result], float | None], *, lowest: bool
) -> tuple[float | None, str, str]:
    """megaspec's ``field`` over the best bf16 peer's, why not measured, and that peer's label."""
    best = _best_peer(results, field, lowest)
    if best is None:
        return None, "no bf16 peer measured it (" + ", ".join(BF16_PEERS) + ")", "-"
    value, missing = _ratio(results, "megaspec", best.name, field)
    return value, missing, best.label


def check_targets(results: Sequence[Result], peak_tflops: float | None) -> list[Target]:
    """Every target of issue 10 for this run, in the order the README lists them."""
    targets = []
    speed, missing, fastest = _versus_best_peer(results, _tokens, lowest=False)
    targets.append(Target(
        "speed_vs_fastest_peer", f"megaspec tokens/s / fastest bf16 peer's ({fastest})",
        speed, 1.10, True, missing,
    ))  # fmt: skip
    memory, missing, leanest = _versus_best_peer(results, _peak, lowest=True)
    targets.append(Target(
        "memory_vs_lowest_peer", f"megaspec peak memory / lowest bf16 peer's ({leanest})",
        memory, 1.00, False, missing,
    ))  # fmt: skip
    te, missing = _ratio(results, "megaspec-te", "megatron", _tokens)
    targets.append(Target("te_vs_megatron", "megaspec-te tokens/s / megatron's", te, 1.05, True, missing))
    for mine, theirs in FP8_PAIRS:
        value, missing = _ratio(results, mine, theirs, _tokens)
        targets.append(Target(
            f"{mine}_vs_{theirs}", f"{mine} tokens/s / {theirs}'s", value, 1.05, True, missing,
        ))  # fmt: skip
    targets.append(_mfu_target(results, peak_tflops))
    return targets


def _mfu_target(results: Sequence[Result], peak_tflops: float | None) -> Target:
    """megaspec's model TFLOP/s over the measured bf16 matmul peak, at least 0.80."""
    mine = _ok(results, "megaspec")
    value, missing = None, ""
    if peak_tflops is None:
        missing = "no bf16 matmul peak measured (CUDA only)"
    elif mine is None or mine.model_tflops is None:
        missing = _why_missing(results, ["megaspec"])
    else:
        value = mine.model_tflops / peak_tflops
    return Target("megaspec_mfu", "megaspec model TFLOP/s / measured bf16 peak", value, 0.80, True, missing)
