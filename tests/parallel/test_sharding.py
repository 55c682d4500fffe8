"""The shard layouts of megaspec.parallel.sharding, the one place that defines them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from megaspec.parallel import (
    ParallelGroups,
    TensorParallelSharding,
    full_from_shards,
    shard_of_full,
    vocab_parallel_cross_entropy,
)


def test_stacked_parts_shard_each_part() -> None:
    gate = torch.arange(8.0).reshape(4, 2)
    up = 100 + torch.arange(8.0).reshape(4, 2)
    full = torch.cat([gate, up])  # a gated fc1: [gate; up]
    sharding = TensorParallelSharding(dim=0, parts=2)
    shards = [shard_of_full(full, sharding, rank, 2) for rank in range(2)]
    assert torch.equal(shards[0], torch.cat([gate[:2], up[:2]]))
    assert torch.equal(shards[1], torch.cat([gate[2:], up[2:]]))
    assert torch.equal(full_from_shards(shards, sharding), full)


def test_row_parallel_shards_input_features() -> None:
    full = torch.arange(24.0).reshape(2, 12)
    sharding = TensorParallelSharding(dim=1)
    shards = [shard_of_full(full, sharding, rank, 3) for rank in range(3)]
    assert torch.equal(shards[1], full[:, 4:8])
    assert torch.equal(full_from_shards(shards, sharding), full)


def test_uneven_split_is_an_error() -> None:
    try:
        shard_of_full(torch.zeros(6, 2), TensorParallelSharding(dim=0, parts=2), 0, 2)
    except ValueError as error:
        assert str(error) == "dimension 0 of size 6 does not split into 2 part(s) of 2 equal shard(s)"
    else:
        raise AssertionError("expected ValueError")


def test_cross_entropy_matches_torch_with_padding_and_ignore_index() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, 16, generator=generator, requires_grad=True)
    target = torch.randint(0, 13, (5, 3), generator=generator)
    target[0, 0] = -100
    loss = vocab_parallel_cross_entropy(logits, target, ParallelGroups.single(), vocab_size=13)
    expected = F.cross_entropy(
        logits[..., :13].reshape(-1, 13), target.reshape(-1), reduction="none"
    ).reshape(5, 3)
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=0)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    logits_ref = logits.detach().clone().requires_grad_(True)
    F.cross_entropy(logits_ref[..., :13].reshape(-1, 13), target.reshape(-1), reduction="sum").backward()
    assert logits_ref.grad is not None
    torch.testing.assert_close(grad, logits_ref.grad, atol=1e-6, rtol=0)
    assert torch.all(grad[..., 13:] == 0)
