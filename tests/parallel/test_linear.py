"""Column- and row-parallel linear layers (megaspec.parallel.linear).

The two modes that take or give *full* activations, at tensor-parallel sizes 2 and 4 against
size 1, in float32: ``ColumnParallelLinear(gather_output=True)`` returns the full output on
every rank, and ``RowParallelLinear(input_is_parallel=False)`` takes the full input and splits
it itself. Built inside ``seeded_initialization``, every rank holds its shard of size 1's
weight; the output and the full (gathered) weight, bias and input gradients must match size
1's within 1e-5. One spawn of 4 gloo processes serves both sizes: size 4 over the world, size
2 over the groups {0, 1} and {2, 3}, which also checks that the layers use their own group's
ranks rather than the global ones.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import Tensor

from megaspec.parallel import (
    ColumnParallelLinear,
    ParallelGroups,
    RowParallelLinear,
    gather_full,
    normal_init,
    seeded_initialization,
    shard_of_full,
    sharding_of,
)
from tests.helpers.distributed import run_on_ranks

SEQUENCE, BATCH, INPUT_SIZE, OUTPUT_SIZE = 5, 3, 12, 8  # features divide over 2 and 4 ranks
SEED = 1234

Layer = ColumnParallelLinear | RowParallelLinear
Results = dict[str, Tensor]
"""A layer's output and its full parameters and gradients, by name."""


def column_parallel_gathering(groups: ParallelGroups) -> Layer:
    with seeded_initialization(SEED):
        return ColumnParallelLinear(
            input_size=INPUT_SIZE,
            output_size=OUTPUT_SIZE,
            groups=groups,
            init_method=normal_init(0.5),
            bias=True,
            gather_output=True,
        )


def row_parallel_splitting(groups: ParallelGroups) -> Layer:
    with seeded_initialization(SEED):
        return RowParallelLinear(
            input_size=INPUT_SIZE,
            output_size=OUTPUT_SIZE,
            groups=groups,
            init_method=normal_init(0.5),
            bias=True,
            input_is_parallel=False,
        )


def run_layer(layer: Layer, groups: ParallelGroups) -> Results:
    """One forward and backward pass on the same full input on every rank.

    The bias starts at zero, which would hide where it is added: it is set to full values
    first. The loss weighs each output element differently, so a misplaced feature shows in
    every gradient.
    """
    assert layer.bias is not None
    with torch.no_grad():
        full_bias = 0.1 * torch.arange(1, OUTPUT_SIZE + 1, dtype=torch.float32)
        sharding = sharding_of(layer.bias)
        layer.bias.copy_(
            full_bias
            if sharding is None
            else shard_of_full(full_bias, sharding, groups.tensor_rank, groups.tensor_size)
        )
    generator = torch.Generator().manual_seed(7)
    hidden = torch.randn(SEQUENCE, BATCH, INPUT_SIZE, generator=generator, requires_grad=True)
    loss_weights = torch.randn(SEQUENCE, BATCH, OUTPUT_SIZE, generator=generator)
    output = layer(hidden)  # [s, b, output_size] on every rank
    (output * loss_weights).sum().backward()
    assert hidden.grad is not None
    results = {"output": output.detach(), "input grad": hidden.grad}
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None, f"{name} has no gradient"
        results[name] = gather_full(parameter, sharding_of(parameter), groups)
        results[f"{name} grad"] = gather_full(parameter.grad, sharding_of(parameter), groups)
    return results


def linear_cases(groups: ParallelGroups) -> dict[str, Results]:
    return {
        "column": run_layer(column_parallel_gathering(groups), groups),
        "row": run_layer(row_parallel_splitting(groups), groups),
    }


def tensor_parallel_linear_cases() -> dict[int, dict[str, Results]]:
    """Runs on each of 4 spawned ranks: the cases at tensor-parallel sizes 2 and 4."""
    # Every rank creates every group, in the same order; each rank then uses its own pair.
    pairs = [dist.new_group([0, 1]), dist.new_group([2, 3])]
    return {
        2: linear_cases(ParallelGroups(tensor=pairs[dist.get_rank() // 2])),
        4: linear_cases(ParallelGroups.tensor_parallel_over_world()),
    }


@pytest.fixture(scope="module")
def reference() -> dict[str, Results]:
    return linear_cases(ParallelGroups.single())


@pytest.fixture(scope="module")
def per_rank() -> list[dict[int, dict[str, Results]]]:
    """Every rank's results, for both tensor-parallel sizes."""
    results: list[dict[int, dict[str, Results]]] = run_on_ranks(4, tensor_parallel_linear_cases)
    return results


def assert_matches(
    per_rank: list[dict[int, dict[str, Results]]],
    reference: dict[str, Results],
    case: str,
    tensor_parallel_size: int,
) -> None:
    expected_results = reference[case]
    for rank, sizes in enumerate(per_rank):
        result = sizes[tensor_parallel_size][case]
        where = f"{case}, tp={tensor_parallel_size}, rank {rank}"
        assert result.keys() == expected_results.keys(), where
        assert torch.equal(result["weight"], expected_results["weight"]), f"weight ({where})"
        for name, expected in expected_results.items():
            torch.testing.assert_close(
                result[name], expected, atol=1e-5, rtol=0, msg=f"{name} ({where})"
            )


@pytest.mark.parametrize("tensor_parallel_size", [2, 4])
def test_column_parallel_gather_output_matches_single_process(
    tensor_parallel_size: int,
    per_rank: list[dict[int, dict[str, Results]]],
    reference: dict[str, Results],
) -> None:
    assert_matches(per_rank, reference, "column", tensor_parallel_size)


@pytest.mark.parametrize("tensor_parallel_size", [2, 4])
def test_row_parallel_full_input_matches_single_process(
    tensor_parallel_size: int,
    per_rank: list[dict[int, dict[str, Results]]],
    reference: dict[str, Results],
) -> None:
    assert_matches(per_rank, reference, "row", tensor_parallel_size)


def test_column_parallel_gather_output_with_sequence_parallel_is_an_error() -> None:
    with pytest.raises(ValueError) as error:
        ColumnParallelLinear(
            input_size=INPUT_SIZE,
            output_size=OUTPUT_SIZE,
            groups=ParallelGroups.single(),
            init_method=normal_init(0.5),
            gather_output=True,
            sequence_parallel=True,
        )
    assert str(error.value) == (
        "ColumnParallelLinear: gather_output cannot be combined with sequence_parallel "
        "or stacked_parts > 1"
    )


def test_column_parallel_gather_output_with_stacked_parts_is_an_error() -> None:
    # Gathering [gate_r; up_r] blocks rank by rank would interleave gate and up features.
    with pytest.raises(ValueError) as error:
        ColumnParallelLinear(
            input_size=INPUT_SIZE,
            output_size=OUTPUT_SIZE,
            groups=ParallelGroups.single(),
            init_method=normal_init(0.5),
            gather_output=True,
            stacked_parts=2,
        )
    assert str(error.value) == (
        "ColumnParallelLinear: gather_output cannot be combined with sequence_parallel "
        "or stacked_parts > 1"
    )


def test_row_parallel_sequence_parallel_needs_a_parallel_input() -> None:
    with pytest.raises(ValueError) as error:
        RowParallelLinear(
            input_size=INPUT_SIZE,
            output_size=OUTPUT_SIZE,
            groups=ParallelGroups.single(),
            init_method=normal_init(0.5),
            input_is_parallel=False,
            sequence_parallel=True,
        )
    assert str(error.value) == "RowParallelLinear: sequence_parallel needs input_is_parallel=True"
