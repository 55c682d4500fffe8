"""Every program under examples/ runs, and each one's numerical claim holds."""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path
from types import ModuleType

import pytest
import torch

from examples import custom_mixer, foreign_module_adapter, hybrid_stack, mlp_subclass_partial
from megaspec.backends import torch as torch_backend
from megaspec.context import LayerContext
from megaspec.layers import MLP
from megaspec.parallel import ParallelGroups, seeded_initialization
from megaspec.peft import LoraConfig, add_adapter, train_adapters_only
from megaspec.transformer_config import MlpConfig, TransformerConfig

EXAMPLES = sorted(
    path.stem
    for path in (Path(__file__).resolve().parents[1] / "examples").glob("*.py")
    if path.stem != "__init__"
)
# Runs under torchrun (tests/models/test_torchrun.py), not in this process.
TORCHRUN_EXAMPLES = ("tensor_parallel",)
# Slow enough to run once: their own test makes the generic checks too.
# te_backend needs a CUDA GPU and Transformer Engine: tests/backends/test_te.py runs it.
OWN_TEST_EXAMPLES = ("lora_finetune", "te_backend")
LOSS = re.compile(r"loss (-?\d+\.\d+|nan|inf)")
ATTENTION_LAYER = (
    "TransformerLayer(input_norm=RMSNorm, mixer=SelfAttention, pre_mlp_norm=RMSNorm, mlp=MLP)"
)
CONV_LAYER = (
    "TransformerLayer(input_norm=RMSNorm, mixer=CausalConvMixer, pre_mlp_norm=RMSNorm, mlp=MLP)"
)


def run_main(name: str, capsys: pytest.CaptureFixture[str]) -> str:
    module: ModuleType = importlib.import_module(f"examples.{name}")
    module.main()
    return capsys.readouterr().out


def printed_losses(output: str) -> list[float]:
    return [float(value) for value in LOSS.findall(output)]


def test_examples_are_found() -> None:
    for name in ("custom_mixer", "mlp_subclass_partial", "foreign_module_adapter", "hybrid_stack"):
        assert name in EXAMPLES


