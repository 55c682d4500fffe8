"""RoPE settings in both transformers forms: ``rope_parameters`` (5) and ``rope_theta`` +
``rope_scaling`` (4); only default and llama3 are accepted, and nothing is guessed."""

from __future__ import annotations

from typing import Any

import pytest
from transformers import LlamaConfig

from megaspec.checkpoint import CheckpointError
from megaspec.checkpoint.hf_fields import HfFields
from megaspec.checkpoint.hf_rope import rope_from_hf, rope_to_hf
from megaspec.transformer_config import Llama3RotaryScaling

LLAMA3 = {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}
EXPECTED_LLAMA3 = (500000.0, {"type": "llama3", **LLAMA3})


def read(data: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    return rope_from_hf(HfFields(data, "config.json"))


def test_both_transformers_forms_read_the_same() -> None:
    modern = {"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, **LLAMA3}}
    legacy = {"rope_theta": 500000, "rope_scaling": {"type": "llama3", **LLAMA3}}  # Llama 3.1
    assert read(modern) == read(legacy) == read({**modern, **legacy}) == EXPECTED_LLAMA3
    assert read({}) == read({"rope_scaling": None}) == (10000.0, None)
    assert read({"rope_theta": 1e6, "rope_scaling": None}) == (1e6, None)


def test_written_rope_reads_back_in_megaspec_and_transformers() -> None:
    scaling = Llama3RotaryScaling(**LLAMA3)  # type: ignore[arg-type]
    written = rope_to_hf(500000.0, scaling)
    assert read(written) == EXPECTED_LLAMA3
    assert read({"rope_parameters": written["rope_parameters"]}) == EXPECTED_LLAMA3
    assert read({key: written[key] for key in ("rope_theta", "rope_scaling")}) == EXPECTED_LLAMA3
    loaded = LlamaConfig(**written).rope_parameters
    assert loaded == {"rope_type": "llama3", "rope_theta": 500000.0, **LLAMA3}
    assert read(rope_to_hf(10000.0, None)) == (10000.0, None)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}},
         "rope_parameters.rope_type: 'yarn' is not supported (supported: default, llama3)"),
        ({"rope_theta": 1e4, "rope_scaling": {"type": "linear", "factor": 2.0}},
         "rope_scaling.type: 'linear' is not supported (supported: default, llama3)"),
        ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4, **LLAMA3, "attention_factor": 1.0}},
         "rope_parameters.attention_factor: is not supported with rope_type 'llama3' (known: "
         "factor, high_freq_factor, low_freq_factor, original_max_position_embeddings, "
         "partial_rotary_factor, rope_theta, rope_type, type)"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
         "rope_scaling.low_freq_factor: missing (rope_type 'llama3' needs it)"),
        ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}},
         "rope_parameters.partial_rotary_factor: 0.5 is not supported (supported: 1.0; the Llama "
         "family rotates whole heads)"),
        ({"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e4}}},
         "rope_parameters: per-layer-type RoPE parameters are not supported"),
        ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e4}, "rope_theta": 1e6},
         "rope_parameters: {\"rope_type\": \"default\", \"rope_theta\": 10000.0} disagrees with "
         "rope_theta 1000000.0 and rope_scaling null"),
        ({"rope_theta": -1.0}, "rope_theta: expected a positive number, got -1.0"),
    ],
)  # fmt: skip
def test_refusals(data: dict[str, Any], message: str) -> None:
    with pytest.raises(CheckpointError) as error:
        read(data)
    assert str(error.value) == f"config.json: {message}"
