"""Adapter files (megaspec.checkpoint.adapters): a mixed set of adapters saved and loaded
(also across tensor-parallel sizes), base weights never written, and every refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

from megaspec.checkpoint import CheckpointError, load_adapters, save_adapters
from megaspec.config import ModelConfig, resolve
from megaspec.models import GPTModel
from megaspec.parallel import ParallelGroups, seeded_initialization
from megaspec.peft import IA3Config, LoraConfig, adapter_names, adapter_parameters, add_adapter
from tests.helpers.distributed import run_on_ranks

OVERRIDES = [
    "hidden_size=64", "vocab_size=300", "decoder.num_blocks=2", "decoder.block.mixer.num_heads=8",
    "decoder.block.mixer.num_query_groups=4", "decoder.block.mlp.ffn_hidden_size=96",
]  # fmt: skip
CONFIG = resolve(ModelConfig, overrides=OVERRIDES)
TOKENS = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(0))


def base(groups: ParallelGroups | None = None, config: ModelConfig = CONFIG) -> GPTModel:
    with seeded_initialization(0):
        return config.build(groups)


def adapted(groups: ParallelGroups | None = None) -> GPTModel:
    model = base(groups)
    with seeded_initialization(1):
        add_adapter(model, LoraConfig(rank=4, init="gaussian"))
        add_adapter(model, IA3Config(name="scales", targets=["*.linear_fc1", "*.linear_proj"]))
        # the output layer's rows are the vocabulary, padded by an amount that depends on TP
        add_adapter(model, LoraConfig(name="head", rank=4, targets=["output_layer"]))
    with torch.no_grad():  # B starts at 0 and scales at 1: move them so they matter
        for parameter in adapter_parameters(model):
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(parameter.numel())))
    return model


def logits(model: GPTModel) -> torch.Tensor:
    with torch.no_grad():
        result: torch.Tensor = model(TOKENS)
    return result


def test_a_mixed_set_saves_and_loads(tmp_path: Path) -> None:
    model = adapted()
    save_adapters(model, tmp_path / "adapters")
    assert sorted(path.name for path in (tmp_path / "adapters").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]  # fmt: skip
    document = json.loads((tmp_path / "adapters" / "adapter_config.json").read_text())
    assert document["adapters"]["scales"]["config"]["type"] == "ia3"
    tensors = safetensors.torch.load_file(tmp_path / "adapters" / "adapter_model.safetensors")
    assert all(key.split(".")[-2] in ("default", "scales", "head") for key in tensors)  # no base weight
    assert tensors["output_layer.head.lora_B"].shape == (300, 4)  # the vocabulary, unpadded
    fresh = base()
    assert load_adapters(fresh, tmp_path / "adapters") == ["default", "scales", "head"]
    assert torch.equal(logits(fresh), logits(model))


def load_at_tensor_parallel_size(directory: str) -> dict[str, Any]:
    groups = ParallelGroups.tensor_parallel_over_world()
    model = base(groups)
    load_adapters(model, directory)
    saved_again = Path(directory).parent / "saved_at_tp2"
    save_adapters(model, saved_again, overwrite=True)
    return {"logits": logits(model)}


def test_loads_at_another_tensor_parallel_size_and_saves_the_same_file(tmp_path: Path) -> None:
    model = adapted()
    save_adapters(model, tmp_path / "adapters")
    for result in run_on_ranks(2, load_at_tensor_parallel_size, str(tmp_path / "adapters")):
        torch.testing.assert_close(result["logits"], logits(model), rtol=0, atol=1e-5)
    saved = safetensors.torch.load_file(tmp_path / "adapters" / "adapter_model.safetensors")
    again = safetensors.torch.load_file(tmp_path / "saved_at_tp2" / "adapter_model.safetensors")
    assert saved.keys() == again.keys() and all(torch.equal(saved[key], again[key]) for key in saved)


def test_adapters_of_another_architecture_are_refused_before_any_change(tmp_path: Path) -> None:
    save_adapters(adapted(), tmp_path / "adapters")
    wider = base(config=resolve(ModelConfig, overrides=[*OVERRIDES, "decoder.block.mlp.ffn_hidden_size=128"]))
    with pytest.raises(CheckpointError) as error:
        load_adapters(wider, tmp_path / "adapters")
    assert str(error.value) == (
        f"{tmp_path / 'adapters' / 'adapter_config.json'}: saved for another architecture: "
        "blocks.layers.0.mlp.linear_fc1 is {'kind': 'column', 'input_size': 64, 'output_size': 256, "
        "'parts': 2} in the model, {'kind': 'column', 'input_size': 64, 'output_size': 192, "
        "'parts': 2} in the file"
    )
    assert adapter_names(wider) == []


def test_saving_an_adapter_that_is_not_attached(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as error:
        save_adapters(adapted(), tmp_path / "adapters", ["default", "lora2"])
    assert str(error.value) == "cannot save 'lora2': no adapter of that name (adapters: default, scales, head)"
    with pytest.raises(ValueError, match="the model has no adapters to save"):
        save_adapters(base(), tmp_path / "nothing")


def test_no_silent_overwrite_and_clear_errors_for_missing_files(tmp_path: Path) -> None:
    model = adapted()
    save_adapters(model, tmp_path / "adapters")
    with pytest.raises(CheckpointError, match="directory exists and is not empty; pass overwrite=True"):
        save_adapters(model, tmp_path / "adapters")
    (tmp_path / "adapters" / "adapter_model.safetensors").unlink()
    with pytest.raises(CheckpointError) as error:
        load_adapters(base(), tmp_path / "adapters")
    assert str(error.value) == f"{tmp_path / 'adapters'}: adapter_model.safetensors is missing"
    with pytest.raises(CheckpointError) as error:
        load_adapters(base(), tmp_path)
    assert str(error.value) == f"{tmp_path}: adapter_config.json is missing"
