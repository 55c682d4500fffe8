"""Choosing the next token from logits: greedy, temperature, top-k and top-p (nucleus).

Sampling runs on the CPU in float32, so a seeded CPU ``torch.Generator`` gives the same tokens
whatever device computed the logits. The filters are applied in the order transformers'
``generate`` applies them: temperature, then top-k, then top-p.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Refuse settings that do not describe a distribution.

    Raises:
        ValueError: if ``temperature`` is negative, ``top_k`` is not positive or ``top_p`` is
            not in ``(0, 1]``.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if top_k is not None and top_k <= 0:
        raise ValueError(f"top_k must be positive, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def keep_top_k(logits: Tensor, top_k: int) -> Tensor:
    """``[batch, vocab]`` logits with all but the ``top_k`` largest of each row set to -inf.

    Tokens tied with the ``top_k``-th largest are kept too.
    """
    if top_k >= logits.shape[-1]:
        return logits
    threshold = logits.topk(top_k, dim=-1).values[:, -1:]  # [batch, 1]
    return logits.masked_fill(logits < threshold, float("-inf"))


def keep_top_p(logits: Tensor, top_p: float) -> Tensor:
    """``[batch, vocab]`` logits restricted to each row's nucleus; the rest set to -inf.

    The nucleus is the smallest set of most probable tokens whose probability reaches
    ``top_p``: a token is kept if the tokens more probable than it hold less than ``top_p``.
    The most probable token is always kept.
    """
    if top_p >= 1:
        return logits
    ordered, order = logits.sort(dim=-1, descending=True)
    probabilities = ordered.softmax(dim=-1)
    before = probabilities.cumsum(dim=-1) - probabilities  # mass of the more probable tokens
    dropped_in_order = before >= top_p
    dropped = dropped_in_order.scatter(-1, order, dropped_in_order)
    return logits.masked_fill(dropped, float("-inf"))


def next_token(
    logits: Tensor,
    *,
    temperature: float,
    top_k: int | None,
    top_p: float | None = None,
    generator: torch.Generator | None,
) -> Tensor:
    """Pick one token per row of ``[batch, vocab]`` logits; returns ``[batch]`` int64 ids (CPU).

    ``temperature == 0`` is greedy: the argmax (the first one on ties), whatever ``top_k`` and
    ``top_p`` say. Otherwise logits are divided by ``temperature``, restricted to the ``top_k``
    largest and then to the ``top_p`` nucleus when given, and sampled with ``generator``. With
    ``top_k=1`` sampling is greedy (unless the largest logits tie exactly).

    Raises:
        ValueError: for bad settings (:func:`check_sampling`).
    """
    check_sampling(temperature, top_k, top_p)
    logits = logits.float().cpu()
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        logits = keep_top_k(logits, top_k)
    if top_p is not None:
        logits = keep_top_p(logits, top_p)
    probabilities = torch.softmax(logits, dim=-1)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(1)
