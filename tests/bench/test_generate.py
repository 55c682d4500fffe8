"""``python bench/generate.py --small`` runs on a CPU, prints its table and writes the
documented JSON record: megaspec's KV-cache decoding, its recomputation (same tokens) and
transformers' generate (when installed), each with its tokens/s."""

from __future__ import annotations


import pytest

from tests.helpers.bench_runs import BenchRun, run_bench


# The keys bench/README.md documents.
RECORD_KEYS = {
    "format", "source", "date", "command", "machine", "versions", "config", "run", "results",
    "cache_tokens_equal_recompute",
}  # fmt: skip
RESULT_KEYS = {
    "label", "status", "parameters", "seconds", "seconds_min", "seconds_max", "tokens_per_s",
    "ms_per_token", "peak_gib",
}  # fmt: skip
CONFIG_KEYS = {
    "num_layers", "hidden_size", "num_heads", "num_kv_heads", "ffn_hidden_size", "vocab_size",
    "batch", "prompt_length", "new_tokens", "norm_epsilon", "rotary_base", "init_std", "weights",
}  # fmt: skip


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> BenchRun:
    record = tmp_path_factory.mktemp("bench") / "generate.json"
    return run_bench("generate.py", ["--small", "--repeats", "1"], record)


def test_exits_zero_and_prints_the_table(small_run: BenchRun) -> None:
    assert small_run.returncode == 0, small_run.output[-4000:]
    assert "megaspec KV cache / megaspec (recompute): tokens/s x" in small_run.output
    assert "megaspec KV-cache tokens equal recomputation's: yes" in small_run.output


def test_megaspec_decoders_ran_and_agree(small_run: BenchRun) -> None:
    results = small_run.record["results"]
    for name in ("megaspec-cache", "megaspec-recompute"):
        assert results[name]["status"] == "ok", results[name]
        assert results[name]["tokens_per_s"] > 0
        assert results[name]["peak_gib"] is None  # measured on CUDA only
    assert small_run.record["cache_tokens_equal_recompute"] is True


def test_transformers_ran_with_the_same_parameter_count(small_run: BenchRun) -> None:
    pytest.importorskip("transformers")
    results = small_run.record["results"]
    assert results["hf"]["status"] == "ok", results["hf"]
    assert results["hf"]["parameters"] == results["megaspec-cache"]["parameters"]


def test_json_record_has_documented_keys(small_run: BenchRun) -> None:
    record = small_run.record
    assert set(record) == RECORD_KEYS
    assert record["format"] == "megaspec-bench-generate/1"
    assert set(record["config"]) == CONFIG_KEYS and record["config"]["weights"] == "random"
    assert record["run"]["device"] == "cpu" and record["run"]["dtype"] == "float32"
    assert "bench/generate.py --small" in record["command"]
    for name, result in record["results"].items():
        assert set(result) == RESULT_KEYS, name
