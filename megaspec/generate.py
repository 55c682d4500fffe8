"""Autoregressive generation from a :class:`~megaspec.models.GPTModel`, with key/value caches.

:func:`generate` runs the prompts once (prefill) and then one new token per call, each layer
continuing from what it cached (:mod:`megaspec.inference`). A model with a layer whose mixer
does not declare ``supports_inference_cache`` (a custom mixer, say) still generates: it
recomputes the whole sequence for every new token, and says so once with a
:class:`RecomputationWarning`.

Prompts of different lengths are batched **left-padded**, as transformers does: every row's
prompt ends in the same column, new tokens follow in the same columns for every row, and a
padded row's positions count from 0 at its first real token (``GPTModel.forward`` with an
``attention_mask``). Greedy decoding is the argmax and draws nothing at random.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from megaspec.data import ByteTokenizer
from megaspec.inference import InferenceState, supports_inference_cache
from megaspec.models import GPTModel
from megaspec.sampling import check_sampling, next_token

__all__ = ["RecomputationWarning", "generate", "generate_text", "next_token", "recomputed_layers"]

Prompts = Tensor | Sequence[Tensor | Sequence[int]]
"""A ``[batch, prompt]`` tensor, or a sequence of 1-D prompts (tensors or lists of ids)."""


class RecomputationWarning(UserWarning):
    """Generation recomputes the whole sequence per token: a mixer keeps no cache."""


@dataclass(frozen=True)
class PromptBatch:
    """Prompts left-padded into one grid.

    Attributes:
        tokens: ``[batch, longest]`` int64 ids, padding first.
        real: ``[batch, longest]`` bool, ``True`` for prompt tokens.
        lengths: each row's prompt length.
    """

    tokens: Tensor
    real: Tensor
    lengths: tuple[int, ...]

    @property
    def padded(self) -> bool:
        """Whether any row is padded."""
        return min(self.lengths) != self.tokens.shape[1]


@dataclass(frozen=True)
class _TokenChoice:
    """How each new token is picked, and how rows end (``eos_token_id``)."""

    temperature: float
    top_k: int | None
    top_p: float | None
    generator: torch.Generator | None
    eos_token_id: int | None
    pad_token_id: int

    def choose(self, logits: Tensor, unfinished: Tensor) -> tuple[Tensor, Tensor]:
        """``[batch]`` next ids (``pad_token_id`` for finished rows) and the rows still going."""
        chosen = next_token(
            logits, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
            generator=self.generator,
        )  # fmt: skip
        chosen = torch.where(unfinished, chosen, self.pad_token_id)
        if self.eos_token_id is not None:
            unfinished = unfinished & (chosen != self.eos_token_id)
        return chosen, unfinished


def left_padded(
    prompts: Prompts, attention_mask: Tensor | None, pad_token_id: int, device: torch.device
) -> PromptBatch:
    """The prompts as a :class:`PromptBatch` on ``device``.

    A ``[batch, prompt]`` tensor is taken as it is, its padding given by ``attention_mask``
    (1 for real tokens, 0 for padding, which must come first in a row); a sequence of 1-D
    prompts is left-padded with ``pad_token_id``.

    Raises:
        ValueError: for no prompt, an empty prompt, a tensor that is not 2-D, a mask of
            another shape, a row without real tokens or padded on the right.
    """
    if isinstance(prompts, Tensor):
        if prompts.dim() != 2 or prompts.shape[0] == 0 or prompts.shape[1] == 0:
            raise ValueError(
                f"prompt_ids must be a non-empty [batch, prompt] tensor, got shape "
                f"{tuple(prompts.shape)}"
            )
        if attention_mask is None:
            real = torch.ones(prompts.shape, dtype=torch.bool)
        elif attention_mask.shape != prompts.shape:
            raise ValueError(
                f"attention_mask must have the prompts' shape {tuple(prompts.shape)}, got "
                f"{tuple(attention_mask.shape)}"
            )
        else:
            real = attention_mask.to(device="cpu", dtype=torch.bool)
        return _checked_batch(prompts.to(device), real, device)
    if attention_mask is not None:
        raise ValueError("attention_mask goes with a [batch, prompt] tensor, not a list of prompts")
    rows = [torch.as_tensor(prompt, dtype=torch.long).cpu() for prompt in prompts]
    if not rows or any(row.dim() != 1 or row.numel() == 0 for row in rows):
        raise ValueError("prompts must be a non-empty list of non-empty 1-D token sequences")
    longest = max(row.numel() for row in rows)
    tokens = torch.full((len(rows), longest), pad_token_id, dtype=torch.long)
    real = torch.zeros((len(rows), longest), dtype=torch.bool)
    for index, row in enumerate(rows):
        tokens[index, longest - row.numel() :] = row
        real[index, longest - row.numel() :] = True
    return _checked_batch(tokens.to(device), real, device)


def _checked_batch(tokens: Tensor, real: Tensor, device: torch.device) -> PromptBatch:
    lengths = real.sum(dim=1)
    # Left padding: a row's real tokens are its last `length` columns.
    left_padded_rows = real == (torch.arange(real.shape[1]) >= real.shape[1] - lengths[:, None])
    if bool((lengths == 0).any()) or not bool(left_padded_rows.all()):
        raise ValueError(
            "attention_mask: every row needs at least one real token, and padding only on the "
            "left (zeros first, then ones)"
        )
    return PromptBatch(tokens, real.to(device), tuple(int(length) for length in lengths))


def recomputed_layers(model: GPTModel) -> list[str]:
    """The layers generation cannot cache, as ``"layer 2 (GruMixer)"`` (empty: all can).

    A layer can if it declares ``supports_inference_cache`` (``TransformerLayer`` forwards
    its mixer's declaration); the class named is the layer's mixer if it has one.
    """
    return [
        f"layer {index} ({type(getattr(layer, 'mixer', layer)).__name__})"
        for index, layer in enumerate(model.blocks.layers)
        if not supports_inference_cache(layer)
    ]


def generate(
    model: GPTModel,
    prompts: Prompts,
    *,
    max_new_tokens: int,
    attention_mask: Tensor | None = None,
    context_length: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int = 0,
    use_cache: bool = True,
) -> Tensor:
    """Extend each prompt by up to ``max_new_tokens`` tokens.

    Args:
        prompts: a ``[batch, prompt]`` int64 tensor (its padding, on the left, marked by
            ``attention_mask``: 1 for real tokens), or a sequence of 1-D prompts.
        max_new_tokens: tokens to add; fewer when every row has ended with ``eos_token_id``.
        context_length: the model sees at most the last ``context_length`` tokens; if the
            output outgrows it, each token is recomputed from the window (no cache).
        temperature, top_k, top_p, generator: how tokens are picked
            (:func:`megaspec.sampling.next_token`); ``temperature=0`` is greedy.
        eos_token_id: a row that produces it ends; its later tokens are ``pad_token_id``,
            which also left-pads shorter prompts.
        use_cache: decode from key/value caches; ``False`` recomputes every token.

    Returns:
        ``[batch, longest prompt + generated]`` int64 on the model's device, left-padded: each
        prompt ends in column ``longest - 1`` and its new tokens follow. The model runs in
        eval mode and is put back in its mode afterwards.

    Raises:
        ValueError: for bad prompts or mask (:func:`left_padded`), a negative
            ``max_new_tokens``, a ``context_length`` that is not positive, bad sampling
            settings, or a model with sequence parallelism over several ranks.
    """
    check_sampling(temperature, top_k, top_p)
    _check_request(model, max_new_tokens, context_length)
    batch = left_padded(prompts, attention_mask, pad_token_id, next(model.parameters()).device)
    choice = _TokenChoice(temperature, top_k, top_p, generator, eos_token_id, pad_token_id)
    total = batch.tokens.shape[1] + max_new_tokens
    windowed = context_length is not None and total > context_length
    cached = use_cache and not windowed and _all_layers_cache(model)
    with _evaluating(model), torch.no_grad():
        if cached:
            return _decode_with_cache(model, batch, max_new_tokens, choice)
        return _decode_by_recomputation(model, batch, max_new_tokens, choice, context_length)


def _check_request(model: GPTModel, max_new_tokens: int, context_length: int | None) -> None:
    if max_new_tokens < 0 or (context_length is not None and context_length <= 0):
        raise ValueError(
            f"max_new_tokens must be >= 0 and context_length > 0, got {max_new_tokens} and "
            f"{context_length}"
        )
    if model.config.sequence_parallel and model.groups.tensor_size > 1:
        raise ValueError(
            "generate: a model with sequence parallelism cannot generate (a decode step of one "
            "token cannot be split over the tensor-parallel ranks); build it with "
            "sequence_parallel=False"
        )


@contextmanager
def _evaluating(model: GPTModel) -> Iterator[None]:
    """Eval mode for the block, then the mode the model was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _all_layers_cache(model: GPTModel) -> bool:
    uncached = recomputed_layers(model)
    if uncached:
        warnings.warn(
            f"generate: {', '.join(uncached)} declares no supports_inference_cache, so every "
            f"new token recomputes the whole sequence",
            RecomputationWarning,
            stacklevel=3,  # the caller of generate
        )
    return not uncached


def _decode_with_cache(
    model: GPTModel, batch: PromptBatch, max_new_tokens: int, choice: _TokenChoice
) -> Tensor:
    """Prefill the prompts, then feed one token per call; returns the tokens (see generate)."""
    tokens = batch.tokens
    if max_new_tokens == 0:
        return tokens
    # Without padding the model skips masks (its fastest attention path).
    mask = batch.real if batch.padded else None
    state = InferenceState(max_length=tokens.shape[1] + max_new_tokens)
    logits = model(tokens, attention_mask=mask, inference=state)[:, -1]  # [batch, vocab]
    unfinished = torch.ones(tokens.shape[0], dtype=torch.bool)
    for step in range(max_new_tokens):
        chosen, unfinished = choice.choose(logits, unfinished)
        new = chosen.to(tokens.device).unsqueeze(1)  # [batch, 1]
        tokens = torch.cat((tokens, new), dim=1)
        if step + 1 == max_new_tokens or not bool(unfinished.any()):
            break
        if mask is not None:
            mask = torch.cat((mask, torch.ones_like(new, dtype=torch.bool)), dim=1)
        logits = model(new, attention_mask=mask, inference=state)[:, -1]
    return tokens


def _decode_by_recomputation(
    model: GPTModel,
    batch: PromptBatch,
    max_new_tokens: int,
    choice: _TokenChoice,
    context_length: int | None,
) -> Tensor:
    """Run the whole (windowed) sequence for every token; returns the tokens (see generate).

    Rows of one prompt length run together without padding, so a mixer that knows nothing
    of masks (a convolution, a GRU) sees each prompt exactly as it would alone.
    """
    tokens = batch.tokens
    groups = [
        (length, torch.tensor(rows, device=tokens.device))
        for length in sorted(set(batch.lengths))
        for rows in [[row for row, own in enumerate(batch.lengths) if own == length]]
    ]
    unfinished = torch.ones(tokens.shape[0], dtype=torch.bool)
    for step in range(max_new_tokens):
        logits: Tensor | None = None
        for length, rows in groups:
            window = tokens[rows, -(length + step) :]  # [rows, length + step], no padding
            if context_length is not None:
                window = window[:, -context_length:]
            last = model(window)[:, -1]  # [rows, vocab]
            logits = last.new_empty(tokens.shape[0], last.shape[-1]) if logits is None else logits
            logits[rows] = last
        assert logits is not None  # there is at least one row
        chosen, unfinished = choice.choose(logits, unfinished)
        tokens = torch.cat((tokens, chosen.to(tokens.device).unsqueeze(1)), dim=1)
        if not bool(unfinished.any()):
            break
    return tokens


def generate_text(
    model: GPTModel,
    prompt: str,
    *,
    max_new_tokens: int,
    context_length: int,
    temperature: float = 0.8,
    top_k: int | None = 40,
    top_p: float | None = None,
    seed: int = 0,
) -> str:
    """``prompt`` followed by ``max_new_tokens`` generated bytes, decoded as UTF-8.

    Sampling is seeded by ``seed``: the same model, prompt and settings give the same text.

    Raises:
        ValueError: if ``prompt`` is empty, or as :func:`generate`.
    """
    tokenizer = ByteTokenizer()
    prompt_ids = tokenizer.encode_tensor(prompt).unsqueeze(0)  # [1, prompt]
    generator = torch.Generator().manual_seed(seed)
    tokens = generate(
        model,
        prompt_ids,
        max_new_tokens=max_new_tokens,
        context_length=context_length,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        generator=generator,
    )
    return tokenizer.decode(tokens[0].cpu())
