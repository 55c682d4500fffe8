"""Portable state dicts: the te backend's names mapped to the torch backend's, on CPU.

A module tree named like the te backend's (``te_module`` children, ``layer_norm_weight`` in
the fused linears, ``_extra_state``) stands in for Transformer Engine, which the GPU tests
(``test_te.py``) use for real.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from megaspec import AttentionConfig, GPTModel, MlpConfig, TransformerConfig
from megaspec.backends import torch as torch_backend
from megaspec.backends.portable import load_portable_state_dict, portable_key, portable_state_dict
from megaspec.parallel import seeded_initialization


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("blocks.layers.0.mixer.linear_qkv.te_module.weight", "blocks.layers.0.mixer.linear_qkv.weight"),
        (
            "blocks.layers.0.mixer.linear_qkv.te_module.layer_norm_weight",
            "blocks.layers.0.input_norm.weight",
        ),
        ("blocks.layers.1.mlp.linear_fc1.te_module.layer_norm_weight", "blocks.layers.1.pre_mlp_norm.weight"),
        ("blocks.layers.1.mlp.linear_fc1.te_module.layer_norm_bias", "blocks.layers.1.pre_mlp_norm.bias"),
        ("final_norm.te_module.weight", "final_norm.weight"),
        ("blocks.layers.0.mlp.linear_fc2.te_module._extra_state", None),
        ("embedding.weight", "embedding.weight"),
    ],
)
def test_portable_key(key: str, expected: str | None) -> None:
    assert portable_key(key) == expected


def test_a_fused_norm_elsewhere_has_no_portable_name() -> None:
    with pytest.raises(ValueError) as caught:
        portable_key("head.te_module.layer_norm_weight")
    assert str(caught.value) == (
        "portable_key: 'head.te_module.layer_norm_weight' is a fused norm's parameter outside "
        "mixer.linear_qkv and mlp.linear_fc1, so it has no torch-backend name"
    )


class _TeNamed(nn.Module):
    """Stands in for an adapter: parameters under ``te_module``, which has extra state."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]) -> None:
        super().__init__()
        self.te_module = _WithExtraState()
        for name, shape in shapes.items():
            self.te_module.register_parameter(name, nn.Parameter(torch.zeros(shape)))


class _WithExtraState(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.loaded_extra: Tensor | None = None

    def get_extra_state(self) -> Tensor:
        return torch.tensor([7], dtype=torch.uint8)

    def set_extra_state(self, state: Tensor) -> None:
        self.loaded_extra = state


def _torch_model() -> GPTModel:
    with seeded_initialization(3):
        return GPTModel(
            config=TransformerConfig(hidden_size=32, num_layers=1),
            vocab_size=64,
            submodules=torch_backend.llama_submodules(
                AttentionConfig(num_heads=4, num_query_groups=2), MlpConfig(ffn_hidden_size=48), 1
            ),
        )


def _te_named_like(model: GPTModel) -> nn.Module:
    """A module tree with ``model``'s tensors under the fused te backend's names."""
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    layer = nn.Module()
    layer.input_norm = nn.Module()  # IdentityNorm: no parameters
    layer.pre_mlp_norm = nn.Module()
    layer.mixer = nn.Module()
    layer.mixer.linear_qkv = _TeNamed({
        "layer_norm_weight": shapes["blocks.layers.0.input_norm.weight"],
        "weight": shapes["blocks.layers.0.mixer.linear_qkv.weight"],
    })
    layer.mixer.linear_proj = _TeNamed({"weight": shapes["blocks.layers.0.mixer.linear_proj.weight"]})
    layer.mlp = nn.Module()
    layer.mlp.linear_fc1 = _TeNamed({
        "layer_norm_weight": shapes["blocks.layers.0.pre_mlp_norm.weight"],
        "weight": shapes["blocks.layers.0.mlp.linear_fc1.weight"],
    })
    layer.mlp.linear_fc2 = _TeNamed({"weight": shapes["blocks.layers.0.mlp.linear_fc2.weight"]})
    tree = nn.Module()
    tree.embedding = nn.Module()
    tree.embedding.register_parameter("weight", nn.Parameter(torch.zeros(shapes["embedding.weight"])))
    tree.blocks = nn.Module()
    tree.blocks.layers = nn.ModuleList([layer])
    tree.final_norm = _TeNamed({"weight": shapes["final_norm.weight"]})
    tree.output_layer = nn.Module()
    tree.output_layer.register_parameter("weight", nn.Parameter(torch.zeros(shapes["output_layer.weight"])))
    return tree


def test_weights_move_to_te_names_and_back() -> None:
    source = _torch_model()
    expected = source.state_dict()
    assert portable_state_dict(source).keys() == expected.keys()  # the torch backend's own names
    te_named = _te_named_like(source)
    load_portable_state_dict(te_named, expected)
    fused = te_named.blocks.layers[0].mixer.linear_qkv.te_module
    assert torch.equal(fused.layer_norm_weight, expected["blocks.layers.0.input_norm.weight"])
    assert fused.loaded_extra is None  # extra state (FP8 history) is never handed back
    back = portable_state_dict(te_named)
    assert back.keys() == expected.keys()
    assert all(torch.equal(back[key], expected[key]) for key in expected)


def test_loading_names_missing_and_unexpected_entries() -> None:
    model = _torch_model()
    state = dict(model.state_dict())
    state["blocks.layers.0.extra.weight"] = state.pop("final_norm.weight")
    with pytest.raises(KeyError) as caught:
        load_portable_state_dict(model, state)
    assert caught.value.args[0] == (
        "load_portable_state_dict: missing ['final_norm.weight'], unexpected "
        "['blocks.layers.0.extra.weight']"
    )
