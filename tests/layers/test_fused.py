"""``fuse_elementwise`` (torch.compile of RoPE and the gated activation) computes the same
function as eager PyTorch: same logits and gradients."""

from __future__ import annotations

import torch

from megaspec.backends import torch as torch_backend
from megaspec.models import GPTModel
from megaspec.parallel import seeded_initialization
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig


def logits_and_grads(fused: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    config = TransformerConfig(hidden_size=32, num_layers=2, fuse_elementwise=fused)
    attention = AttentionConfig(num_heads=4, num_query_groups=2, rotary_fraction=0.5)
    with seeded_initialization(0):
        model = GPTModel(
            config=config,
            vocab_size=64,
            submodules=torch_backend.llama_submodules(attention, MlpConfig(ffn_hidden_size=64), 2),
        )
    tokens = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(1))
    logits = model(tokens[:, :-1])
    model(tokens[:, :-1], labels=tokens[:, 1:]).mean().backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads


def test_fused_elementwise_matches_eager() -> None:
    eager_logits, eager_grads = logits_and_grads(fused=False)
    fused_logits, fused_grads = logits_and_grads(fused=True)
    torch.testing.assert_close(fused_logits, eager_logits, atol=1e-5, rtol=1e-5)
    assert fused_grads.keys() == eager_grads.keys()
    for name, grad in eager_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, atol=1e-5, rtol=1e-5, msg=name)
