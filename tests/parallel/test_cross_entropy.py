"""The vocabulary-parallel cross-entropy of megaspec.parallel.cross_entropy, on one process."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from megaspec.parallel import ParallelGroups, vocab_parallel_cross_entropy


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
