"""``TransformerConfig.recompute`` and ``AttentionConfig.recompute_core_attention``: recomputed slots give the same loss and gradients as kept
activations (one process, TP=2 with sequence parallelism, FSDP2 over DP=2; float32, spawned
gloo processes), keep fewer bytes for the backward pass, and unknown slot names are exact
errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
import torch

from megaspec.backends import torch as torch_backend
from megaspec.config import ModelConfig, resolve
from megaspec.models import GPTModel
from megaspec.parallel import (
    ParallelGroups,
    data_parallel,
    gather_full,
    init_parallel,
    seeded_initialization,
    sharding_of,
)
from megaspec.schema import ConfigError
from megaspec.transformer_config import (
    RECOMPUTED_SLOTS,
    AttentionConfig,
    MlpConfig,
    RecomputedSlot,
    TransformerConfig,
)
from tests.helpers.distributed import run_on_ranks

VOCAB = 64


ATTENTION = AttentionConfig(num_heads=4, num_query_groups=2, rotary_fraction=0.5)


def build(
    groups: ParallelGroups,
    recompute: tuple[RecomputedSlot, ...],
    attention: AttentionConfig = ATTENTION,
    **settings: Any,
) -> GPTModel:
    config = TransformerConfig(hidden_size=32, num_layers=2, recompute=recompute, **settings)
    submodules = torch_backend.llama_submodules(attention, MlpConfig(ffn_hidden_size=64), 2, qk_norm=True)
    with seeded_initialization(0):
        return GPTModel(config=config, vocab_size=VOCAB, submodules=submodules, groups=groups)


def loss_and_grads(model: GPTModel, groups: ParallelGroups) -> dict[str, torch.Tensor]:
    tokens = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))
    loss = model(tokens[:, :-1], labels=tokens[:, 1:]).mean()
    loss.backward()
    result = {"loss": loss.detach()}
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        result[name] = gather_full(parameter.grad, sharding_of(parameter), groups)
    return result


def assert_same(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, atol=1e-6, rtol=1e-6, msg=name)


@pytest.mark.parametrize("recompute", [(slot,) for slot in RECOMPUTED_SLOTS] + [RECOMPUTED_SLOTS])
def test_recomputed_slots_give_the_same_gradients(recompute: tuple[RecomputedSlot, ...]) -> None:
    groups = ParallelGroups.single()
    expected = loss_and_grads(build(groups, ()), groups)
    assert_same(loss_and_grads(build(groups, recompute), groups), expected)


@contextmanager
def saved_activations(model: torch.nn.Module) -> Iterator[dict[int, int]]:
    """The storages autograd keeps for the backward pass (address -> bytes), parameters
    excepted (they are kept anyway)."""
    parameters = {parameter.untyped_storage().data_ptr() for parameter in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield storages


def bytes_kept(recompute: tuple[RecomputedSlot, ...], attention: AttentionConfig = ATTENTION) -> int:
    model = build(ParallelGroups.single(), recompute, attention)
    tokens = torch.randint(0, VOCAB, (4, 33), generator=torch.Generator().manual_seed(1))
    with saved_activations(model) as storages:
        loss = model(tokens[:, :-1], labels=tokens[:, 1:])
    # Non-reentrant checkpointing saves each region's inputs through autograd: they are counted.
    del loss
    return sum(storages.values())


def test_recompute_keeps_fewer_activations() -> None:
    kept = bytes_kept(())
    for slot in ("mixer", "mlp"):
        assert bytes_kept((slot,)) < kept, slot
    # Whole layers recomputed keep only each layer half's input.
    assert bytes_kept(RECOMPUTED_SLOTS) < kept / 2


def test_unknown_slot_is_an_exact_error() -> None:
    with pytest.raises(ConfigError) as error:
        TransformerConfig(num_layers=1, recompute=("mlp", "attention"))  # type: ignore[arg-type]  # the bad value under test
    assert str(error.value) == (
        "TransformerConfig.recompute: unknown slot 'attention'; expected any of input_norm, "
        "mixer, pre_mlp_norm, mlp"
    )
    with pytest.raises(ConfigError) as error:
        TransformerConfig(num_layers=1, recompute=("mlp", "mlp"))
    assert str(error.value) == "TransformerConfig.recompute: names a slot twice: ['mlp', 'mlp']"


def test_recompute_from_yaml_overrides() -> None:
    config = resolve(ModelConfig, overrides=["recompute=[mixer, mlp]"])
    assert config.transformer_config().recompute == ("mixer", "mlp")
    with pytest.raises(ConfigError) as error:
        resolve(ModelConfig, overrides=["recompute=[mixer, bogus]"])
    assert str(error.value) == (
        "recompute[1]: expected one of 'input_norm', 'mixer', 'pre_mlp_norm', 'mlp', got 'bogus' (str)"
    )


def tensor_parallel_runs() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    groups = ParallelGroups.tensor_parallel_over_world()
    kept = loss_and_grads(build(groups, (), sequence_parallel=True), groups)
    # Fused add+norm too: its compiled region holds the sequence-parallel norm's reduction.
    recomputed = loss_and_grads(
        build(
            groups,
            ("input_norm", "mixer", "mlp"),
            replace(ATTENTION, recompute_core_attention=True),
            sequence_parallel=True,
            fuse_elementwise=True,
        ),
        groups,
    )
    return kept, recomputed


def test_recompute_under_tensor_and_sequence_parallelism() -> None:
    # TP=2 against TP=1 is tests/models/test_tensor_parallel.py's subject.
    for kept, recomputed in run_on_ranks(2, tensor_parallel_runs):
        assert_same(recomputed, kept)


def fully_sharded_runs() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    results = []
    runs: tuple[tuple[tuple[RecomputedSlot, ...], bool], ...] = (
        ((), False),
        (("input_norm", "mixer", "mlp"), True),
    )
    for recompute, fused in runs:
        groups = init_parallel(1)
        # Fused: the compiled add+norm meets the parameters FSDP2 unshards.
        model = data_parallel(
            build(groups, recompute, fuse_elementwise=fused), groups, engine="fsdp"
        )
        tokens = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(groups.data_rank))
        loss = model(tokens[:, :-1], labels=tokens[:, 1:]).mean()
        loss.backward()
        grads = {name: p.grad.full_tensor() for name, p in model.named_parameters() if p.grad is not None}
        results.append({"loss": loss.detach(), **grads})
    return results[0], results[1]


def test_recompute_under_fsdp2() -> None:
    for kept, recomputed in run_on_ranks(2, fully_sharded_runs):
        assert len(kept) > 1
        assert_same(recomputed, kept)


def test_recomputed_core_attention_gives_the_same_gradients_and_keeps_fewer_bytes() -> None:
    # The math kernel keeps the [s, s] attention probabilities; recomputed, only q, k, v.
    math_kernel = replace(ATTENTION, sdpa_backend="math")
    recomputed = replace(math_kernel, recompute_core_attention=True)
    groups = ParallelGroups.single()
    expected = loss_and_grads(build(groups, (), math_kernel), groups)
    assert_same(loss_and_grads(build(groups, (), recomputed), groups), expected)
    assert bytes_kept((), recomputed) < bytes_kept((), math_kernel)
