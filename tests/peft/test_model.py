"""Adapters on a model (megaspec.peft.model and .merging): targets and their errors, several
active at once, disable, delete, merge (safe), unmerge, unload, merge_and_unload."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from megaspec.backends import torch as torch_backend
from megaspec.config import ModelConfig, resolve
from megaspec.models import GPTModel
from megaspec.parallel import ColumnParallelLinear, seeded_initialization
from megaspec.peft import (
    IA3Config,
    LoraConfig,
    active_adapters,
    adapter_names,
    adapter_parameters,
    adapters_disabled,
    add_adapter,
    delete_adapter,
    merge,
    merge_and_unload,
    set_active_adapters,
    slot_linears,
    unload,
    unmerge,
)
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig

CONFIG = resolve(ModelConfig, overrides=[
    "hidden_size=32", "vocab_size=128", "decoder.num_blocks=2", "decoder.block.mixer.num_heads=4",
    "decoder.block.mlp.ffn_hidden_size=64",
])  # fmt: skip
TOKENS = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(0))


def model() -> GPTModel:
    with seeded_initialization(0):
        return CONFIG.build()


def logits(model: GPTModel) -> Tensor:
    with torch.no_grad():
        result: Tensor = model(TOKENS)
    return result


def with_two_adapters() -> GPTModel:
    built = model()
    with seeded_initialization(1):
        add_adapter(built, LoraConfig(name="low_rank", rank=4))
        add_adapter(built, IA3Config(name="scales", targets=["*.linear_fc1", "*.linear_fc2"]))
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for parameter in adapter_parameters(built):
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.copy_(1 + 0.2 * noise if parameter.dim() == 1 else 0.2 * noise)
    return built


def test_apply_peft_targets_mixer_and_mlp_linears_of_a_config_model() -> None:
    built = model()
    names = add_adapter(built, LoraConfig(rank=2))
    assert names == [f"blocks.layers.{i}.{slot}" for i in (0, 1)
                     for slot in ("mixer.linear_qkv", "mixer.linear_proj", "mlp.linear_fc1", "mlp.linear_fc2")]  # fmt: skip
    assert "output_layer" in slot_linears(built)  # a linear, but its config sets apply_peft false


def test_a_fresh_adapter_gives_identical_logits() -> None:
    built = model()
    expected = logits(built)
    add_adapter(built, LoraConfig(rank=4))
    add_adapter(built, IA3Config(name="scales"))
    assert torch.equal(logits(built), expected)


def test_adapters_follow_the_models_mode_and_device() -> None:
    built = model().eval()
    add_adapter(built, LoraConfig(rank=4, dropout=0.5))
    assert not any(module.training for module in built.modules())  # no dropout at inference
    with torch.device("meta"):  # the default device differs from the weights' device
        add_adapter(built, IA3Config(name="scales"))
        add_adapter(built, LoraConfig(name="second", rank=2))
    assert {parameter.device.type for parameter in adapter_parameters(built)} == {"cpu"}


def test_patterns_that_match_nothing_are_each_named() -> None:
    built = model()
    with pytest.raises(ValueError) as error:
        add_adapter(built, LoraConfig(targets=("*.linear_qkv", "*.q_proj", "blocks.layers.*.mixer")))
    assert str(error.value) == (
        "target patterns matched no linear: '*.q_proj'; 'blocks.layers.*.mixer' (it matches "
        "blocks.layers.0.mixer, blocks.layers.1.mixer, which are not linears of a slot)"
    )
    assert adapter_names(built) == []  # nothing was changed


def test_a_python_built_model_needs_patterns() -> None:
    config = TransformerConfig(hidden_size=32, num_layers=1)
    built = GPTModel(config=config, vocab_size=128, submodules=torch_backend.llama_submodules(
        AttentionConfig(num_heads=4), MlpConfig(ffn_hidden_size=64), 1))  # fmt: skip
    with pytest.raises(ValueError) as error:
        add_adapter(built, LoraConfig())
    assert str(error.value) == (
        "no linear of the model sets apply_peft (models built from a config set it on mixer and MLP "
        "linears); give target patterns, e.g. targets=['*.linear_qkv']"
    )


def test_a_rank_a_layer_does_not_allow_changes_nothing() -> None:
    built = model()
    with pytest.raises(ValueError) as error:
        add_adapter(built, LoraConfig(rank=33))
    assert str(error.value) == (
        "blocks.layers.0.mixer.linear_qkv: LoRA rank 33 is larger than this linear allows: "
        "min(input_size 32, output_size 96) = 32"
    )
    assert adapter_names(built) == []


def test_several_adapters_active_at_once_and_disabled() -> None:
    built = with_two_adapters()
    base = logits(model())
    set_active_adapters(built, ["low_rank"])
    low_rank = logits(built)
    set_active_adapters(built, ["low_rank", "scales"])
    both = logits(built)
    assert active_adapters(built) == ["low_rank", "scales"]
    assert not torch.allclose(both, low_rank) and not torch.allclose(low_rank, base)
    with adapters_disabled(built):
        assert torch.equal(logits(built), base)
    assert torch.equal(logits(built), both)
    with pytest.raises(ValueError) as error:
        set_active_adapters(built, ["low_rank", "typo"])
    assert str(error.value) == "cannot activate 'typo': no adapter of that name (adapters: low_rank, scales)"


def test_merge_unmerge_and_unload() -> None:
    built = with_two_adapters()
    before = {name: tensor.clone() for name, tensor in built.state_dict().items() if ".adapters." not in name}
    expected = logits(built)
    merge(built)
    torch.testing.assert_close(logits(built), expected, rtol=0, atol=1e-5)
    unmerge(built)
    for name, tensor in built.state_dict().items():
        if ".adapters." not in name:
            key = name.replace(".base_layer", "")
            torch.testing.assert_close(tensor, before[name], rtol=0, atol=1e-6, msg=key)
    plain = merge_and_unload(built)
    assert type(plain.blocks.layers[0].mixer.linear_qkv) is ColumnParallelLinear
    assert adapter_names(plain) == []
    torch.testing.assert_close(logits(plain), expected, rtol=0, atol=1e-5)


def test_unload_without_merging_gives_the_base() -> None:
    built = with_two_adapters()
    assert torch.equal(logits(unload(built)), logits(model()))


def test_merging_an_adapter_that_does_not_exist() -> None:
    with pytest.raises(ValueError) as error:
        merge(with_two_adapters(), ["low_rnk"])
    assert str(error.value) == "cannot merge 'low_rnk': no adapter of that name (adapters: low_rank, scales)"


def test_safe_merge_refuses_non_finite_values_and_changes_nothing_there() -> None:
    built = with_two_adapters()
    qkv = built.blocks.layers[0].mixer.linear_qkv
    with torch.no_grad():
        qkv.adapter("low_rank").lora_B[0, 0] = float("inf")
    weight = qkv.get_base_layer().weight.detach().clone()
    with pytest.raises(ValueError) as error:
        merge(built, ["low_rank"])
    assert str(error.value) == (
        "blocks.layers.0.mixer.linear_qkv: merging adapter 'low_rank' would write non-finite values; "
        "nothing was merged here"
    )
    assert torch.equal(qkv.get_base_layer().weight, weight)


def test_delete_removes_adapters_and_empty_wrappers() -> None:
    built = with_two_adapters()
    delete_adapter(built, "scales")
    assert adapter_names(built) == ["low_rank"]
    delete_adapter(built, "low_rank")
    assert type(built.blocks.layers[1].mlp.linear_fc2).__name__ == "RowParallelLinear"
    assert torch.equal(logits(built), logits(model()))
    with pytest.raises(ValueError, match="cannot delete 'low_rank': no adapter of that name"):
        delete_adapter(built, "low_rank")


def test_a_merged_adapter_cannot_be_deleted() -> None:
    built = with_two_adapters()
    merge(built, ["scales"])
    with pytest.raises(ValueError) as error:
        delete_adapter(built, "scales")
    assert str(error.value) == (
        "blocks.layers.0.mlp.linear_fc1: adapter 'scales' is merged; unmerge it before deleting it"
    )
