"""The model and batch every peer trains on, and the FLOP count that TFLOP/s is based on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchConfig:
    """A Llama-style model (untied embeddings, no biases, no dropout) and its batch."""

    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    ffn_hidden_size: int
    vocab_size: int
    sequence: int
    batch: int
    norm_epsilon: float = 1e-5
    rotary_base: float = 10000.0
    init_std: float = 0.02

    @property
    def tokens(self) -> int:
        """Tokens in one step's micro-batch: ``batch * sequence``."""
        return self.batch * self.sequence

    def expected_parameters(self) -> int:
        """Parameters of an untied Llama of this shape (no biases)."""
        head_dim = self.hidden_size // self.num_heads
        qkv = (self.num_heads + 2 * self.num_kv_heads) * head_dim * self.hidden_size
        proj = self.num_heads * head_dim * self.hidden_size
        mlp = 3 * self.ffn_hidden_size * self.hidden_size
        layer = qkv + proj + mlp + 2 * self.hidden_size
        return self.num_layers * layer + self.hidden_size + 2 * self.vocab_size * self.hidden_size

    def matmul_flops_per_step(self) -> float:
        """Forward + backward FLOPs of the matrix products (6 per parameter-token + attention)."""
        # The input embedding is a lookup, not a matrix product.
        dense = 6.0 * (self.expected_parameters() - self.vocab_size * self.hidden_size) * self.tokens
        # QK^T and PV: 4 * b * s^2 * h forward, causal half, backward twice the forward.
        attention = 3 * 0.5 * 4.0 * self.batch * self.sequence**2 * self.hidden_size * self.num_layers
        return dense + attention


FULL = BenchConfig(
    num_layers=16, hidden_size=2048, num_heads=16, num_kv_heads=16, ffn_hidden_size=5632,
    vocab_size=32000, sequence=2048, batch=4,
)
SMALL = BenchConfig(
    num_layers=2, hidden_size=128, num_heads=4, num_kv_heads=4, ffn_hidden_size=352,
    vocab_size=512, sequence=64, batch=2,
)
