"""Fine-tuning runs (megaspec.finetune): adapters trained alone on the bundled text over a
frozen base, then merged, unmerged, saved and reloaded; a mixed LoRA + (IA)^3 set trained;
run configs taken from the base; the refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from megaspec.checkpoint import CheckpointError, load_adapters, save_adapters
from megaspec.config import ConfigError, IA3Config, LoraConfig, RunConfig
from megaspec.finetune import (
    attach_adapter,
    finetune,
    load_adapter_run,
    merge_adapter_run,
    resolve_finetune_run,
)
from megaspec.models import GPTModel
from megaspec.peft import adapter_parameters, merge_and_unload, unmerge
from megaspec.peft.merging import merge
from megaspec.training import load_trained_model, make_optimizer, resolve_run, train

TRAINING = {"steps": 12, "batch_size": 8, "sequence_length": 32, "learning_rate": 0.01,
            "warmup_steps": 0, "eval_batches": 1}  # fmt: skip
TOKENS = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for one step (near its random start: room to learn), saved."""
    directory = tmp_path_factory.mktemp("base")
    run = resolve_run(preset="tiny", overrides=[{"training": {**TRAINING, "steps": 1}}])
    train(run, output_dir=directory, progress=False)
    return directory


@pytest.fixture(scope="module")
def lora_run_dir(base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("lora")
    run = resolve_finetune_run(base_dir, overrides=[{"training": TRAINING, "peft": {"type": "lora", "rank": 4}}])
    finetune(run, base=base_dir, output_dir=directory, progress=False)
    return directory


def falls(losses: tuple[float, ...]) -> bool:
    """The mean of the last four losses is below that of the first four, by 0.05 or more."""
    return sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.05


def logits(model: nn.Module) -> Tensor:
    with torch.no_grad():
        result: Tensor = model(TOKENS)  # [batch, sequence, vocab]
    return result


def base_weights(model: nn.Module) -> dict[str, Tensor]:
    """Non-adapter weights by their plain names (``base_layer`` steps removed)."""
    adapters = {id(parameter) for parameter in adapter_parameters(model)}
    return {name.replace(".base_layer", ""): parameter.detach().clone()
            for name, parameter in model.named_parameters() if id(parameter) not in adapters}  # fmt: skip


def test_lora_training_lowers_the_loss_and_leaves_every_base_weight_bitwise_unchanged(base_dir: Path) -> None:
    before = base_weights(load_trained_model(base_dir)[0])
    run = resolve_finetune_run(base_dir, overrides=[{"training": TRAINING, "peft": {"type": "lora", "rank": 4}}])
    result = finetune(run, base=base_dir, progress=False)
    losses = result.losses
    assert falls(losses)
    after = base_weights(result.model)
    assert after.keys() == before.keys()
    for name, weight in before.items():
        assert torch.equal(after[name], weight), name
    assert any(bool(parameter.abs().max() > 0) for parameter in adapter_parameters(result.model))


def test_the_optimizer_holds_only_adapter_parameters(base_dir: Path) -> None:
    model, run = load_trained_model(base_dir)
    names = attach_adapter(model, LoraConfig(rank=4), seed=0)
    assert len(names) == 8  # qkv, proj, fc1, fc2 of 2 layers: apply_peft's default targets
    held = [parameter for group in make_optimizer(model, run.training).param_groups for parameter in group["params"]]
    assert sorted(map(id, held)) == sorted(map(id, adapter_parameters(model)))
    assert len(held) == 16


def test_trained_lora_merges_to_the_same_logits_and_unmerges_to_the_base(base_dir: Path, lora_run_dir: Path) -> None:
    model, _ = load_adapter_run(lora_run_dir)
    base = base_weights(load_trained_model(base_dir)[0])
    adapted = logits(model)
    assert not torch.allclose(adapted, logits(load_trained_model(base_dir)[0]), atol=1e-3)  # B was trained
    merge(model)
    torch.testing.assert_close(logits(model), adapted, rtol=0, atol=1e-5)
    unmerge(model)
    for name, weight in base_weights(model).items():
        torch.testing.assert_close(weight, base[name], rtol=0, atol=1e-6, msg=name)
    plain = merge_and_unload(model)
    torch.testing.assert_close(logits(plain), adapted, rtol=0, atol=1e-5)


def test_a_mixed_lora_and_ia3_set_trains_saves_and_loads(base_dir: Path, tmp_path: Path) -> None:
    model, run = load_trained_model(base_dir)
    attach_adapter(model, LoraConfig(name="low_rank", rank=4, targets=("*.linear_fc1",)), seed=0)
    attach_adapter(model, IA3Config(name="scales", targets=("*.linear_fc1", "*.linear_fc2")), seed=0)
    initial = [parameter.detach().clone() for parameter in adapter_parameters(model)]
    overrides = [{"training": TRAINING}]
    result = train(resolve_finetune_run(base_dir, overrides=overrides), model=model, progress=False)
    assert falls(result.losses)
    wrappers = {type(module).__name__ for module in model.modules()}
    assert {"AdaptedColumnLinear", "AdaptedRowLinear"} <= wrappers
    for parameter, start in zip(adapter_parameters(model), initial, strict=True):
        assert not torch.equal(parameter, start)  # every adapter weight got gradients
    model.eval()
    save_adapters(model, tmp_path / "adapters")
    fresh, _ = load_trained_model(base_dir)
    assert load_adapters(fresh, tmp_path / "adapters") == ["low_rank", "scales"]
    assert torch.equal(logits(fresh), logits(model))


def test_merging_writes_a_plain_run_that_computes_the_adapted_logits(lora_run_dir: Path, tmp_path: Path) -> None:
    adapted, run = load_adapter_run(lora_run_dir)
    merge_adapter_run(lora_run_dir, tmp_path / "merged")
    merged, merged_run = load_trained_model(tmp_path / "merged")
    torch.testing.assert_close(logits(merged), logits(adapted), rtol=0, atol=1e-5)
    assert merged_run.peft is None and merged_run.model == run.model
    assert sorted(path.name for path in lora_run_dir.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "base_model.json", "config.yaml",
        "metrics.jsonl", "progress.json",
    ]


def test_a_run_config_takes_its_model_from_the_base(base_dir: Path) -> None:
    run = resolve_finetune_run(base_dir, overrides=["peft={type: ia3}", "training.steps=3"])
    assert run.model == load_trained_model(base_dir)[1].model
    assert isinstance(run.peft, IA3Config) and run.training.steps == 3


def test_model_layers_and_adapters_on_fresh_weights_are_refused(base_dir: Path, tmp_path: Path) -> None:
    config_file = tmp_path / "run.yaml"
    config_file.write_text("model: {hidden_size: 32}\n")
    with pytest.raises(ConfigError) as error:
        resolve_finetune_run(base_dir, files=[config_file])
    assert str(error.value) == f"model: {config_file}: the base (--from) decides the model; remove this file's model: section"
    with pytest.raises(ConfigError) as error:
        resolve_finetune_run(base_dir, overrides=["model.decoder.num_blocks=1"])
    assert str(error.value) == "model: the base (--from) decides the model; remove the override 'model.decoder.num_blocks=1'"
    with pytest.raises(ConfigError) as error:
        train(resolve_run(preset="tiny", overrides=["peft={type: lora}"]), progress=False)
    assert str(error.value) == (
        "peft: adapters train on pretrained weights, not freshly initialised ones; start from a "
        "trained model (megaspec train --from DIR, or megaspec.finetune.finetune)"
    )


def test_an_adapter_run_is_neither_a_base_nor_a_plain_run(lora_run_dir: Path, base_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as error:
        resolve_finetune_run(lora_run_dir)
    assert str(error.value) == (
        f"{lora_run_dir}: an adapter run, not a model; merge it first (megaspec merge) and start from the merged directory"
    )
    with pytest.raises(ValueError) as value_error:
        load_trained_model(lora_run_dir)
    assert str(value_error.value) == (
        f"{lora_run_dir}: an adapter run (its config.yaml has a peft: section); load it with "
        "megaspec.finetune.load_adapter_run, or merge it with megaspec merge"
    )
    with pytest.raises(CheckpointError) as error:
        merge_adapter_run(base_dir, tmp_path / "out")
    assert str(error.value) == f"{base_dir}: not an adapter run: its config.yaml has no peft: section"
    assert not (tmp_path / "out").exists()


def test_a_moved_base_is_named_and_can_be_given(lora_run_dir: Path, base_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    copy.mkdir()
    for path in lora_run_dir.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    (copy / "base_model.json").write_text('{"base": "/nonexistent/base"}\n')
    with pytest.raises(CheckpointError) as error:
        load_adapter_run(copy)
    assert str(error.value) == f"{copy}: its base /nonexistent/base is not a directory; pass the base's current place"
    model, run = load_adapter_run(copy, base=base_dir)
    assert isinstance(model, GPTModel) and isinstance(run, RunConfig)


def test_the_example_lora_config_resolves_over_a_base(base_dir: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "configs" / "lora.yaml"
    run = resolve_finetune_run(base_dir, files=[example])
    assert run.peft == LoraConfig(rank=8, alpha=16, targets=None)
    assert run.training.steps == 100
