"""The training loop (megaspec.training): presets, the learning-rate schedule, per-weight
learning-rate scales, fifty AdamW steps on the bundled text that lower the loss, and saving."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from megaspec.config import ConfigError, RunConfig, TrainingConfig, to_data, update
from megaspec.peft import LoraConfig, add_adapter
from megaspec.training import (
    NonFiniteLossError,
    build_model,
    learning_rate_at,
    load_trained_model,
    make_optimizer,
    preset_run,
    resolve_run,
    save_trained_model,
    set_learning_rate,
    train,
)
from tests.helpers.presets import TINY_MODEL_DATA


def tiny_run(**training: Any) -> RunConfig:
    """The tiny preset with ``training`` fields set."""
    return resolve_run(preset="tiny", overrides=[{"training": training}])


def test_default_run_is_the_small_llama_model_with_the_documented_schedule() -> None:
    run = preset_run("small")
    model = build_model(run)
    assert sum(parameter.numel() for parameter in model.parameters()) == 1_672_896
    block = run.model.decoder.named_blocks()[0][1]
    assert (run.model.hidden_size, run.model.decoder.num_layers) == (192, 4)
    assert to_data(block.mixer) == {
        "type": "attention", "num_heads": 6, "num_query_groups": 2, "rotary_base": 10000.0
    }  # fmt: skip
    assert run.training == TrainingConfig()
    assert (run.training.steps, run.training.batch_size, run.training.sequence_length) == (
        250, 32, 128
    )  # fmt: skip
    assert run.training.learning_rate_floor == pytest.approx(3e-4)
    assert to_data(preset_run("tiny")) == {"model": TINY_MODEL_DATA}
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset_run("huge")


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    training = TrainingConfig(
        steps=100, warmup_steps=10, learning_rate=1e-3, min_learning_rate=1e-4
    )
    rates = [learning_rate_at(step, training) for step in range(training.steps)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(later <= earlier for earlier, later in zip(rates[9:], rates[10:]))
    assert rates[-1] == pytest.approx(1e-4)
    # Without a floor of its own, a lowered peak keeps a tenth of itself as the floor.
    lowered = TrainingConfig(steps=100, learning_rate=1e-5)
    assert learning_rate_at(99, lowered) == pytest.approx(1e-6)


def test_per_weight_learning_rate_scales_multiply_the_schedule() -> None:
    run = resolve_run(
        preset="tiny",
        overrides=["model.embedding.lr_scale=0", "model.output_layer.lr_scale=0.5"],
    )
    model = build_model(run)
    optimizer = make_optimizer(model, run.training)
    set_learning_rate(optimizer, 2e-3)
    rates = {name: group["lr"] for group in optimizer.param_groups for name in group["names"]}
    assert rates["output_layer.weight"] == pytest.approx(1e-3)
    assert rates["blocks.layers.0.mlp.linear_fc1.weight"] == pytest.approx(2e-3)
    assert not any(name.startswith("embedding") for name in rates)  # frozen: lr_scale 0
    trained = train(
        resolve_run(preset="tiny", overrides=["model.embedding.lr_scale=0", "training.steps=2",
                                              "training.batch_size=2"]),
        progress=False,
    ).model  # fmt: skip
    assert torch.equal(trained.embedding.weight, model.embedding.weight)


def test_fifty_adamw_steps_on_the_bundled_text_lower_the_loss() -> None:
    assert not (torch.distributed.is_available() and torch.distributed.is_initialized())
    run = tiny_run(steps=50, batch_size=16, sequence_length=64, warmup_steps=5, eval_interval=25)
    result = train(run, progress=False)
    losses = result.losses
    assert len(losses) == 50 and all(math.isfinite(loss) for loss in losses)
    # Untrained logits are near zero: the first loss is close to uniform over 256 bytes.
    assert losses[0] == pytest.approx(math.log(256), abs=0.1)
    assert sum(losses[-5:]) / 5 < losses[0] - 2.0
    assert [steps for steps, _ in result.validation_losses] == [25, 50]
    first_validation, last_validation = (loss for _, loss in result.validation_losses)
    assert last_validation < first_validation < losses[0] - 1.0


def test_save_and_load_take_string_paths(tmp_path: Path) -> None:
    run = tiny_run(steps=1)
    model = build_model(run)
    directory = str(tmp_path / "run")  # a str, as the README writes it
    save_trained_model(model, run, directory)
    loaded, loaded_run = load_trained_model(directory)
    assert loaded_run == run
    for (name, saved), (_, restored) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(saved, restored), name
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == ["config.yaml", "model.safetensors"]


def test_a_model_with_adapters_is_not_saved_as_a_plain_model(tmp_path: Path) -> None:
    run = tiny_run(steps=1)
    model = build_model(run)
    add_adapter(model, LoraConfig(rank=2))
    with pytest.raises(ValueError, match=r"^the model has adapters \(default\): fold them in"):
        save_trained_model(model, run, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_run_that_cannot_be_saved_fails_before_training(tmp_path: Path) -> None:
    # A function as activation is fine in Python but cannot be written to config.yaml:
    # the run must stop before its first step, not after training.
    run = update(tiny_run(steps=1000), {"model": {"decoder": {"block": {"mlp": {"activation": F.gelu}}}}})
    with pytest.raises(ConfigError) as error:
        train(run, output_dir=tmp_path, progress=False)
    assert str(error.value).startswith("model.decoder.block.mlp.activation: gelu cannot be saved")
    assert list(tmp_path.iterdir()) == []


def test_gradient_accumulation_trains_the_same_weights_as_the_whole_batch() -> None:
    whole = train(tiny_run(steps=3, batch_size=4, sequence_length=16, eval_batches=1), progress=False)
    accumulated = train(
        tiny_run(steps=3, batch_size=4, sequence_length=16, eval_batches=1, gradient_accumulation_steps=2),
        progress=False,
    )
    # Two micro-batches of 2 sum to the gradient of the batch of 4's mean loss: only the
    # order of float32 additions differs.
    torch.testing.assert_close(accumulated.losses, whole.losses, rtol=1e-5, atol=0)
    whole_weights, accumulated_weights = whole.model.state_dict(), accumulated.model.state_dict()
    for name, weight in whole_weights.items():
        torch.testing.assert_close(accumulated_weights[name], weight, rtol=1e-4, atol=1e-6, msg=name)
    assert any(not torch.equal(accumulated_weights[name], weight) for name, weight in whole_weights.items())


def test_gradient_accumulation_must_divide_the_batch() -> None:
    with pytest.raises(ConfigError) as error:
        tiny_run(batch_size=4, gradient_accumulation_steps=3)
    assert str(error.value) == (
        "training.gradient_accumulation_steps: 3 does not divide batch_size (4) into equal micro-batches"
    )


def test_a_non_finite_loss_raises_before_its_update_and_saves_nothing(tmp_path: Path) -> None:
    run = tiny_run(steps=50, batch_size=2, sequence_length=16, learning_rate=1e6, warmup_steps=0)
    with pytest.raises(NonFiniteLossError) as error:
        train(run, output_dir=tmp_path / "run", progress=False)
    finite_steps = (tmp_path / "run" / "metrics.jsonl").read_text().count("\n")
    assert error.value.step == finite_steps + 1 and math.isnan(error.value.value)
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == ["metrics.jsonl"]


def test_bfloat16_mixed_precision_autocasts_the_forward_and_keeps_float32_weights() -> None:
    def first_loss_and_model(precision: str) -> tuple[float, torch.nn.Module]:
        result = train(
            tiny_run(steps=1, batch_size=2, sequence_length=16, eval_batches=1,
                     mixed_precision=precision),
            progress=False,
        )  # fmt: skip
        return result.losses[0], result.model

    full, _ = first_loss_and_model("none")
    mixed, model = first_loss_and_model("bfloat16")
    assert {parameter.dtype for parameter in model.parameters()} == {torch.float32}
    # Same weights and batch: bfloat16 products move the loss a little, never much.
    assert mixed != full and mixed == pytest.approx(full, rel=1e-2)


def test_mixed_precision_names_the_allowed_values() -> None:
    with pytest.raises(ConfigError, match="training.mixed_precision") as error:
        tiny_run(mixed_precision="fp16")
    assert "'none'" in str(error.value) and "'bfloat16'" in str(error.value)
