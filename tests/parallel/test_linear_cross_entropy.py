"""The chunked linear cross-entropy of megaspec.parallel.linear_cross_entropy against the
plain path (logits, then vocab_parallel_cross_entropy): the same losses and gradients (hidden,
weight, bias) in float32 within 1e-6, for chunk sizes that do and do not divide the tokens,
padded vocabulary entries, ignored targets and loss gradients that are uniform or not; the
compiled (recomputing) backward; the compiled softmax passes (fuse_elementwise); equal chunk
bounds; the float32 sum of bf16 products (unrounded on CUDA); tensor-parallel size 2 (gloo) against size 1."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from megaspec.parallel import (
    ParallelGroups,
    column_parallel_matmul,
    linear_cross_entropy,
    vocab_parallel_cross_entropy,
)
from megaspec.parallel.linear_cross_entropy import add_product, chunk_bounds
from tests.helpers.distributed import run_on_ranks

SEQUENCE, BATCH, HIDDEN, PADDED_VOCAB, VOCAB = 6, 3, 8, 32, 27
TOLERANCE = {"atol": 1e-6, "rtol": 1e-6}


def problem() -> dict[str, torch.Tensor]:
    """Hidden states, weight, bias, targets (two ignored) and per-token loss weights."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(PADDED_VOCAB, HIDDEN, generator=generator)
    weight[VOCAB:] = 0.0  # padded rows, as GPTModel initialises them
    target = torch.randint(0, VOCAB, (SEQUENCE, BATCH), generator=generator)
    target[0, 1] = target[4, 2] = -100
    return {
        "hidden": torch.randn(SEQUENCE, BATCH, HIDDEN, generator=generator),
        "weight": weight,
        "bias": torch.randn(PADDED_VOCAB, generator=generator),
        "target": target,
        "weights": torch.rand(SEQUENCE, BATCH, generator=generator),
    }


def reduce(losses: torch.Tensor, weights: torch.Tensor, gradient: str) -> torch.Tensor:
    """A scalar of the per-token losses whose gradient is uniform or not."""
    if gradient == "mean":
        return losses.mean()
    if gradient == "sum":
        return losses.sum()
    if gradient == "uniform_but_ignored":
        # Ignored tokens' gradient differs; every counted token's is the same.
        return losses.sum() + 3.0 * losses[0, 1]  # target[0, 1] is ignored
    return (losses * weights).sum()


def losses_and_grads(
    inputs: dict[str, torch.Tensor], gradient: str, *, fused: bool, with_bias: bool, **options: Any
) -> tuple[torch.Tensor, ...]:
    hidden = inputs["hidden"].clone().requires_grad_(True)
    weight = inputs["weight"].clone().requires_grad_(True)
    bias = inputs["bias"].clone().requires_grad_(True) if with_bias else None
    groups = ParallelGroups.single()
    if fused:
        losses = linear_cross_entropy(
            hidden, weight, inputs["target"], groups, sequence_parallel=False, bias=bias,
            vocab_size=VOCAB, **options,
        )  # fmt: skip
    else:
        logits = column_parallel_matmul(hidden, weight, bias, groups, sequence_parallel=False)
        losses = vocab_parallel_cross_entropy(logits, inputs["target"], groups, vocab_size=VOCAB)
    reduce(losses, inputs["weights"], gradient).backward()
    grads = [hidden.grad, weight.grad] + ([bias.grad] if bias is not None else [])
    assert all(grad is not None for grad in grads)
    return (losses.detach(), *grads)  # type: ignore[arg-type]


@pytest.mark.parametrize("chunk_tokens", [1, 4, 7, None])
@pytest.mark.parametrize("gradient", ["mean", "sum", "uniform_but_ignored", "weighted"])
def test_fused_matches_plain(chunk_tokens: int | None, gradient: str) -> None:
    inputs = problem()
    with_bias = chunk_tokens == 7
    expected = losses_and_grads(inputs, gradient, fused=False, with_bias=with_bias)
    actual = losses_and_grads(
        inputs, gradient, fused=True, with_bias=with_bias, chunk_tokens=chunk_tokens
    )
    assert actual[0].shape == (SEQUENCE, BATCH) and actual[0].dtype == torch.float32
    assert actual[0][0, 1] == 0 and actual[0][4, 2] == 0
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want, **TOLERANCE)
    assert torch.count_nonzero(actual[2][VOCAB:]) == 0  # padded rows get no gradient


@pytest.mark.parametrize("gradient", ["mean", "weighted"])
def test_compiled_softmax_passes_match_plain(gradient: str) -> None:
    # compiled=True (fuse_elementwise) runs each chunk's two softmax passes as generated
    # kernels: the same losses and gradients, padded columns and ignored tokens included.
    inputs = problem()
    expected = losses_and_grads(inputs, gradient, fused=False, with_bias=True)
    actual = losses_and_grads(
        inputs, gradient, fused=True, with_bias=True, chunk_tokens=4, compiled=True
    )
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want, **TOLERANCE)
    assert torch.count_nonzero(actual[2][VOCAB:]) == 0


