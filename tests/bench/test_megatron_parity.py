"""bench/megatron_parity.py on a CPU: it says Megatron cannot run and why, and the parts that need
no GPU (perturbing weights, the verdicts, the key and round-trip checks) do what it documents."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.megatron_parity import (
    MODELS,
    NOT_RUN,
    bitwise_round_trip,
    compare,
    key_differences,
    main,
    perturbed,
)
from megaspec.checkpoint import model_config, to_megatron

REPOSITORY = Path(__file__).resolve().parents[2]


def test_without_megatron_it_reports_not_run(tmp_path: Path) -> None:
    record = tmp_path / "parity.json"
    done = subprocess.run(
        [sys.executable, "bench/megatron_parity.py", "--json", str(record)],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == NOT_RUN, done.stderr
    data = json.loads(record.read_text())
    assert data["format"] == "megaspec-megatron-parity/1"
    assert data["status"].startswith("not run: ") and data["cases"] == []
    assert set(data["models"]) == {"llama", "gpt"}


def test_unknown_model_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_status:
        main(["--models", "llama,bert"])
    assert exit_status.value.code == 2
    assert "unknown bert; expected some of llama, gpt" in capsys.readouterr().err


def test_perturbed_moves_norms_and_biases_and_rounds_to_bf16() -> None:
    state = {
        "a.layer_norm_weight": torch.ones(64),
        "a.bias": torch.zeros(64),
        "a.weight": torch.randn(8, 8, dtype=torch.float64),
        "a._extra_state": torch.empty(0, dtype=torch.uint8),
        "b._extra_state": None,
    }
    result = perturbed(state, seed=0)
    assert 0.01 < float((result["a.layer_norm_weight"] - 1).abs().mean()) < 0.2
    assert 0.01 < float(result["a.bias"].abs().mean()) < 0.1
    for key in ("a.layer_norm_weight", "a.bias", "a.weight"):
        assert result[key].dtype == torch.float32
        assert torch.equal(result[key], result[key].to(torch.bfloat16).float())
    assert result["a._extra_state"] is state["a._extra_state"] and result["b._extra_state"] is None


def test_verdicts_follow_the_stated_tolerances() -> None:
    exact = torch.linspace(-3, 3, 100)
    megatron = {torch.float32: exact, torch.bfloat16: exact + 0.01}  # Megatron's own bf16 error: 0.01
    same = compare(megatron, {torch.float32: exact + 1e-4, torch.bfloat16: exact - 0.01})
    assert same["passed"] and same["fp32_tolerance"] == pytest.approx(3e-3)
    assert same["bf16_tolerance"] == pytest.approx(0.03, rel=1e-4)
    assert same["bf16_max_abs_diff"] == pytest.approx(0.02, rel=1e-4)
    assert not compare(megatron, {torch.float32: exact + 4e-3, torch.bfloat16: exact})["passed"]
    assert not compare(megatron, {torch.float32: exact, torch.bfloat16: exact + 0.05})["passed"]


@pytest.mark.parametrize("name", MODELS)
def test_key_and_round_trip_checks_on_converted_dicts(name: str) -> None:
    config = model_config(MODELS[name])
    (megatron,) = to_megatron(config.build().state_dict(), config, spec="transformer_engine")
    assert not any(key_differences(megatron, megatron).values())
    assert bitwise_round_trip(megatron, config, "transformer_engine") is None
    fewer = dict(megatron)
    del fewer["output_layer._extra_state"]
    fewer["decoder.final_layernorm.weight"] = torch.ones(3)
    assert key_differences(megatron, fewer) == {
        "converted_only": ["output_layer._extra_state"],
        "megatron_only": [],
        "shape_mismatches": ["decoder.final_layernorm.weight: (256,) vs (3,)"],
    }
    # Megatron's padded vocabulary rows hold its random initial values; megaspec drops them.
    padded = dict(megatron)
    embedding = megatron["embedding.word_embeddings.weight"]
    assert embedding is not None
    padded["embedding.word_embeddings.weight"] = torch.cat([embedding[:1000], torch.full((24, 256), 5.0)])
    assert bitwise_round_trip(padded, config, "transformer_engine") is None
