"""ParallelGroups: explicit, immutable, and never keeping a process group alive."""

from __future__ import annotations

import copy
import gc

import pytest
import torch
import torch.distributed as dist

from megaspec.backends import torch as torch_backend
from megaspec.models import GPTModel
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig
from tests.helpers.distributed import run_on_ranks


def test_single_needs_no_torch_distributed() -> None:
    groups = ParallelGroups.single()
    assert (groups.tensor, groups.data, groups.tensor_size, groups.tensor_rank) == (None, None, 1, 0)
    assert groups == ParallelGroups() and repr(groups) == "ParallelGroups.single()"


def test_groups_are_immutable() -> None:
    with pytest.raises(AttributeError, match="ParallelGroups is immutable; cannot set 'tensor'"):
        ParallelGroups().tensor = None  # type: ignore[misc]  # what the test checks


def test_a_deep_copied_model_shares_its_groups_and_computes_the_same() -> None:
    # copy.deepcopy of a model (a float32 reference, an EMA copy) once failed with
    # "ParallelGroups is immutable; cannot set '_tensor'".
    model = GPTModel(
        config=TransformerConfig(hidden_size=32, num_layers=1),
        vocab_size=50,
        submodules=torch_backend.llama_submodules(AttentionConfig(num_heads=2), MlpConfig(ffn_hidden_size=64), 1),
    )
    copied = copy.deepcopy(model)
    assert copied.groups is model.groups and copy.copy(model.groups) is model.groups
    tokens = torch.randint(0, 50, (2, 5))
    assert torch.equal(copied(tokens), model(tokens))


def test_tensor_parallel_over_world_needs_an_initialised_default_group() -> None:
    with pytest.raises(RuntimeError, match=r"needs torch.distributed to be initialised"):
        ParallelGroups.tensor_parallel_over_world()


def use_after_destroy() -> tuple[bool, str]:
    """On each rank: build a model on a fresh group, destroy the group, use the model."""
    group = dist.new_group(list(range(dist.get_world_size())))
    groups = ParallelGroups(tensor=group)
    model = GPTModel(
        config=TransformerConfig(hidden_size=32, num_layers=1),
        vocab_size=256,
        submodules=torch_backend.llama_submodules(
            AttentionConfig(num_heads=2), MlpConfig(ffn_hidden_size=64), 1
        ),
        groups=groups,
    )
    tokens = torch.zeros((1, 4), dtype=torch.long)
    model(tokens, labels=tokens).mean().backward()  # the graph also held the group once
    dist.destroy_process_group(group)
    del group
    gc.collect()
    try:
        model(tokens)
    except RuntimeError as error:
        return groups._tensor() is None, str(error)
    return groups._tensor() is None, "no error"


def test_a_destroyed_group_is_released_and_using_it_is_a_clear_error() -> None:
    for released, message in run_on_ranks(2, use_after_destroy):
        assert released, "the model kept the destroyed process group alive"
        assert message == (
            "the tensor-parallel process group no longer exists "
            "(torch.distributed.destroy_process_group was called); build the model again for a "
            "live group"
        )