@pytest.mark.parametrize(
    "name", [name for name in EXAMPLES if name not in (*TORCHRUN_EXAMPLES, *OWN_TEST_EXAMPLES)]
)
def test_example_main_runs(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    check_example_output(name, run_main(name, capsys))


def check_example_output(name: str, output: str) -> list[float]:
    """What every example promises: a docstring saying how to run it, a summary, finite losses."""
    module = importlib.import_module(f"examples.{name}")
    assert module.__doc__ is not None and f"python -m examples.{name}" in module.__doc__
    assert output.startswith("GPTModel: ")
    losses = printed_losses(output)
    assert losses, f"examples.{name} printed no loss:\n{output}"
    assert all(math.isfinite(loss) for loss in losses)
    return losses


# --- (a) custom_mixer --------------------------------------------------------------------


def test_custom_mixer_output(capsys: pytest.CaptureFixture[str]) -> None:
    output = run_main("custom_mixer", capsys)
    assert f"  layers 0-1: {CONV_LAYER}\n" in output
    # A fresh model predicts roughly uniformly over its 256 tokens.
    (loss,) = printed_losses(output)
    assert abs(loss - math.log(256)) < 0.1


def test_a_lora_on_the_custom_mixer_needs_no_code_in_the_mixer() -> None:
    with seeded_initialization(0):
        model = custom_mixer.build_model()
    tokens = torch.randint(0, 256, (2, 17), generator=torch.Generator().manual_seed(0))
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    with torch.no_grad():
        base = model(inputs)
    adapted = add_adapter(model, LoraConfig(rank=4, targets=("*.mixer.in_proj", "*.mixer.out_proj")))
    assert adapted == [f"blocks.layers.{index}.mixer.{name}" for name in ("in_proj", "out_proj") for index in (0, 1)]
    with torch.no_grad():
        assert torch.equal(model(inputs), base)  # a fresh adapter (B = 0) changes nothing
    optimizer = torch.optim.AdamW(train_adapters_only(model), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = model(inputs, labels=labels).mean()
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05
    with torch.no_grad():
        assert not torch.allclose(model(inputs), base, atol=1e-3)


# --- (b) mlp_subclass_partial ------------------------------------------------------------


def test_mlp_subclass_partial_output(capsys: pytest.CaptureFixture[str]) -> None:
    output = run_main("mlp_subclass_partial", capsys)
    assert (
        "  layers 0-1: TransformerLayer(input_norm=RMSNorm, mixer=SelfAttention, "
        "pre_mlp_norm=RMSNorm, mlp=ScaledResidualMLP)\n"
    ) in output
    assert f"mlp of layer 0: residual_scale={1.4 / math.sqrt(2)}\n" in output
    (loss,) = printed_losses(output)
    assert abs(loss - math.log(256)) < 0.1


def mlp_pair(residual_scale: float) -> tuple[MLP, mlp_subclass_partial.ScaledResidualMLP]:
    """A base MLP and a ScaledResidualMLP holding the same weights."""
    config = TransformerConfig(hidden_size=32, num_layers=2)
    mlp_config = MlpConfig(ffn_hidden_size=48)
    groups = ParallelGroups.single()
    submodules = torch_backend.mlp_submodules()
    torch.manual_seed(0)
    base = MLP(config=config, mlp=mlp_config, groups=groups, layer_index=0, submodules=submodules)
    scaled = mlp_subclass_partial.ScaledResidualMLP(
        config=config,
        mlp=mlp_config,
        groups=groups,
        layer_index=0,
        submodules=submodules,
        residual_scale=residual_scale,
    )
    scaled.load_state_dict(base.state_dict())
    return base, scaled


@pytest.mark.parametrize("residual_scale", [0.25, 1.0, 3.0])
def test_scaled_mlp_is_scale_times_base_mlp(residual_scale: float) -> None:
    base, scaled = mlp_pair(residual_scale)
    hidden = torch.randn(5, 2, 32)  # [s, b, h]
    expected = residual_scale * base(hidden)
    torch.testing.assert_close(scaled(hidden), expected, rtol=0, atol=1e-7)
    if residual_scale != 1.0:
        assert not torch.allclose(scaled(hidden), base(hidden))


def test_partial_bound_scale_reaches_every_layer() -> None:
    model = mlp_subclass_partial.build_model(residual_scale=0.5, num_layers=3)
    scales = [layer.get_submodule("mlp").residual_scale for layer in model.blocks.layers]
    assert scales == [0.5, 0.5, 0.5]


def test_scaled_mlp_rejects_non_positive_scale() -> None:
    with pytest.raises(ValueError) as error:
        mlp_pair(0.0)
    assert str(error.value) == (
        "ScaledResidualMLP (layer 0): residual_scale must be a positive finite number, got 0.0"
    )


# --- (c) foreign_module_adapter ----------------------------------------------------------


def test_foreign_module_adapter_output(capsys: pytest.CaptureFixture[str]) -> None:
    output = run_main("foreign_module_adapter", capsys)
    assert f"  layer 0: {ATTENTION_LAYER}\n" in output
    assert (
        "  layer 1: TransformerLayer(input_norm=RMSNorm, mixer=GruMixer, pre_mlp_norm=RMSNorm, "
        "mlp=MLP)\n"
    ) in output
    (loss,) = printed_losses(output)
    assert abs(loss - math.log(256)) < 0.1


def test_gru_mixer_computes_what_the_gru_computes() -> None:
    torch.manual_seed(0)
    mixer = foreign_module_adapter.gru_mixer(
        config=TransformerConfig(hidden_size=16, num_layers=1),
        groups=ParallelGroups.single(),
        layer_index=0,
    )
    hidden = torch.randn(7, 3, 16)  # [s, b, h]
    context = LayerContext.for_positions(torch.arange(7).expand(3, 7))
    expected, _ = mixer.gru(hidden)
    assert torch.equal(mixer(hidden, context=context), expected)


def test_gru_model_is_causal() -> None:
    torch.manual_seed(0)
    model = foreign_module_adapter.build_model()
    tokens = torch.randint(0, 256, (2, 12))
    changed = tokens.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 256
    with torch.no_grad():
        logits, changed_logits = model(tokens), model(changed)
    torch.testing.assert_close(logits[:, :8], changed_logits[:, :8], rtol=0, atol=1e-6)
    assert not torch.allclose(logits[:, 8:], changed_logits[:, 8:])


# Under tensor parallelism (with and without sequence parallelism) the replicated GRU trains
# exactly as at size 1: tests/models/test_tensor_parallel.py, model "plain".


# --- (d) hybrid_stack ----------------------------------------------------------------------


def test_hybrid_stack_summary_and_training(capsys: pytest.CaptureFixture[str]) -> None:
    output = run_main("hybrid_stack", capsys)
    expected_layers = (
        f"  layers 0-1: {ATTENTION_LAYER}\n"
        f"  layer 2: {CONV_LAYER}\n"
        f"  layers 3-4: {ATTENTION_LAYER}\n"
        f"  layer 5: {CONV_LAYER}\n"
        f"  layer 6: {ATTENTION_LAYER}\n"
    )
    assert output.startswith("GPTModel: 7 layers, hidden 64, tensor-parallel size 1\n")
    assert expected_layers in output
    losses = printed_losses(output)
    assert len(losses) == 8
    assert abs(losses[0] - math.log(256)) < 0.1
    # Eight AdamW steps on one fixed batch: the model starts memorising it.
    assert losses[-1] < losses[0] - 1.0
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))


