"""The counter-based draws behind initialisation (megaspec.parallel.draws) and the init
methods on top of them (megaspec.parallel.initializers)."""

from __future__ import annotations

import pytest
import torch

from megaspec.parallel import (
    ParallelGroups,
    TensorParallelSharding,
    UniformDraws,
    init_tensor_,
    new_sharded_parameter,
    normal_init,
    ones_init,
    padded_rows_init,
    seeded_initialization,
    shard_of_full,
    uniform_init,
    zeros_init,
)
from megaspec.parallel import draws as draws_module


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_a_block_drawn_alone_equals_its_slice_of_the_whole(dim: int) -> None:
    shape = (6, 5, 4)
    whole = UniformDraws(7, shape, dim, 0, shape[dim])
    block = UniformDraws(7, shape, dim, 1, 3)
    assert block.shape == tuple(2 if i == dim else n for i, n in enumerate(shape))
    assert torch.equal(block.first(), whole.first().narrow(dim, 1, 2))
    assert torch.equal(block.second(), whole.second().narrow(dim, 1, 2))


def test_rows_are_global_row_indices() -> None:
    assert UniformDraws(1, (10, 3), 0, 4, 7).rows.tolist() == [4, 5, 6]
    assert UniformDraws(1, (10, 3), 1, 1, 2).rows.tolist() == list(range(10))


def test_neighbouring_streams_are_unrelated() -> None:
    first, second = (UniformDraws(stream, (100_000,), 0, 0, 100_000).first() for stream in (41, 42))
    correlation = torch.corrcoef(torch.stack([first, second]))[0, 1]
    assert abs(correlation) < 0.02
    assert not torch.equal(first[:10], second[:10])


def test_chunks_cover_the_slices_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(draws_module, "CHUNK_ELEMENTS", 12)  # 2 slices of 5 a chunk
    chunks = list(draws_module.draw_slices(3, uniform_init(0.0, 1.0), (9, 5), 0, 2, 9))
    assert [(offset, tuple(values.shape)) for offset, values in chunks] == [
        (0, (2, 5)), (2, (2, 5)), (4, (2, 5)), (6, (1, 5))
    ]
    whole = UniformDraws(3, (9, 5), 0, 0, 9).first()
    assert torch.equal(torch.cat([values for _, values in chunks]), whole[2:])


def test_normal_and_uniform_statistics() -> None:
    block = UniformDraws(5, (400, 500), 0, 0, 400)
    normal = normal_init(0.5)(block)
    assert abs(normal.mean()) < 0.005 and abs(normal.std() - 0.5) < 0.005
    assert normal.abs().max() < 0.5 * 5.8  # Box-Muller on float32 uniforms
    uniform = uniform_init(-2.0, 3.0)(block)
    assert uniform.min() >= -2.0 and uniform.max() < 3.0 and abs(uniform.mean() - 0.5) < 0.02
    assert not zeros_init()(block).any() and bool((ones_init()(block) == 1).all())


def test_padded_rows_are_zero_and_real_rows_ignore_the_padding() -> None:
    init = padded_rows_init(normal_init(1.0), 5)
    short = init(UniformDraws(9, (6, 3), 0, 0, 6))
    long = init(UniformDraws(9, (8, 3), 0, 0, 8))
    assert torch.equal(short[:5], long[:5]) and short[:5].all()
    assert not short[5:].any() and not long[5:].any()


@pytest.mark.parametrize(("dim", "parts"), [(0, 1), (0, 2), (1, 1)])
def test_every_rank_holds_the_slice_of_the_size_one_parameter(dim: int, parts: int) -> None:
    sharding = TensorParallelSharding(dim=dim, parts=parts)
    shape = (8, 12)

    def parameter(groups: ParallelGroups) -> torch.Tensor:
        with seeded_initialization(3):
            return new_sharded_parameter(shape, sharding, normal_init(1.0), groups, dtype=torch.float32)

    full = parameter(ParallelGroups.single()).detach()
    for rank in range(4):
        shard = parameter(ParallelGroups.layout_only(4, rank)).detach()
        assert torch.equal(shard, shard_of_full(full, sharding, rank, 4))


def test_seeds_decide_the_weights() -> None:
    def tensor(seed: int) -> torch.Tensor:
        with seeded_initialization(seed):
            return init_tensor_(torch.empty(4, 4), normal_init(1.0))

    assert torch.equal(tensor(1), tensor(1))
    assert not torch.equal(tensor(1), tensor(2))


def test_a_scalar_parameter_and_an_uneven_split() -> None:
    scalar = new_sharded_parameter((), None, ones_init(), ParallelGroups.single(), dtype=torch.float32)
    assert scalar.shape == () and scalar.item() == 1.0
    with pytest.raises(ValueError, match="dimension 0 of size 6 does not split into 2 part"):
        new_sharded_parameter(
            (6, 2), TensorParallelSharding(dim=0, parts=2), zeros_init(),
            ParallelGroups.layout_only(2), dtype=torch.float32,
        )
