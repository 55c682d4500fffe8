"""bench/peers/megaspec_gpt.py's opt-in ``megaspec-compile-layers`` peer (each
``TransformerLayer`` under ``torch.compile``) computes what the ``megaspec`` peer does: the same
loss and gradients from the same weights, in float32 on a CPU."""

from __future__ import annotations

import torch

from bench.config import BenchConfig
from bench.peers.megaspec_gpt import build_megaspec
from bench.timing import make_step

TINY = BenchConfig(
    num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=2, ffn_hidden_size=64, vocab_size=128,
    sequence=8, batch=2,
)


def test_compiled_layers_match_the_fused_model() -> None:
    device = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, TINY.vocab_size, (TINY.batch, TINY.sequence), generator=generator)
    labels = torch.randint(0, TINY.vocab_size, (TINY.batch, TINY.sequence), generator=generator)
    torch.manual_seed(0)
    plain = build_megaspec(TINY, device, fused=True)
    compiled = build_megaspec(TINY, device, fused=True, compile_layers=True)
    plain.model.float()
    compiled.model.float()
    compiled.model.load_state_dict(plain.model.state_dict())

    expected = make_step(plain, inputs, labels)()
    actual = make_step(compiled, inputs, labels)()

    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-6)
    for (name, want), got in zip(plain.model.named_parameters(), compiled.model.parameters(), strict=True):
        assert want.grad is not None and got.grad is not None, name
        torch.testing.assert_close(got.grad, want.grad, atol=1e-5, rtol=1e-5, msg=name)
