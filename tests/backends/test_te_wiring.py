"""The te backend's wiring on CPU, with a plain-PyTorch stand-in for Transformer Engine.

``tests/helpers/fake_transformer_engine.py`` follows TE's constructors and conventions, so
these tests check what megaspec adds (weight layouts and values, state-dict names, shapes,
slots, refusals) where Transformer Engine cannot run. ``test_te.py`` runs the real thing on a
GPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from types import ModuleType

import pytest
import torch

import megaspec.backends
from megaspec import AttentionConfig, GPTModel, MlpConfig, TransformerConfig
from megaspec.backends import torch as torch_backend
from megaspec.backends.fp8 import Fp8Config, fp8_autocast
from megaspec.backends.portable import load_portable_state_dict, portable_state_dict
from megaspec.context import LayerContext
from megaspec.layers import MLP, BlockSequenceSpec, RMSNorm, TransformerLayer
from megaspec.models import GPTSubmodules
from megaspec.parallel import ParallelGroups, materialize, normal_init, ones_init, seeded_initialization
from megaspec.training import build_model, resolve_run, train
from tests.helpers import fake_transformer_engine
from tests.helpers.presets import TE_SLOT_OVERRIDES as TE_SLOTS

HIDDEN, LAYERS, VOCAB = 32, 2, 64
ATTENTION = AttentionConfig(num_heads=4, num_query_groups=2)
MLP_CONFIG = MlpConfig(ffn_hidden_size=48)


@pytest.fixture
def te(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``megaspec.backends.te`` imported over the stand-in, and forgotten afterwards."""
    if importlib.util.find_spec("transformer_engine") is not None:
        pytest.skip("Transformer Engine is installed: test_te.py tests the real one")
    for name, module in fake_transformer_engine.modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    yield importlib.import_module("megaspec.backends.te")
    for name in [n for n in sys.modules if n == "megaspec.backends.te" or n.startswith("megaspec.backends.te.")]:
        del sys.modules[name]
    if hasattr(megaspec.backends, "te"):
        delattr(megaspec.backends, "te")


def specs(te: ModuleType) -> dict[str, Callable[[], GPTSubmodules]]:
    def mixed() -> GPTSubmodules:
        layer = replace(
            te.llama_layer_submodules(ATTENTION, MLP_CONFIG),
            pre_mlp_norm=RMSNorm,
            mlp=MLP.as_mlp_submodule(MLP_CONFIG, torch_backend.mlp_submodules()),
        )
        blocks = BlockSequenceSpec(pattern=[TransformerLayer.as_layer_submodule(layer)], num_layers=LAYERS)
        result: GPTSubmodules = te.gpt_submodules(blocks)
        return result

    return {
        "fused": lambda: te.llama_submodules(ATTENTION, MLP_CONFIG, LAYERS),
        "separate": lambda: te.llama_submodules(ATTENTION, MLP_CONFIG, LAYERS, fuse_norms=False),
        "mixed": mixed,
    }


def build(submodules: GPTSubmodules, seed: int = 0) -> GPTModel:
    with seeded_initialization(seed):
        return GPTModel(
            config=TransformerConfig(hidden_size=HIDDEN, num_layers=LAYERS),
            vocab_size=VOCAB,
            submodules=submodules,
        )


def tokens() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ["fused", "separate", "mixed"])
def test_te_models_hold_and_compute_the_torch_backends_model(te: ModuleType, name: str) -> None:
    te_model = build(specs(te)[name](), seed=3)
    torch_model = build(torch_backend.llama_submodules(ATTENTION, MLP_CONFIG, LAYERS), seed=3)
    te_weights, torch_weights = portable_state_dict(te_model), portable_state_dict(torch_model)
    assert te_weights.keys() == torch_weights.keys()
    assert all(torch.equal(te_weights[key], torch_weights[key]) for key in te_weights)
    with torch.no_grad():
        torch.testing.assert_close(te_model(tokens()), torch_model(tokens()))


def test_te_names_and_layouts(te: ModuleType) -> None:
    model = build(specs(te)["fused"]())
    names = set(model.state_dict())
    layer = "blocks.layers.0."
    assert {
        f"{layer}mixer.linear_qkv.te_module.layer_norm_weight",
        f"{layer}mixer.linear_qkv.te_module.weight",
        f"{layer}mixer.linear_qkv.te_module._extra_state",
        f"{layer}mixer.core_attention.te_module._extra_state",
        f"{layer}mlp.linear_fc1.te_module.layer_norm_weight",
        "final_norm.te_module.weight",
    } <= names
    assert not any(".input_norm." in name or ".pre_mlp_norm." in name for name in names)
    fc1 = model.get_submodule(f"{layer}mlp.linear_fc1.te_module")
    assert tuple(fc1.weight.shape) == (2 * 48, HIDDEN)  # [gate; up]
    assert "IdentityNorm" in model.summary()