def test_hybrid_blocks_expand_nested_spec() -> None:
    blocks = hybrid_stack.hybrid_blocks()
    assert blocks.pattern_length == 7
    torch.manual_seed(0)
    model = hybrid_stack.build_model()
    mixers = [type(layer.get_submodule("mixer")).__name__ for layer in model.blocks.layers]
    attention, conv = "SelfAttention", "CausalConvMixer"
    assert mixers == [attention, attention, conv, attention, attention, conv, attention]
    assert [layer.layer_index for layer in model.blocks.layers] == list(range(7))


# --- (e) from_hf -----------------------------------------------------------------------------


def test_from_hf_matches_transformers_before_and_after_export(
    capsys: pytest.CaptureFixture[str],
) -> None:
    output = run_main("from_hf", capsys)
    differences = [float(value) for value in re.findall(r"max \|logits.*\| = (\S+)\n", output)]
    assert len(differences) == 2 and all(difference <= 1e-5 for difference in differences)
    assert "exported ['config.json', 'model.safetensors']\n" in output
    assert "Qwen2ForCausalLM from the export" in output
    (loss,) = printed_losses(output)
    assert abs(loss - math.log(320)) < 0.5  # a random model is close to uniform


# --- (f) lora_finetune -----------------------------------------------------------------------

LORA_LOSSES = re.compile(r"step +\d+: loss (\d+\.\d+)")
DIFFERENCE = re.compile(r"max \|logits difference\| = (\S+)")


def test_lora_finetune_lowers_the_loss_keeps_the_base_and_merges_exactly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    output = run_main("lora_finetune", capsys)
    check_example_output("lora_finetune", output)
    first, _, last = (float(loss) for loss in LORA_LOSSES.findall(output))
    assert last < first - 0.2
    assert "all 15 base weights bitwise unchanged: True\n" in output
    reloaded, merged = (float(value) for value in DIFFERENCE.findall(output))
    assert reloaded == 0.0 and merged <= 1e-5
