"""``python bench/lora_overhead.py --small`` runs on a CPU: megaspec + LoRA and HF + PEFT start from their
bases' loss (fresh adapters change nothing), hold the adapter weights each should, and the
record and ratio lines are written. One subprocess run (two steps per model) is shared."""

from __future__ import annotations

import sys

import pytest
import torch

from bench.config import SMALL
from bench.peers.base import PeerUnavailable
from bench.peers.lora import build_hf_peft
from tests.helpers.bench_runs import BenchRun, run_bench


# SMALL: 2 layers, hidden 128, 4 heads (4 KV heads, head_dim 32), ffn 352; rank 16.
# megaspec: A [16, input] for qkv (128), proj (128), fc1 (128), fc2 (352);
#           B [output, 16] for qkv (384), proj (128), fc1 [gate; up] (704), fc2 (128).
MEGASPEC_A, MEGASPEC_B = 2 * 16 * (128 + 128 + 128 + 352), 2 * 16 * (384 + 128 + 704 + 128)
# PEFT: separate q, k, v and gate, up, each with its own A over the 128 hidden features.
PEFT_A, PEFT_B = 2 * 16 * (5 * 128 + 128 + 352), MEGASPEC_B

RECORD_KEYS = {
    "format", "source", "date", "command", "machine", "versions", "config", "lora", "run",
    "results", "comparison",
}  # fmt: skip
RESULT_KEYS = {
    "label", "status", "parameters", "trainable", "lora_a", "lora_b", "expected_trainable",
    "step_ms", "step_ms_min", "step_ms_max", "tokens_per_s", "weights_gib", "peak_gib",
    "first_loss", "last_loss",
}  # fmt: skip


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> BenchRun:
    record = tmp_path_factory.mktemp("bench") / "peft.json"
    return run_bench("lora_overhead.py", ["--small", "--steps", "1", "--warmup", "1"], record)


def test_exits_zero_with_the_ratio_lines(small_run: BenchRun) -> None:
    assert small_run.returncode == 0, small_run.output[-4000:]
    assert "LoRA overhead, megaspec + LoRA over megaspec: step time " in small_run.output
    assert "fresh adapters, megaspec + LoRA over megaspec: first loss equal" in small_run.output


def test_megaspec_lora_starts_at_its_base_loss_and_trains_only_adapters(small_run: BenchRun) -> None:
    results = small_run.record["results"]
    base, lora = results["megaspec"], results["megaspec-lora"]
    assert base["status"] == "ok" and lora["status"] == "ok", (base, lora)
    assert lora["first_loss"] == base["first_loss"]  # B = 0: the adapters add exactly nothing
    assert base["trainable"] == base["parameters"] == SMALL.expected_parameters()
    assert (lora["lora_a"], lora["lora_b"]) == (MEGASPEC_A, MEGASPEC_B)
    assert lora["trainable"] == lora["expected_trainable"] == MEGASPEC_A + MEGASPEC_B
    assert lora["parameters"] == base["parameters"] + lora["trainable"]
    assert small_run.record["comparison"]["megaspec-lora_fresh_loss_equal"] is True


def test_hf_peft_starts_at_its_base_loss_and_holds_separate_adapters(small_run: BenchRun) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    results = small_run.record["results"]
    base, lora = results["hf"], results["hf-peft"]
    assert base["status"] == "ok" and lora["status"] == "ok", (base, lora)
    assert lora["first_loss"] == base["first_loss"]
    assert (lora["lora_a"], lora["lora_b"]) == (PEFT_A, PEFT_B)
    assert lora["trainable"] == lora["expected_trainable"] == PEFT_A + PEFT_B
    assert lora["parameters"] == base["parameters"] + lora["trainable"]
    comparison = small_run.record["comparison"]
    assert comparison["megaspec_lora_over_hf_peft_step_ms"] > 0
    assert "megaspec + LoRA / HF + PEFT: step time x" in small_run.output
    assert f"PEFT holds {PEFT_A - MEGASPEC_A:,} more A weights" in small_run.output


def test_json_record_has_documented_keys(small_run: BenchRun) -> None:
    record = small_run.record
    assert set(record) == RECORD_KEYS
    assert record["format"] == "megaspec-bench-peft/1"
    assert record["lora"]["rank"] == 16 and record["lora"]["alpha"] == 32
    assert {"peft", "accelerate"} <= set(record["versions"])
    assert record["run"]["device"] == "cpu" and record["run"]["small"] is True
    for name, result in record["results"].items():
        assert set(result) == RESULT_KEYS, name


def test_without_peft_the_peer_is_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError
    with pytest.raises(PeerUnavailable, match="peft"):
        build_hf_peft(SMALL, torch.device("cpu"))
