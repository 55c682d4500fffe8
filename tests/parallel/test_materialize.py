"""Meta-device construction and materialize(): the same weights as eager construction, and at
any tensor-parallel size the slices of size 1's weights, without a rank ever drawing a full
weight it does not own.

Models: a Llama-style stack (fused QKV with grouped-query attention, QK-norm, gated fc1 with
``parts=2``, row-parallel projections, a vocabulary-parallel embedding and output layer with
padding) and a hybrid (the convolution mixer of examples/custom_mixer.py with its own
``new_sharded_parameter``, tied embeddings).
"""

from __future__ import annotations

import math
import tracemalloc
from dataclasses import replace
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from examples.custom_mixer import CausalConvMixer, ConvMixerConfig
from examples.plain_modules import PlainMlp
from examples.yaml_model import resolve_run
from megaspec.backends import torch as torch_backend
from megaspec.layers import BlockSequenceSpec, TransformerLayer
from megaspec.models import GPTModel
from megaspec.parallel import (
    ParallelGroups,
    full_from_shards,
    gather_full,
    materialize,
    parameter_init,
    seeded_initialization,
    sharding_of,
)
from megaspec.parallel import draws as draws_module
from megaspec.parameter_settings import parameter_settings
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig
from tests.config.test_models import CONFIGS
from tests.helpers.distributed import run_on_ranks

VOCAB = 300  # padded to 384 rows at size 1, 512 at size 4: padding differs by size
VOCAB_PARAMETERS = ("embedding.weight", "output_layer.weight")
ATTENTION = AttentionConfig(num_heads=8, num_query_groups=4)
MLP = MlpConfig(ffn_hidden_size=96)
SEED = 1234


def build_model(kind: str, groups: ParallelGroups, *, meta: bool) -> GPTModel:
    """``kind`` ("llama", "hybrid" or "plain": a plain torch.nn MLP) under ``SEED``."""
    config = TransformerConfig(hidden_size=64, num_layers=2)
    llama = torch_backend.llama_layer_submodules(ATTENTION, MLP, qk_norm=True)
    if kind == "llama":
        pattern = [TransformerLayer.as_layer_submodule(llama)]
    elif kind == "hybrid":
        conv_mixer = CausalConvMixer.as_mixer_submodule(ConvMixerConfig(kernel_size=3))
        pattern = [TransformerLayer.as_layer_submodule(replace(llama, mixer=conv_mixer))]
    else:
        pattern = [TransformerLayer.as_layer_submodule(replace(llama, mlp=PlainMlp))]
    submodules = torch_backend.gpt_submodules(BlockSequenceSpec(pattern=pattern, num_layers=2))
    with seeded_initialization(SEED), torch.device("meta" if meta else "cpu"):
        return GPTModel(
            config=config, vocab_size=VOCAB, submodules=submodules, groups=groups,
            tie_embeddings=kind == "hybrid",
        )


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: parameter.detach() for name, parameter in model.named_parameters()}


@pytest.mark.parametrize("kind", ["llama", "hybrid"])
def test_meta_then_materialize_equals_eager_bitwise(kind: str) -> None:
    eager = build_model(kind, ParallelGroups.single(), meta=False)
    model = build_model(kind, ParallelGroups.single(), meta=True)
    assert all(parameter.is_meta for parameter in model.parameters())
    assert materialize(model, device="cpu") is model
    drawn, expected = weights(model), weights(eager)
    assert drawn.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(drawn[name], tensor), name
        assert sharding_of(model.get_parameter(name)) == sharding_of(eager.get_parameter(name)), name
    tokens = torch.arange(16).view(2, 8)
    assert torch.equal(model(tokens), eager(tokens))


def test_materialize_keeps_parameter_settings_and_requires_grad() -> None:
    run = resolve_run([str(CONFIGS / "lr_scales.yaml")])
    with seeded_initialization(0):
        eager = run.model.build()
    with seeded_initialization(0), torch.device("meta"):
        model = run.model.build()
    next(model.parameters()).requires_grad_(False)
    materialize(model, device="cpu")
    assert not next(model.parameters()).requires_grad
    for (name, parameter), reference in zip(model.named_parameters(), eager.parameters(), strict=True):
        assert torch.equal(parameter, reference), name
        assert parameter_settings(parameter) == parameter_settings(reference), name
        assert parameter_settings(parameter) is not None, name


@pytest.mark.parametrize("kind", ["llama", "hybrid"])
def test_layout_only_shards_reassemble_size_one_weights(kind: str) -> None:
    """Size 4, each rank materialised alone from ParallelGroups.layout_only: no processes."""
    size = 4
    full = weights(build_model(kind, ParallelGroups.single(), meta=False))
    ranks = [
        materialize(build_model(kind, ParallelGroups.layout_only(size, rank), meta=True))
        for rank in range(size)
    ]
    for name, expected in full.items():
        parameters = [rank_model.get_parameter(name) for rank_model in ranks]
        sharding = sharding_of(parameters[0])
        if sharding is None:
            assert all(torch.equal(parameter, expected) for parameter in parameters), name
            continue
        assert parameters[0].shape != expected.shape, name  # a real shard, not a full copy
        reassembled = full_from_shards([parameter.detach() for parameter in parameters], sharding)
        if name in VOCAB_PARAMETERS:
            assert reassembled.shape[0] == 512 and expected.shape[0] == 384
            assert not reassembled[VOCAB:].any(), name  # padding rows are zeros
            reassembled, expected = reassembled[:VOCAB], expected[:VOCAB]
        assert torch.equal(reassembled, expected), name


