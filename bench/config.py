"""The model and batch every peer trains on (``SIZES``), and the FLOP counts behind TFLOP/s."""

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
    # Processes (GPUs) sharing each layer, one torchrun process each; sequence parallelism is on
    # when it is above 1 (Megatron-LM's usual setting). Not a model shape: the FLOP counts below
    # are the whole model's.
    tensor_parallel: int = 1

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

    def non_embedding_parameters(self) -> int:
        """``N`` of the model-FLOP formula: every parameter but the input embedding (a lookup)."""
        return self.expected_parameters() - self.vocab_size * self.hidden_size

    def model_flops_per_token(self) -> float:
        """Issue 10's model FLOPs per token, forward + backward: ``6 N + 12 L h s``.

        ``6 N``: two FLOPs per weight and token forward, four backward, over ``N``
        (:meth:`non_embedding_parameters`, the output layer included). ``12 L h s``: the
        attention scores ``Q K^T`` and ``P V`` (``2 x 2 s h`` per token and layer forward, three
        times that with the backward) over the whole ``s x s`` square: causal masking's saving
        is not subtracted, as in the usual MFU definition (PaLM, Megatron-LM).
        """
        attention = 12 * self.num_layers * self.hidden_size * self.sequence
        return 6.0 * self.non_embedding_parameters() + attention

    def model_flops_per_step(self) -> float:
        """:meth:`model_flops_per_token` times the step's tokens."""
        return self.model_flops_per_token() * self.tokens


FULL = BenchConfig(
    num_layers=16, hidden_size=2048, num_heads=16, num_kv_heads=16, ffn_hidden_size=5632,
    vocab_size=32000, sequence=2048, batch=4,
)
SMALL = BenchConfig(
    num_layers=2, hidden_size=128, num_heads=4, num_kv_heads=4, ffn_hidden_size=352,
    vocab_size=512, sequence=64, batch=2,
)
# Llama-2-7B's layer shape (hidden 4096, 32 heads, MLP 11008, vocab 32000) with 8 of its 32
# layers, so that every peer, HF's float32 logits included, fits one 80 GB H100 at FULL's batch.
HIDDEN4096 = BenchConfig(
    num_layers=8, hidden_size=4096, num_heads=32, num_kv_heads=32, ffn_hidden_size=11008,
    vocab_size=32000, sequence=2048, batch=4,
)

# ``--size`` names: the default (FULL), the CPU smoke test, the wider model.
SIZES: dict[str, BenchConfig] = {"1b": FULL, "small": SMALL, "hidden4096": HIDDEN4096}
