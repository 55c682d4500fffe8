"""`megaspec inspect` (megaspec.cli.inspect, megaspec.inspection): what a config builds, from a
meta-device build, at any tensor-parallel size, in seconds."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from megaspec.cli import main
from megaspec.config import saved_text
from megaspec.training import build_model, resolve_run

HYBRID = {
    "model": {
        "hidden_size": 64,
        "decoder": {
            "type": "pattern",
            "blocks": {
                "attn": {"mixer": {"type": "attention", "num_heads": 4}, "mlp": {"ffn_hidden_size": 128}},
                "wide": {"mixer": {"type": "attention", "num_heads": 2}, "mlp": {"ffn_hidden_size": 256}},
            },
            "pattern": ["attn", "attn", "wide"],
            "num_blocks": 6,
        },
    }
}


def inspect_output(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["inspect", *argv]) == 0
    return capsys.readouterr().out


def test_tiny_preset_report(capsys: pytest.CaptureFixture[str]) -> None:
    output = inspect_output(capsys, "--preset", "tiny")
    model = build_model(resolve_run(preset="tiny"))
    total = sum(parameter.numel() for parameter in model.parameters())
    assert output.startswith("GPTModel: 2 layers, hidden 64, tensor-parallel size 1\n")
    assert "  layers 0, 1 (decoder.block): TransformerLayer\n" in output
    assert "    mixer: SelfAttention\n" in output
    assert f"  total: {total:,} on this rank\n" in output
    assert "  blocks.layers.0.mixer.linear_qkv.weight: [128, 64] of [128, 64], split on dim 0\n" in output
    assert "  blocks.layers.0.input_norm.weight: [64], replicated\n" in output
    explicit = output[output.index("explicitly set config fields:\n"):].splitlines()[1:]
    assert "\n".join(line[2:] for line in explicit) + "\n" == saved_text(resolve_run(preset="tiny"))


def test_pattern_blocks_are_grouped_and_counted_at_a_tensor_parallel_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "hybrid.yaml"
    config.write_text(yaml.safe_dump(HYBRID))
    output = inspect_output(capsys, "--preset", "tiny", "-c", str(config), "--tensor-parallel-size", "2")
    assert output.startswith("GPTModel: 6 layers, hidden 64, tensor-parallel size 2\n")
    assert "  layers 0, 1, 3, 4 (decoder.blocks.attn): TransformerLayer\n" in output
    assert "  layers 2, 5 (decoder.blocks.wide): TransformerLayer\n" in output
    # Per rank at TP=2: attention qkv [(4+2*4)*16/2 ... ] etc. Check against a TP=1 build:
    # every sharded matrix holds half its rows or columns.
    single = build_model(resolve_run(preset="tiny", files=[config]))
    wide = sum(parameter.numel() for parameter in single.blocks.layers[2].parameters())
    norms = 2 * 64  # two replicated RMSNorm scales per layer
    assert f"  decoder.blocks.wide: 2 layers, {2 * ((wide - norms) // 2 + norms):,} on this rank" in output
    assert "  blocks.layers.2.mlp.linear_fc1.weight: [256, 64] of [512, 64], in 2 stacked parts, each split on dim 0\n" in output
    assert "  embedding.weight: [128, 64] of [256, 64], split on dim 0\n" in output


def test_a_size_the_model_does_not_divide_over_is_a_config_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["inspect", "--tensor-parallel-size", "4"]) == 2
    assert capsys.readouterr().err == (
        "megaspec inspect: model.decoder.block.mixer.num_heads: 6 is not divisible by the "
        "tensor-parallel size (4)\n"
    )


def test_a_seven_billion_parameter_config_is_described_in_seconds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    llama_7b = [
        "model.hidden_size=4096", "model.vocab_size=32000", "model.decoder.num_blocks=32",
        "model.decoder.block.mixer.num_heads=32", "model.decoder.block.mixer.num_query_groups=32",
        "model.decoder.block.mlp.ffn_hidden_size=11008",
    ]  # fmt: skip
    started = time.perf_counter()
    output = inspect_output(capsys, *llama_7b)
    # Llama-2-7B: 32 x (4 * 4096^2 + 3 * 4096 * 11008 + 2 * 4096) + 2 * 32000 * 4096 + 4096.
    expected = 32 * (4 * 4096**2 + 3 * 4096 * 11008 + 2 * 4096) + 2 * 32000 * 4096 + 4096
    assert f"  total: {expected:,} on this rank\n" in output
    assert time.perf_counter() - started < 30  # nothing is drawn or allocated


def test_python_dash_m_megaspec_and_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "megaspec", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("megaspec ")