@pytest.mark.parametrize(
    ("tokens", "chunk_tokens", "sizes"),
    [(8192, 2097, [2048] * 4), (18, 4, [4, 4, 4, 4, 2]), (18, 7, [6, 6, 6]), (5, 100, [5]), (3, 1, [1, 1, 1])],
)
def test_chunk_bounds_are_equal_but_the_last(tokens: int, chunk_tokens: int, sizes: list[int]) -> None:
    bounds = chunk_bounds(tokens, chunk_tokens)
    assert [end - start for start, end in bounds] == sizes
    assert bounds[0][0] == 0 and bounds[-1][1] == tokens
    assert all(previous[1] == following[0] for previous, following in zip(bounds, bounds[1:]))


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_float32_sum_of_bf16_products(device: str) -> None:
    """Four bf16 products summed into float32, as the output weight's gradient is over the
    loss chunks. CUDA sums inside the product (never rounded to bf16), so it is within float32
    rounding of the float64 sum; CPU rounds each product to bf16 first."""
    generator = torch.Generator().manual_seed(0)
    lefts = [torch.randn(64, 96, generator=generator).bfloat16() for _ in range(4)]
    rights = [torch.randn(96, 48, generator=generator).bfloat16() for _ in range(4)]
    expected = sum(left.double() @ right.double() for left, right in zip(lefts, rights))
    accumulator = torch.zeros(64, 48, device=device)
    for left, right in zip(lefts, rights):
        add_product(accumulator, left.to(device), right.to(device))
    assert accumulator.dtype == torch.float32
    tolerance = 1e-5 if device == "cuda" else 8e-2
    torch.testing.assert_close(accumulator.cpu().double(), expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("gradient", ["mean", "weighted"])
def test_compiled_backward_recomputes_exactly(gradient: str) -> None:
    # Under torch.compile the backward pass recomputes every gradient (no data-dependent
    # choice); the "eager" backend traces it without generating kernels.
    inputs = problem()
    expected = losses_and_grads(inputs, gradient, fused=False, with_bias=True)
    hidden = inputs["hidden"].clone().requires_grad_(True)
    weight = inputs["weight"].clone().requires_grad_(True)
    bias = inputs["bias"].clone().requires_grad_(True)

    def loss(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        losses = linear_cross_entropy(
            hidden, weight, inputs["target"], ParallelGroups.single(), sequence_parallel=False,
            bias=bias, vocab_size=VOCAB, chunk_tokens=5,
        )  # fmt: skip
        return reduce(losses, inputs["weights"], gradient)

    compiled = torch.compile(loss, fullgraph=True, backend="eager")
    compiled(hidden, weight, bias).backward()
    for got, want in zip((hidden.grad, weight.grad, bias.grad), expected[1:], strict=True):
        torch.testing.assert_close(got, want, **TOLERANCE)


def test_without_gradients_only_losses() -> None:
    inputs = problem()
    with torch.no_grad():
        losses = linear_cross_entropy(
            inputs["hidden"], inputs["weight"], inputs["target"], ParallelGroups.single(),
            sequence_parallel=False, vocab_size=VOCAB, chunk_tokens=4,
        )  # fmt: skip
    expected = losses_and_grads(inputs, "mean", fused=False, with_bias=False)[0]
    torch.testing.assert_close(losses, expected, **TOLERANCE)


def test_bad_chunk_size_target_shape_and_target() -> None:
    inputs = problem()
    groups = ParallelGroups.single()
    with pytest.raises(ValueError, match=r"^linear_cross_entropy: chunk_tokens must be positive, got 0$"):
        linear_cross_entropy(
            inputs["hidden"], inputs["weight"], inputs["target"], groups, sequence_parallel=False,
            chunk_tokens=0,
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"target \[6, 2\] does not match the hidden states' tokens \[6, 3\]"):
        linear_cross_entropy(
            inputs["hidden"], inputs["weight"], inputs["target"][:, :2], groups,
            sequence_parallel=False,
        )  # fmt: skip
    target = inputs["target"].clone()
    target[2, 0] = VOCAB  # a padded entry
    with pytest.raises(RuntimeError, match=r"every target must lie in \[0, 27\) or equal ignore_index=-100"):
        linear_cross_entropy(
            inputs["hidden"], inputs["weight"], target, groups, sequence_parallel=False,
            vocab_size=VOCAB,
        )  # fmt: skip


def tensor_parallel_case(sequence_parallel: bool, gradient: str) -> tuple[torch.Tensor, ...]:
    """On each rank: its vocabulary slice of the weight and bias, its sequence slice of the
    hidden states under sequence parallelism; returns the losses and full gradients."""
    groups = ParallelGroups.tensor_parallel_over_world()
    rank, size = groups.tensor_rank, groups.tensor_size
    inputs = problem()
    rows = PADDED_VOCAB // size
    weight = inputs["weight"][rank * rows : (rank + 1) * rows].clone().requires_grad_(True)
    bias = inputs["bias"][rank * rows : (rank + 1) * rows].clone().requires_grad_(True)
    positions = SEQUENCE // size
    hidden = inputs["hidden"]
    if sequence_parallel:
        hidden = hidden[rank * positions : (rank + 1) * positions]
    hidden = hidden.clone().requires_grad_(True)
    losses = linear_cross_entropy(
        hidden, weight, inputs["target"], groups, sequence_parallel=sequence_parallel, bias=bias,
        vocab_size=VOCAB, chunk_tokens=5,
    )  # fmt: skip
    reduce(losses, inputs["weights"], gradient).backward()
    assert hidden.grad is not None and weight.grad is not None and bias.grad is not None
    return losses.detach(), hidden.grad, weight.grad, bias.grad


def tensor_parallel_cases() -> dict[tuple[bool, str], tuple[torch.Tensor, ...]]:
    return {
        (sequence_parallel, gradient): tensor_parallel_case(sequence_parallel, gradient)
        for sequence_parallel in (False, True)
        for gradient in ("mean", "weighted")
    }


def test_tensor_parallel_matches_single_process() -> None:
    per_rank = run_on_ranks(2, tensor_parallel_cases)
    inputs = problem()
    for (sequence_parallel, gradient), _ in per_rank[0].items():
        losses, hidden_grad, weight_grad, bias_grad = losses_and_grads(
            inputs, gradient, fused=False, with_bias=True
        )
        ranks = [result[(sequence_parallel, gradient)] for result in per_rank]
        for got in ranks:
            torch.testing.assert_close(got[0], losses, **TOLERANCE)
        full_hidden_grad = (
            torch.cat([got[1] for got in ranks]) if sequence_parallel else ranks[0][1]
        )
        torch.testing.assert_close(full_hidden_grad, hidden_grad, **TOLERANCE)
        if not sequence_parallel:
            torch.testing.assert_close(ranks[1][1], hidden_grad, **TOLERANCE)
        torch.testing.assert_close(torch.cat([got[2] for got in ranks]), weight_grad, **TOLERANCE)
        torch.testing.assert_close(torch.cat([got[3] for got in ranks]), bias_grad, **TOLERANCE)


SMALL_VOCAB = 12  # of PADDED_VOCAB 32: the second rank's 16 columns are all padding


def small_vocab_inputs() -> dict[str, torch.Tensor]:
    inputs = problem()
    target = inputs["target"]
    inputs["target"] = torch.where(target >= 0, target % SMALL_VOCAB, target)
    inputs["weight"][SMALL_VOCAB:] = 0.0
    return inputs


def rank_of_padding_only(compiled: bool) -> tuple[torch.Tensor, ...]:
    groups = ParallelGroups.tensor_parallel_over_world()
    rows = PADDED_VOCAB // groups.tensor_size
    inputs = small_vocab_inputs()
    weight = inputs["weight"][groups.tensor_rank * rows : (groups.tensor_rank + 1) * rows]
    weight = weight.clone().requires_grad_(True)
    hidden = inputs["hidden"].clone().requires_grad_(True)
    losses = linear_cross_entropy(
        hidden, weight, inputs["target"], groups, sequence_parallel=False,
        vocab_size=SMALL_VOCAB, chunk_tokens=4, compiled=compiled,
    )  # fmt: skip
    reduce(losses, inputs["weights"], "weighted").backward()
    assert hidden.grad is not None and weight.grad is not None
    return losses.detach(), hidden.grad, weight.grad


def rank_of_padding_only_runs() -> list[tuple[torch.Tensor, ...]]:
    return [rank_of_padding_only(compiled) for compiled in (False, True)]


def test_a_rank_holding_only_padding_matches_single_process() -> None:
    # Its maximum logit is -inf: the softmax sums must stay finite (no NaN), eager and compiled.
    inputs = small_vocab_inputs()
    hidden = inputs["hidden"].clone().requires_grad_(True)
    weight = inputs["weight"].clone().requires_grad_(True)
    groups = ParallelGroups.single()
    logits = column_parallel_matmul(hidden, weight, None, groups, sequence_parallel=False)
    losses = vocab_parallel_cross_entropy(logits, inputs["target"], groups, vocab_size=SMALL_VOCAB)
    reduce(losses, inputs["weights"], "weighted").backward()
    assert hidden.grad is not None and weight.grad is not None
    results = run_on_ranks(2, rank_of_padding_only_runs)
    for run in (0, 1):  # eager, compiled
        rank0, rank1 = results[0][run], results[1][run]
        for got in (rank0, rank1):
            torch.testing.assert_close(got[0], losses.detach(), **TOLERANCE)
            torch.testing.assert_close(got[1], hidden.grad, **TOLERANCE)
        torch.testing.assert_close(torch.cat([rank0[2], rank1[2]]), weight.grad, **TOLERANCE)
