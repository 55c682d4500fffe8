"""`megaspec convert` (megaspec.cli.convert): Hugging Face -> megaspec -> Hugging Face ->
Megatron-core (per-rank files) -> megaspec keeps every tensor bit for bit, and refusals
come before any work, with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

from megaspec import from_pretrained
from megaspec.cli import main
from tests.helpers.hf_models import hf_logits, save, tiny_model, tokens


def convert(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what came before (transformers' progress bars)
    code = main(["convert", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_round_trip_through_every_format_keeps_the_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hf = tiny_model("qwen2")
    save(hf, tmp_path / "hf")
    steps = [
        ("hf", "run", "megaspec", []),
        ("run", "hf2", "hf", []),
        ("hf2", "megatron", "megatron", ["--tensor-parallel-size", "2", "--megatron-spec", "transformer_engine"]),
        ("megatron", "run2", "megaspec", []),
    ]
    for source, output, to, extra in steps:
        code, out, err = convert(capsys, str(tmp_path / source), str(tmp_path / output), "--to", to, *extra)
        assert code == 0, err
        assert out.startswith(f"converted {tmp_path / source} (")
    original = safetensors.torch.load_file(tmp_path / "hf" / "model.safetensors")
    exported = safetensors.torch.load_file(tmp_path / "hf2" / "model.safetensors")
    assert original.keys() == exported.keys()
    assert all(torch.equal(original[key], exported[key]) for key in original)
    first = safetensors.torch.load_file(tmp_path / "run" / "model.safetensors")
    last = safetensors.torch.load_file(tmp_path / "run2" / "model.safetensors")
    assert first.keys() == last.keys() and all(torch.equal(first[key], last[key]) for key in first)
    assert sorted(path.name for path in (tmp_path / "megatron").iterdir()) == [
        "megatron_arguments.json", "mp_rank_00.safetensors", "mp_rank_01.safetensors",
    ]  # fmt: skip
    arguments = json.loads((tmp_path / "megatron" / "megatron_arguments.json").read_text())
    assert (arguments["spec"], arguments["tensor_parallel_size"]) == ("transformer_engine", 2)
    torch.testing.assert_close(
        from_pretrained(tmp_path / "run2").model(tokens()), hf_logits(hf, tokens()), rtol=0, atol=1e-5
    )


def test_an_existing_output_is_refused_before_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("user data")
    # The source does not even exist: the output is checked first.
    code, _, err = convert(capsys, str(tmp_path / "missing"), str(tmp_path / "out"), "--to", "hf")
    assert code == 2
    assert err == f"megaspec convert: {tmp_path / 'out'} exists and is not empty; pass --overwrite to replace it\n"
    assert (tmp_path / "out" / "keep.txt").read_text() == "user data"


def test_an_unsupported_checkpoint_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save(tiny_model("llama3"), tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["rope_parameters"]["rope_type"] = "yarn"
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    code, _, err = convert(capsys, str(tmp_path / "hf"), str(tmp_path / "out"), "--to", "megaspec")
    assert code == 2
    assert err == (
        "megaspec convert: config.json: rope_parameters.rope_type: 'yarn' is not supported "
        "(supported: default, llama3)\n"
    )
    assert not (tmp_path / "out").exists()


def test_a_megatron_directory_missing_a_rank_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save(tiny_model("mistral"), tmp_path / "hf")
    assert convert(capsys, str(tmp_path / "hf"), str(tmp_path / "mg"), "--to", "megatron",
                   "--tensor-parallel-size", "2")[0] == 0  # fmt: skip
    (tmp_path / "mg" / "mp_rank_01.safetensors").unlink()
    code, _, err = convert(capsys, str(tmp_path / "mg"), str(tmp_path / "out"), "--to", "hf")
    assert code == 2
    assert err == (
        f"megaspec convert: {tmp_path / 'mg'}: mp_rank_01.safetensors is missing "
        f"(tensor_parallel_size 2)\n"
    )
