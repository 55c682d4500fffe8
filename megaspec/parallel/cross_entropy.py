"""Cross-entropy over vocabulary-parallel logits, computed in float32."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from megaspec.parallel.groups import ParallelGroups


class _VocabParallelCrossEntropy(torch.autograd.Function):
    # Megatron-LM's formulation: a softmax whose max and normaliser are all-reduced, so no
    # rank ever holds the full [tokens, vocab] logits. The gradient (softmax - one_hot) is
    # formed in place in the saved softmax buffer.

    @staticmethod
    def forward(
        ctx: Any,
        logits: Tensor,
        target: Tensor,
        vocab_start: int,
        groups: ParallelGroups,
        ignore_index: int,
    ) -> Tensor:
        group = groups.tensor
        # One float32 buffer of [tokens, vocab / tp], reused in place for the shifted logits,
        # their exponentials and finally the softmax the backward pass needs.
        shifted = logits.to(torch.float32, copy=True)
        local_max = shifted.max(dim=-1).values
        if group is not None:
            dist.all_reduce(local_max, op=dist.ReduceOp.MAX, group=group)
        shifted.sub_(local_max.unsqueeze(-1))

        local_vocab = logits.shape[-1]
        outside = (target < vocab_start) | (target >= vocab_start + local_vocab)
        local_target = (target - vocab_start).masked_fill(outside, 0)
        target_logit = shifted.gather(-1, local_target.unsqueeze(-1)).squeeze(-1)
        target_logit = target_logit.masked_fill(outside, 0.0)

        exp = shifted.exp_()
        sum_exp = exp.sum(dim=-1)
        if group is not None:
            dist.all_reduce(target_logit, group=group)
            dist.all_reduce(sum_exp, group=group)
        loss = sum_exp.log() - target_logit
        ignored = target == ignore_index
        loss = loss.masked_fill(ignored, 0.0)

        softmax = exp.div_(sum_exp.unsqueeze(-1))
        ctx.save_for_backward(softmax, local_target, outside, ignored)
        ctx.input_dtype = logits.dtype
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor, None, None, None, None]:
        softmax, local_target, outside, ignored = ctx.saved_tensors
        grad = softmax
        one_hot = (~outside).to(grad.dtype).unsqueeze(-1)
        grad.scatter_add_(-1, local_target.unsqueeze(-1), -one_hot)
        scale = grad_loss.masked_fill(ignored, 0.0).unsqueeze(-1)
        grad.mul_(scale)
        return grad.to(ctx.input_dtype), None, None, None, None


def check_targets(target: Tensor, vocab_size: int, ignore_index: int, caller: str) -> None:
    """Assert that every target lies in ``[0, vocab_size)`` or equals ``ignore_index``.

    Raises:
        RuntimeError: naming ``caller`` (on a GPU, as a device-side assertion).
    """
    in_range = ((target >= 0) & (target < vocab_size)) | (target == ignore_index)
    # An asynchronous assert: no host-device synchronisation on the GPU's hot path.
    torch._assert_async(
        in_range.all(),
        f"{caller}: every target must lie in [0, {vocab_size}) or equal ignore_index={ignore_index}",
    )


def vocab_parallel_cross_entropy(
    logits: Tensor,
    target: Tensor,
    groups: ParallelGroups,
    *,
    vocab_size: int | None = None,
    ignore_index: int = -100,
) -> Tensor:
    """Per-token cross-entropy loss of vocabulary-parallel logits.

    Args:
        logits: ``[..., vocab_per_rank]``, this rank's contiguous slice of the (padded)
            vocabulary; any float dtype (the math runs in float32).
        target: ``[...]`` token ids in the full vocabulary.
        vocab_size: the real vocabulary size; logits of padded entries (ids ``>= vocab_size``)
            are left out of the softmax, so padding never changes the loss.
        ignore_index: targets equal to it get loss 0 and no gradient.

    Returns:
        ``[...]`` float32 losses.

    Raises:
        RuntimeError: if a target (other than ``ignore_index``) lies outside
            ``[0, vocab_size)`` (on a GPU, as a device-side assertion).
    """
    local_vocab = logits.shape[-1]
    vocab_start = groups.tensor_rank * local_vocab
    full_vocab = local_vocab * groups.tensor_size
    vocab_size = full_vocab if vocab_size is None else vocab_size
    check_targets(target, vocab_size, ignore_index, "vocab_parallel_cross_entropy")
    if vocab_size < full_vocab:
        # Padded columns live at the end of the vocabulary; mask them out of the softmax.
        columns = torch.arange(vocab_start, vocab_start + local_vocab, device=logits.device)
        logits = logits.masked_fill(columns >= vocab_size, float("-inf"))
    # torch declares Function.apply without annotations.
    loss: Tensor = _VocabParallelCrossEntropy.apply(  # type: ignore[no-untyped-call]
        logits, target, vocab_start, groups, ignore_index
    )
    return loss
