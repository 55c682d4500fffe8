"""``python bench/train_step.py --small`` runs on a CPU and writes the documented JSON record.

One subprocess run (a few steps, so it stays well under a minute on two cores) is shared by
the tests. Peers whose packages are missing here are ``not run``; Liger and Megatron never
run on a CPU.
"""

from __future__ import annotations

import math

import pytest

from tests.helpers.bench_runs import BenchRun, run_bench

SMALL_VOCAB = 512

# The keys bench/README.md documents.
RECORD_KEYS = {
    "format", "source", "date", "command", "machine", "versions", "config", "run", "peak", "results",
    "targets",
}
TARGETS = {
    "speed_vs_fastest_peer", "memory_vs_lowest_peer", "te_vs_megatron", "megaspec-te-fp8_vs_megatron-fp8",
    "megaspec-te-fp8-current_vs_megatron-fp8-current", "megaspec_mfu",
}
MACHINE_KEYS = {
    "platform", "cpu_count", "device", "gpu", "gpu_count", "gpu_memory_gib", "gpu_capability",
    "driver_version", "cuda_version", "cudnn_version",
}
VERSION_KEYS = {
    "python", "torch", "transformers", "megatron-core", "transformer-engine", "liger-kernel", "triton",
    "megaspec",
}
RESULT_KEYS = {
    "label", "status", "parameters", "step_ms", "step_ms_min", "step_ms_max", "tokens_per_s",
    "model_tflops", "mfu", "weights_gib", "peak_gib", "first_loss", "last_loss",
}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> BenchRun:
    record = tmp_path_factory.mktemp("bench") / "small.json"
    return run_bench("train_step.py", ["--small", "--steps", "2", "--warmup", "1"], record)


def test_exits_zero(small_run: BenchRun) -> None:
    assert small_run.returncode == 0, small_run.output[-4000:]


def test_megaspec_ok_with_initial_loss_near_log_vocab(small_run: BenchRun) -> None:
    megaspec = small_run.record["results"]["megaspec"]
    assert megaspec["status"] == "ok"
    assert math.isfinite(megaspec["first_loss"])
    # A fresh model predicts roughly uniformly over the vocabulary.
    assert abs(megaspec["first_loss"] - math.log(SMALL_VOCAB)) < 0.2
    row = next(line for line in small_run.output.splitlines() if line.startswith("megaspec  "))
    assert row.endswith("  ok")


def test_peers_that_ran_have_megaspec_parameter_count(small_run: BenchRun) -> None:
    results = small_run.record["results"]
    ran = {name: r["parameters"] for name, r in results.items() if r["status"].startswith("ok")}
    assert "megaspec-eager" in ran
    assert set(ran.values()) == {results["megaspec"]["parameters"]}, ran


def test_gpu_only_peers_say_why_they_did_not_run(small_run: BenchRun) -> None:
    results = small_run.record["results"]
    assert results["hf-liger"]["status"].startswith("not run: ")
    assert "CUDA" in results["hf-liger"]["status"]
    assert results["megatron"]["status"].startswith("skipped")


def test_json_record_has_documented_keys(small_run: BenchRun) -> None:
    record = small_run.record
    assert set(record) == RECORD_KEYS
    assert set(record["machine"]) == MACHINE_KEYS
    assert set(record["versions"]) == VERSION_KEYS
    assert set(record["versions"]["megaspec"]) == {"git_commit", "git_dirty", "source_sha256"}
    assert "bench/train_step.py --small" in record["command"]
    assert record["config"]["vocab_size"] == SMALL_VOCAB
    assert record["run"]["size"] == "small"
    assert record["peak"] is None  # measured on CUDA only
    assert set(record["targets"]) == TARGETS
    for target in record["targets"].values():
        assert set(target) == {"description", "value", "threshold", "comparison", "verdict"}
    for name, result in record["results"].items():
        assert set(result) == RESULT_KEYS, name


def test_model_tflops_follow_the_step_time(small_run: BenchRun) -> None:
    megaspec = small_run.record["results"]["megaspec"]
    flops_per_step = 3_002_112 * 2 * 64  # tests/bench/test_bench_config.py derives it
    assert megaspec["model_tflops"] == pytest.approx(flops_per_step / (megaspec["step_ms"] / 1e3) / 1e12)
    assert megaspec["mfu"] is None  # no peak on a CPU


def test_targets_are_printed_with_verdicts(small_run: BenchRun) -> None:
    lines = [line for line in small_run.output.splitlines() if line.startswith("target ")]
    assert len(lines) == 6, lines
    mfu = "target megaspec model TFLOP/s / measured bf16 peak: - (target >= 0.80) not measured: "
    assert any(line.startswith(mfu) for line in lines), lines
    speed = small_run.record["targets"]["speed_vs_fastest_peer"]
    results = small_run.record["results"]
    if results["hf"]["status"] == "ok":  # transformers installed: the only bf16 peer on a CPU
        assert speed["verdict"] in ("met", "missed")
        ratio = results["megaspec"]["tokens_per_s"] / results["hf"]["tokens_per_s"]
        assert speed["value"] == pytest.approx(ratio)