def test_weights_move_torch_to_te_and_back(te: ModuleType) -> None:
    source = build(torch_backend.llama_submodules(ATTENTION, MLP_CONFIG, LAYERS), seed=1)
    te_model = build(specs(te)["fused"](), seed=2)
    load_portable_state_dict(te_model, source.state_dict())
    back = build(torch_backend.llama_submodules(ATTENTION, MLP_CONFIG, LAYERS), seed=3)
    load_portable_state_dict(back, portable_state_dict(te_model))
    expected = source.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in back.state_dict().items())


def test_qk_norm_on_te_norms_matches_the_torch_backend(te: ModuleType) -> None:
    te_model = build(te.llama_submodules(ATTENTION, MLP_CONFIG, LAYERS, qk_norm=True), seed=4)
    torch_model = build(torch_backend.llama_submodules(ATTENTION, MLP_CONFIG, LAYERS, qk_norm=True), seed=4)
    load_portable_state_dict(te_model, torch_model.state_dict())  # the same names, one to one
    with torch.no_grad():
        torch.testing.assert_close(te_model(tokens()), torch_model(tokens()))


def test_meta_construction_materialises_the_eager_weights(te: ModuleType) -> None:
    with seeded_initialization(5), torch.device("meta"):
        lazy = GPTModel(
            config=TransformerConfig(hidden_size=HIDDEN, num_layers=LAYERS),
            vocab_size=VOCAB,
            submodules=specs(te)["fused"](),
        )
    materialize(lazy, device="cpu")
    eager = build(specs(te)["fused"](), seed=5)
    expected = eager.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in lazy.state_dict().items())


def test_norms_refuse_sharded_input_over_several_ranks(te: ModuleType) -> None:
    with pytest.raises(ValueError) as caught:
        te.TERMSNorm(
            hidden_size=HIDDEN,
            config=TransformerConfig(hidden_size=HIDDEN, num_layers=1),
            groups=ParallelGroups.layout_only(2),
            sharded_input=True,
            init_method=ones_init(),
        )
    assert str(caught.value) == (
        "TERMSNorm: a norm whose tensor-parallel ranks see different data (sequence "
        "parallelism, or QK-norm over sharded heads) is not supported on the te backend; "
        "use megaspec.layers.RMSNorm / LayerNorm for this slot"
    )


def test_row_linear_refuses_a_bias_under_sequence_parallelism(te: ModuleType) -> None:
    with pytest.raises(ValueError) as caught:
        te.TERowParallelLinear(
            input_size=HIDDEN, output_size=HIDDEN, groups=ParallelGroups.layout_only(2),
            init_method=normal_init(0.02), bias=True, input_is_parallel=True,
            sequence_parallel=True, params_dtype=torch.float32,
        )  # fmt: skip
    assert str(caught.value) == (
        "TERowParallelLinear: a bias under sequence parallelism is not supported on the te "
        "backend (its gradient would be a per-rank partial sum); use "
        "megaspec.parallel.RowParallelLinear for this slot"
    )


def test_te_attention_refuses_padding(te: ModuleType) -> None:
    attention = te.TEDotProductAttention(
        config=TransformerConfig(hidden_size=HIDDEN, num_layers=1),
        attention=ATTENTION,
        groups=ParallelGroups.single(),
        layer_index=0,
    )
    query, key = torch.zeros(1, 4, 3, 8), torch.zeros(1, 2, 3, 8)
    context = LayerContext.for_positions(
        torch.arange(3)[None], attention_mask=torch.tensor([[False, True, True]])
    )
    with pytest.raises(ValueError, match="padded rows and key/value caches are not supported"):
        attention(query, key, key, context=context)


def test_fp8_autocast_refuses_a_gpu_without_fp8(te: ModuleType) -> None:
    with pytest.raises(RuntimeError) as caught:
        with fp8_autocast(Fp8Config(recipe="delayed")):
            pass
    assert str(caught.value) == "fp8_autocast: this GPU cannot run FP8: the CPU stand-in has no FP8"


def test_te_slot_types_from_yaml_build_the_torch_typed_model(te: ModuleType) -> None:
    torch_model = build_model(resolve_run(preset="tiny"))
    te_model = build_model(resolve_run(preset="tiny", overrides=TE_SLOTS))
    assert "mixer=SelfAttention" in te_model.summary() and "TERMSNorm" in te_model.summary()
    te_weights, torch_weights = portable_state_dict(te_model), portable_state_dict(torch_model)
    assert te_weights.keys() == torch_weights.keys()
    assert all(torch.equal(te_weights[key], torch_weights[key]) for key in te_weights)
    with torch.no_grad():
        torch.testing.assert_close(te_model(tokens()), torch_model(tokens()))


def test_training_runs_its_forward_under_fp8_autocast(te: ModuleType) -> None:
    # The stand-in reports no FP8, so reaching fp8_autocast in the step is an error.
    run = resolve_run(
        preset="tiny", overrides=[*TE_SLOTS, "training.steps=1", "training.fp8={recipe: delayed}"]
    )
    with pytest.raises(RuntimeError) as caught:
        train(run, progress=False, save_model=False)
    assert str(caught.value) == "fp8_autocast: this GPU cannot run FP8: the CPU stand-in has no FP8"
