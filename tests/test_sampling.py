"""Choosing the next token (megaspec.sampling): greedy is the argmax and draws nothing;
temperature, top-k and top-p (nucleus) reshape the distribution as documented, sampled
frequencies follow it, and bad settings are clear errors."""

from __future__ import annotations

import math
import re

import pytest
import torch

from megaspec.sampling import check_sampling, keep_top_k, keep_top_p, next_token

# Four tokens with probabilities 0.05, 0.5, 0.15, 0.3, deliberately not in sorted order.
PROBABILITIES = torch.tensor([0.05, 0.5, 0.15, 0.3])
LOGITS = PROBABILITIES.log().unsqueeze(0)  # [1, 4]
SAMPLES = 20000


def frequencies(
    logits: torch.Tensor, *, temperature: float = 1.0, top_p: float | None = None
) -> torch.Tensor:
    """How often each token is drawn in SAMPLES draws (one row per draw)."""
    generator = torch.Generator().manual_seed(0)
    chosen = next_token(
        logits.expand(SAMPLES, -1), temperature=temperature, top_k=None, top_p=top_p,
        generator=generator,
    )  # fmt: skip
    return torch.bincount(chosen, minlength=logits.shape[-1]).float() / SAMPLES


def kept(logits: torch.Tensor) -> list[int]:
    return torch.isfinite(logits[0]).nonzero().flatten().tolist()


def test_top_p_keeps_the_smallest_set_whose_probability_reaches_p() -> None:
    assert kept(keep_top_p(LOGITS, 0.45)) == [1]  # 0.5 alone reaches 0.45
    assert kept(keep_top_p(LOGITS, 0.55)) == [1, 3]  # 0.5 + 0.3
    assert kept(keep_top_p(LOGITS, 0.9)) == [1, 2, 3]  # 0.5 + 0.3 + 0.15
    assert kept(keep_top_p(LOGITS, 0.96)) == [0, 1, 2, 3]
    assert kept(keep_top_p(LOGITS, 1e-6)) == [1]  # the most probable token always stays
    assert torch.equal(keep_top_p(LOGITS, 1.0), LOGITS)
    # Kept logits are unchanged: sampling renormalises over the nucleus.
    assert torch.equal(keep_top_p(LOGITS, 0.55)[0, [1, 3]], LOGITS[0, [1, 3]])


def test_top_k_keeps_the_k_largest() -> None:
    assert kept(keep_top_k(LOGITS, 1)) == [1]
    assert kept(keep_top_k(LOGITS, 2)) == [1, 3]
    assert torch.equal(keep_top_k(LOGITS, 10), LOGITS)


def test_sampled_frequencies_follow_the_filtered_distribution() -> None:
    nucleus = frequencies(LOGITS, top_p=0.55)
    torch.testing.assert_close(nucleus, torch.tensor([0, 0.5 / 0.8, 0, 0.3 / 0.8]), rtol=0, atol=0.02)
    everything = frequencies(LOGITS)
    torch.testing.assert_close(everything, PROBABILITIES, rtol=0, atol=0.02)
    # Temperature 0.5 squares the probabilities (before renormalising).
    sharpened = PROBABILITIES**2 / (PROBABILITIES**2).sum()
    torch.testing.assert_close(frequencies(LOGITS, temperature=0.5), sharpened, rtol=0, atol=0.02)


def test_top_k_then_top_p_as_transformers_orders_them() -> None:
    # top_p=0.83 over all four tokens keeps 1, 3 and 2 (0.5 + 0.3 = 0.8 < 0.83), and top_k=3
    # after it would keep the same three. top_k=3 first renormalises {0.5, 0.15, 0.3} to
    # {0.526, 0.158, 0.316}, where 0.526 + 0.316 = 0.842 reaches 0.83: only tokens 1 and 3.
    generator = torch.Generator().manual_seed(0)
    chosen = next_token(
        LOGITS.expand(SAMPLES, -1), temperature=1.0, top_k=3, top_p=0.83, generator=generator
    )
    assert set(chosen.tolist()) == {1, 3}
    assert kept(keep_top_p(LOGITS, 0.83)) == [1, 2, 3]


def test_greedy_is_the_argmax_and_draws_nothing() -> None:
    logits = torch.randn(5, 50, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(2)
    state = generator.get_state()
    chosen = next_token(logits, temperature=0.0, top_k=3, top_p=0.1, generator=generator)
    assert torch.equal(chosen, logits.argmax(dim=-1))
    assert torch.equal(generator.get_state(), state)


@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
def test_top_k_of_one_samples_greedily(temperature: float) -> None:
    logits = torch.randn(64, 50, generator=torch.Generator().manual_seed(3))
    chosen = next_token(
        logits, temperature=temperature, top_k=1, generator=torch.Generator().manual_seed(4)
    )
    assert torch.equal(chosen, logits.argmax(dim=-1))


def test_a_seeded_generator_repeats_its_tokens() -> None:
    logits = torch.randn(8, 50, generator=torch.Generator().manual_seed(5))
    first, second = (
        next_token(logits, temperature=0.9, top_k=20, top_p=0.9, generator=torch.Generator().manual_seed(6))
        for _ in range(2)
    )
    assert torch.equal(first, second) and first.dtype == torch.int64


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p", "message"),
    [
        (-0.5, None, None, "temperature must be >= 0 (0 is greedy), got -0.5"),
        (1.0, 0, None, "top_k must be positive, got 0"),
        (1.0, None, 0.0, "top_p must be in (0, 1], got 0.0"),
        (1.0, None, 1.5, "top_p must be in (0, 1], got 1.5"),
        (1.0, None, math.nan, "top_p must be in (0, 1], got nan"),
    ],
)
def test_bad_settings_are_clear_errors(
    temperature: float, top_k: int | None, top_p: float | None, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_sampling(temperature, top_k, top_p)
    with pytest.raises(ValueError):
        next_token(LOGITS, temperature=temperature, top_k=top_k, top_p=top_p, generator=None)
