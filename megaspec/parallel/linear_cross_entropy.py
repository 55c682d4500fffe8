"""Cross-entropy of a vocabulary-parallel linear layer, chunk by chunk, never holding the
full logits.

``vocab_parallel_cross_entropy(hidden @ weight.T)`` holds ``[tokens, vocab / tp]`` logits in
the model's dtype plus one float32 buffer of the same shape until the backward pass: for
8192 tokens and a 32000-entry vocabulary, 1.5 GiB. :func:`linear_cross_entropy` computes the
logits of ``chunk_tokens`` tokens at a time and, in the same pass (as Liger-Kernel's fused
linear cross-entropy does), the gradients with respect to the hidden states, the weight and
the bias for a loss gradient of 1 per token. What it keeps for the backward pass is
``[tokens, hidden]`` and weight-sized, never ``[tokens, vocab]``.

The backward pass scales those gradients by the loss's incoming gradient ``c`` (one value
per token):

* the hidden states' gradient of token ``i`` is ``c_i`` times its stored row: exact for any
  ``c``;
* the weight's (and bias's) gradient ``sum_i c_i g_i h_i^T`` equals ``c`` times the stored
  sum only when every counted (not ignored) token has the same ``c`` — what ``losses.mean()``
  and ``losses.sum()`` give. For any other ``c`` (a weighted loss) it is recomputed exactly,
  chunk by chunk, from the saved hidden states and log-normalisers (one more matrix product
  per chunk). Telling the two apart costs one host synchronisation in the backward pass.

Under ``torch.compile`` (which cannot branch on the gradient's values) the forward pass
computes only the losses and every gradient is recomputed in the backward pass, chunk by
chunk: exact too, at one more matrix product per chunk.

Each chunk's softmax is two passes over its logits: :func:`chunk_statistics` (row maximum,
sum of exponentials, target logit) and :func:`logit_gradient` (``softmax - one_hot``, scaled
per token). Eager, each pass is several kernels over float32 copies of the chunk; with
``compiled=True`` (what ``TransformerConfig.fuse_elementwise`` asks for) each is one
``torch.compile``'d kernel that reads the logits in their own dtype once and writes the
gradient in that dtype: on a GPU, a few milliseconds a step for a 32k vocabulary.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from megaspec.parallel.collectives import (
    copy_to_tensor_parallel_region,
    gather_from_sequence_parallel_region,
)
from megaspec.parallel.cross_entropy import check_targets
from megaspec.parallel.groups import ParallelGroups, strong_group, weak_group

# A chunk's float32 logits take at most this much memory on each rank.
DEFAULT_CHUNK_BYTES = 256 * 2**20


@runtime_checkable
class LinearCrossEntropyLayer(Protocol):
    """An output layer that can compute its cross-entropy loss without full logits.

    ``ColumnParallelLinear`` has it; a language model uses it when its output layer does,
    and otherwise checkpoints the layer's own ``forward`` chunk by chunk.
    """

    def linear_cross_entropy(
        self,
        hidden: Tensor,
        target: Tensor,
        *,
        vocab_size: int,
        chunk_tokens: int | None,
        compiled: bool,
    ) -> Tensor:
        """``[s, b]`` float32 losses of ``hidden`` (this layer's input) against ``target``
        (``[s, b]`` ids, ``-100`` ignored); see :func:`linear_cross_entropy`."""
        ...


def default_chunk_tokens(local_vocab: int) -> int:
    """Tokens per chunk whose float32 logits fit :data:`DEFAULT_CHUNK_BYTES`."""
    return max(1, DEFAULT_CHUNK_BYTES // (4 * local_vocab))


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    groups: ParallelGroups,
    *,
    sequence_parallel: bool,
    bias: Tensor | None = None,
    vocab_size: int | None = None,
    ignore_index: int = -100,
    chunk_tokens: int | None = None,
    compiled: bool = False,
) -> Tensor:
    """Per-token cross-entropy of ``hidden @ weight.T + bias`` without full logits.

    The result (values and gradients of ``hidden``, ``weight`` and ``bias``) equals
    ``vocab_parallel_cross_entropy(column_parallel_matmul(hidden, weight, bias, ...))`` up
    to float rounding, for any gradient of the losses.

    Args:
        hidden: ``[s, b, h]`` (``[s / tp, b, h]`` with ``sequence_parallel``, gathered here).
        weight: ``[vocab / tp, h]``, this rank's contiguous slice of the (padded) vocabulary.
        target: ``[s, b]`` token ids in the full vocabulary.
        bias: ``[vocab / tp]`` or ``None``.
        vocab_size: the real vocabulary size; padded entries (ids ``>= vocab_size``) are
            left out of the softmax. ``None``: no padding.
        ignore_index: targets equal to it get loss 0 and no gradient.
        chunk_tokens: at most this many tokens per chunk (the tokens are split into equal
            chunks); ``None`` picks :func:`default_chunk_tokens`.
        compiled: run each chunk's softmax passes as ``torch.compile``'d kernels (same
            function; needs a working ``torch.compile`` toolchain, and compiles on first use).

    Returns:
        ``[s, b]`` float32 losses.

    Raises:
        ValueError: if ``chunk_tokens`` is not positive, or ``target``'s shape does not
            match the (gathered) ``hidden``.
        RuntimeError: if a target (other than ``ignore_index``) lies outside
            ``[0, vocab_size)`` (on a GPU, as a device-side assertion).
    """
    if sequence_parallel:
        hidden = gather_from_sequence_parallel_region(hidden, groups.tensor)
    else:
        hidden = copy_to_tensor_parallel_region(hidden, groups.tensor)
    if tuple(target.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(
            f"linear_cross_entropy: target {list(target.shape)} does not match the hidden "
            f"states' tokens {list(hidden.shape[:-1])}"
        )
    local_vocab = weight.shape[0]
    chunk_tokens = default_chunk_tokens(local_vocab) if chunk_tokens is None else chunk_tokens
    if chunk_tokens < 1:
        raise ValueError(f"linear_cross_entropy: chunk_tokens must be positive, got {chunk_tokens}")
    vocab_start = groups.tensor_rank * local_vocab
    full_vocab = local_vocab * groups.tensor_size
    vocab_size = full_vocab if vocab_size is None else vocab_size
    check_targets(target, vocab_size, ignore_index, "linear_cross_entropy")
    # Padded columns live at the end of the vocabulary: -inf logits leave them out.
    columns = torch.arange(vocab_start, vocab_start + local_vocab, device=weight.device)
    padded = columns >= vocab_size if vocab_size < full_vocab else None
    flat_target = target.reshape(-1)
    outside = (flat_target < vocab_start) | (flat_target >= vocab_start + local_vocab)
    local_target = (flat_target - vocab_start).masked_fill(outside, 0)
    ignored = flat_target == ignore_index
    problem = _Problem(groups.tensor, padded, local_target, outside, ignored, chunk_tokens, compiled)
    # torch declares Function.apply without annotations.
    losses: Tensor = _LinearCrossEntropy.apply(  # type: ignore[no-untyped-call]
        hidden.reshape(-1, hidden.shape[-1]), weight, bias, problem
    )
    return losses.view(target.shape)


def chunk_bounds(tokens: int, chunk_tokens: int) -> list[tuple[int, int]]:
    """``(start, end)`` of the fewest chunks of at most ``chunk_tokens`` tokens, all of one
    size but the last (e.g. 8192 tokens at most 2097 a chunk: four of 2048), so that a
    compiled pass rarely meets a second shape."""
    count = -(-tokens // chunk_tokens)
    size = -(-tokens // count) if count else 1
    return [(start, min(start + size, tokens)) for start in range(0, tokens, size)]


def chunk_statistics(
    logits: Tensor, local_target: Tensor, padded: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Float32 ``[c]`` row maximum, sum of ``exp(logit - maximum)`` and target logit of
    ``[c, vocab / tp]`` logits in any dtype; ``padded`` columns count as ``-inf``.

    A target on another rank reads column 0 here; the caller zeroes its logit. On a rank
    whose columns are all padding the maximum is ``-inf`` and the sum 0 (not NaN).
    """
    values = logits.float()
    if padded is not None:
        values = values.masked_fill(padded, float("-inf"))
    maximum = values.amax(dim=-1)
    target_logit = values.gather(-1, local_target.unsqueeze(-1)).squeeze(-1)
    # Shifting an all -inf row by -inf would give NaN; the most negative float gives 0.
    shift = maximum.clamp(min=torch.finfo(torch.float32).min)
    sum_exp = (values - shift.unsqueeze(-1)).exp_().sum(dim=-1)
    return maximum, sum_exp, target_logit


def logit_gradient(
    logits: Tensor,
    log_normalizer: Tensor,
    local_target: Tensor,
    target_here: Tensor,
    row_scale: Tensor,
    padded: Tensor | None,
) -> Tensor:
    """``(softmax - one_hot) * row_scale`` of ``[c, vocab / tp]`` logits, in their dtype.

    ``log_normalizer``: ``[c]`` float32 log-sum-exp over the whole vocabulary;
    ``target_here``: ``[c]`` 1.0 where the target column is on this rank, else 0.0;
    ``row_scale``: ``[c]`` float32 per-token factor (0 for an ignored token).
    """
    probabilities = (logits.float() - log_normalizer.unsqueeze(-1)).exp_()
    if padded is not None:
        probabilities = probabilities.masked_fill(padded, 0.0)
    # A comparison rather than a scatter, so that the compiled pass stays one kernel.
    columns = torch.arange(logits.shape[-1], device=logits.device)
    is_target = columns == local_target.unsqueeze(-1)
    gradient = torch.where(is_target, probabilities - target_here.unsqueeze(-1), probabilities)
    return (gradient * row_scale.unsqueeze(-1)).to(logits.dtype)


_compiled_chunk_statistics = torch.compile(chunk_statistics, fullgraph=True)
_compiled_logit_gradient = torch.compile(logit_gradient, fullgraph=True)


class _Problem:
    """What every chunk needs besides the tensors autograd differentiates: ``[tokens]``
    local target columns, whether the target lies on another rank, whether it is ignored,
    and the two softmax passes (compiled or not)."""

    def __init__(
        self,
        group: dist.ProcessGroup | None,
        padded: Tensor | None,
        local_target: Tensor,
        outside: Tensor,
        ignored: Tensor,
        chunk_tokens: int,
        compiled: bool,
    ) -> None:
        self.group = weak_group(group)
        self.padded = padded
        self.local_target = local_target
        self.outside = outside
        self.ignored = ignored
        self.target_here = (~outside).float()
        self.counted = (~ignored).float()
        self.chunk_tokens = chunk_tokens
        self.grad_enabled = torch.is_grad_enabled()
        self._statistics = _compiled_chunk_statistics if compiled else chunk_statistics
        self._gradient = _compiled_logit_gradient if compiled else logit_gradient

    def chunks(self, tokens: int) -> list[tuple[int, int]]:
        return chunk_bounds(tokens, self.chunk_tokens)

    def statistics(self, logits: Tensor, start: int, end: int) -> tuple[Tensor, Tensor, Tensor]:
        """:func:`chunk_statistics` of tokens ``start:end``, a remote target's logit 0."""
        maximum, sum_exp, target_logit = self._statistics(
            logits, self.local_target[start:end], self.padded
        )
        return maximum, sum_exp, target_logit.masked_fill(self.outside[start:end], 0.0)

    def gradient(self, logits: Tensor, log_normalizer: Tensor, row_scale: Tensor, start: int, end: int) -> Tensor:
        """:func:`logit_gradient` of tokens ``start:end``."""
        return self._gradient(
            logits,
            log_normalizer,
            self.local_target[start:end],
            self.target_here[start:end],
            row_scale,
            self.padded,
        )


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None, problem: _Problem
    ) -> Tensor:
        group = strong_group(problem.group, "tensor-parallel")
        # torch.compile cannot trace the backward pass's data-dependent choice: compiled,
        # every gradient is recomputed there instead (exact too, one more product per chunk).
        # needs_input_grad stays true under torch.no_grad, hence the recorded grad mode.
        precompute = problem.grad_enabled and not torch.compiler.is_compiling()
        grad_hidden_needed = precompute and ctx.needs_input_grad[0]
        grad_weight_needed = precompute and ctx.needs_input_grad[1]
        grad_bias_needed = precompute and bias is not None and ctx.needs_input_grad[2]
        tokens = hidden.shape[0]
        losses = hidden.new_empty(tokens, dtype=torch.float32)
        log_normalizers = hidden.new_empty(tokens, dtype=torch.float32)
        grad_hidden = torch.empty_like(hidden) if grad_hidden_needed else None
        # float32 sums over chunks whatever the weight's dtype.
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if grad_weight_needed else None
        grad_bias = (
            torch.zeros_like(bias, dtype=torch.float32)
            if bias is not None and grad_bias_needed
            else None
        )
        for start, end in problem.chunks(tokens):
            chunk = hidden[start:end]  # [c, h]
            logits = F.linear(chunk, weight, bias)  # [c, vocab / tp]
            maximum, sum_exp, target_logit = problem.statistics(logits, start, end)
            if group is not None:
                # Megatron-LM's vocabulary-parallel softmax: the maximum and the sums are
                # all-reduced; each rank's sum is rescaled to the global maximum first.
                global_maximum = maximum.clone()
                dist.all_reduce(global_maximum, op=dist.ReduceOp.MAX, group=group)
                sums = torch.stack([sum_exp * (maximum - global_maximum).exp(), target_logit])
                dist.all_reduce(sums, group=group)
                maximum, sum_exp, target_logit = global_maximum, sums[0], sums[1]
            log_normalizer = maximum + sum_exp.log()
            losses[start:end] = (log_normalizer - target_logit).masked_fill(
                problem.ignored[start:end], 0.0
            )
            log_normalizers[start:end] = log_normalizer
            if grad_hidden is None and grad_weight is None and grad_bias is None:
                continue
            gradient = problem.gradient(logits, log_normalizer, problem.counted[start:end], start, end)
            _accumulate(gradient, chunk, weight, grad_hidden, grad_weight, grad_bias, start)
        ctx.save_for_backward(hidden, weight, bias, log_normalizers, grad_hidden, grad_weight, grad_bias)
        ctx.problem = problem
        ctx.precomputed = precompute
        return losses

    @staticmethod
    def backward(
        ctx: Any, grad_losses: Tensor
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        hidden, weight, bias, log_normalizers, grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        problem: _Problem = ctx.problem
        grad_losses = grad_losses.masked_fill(problem.ignored, 0.0)
        needs = ctx.needs_input_grad
        if not ctx.precomputed:
            grads = _recomputed_grads(
                problem, hidden, weight, bias, log_normalizers, grad_losses, needs[0], needs[1], needs[2]
            )
            return _cast(grads[0], hidden), _cast(grads[1], weight), _cast(grads[2], bias), None
        hidden_out = None if grad_hidden is None else grad_hidden * grad_losses.unsqueeze(-1)
        if grad_weight is None and grad_bias is None:
            return _cast(hidden_out, hidden), None, None, None
        scale = _uniform_scale(grad_losses, problem.ignored)
        if scale is None:
            _, grad_weight, grad_bias = _recomputed_grads(
                problem,
                hidden,
                weight,
                bias,
                log_normalizers,
                grad_losses,
                False,
                grad_weight is not None,
                grad_bias is not None,
            )
            scale = 1.0
        weight_out = None if grad_weight is None else _scaled(grad_weight, scale)
        bias_out = None if grad_bias is None else _scaled(grad_bias, scale)
        return _cast(hidden_out, hidden), _cast(weight_out, weight), _cast(bias_out, bias), None


def _scaled(grad: Tensor, scale: float) -> Tensor:
    """``grad * scale``, without a pass over ``grad`` for a scale of 1 (``losses.sum()``)."""
    return grad if scale == 1.0 else grad * scale


def _cast(grad: Tensor | None, like: Tensor | None) -> Tensor | None:
    """``grad`` (float32) in the dtype of the tensor it is the gradient of."""
    return None if grad is None or like is None else grad.to(like.dtype)


def _accumulate(
    gradient: Tensor,
    chunk: Tensor,
    weight: Tensor,
    grad_hidden: Tensor | None,
    grad_weight: Tensor | None,
    grad_bias: Tensor | None,
    start: int,
) -> None:
    """Add one chunk's ``[c, vocab / tp]`` logit gradient to the input gradients."""
    if grad_bias is not None:
        grad_bias.add_(gradient.sum(dim=0, dtype=torch.float32))
    # The matrix products run in the model's dtype, as autograd's would.
    gradient = gradient.to(weight.dtype)
    if grad_hidden is not None:
        torch.matmul(gradient, weight, out=grad_hidden[start : start + chunk.shape[0]])
    if grad_weight is not None:
        add_product(grad_weight, gradient.t(), chunk)


def add_product(accumulator: Tensor, left: Tensor, right: Tensor) -> None:
    """``accumulator += left @ right``, the sum in ``accumulator``'s dtype.

    A float32 ``accumulator`` of bf16 or fp16 products is summed by the product itself on CUDA
    (``addmm`` with ``out_dtype``: one kernel, and the product is never rounded to 16 bits);
    CPU has no such kernel (``aten::addmm.dtype`` is CUDA-only), so there the product is
    added after it is made.
    """
    if accumulator.dtype == left.dtype:
        accumulator.addmm_(left, right)
    elif accumulator.is_cuda and accumulator.dtype == torch.float32:
        torch.addmm(accumulator, left, right, out_dtype=torch.float32, out=accumulator)
    else:
        accumulator.add_(left @ right)


def _uniform_scale(grad_losses: Tensor, ignored: Tensor) -> float | None:
    """The one gradient every counted token has, or ``None`` if they differ (a host sync).

    Ignored tokens have no parameter gradient, so their value does not matter; with no
    counted token the stored sums are zero and any scale does.
    """
    low = grad_losses.masked_fill(ignored, float("inf")).min()
    high = grad_losses.masked_fill(ignored, float("-inf")).max()
    low_value, high_value = torch.stack([low, high]).tolist()
    if low_value > high_value:
        return 0.0
    return float(low_value) if low_value == high_value else None


def _recomputed_grads(
    problem: _Problem,
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    log_normalizers: Tensor,
    grad_losses: Tensor,
    hidden_needed: bool,
    weight_needed: bool,
    bias_needed: bool,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The gradients for per-token loss gradients ``c``, recomputed one chunk of logits at a
    time from the saved log-normalisers (global already: no collective). The hidden states'
    gradient is this rank's partial sum, which the input's collective reduces."""
    grad_hidden = torch.empty_like(hidden) if hidden_needed else None
    grad_weight = torch.zeros_like(weight, dtype=torch.float32) if weight_needed else None
    grad_bias = (
        torch.zeros_like(bias, dtype=torch.float32) if bias is not None and bias_needed else None
    )
    tokens = hidden.shape[0]
    for start, end in problem.chunks(tokens):
        chunk = hidden[start:end]
        logits = F.linear(chunk, weight, bias)
        gradient = problem.gradient(logits, log_normalizers[start:end], grad_losses[start:end], start, end)
        _accumulate(gradient, chunk, weight, grad_hidden, grad_weight, grad_bias, start)
    return grad_hidden, grad_weight, grad_bias