def _materialized_full_weights(kind: str) -> dict[str, torch.Tensor]:
    """On a spawned rank: meta build over the real group, materialise, gather every weight."""
    groups = ParallelGroups.tensor_parallel_over_world()
    model = materialize(build_model(kind, groups, meta=True), device="cpu")
    return {
        name: gather_full(parameter.detach(), sharding_of(parameter), groups)
        for name, parameter in model.named_parameters()
    }


def test_tensor_parallel_two_materialized_shards_are_slices_of_size_one() -> None:
    expected = weights(build_model("llama", ParallelGroups.single(), meta=False))
    for rank_weights in run_on_ranks(2, _materialized_full_weights, "llama"):
        assert rank_weights.keys() == expected.keys()
        for name, tensor in expected.items():
            rows = VOCAB if name in VOCAB_PARAMETERS else None
            assert torch.equal(rank_weights[name][:rows], tensor[:rows]), name


class _LargestStorage(TorchDispatchMode):
    """Records the largest storage (bytes) behind any torch operation's output, factories
    and views included (a view's storage is the whole buffer it looks into)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        output = func(*args, **(kwargs or {}))
        for tensor in output if isinstance(output, (tuple, list)) else [output]:
            if isinstance(tensor, torch.Tensor) and not tensor.is_meta:
                self.largest = max(self.largest, tensor.untyped_storage().nbytes())
        return output


def test_a_rank_never_draws_a_full_weight() -> None:
    """Rank 2 of size 4: drawing each sharded weight's shard, no torch storage and no numpy
    buffer reaches the size of that full weight in float32 (the old full draw would)."""
    model = build_model("llama", ParallelGroups.layout_only(4, 2), meta=True)
    for name, parameter in model.named_parameters():
        record = parameter_init(parameter)
        assert record is not None, name
        if record.sharding is None:
            continue
        full_bytes = 4 * math.prod(record.full_shape)
        shard = torch.empty(record.local_shape())
        tracemalloc.start()  # numpy's arrays are traced; torch's CPU tensors are not
        try:
            with _LargestStorage() as storage:
                record.fill_(shard)
            _, numpy_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert 0 < storage.largest < full_bytes, name
        assert numpy_peak < full_bytes, name


def test_bfloat16_target_is_the_float32_draw_cast() -> None:
    eager = build_model("llama", ParallelGroups.single(), meta=False)
    model = materialize(build_model("llama", ParallelGroups.single(), meta=True), dtype=torch.bfloat16)
    for name, parameter in model.named_parameters():
        assert parameter.dtype == torch.bfloat16
        assert torch.equal(parameter, eager.get_parameter(name).to(torch.bfloat16)), name


def test_a_plain_meta_parameter_is_an_error_naming_it_and_nothing_changes() -> None:
    model = build_model("plain", ParallelGroups.single(), meta=True)
    error = r"parameter blocks\.layers\.0\.mlp\.\w+\.weight of Linear was not made"
    with pytest.raises(ValueError, match=error):
        materialize(model)
    assert all(parameter.is_meta for parameter in model.parameters())


def test_a_meta_buffer_is_an_error_naming_it() -> None:
    model = build_model("llama", ParallelGroups.single(), meta=True)
    with torch.device("meta"):
        model.final_norm.register_buffer("table", torch.zeros(3))
    with pytest.raises(ValueError, match=r"buffer final_norm\.table is on the meta device"):
        materialize(model)
    assert all(parameter.is_meta for parameter in model.parameters())


def test_nothing_on_meta_and_a_meta_target_are_errors() -> None:
    eager = build_model("llama", ParallelGroups.single(), meta=False)
    with pytest.raises(ValueError, match="no parameter on the meta device"):
        materialize(eager)
    with pytest.raises(ValueError, match="target device is the meta device"):
        materialize(build_model("llama", ParallelGroups.single(), meta=True), device="meta")


class _Float32Storages(TorchDispatchMode):
    """Records the largest float32 storage behind any torch operation's output (bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest_float32 = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        output = func(*args, **(kwargs or {}))
        for tensor in output if isinstance(output, (tuple, list)) else [output]:
            if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32:
                self.largest_float32 = max(self.largest_float32, tensor.untyped_storage().nbytes())
        return output


def test_eager_bfloat16_construction_holds_no_float32_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    """``GPTModel(config=TransformerConfig(params_dtype=torch.bfloat16))`` under the default
    device creates each parameter there in bfloat16 and fills it a chunk at a time: the only
    float32 temporaries are one chunk's draws (two uniforms an element), never a full weight."""
    monkeypatch.setattr(draws_module, "CHUNK_ELEMENTS", 512)
    config = TransformerConfig(hidden_size=64, num_layers=2, params_dtype=torch.bfloat16)
    submodules = torch_backend.llama_submodules(ATTENTION, MLP, 2, qk_norm=True)
    with _Float32Storages() as storages, seeded_initialization(SEED):
        model = GPTModel(config=config, vocab_size=VOCAB, submodules=submodules)
    assert {parameter.dtype for parameter in model.parameters()} == {torch.bfloat16}
    assert 0 < storages.largest_float32 <= 2 * 4 * 512
    smallest_matrix = min(p.numel() for p in model.parameters() if p.dim() == 2)
    assert 4 * smallest_matrix > 2 * 4 * 512  # the bound excludes every full weight
    with seeded_initialization(SEED):
        float32 = GPTModel(config=replace(config, params_dtype=torch.float32), vocab_size=VOCAB, submodules=submodules)
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, float32.get_parameter(name).to(torch.bfloat16)), name
