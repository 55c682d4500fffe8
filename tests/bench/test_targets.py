"""Issue 10's target lines: which ratio each target takes, and its met / missed verdict."""

from __future__ import annotations

import pytest

from bench.report import Result
from bench.targets import check_targets


def measured(name: str, tokens_per_s: float, peak_gib: float, model_tflops: float = 0.0) -> Result:
    return Result(
        name=name, label=name.upper(), status="ok", tokens_per_s=tokens_per_s, peak_gib=peak_gib,
        model_tflops=model_tflops,
    )  # fmt: skip


RUN = [
    measured("megaspec", 1200.0, 30.0, model_tflops=700.0),
    measured("megaspec-eager", 5000.0, 1.0),  # not a peer: megaspec's own variant
    measured("hf", 800.0, 40.0),
    measured("hf-liger", 1000.0, 25.0),
    Result(name="hf-compile", label="HF (compile)", status="failed: RuntimeError: boom"),
    measured("megatron", 1100.0, 35.0),
    measured("megatron-fp8", 1500.0, 34.0),  # FP8: not compared with bf16 megaspec
    measured("megaspec-te", 1210.0, 33.0),
    measured("megaspec-te-fp8", 1560.0, 32.0),
]


def by_name(results: list[Result], peak: float | None = 800.0) -> dict[str, tuple[float | None, str]]:
    return {t.name: (t.value, t.verdict) for t in check_targets(results, peak)}


def test_speed_is_over_the_fastest_bf16_peer() -> None:
    value, verdict = by_name(RUN)["speed_vs_fastest_peer"]
    assert value == pytest.approx(1200.0 / 1100.0)  # megatron, not megatron-fp8 or megaspec-eager
    assert verdict == "missed"  # 1.0909 < 1.10


def test_memory_is_over_the_lowest_bf16_peer() -> None:
    value, verdict = by_name(RUN)["memory_vs_lowest_peer"]
    assert value == pytest.approx(30.0 / 25.0)  # hf-liger
    assert verdict == "missed"


def test_te_and_fp8_pairs() -> None:
    targets = by_name(RUN)
    assert targets["te_vs_megatron"] == (pytest.approx(1.1), "met")
    assert targets["megaspec-te-fp8_vs_megatron-fp8"] == (pytest.approx(1.04), "missed")


def test_mfu_is_over_the_measured_peak() -> None:
    assert by_name(RUN, peak=800.0)["megaspec_mfu"] == (pytest.approx(0.875), "met")
    value, verdict = by_name(RUN, peak=None)["megaspec_mfu"]
    assert value is None
    assert verdict == "not measured: no bf16 matmul peak measured (CUDA only)"


def test_missing_peers_say_why() -> None:
    targets = {t.name: t for t in check_targets(RUN[:3], 800.0)}
    assert targets["te_vs_megatron"].verdict == (
        "not measured: megaspec-te not in this run; megatron not in this run"
    )
    line = targets["megaspec-te-fp8-current_vs_megatron-fp8-current"].line()
    assert line.startswith(
        "target megaspec-te-fp8-current tokens/s / megatron-fp8-current's: - (target >= 1.05) not measured: "
    )


def test_met_at_exactly_the_threshold() -> None:
    results = [measured("megaspec", 1100.0, 20.0), measured("hf", 1000.0, 20.0)]
    targets = by_name(results)
    assert targets["speed_vs_fastest_peer"] == (pytest.approx(1.1), "met")
    assert targets["memory_vs_lowest_peer"] == (1.0, "met")
