"""``fuse_elementwise`` (torch.compile of the QKV split with QK-norm and RoPE, the gated
activation and the residual add with the next norm) computes the same function as eager
PyTorch: same logits and gradients; the add+norm region compiles once for all layers; the
split's parts are copies, not views of the QKV output."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from megaspec.backends import torch as torch_backend
from megaspec.layers import LayerNorm, RMSNorm
from megaspec.layers.attention import head_split
from megaspec.layers.residual import residual_add_and_norm
from megaspec.models import GPTModel
from megaspec.parallel import ParallelGroups, normal_init, seeded_initialization
from megaspec.rotary import RotaryTables
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


def norms(
    kind: type[RMSNorm] | type[LayerNorm], count: int, width: int = 16
) -> list[RMSNorm | LayerNorm]:
    config = TransformerConfig(hidden_size=width, num_layers=1)
    with seeded_initialization(0):
        built = [
            kind(
                hidden_size=width,
                config=config,
                groups=ParallelGroups.single(),
                sharded_input=False,
                init_method=normal_init(1.0),
            )
            for _ in range(count)
        ]
    return built


@pytest.mark.parametrize("kind", [RMSNorm, LayerNorm])
def test_fused_add_and_norm_matches_eager(kind: type[RMSNorm] | type[LayerNorm]) -> None:
    (norm,) = norms(kind, 1)
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(5, 2, 16, generator=generator, requires_grad=True) for _ in range(2)]
    results = []
    for fused in (False, True):
        hidden, normed = residual_add_and_norm(fused)(inputs[0], inputs[1], norm)
        (hidden.sin() + normed.cos()).sum().backward()
        grads = [tensor.grad for tensor in (*inputs, norm.weight)]
        results.append((hidden.detach(), normed.detach(), *grads))
        for tensor in (*inputs, norm.weight):
            tensor.grad = None
    for compiled, eager in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(compiled, eager, atol=1e-6, rtol=1e-6)


def test_fused_add_and_norm_compiles_once_for_every_layer() -> None:
    # Dynamo would guard on each norm's identity if it treated modules as constants: a
    # 16-layer model would then recompile per layer and fall back to eager past 8.
    torch._dynamo.reset()
    counters.clear()
    hidden = torch.randn(3, 2, 16, requires_grad=True)
    for norm in norms(RMSNorm, 12):
        residual_add_and_norm(True)(hidden, hidden, norm)[1].sum().backward()
    assert counters["frames"]["ok"] == 1


def qkv_and_tables() -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """A fused QKV output [s, b, groups 2, 2 queries + k + v, head_dim 8] and RoPE tables."""
    generator = torch.Generator().manual_seed(0)
    qkv = torch.randn(5, 2, 2, 4, 8, generator=generator, requires_grad=True)
    tables = RotaryTables(torch.arange(5).expand(2, 5)).cos_sin(4, 10000.0, torch.float32)
    return qkv, tables


@pytest.mark.parametrize("qk_norm", [False, True])
def test_split_heads_compiled_matches_eager_and_copies_every_part(qk_norm: bool) -> None:
    head_norms = norms(RMSNorm, 2, width=8) if qk_norm else [None, None]
    results = []
    for fused in (False, True):
        qkv, rotary = qkv_and_tables()
        parts = head_split(fused)(qkv, 2, *head_norms, rotary)
        assert [tuple(part.shape) for part in parts] == [(5, 2, 4, 8), (5, 2, 2, 8), (5, 2, 2, 8)]
        # No part is a view of the QKV output, so attention's saved tensors let it go.
        assert all(part.untyped_storage().data_ptr() != qkv.untyped_storage().data_ptr() for part in parts)
        sum(part.sin().sum() for part in parts).backward()
        results.append((*(part.detach() for part in parts), qkv.grad))
    for compiled, eager in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(compiled, eager, atol=1e-6, rtol=1e-6)
