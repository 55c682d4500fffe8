"""Sampling from a model (megaspec.generate): seeded, and deterministic when greedy."""

from __future__ import annotations

import torch

from megaspec.data import ByteTokenizer
from megaspec.generate import generate, generate_text
from megaspec.training import build_model, preset_run


def test_generation_is_seeded_and_greedy_is_deterministic() -> None:
    model = build_model(preset_run("tiny"))
    prompt = ByteTokenizer().encode_tensor("def ").unsqueeze(0)
    greedy = generate(model, prompt, max_new_tokens=8, context_length=6, temperature=0.0)
    assert greedy.shape == (1, 12) and torch.equal(greedy[:, :4], prompt)
    assert torch.equal(
        greedy, generate(model, prompt, max_new_tokens=8, context_length=6, temperature=0.0)
    )
    first = generate_text(model, "def ", max_new_tokens=20, context_length=16, seed=5)
    assert first.startswith("def ")
    assert first == generate_text(model, "def ", max_new_tokens=20, context_length=16, seed=5)
    assert model.training  # generation restores the mode it found
