"""Example (d): a hybrid stack of attention layers and convolution-mixer layers.

A block sequence repeats a pattern of layer builders. Here the pattern is
``[attention, attention, convolution]`` (the convolution mixer of
``examples/custom_mixer.py``), repeated to 6 layers, and that 6-layer spec is nested inside
an outer spec that closes the stack with one more attention layer::

    hybrid = BlockSequenceSpec(pattern=[attn, attn, conv], num_layers=6)  # a a c a a c
    blocks = BlockSequenceSpec(pattern=[hybrid, attn], num_layers=7)      # a a c a a c a

Layer counts are checked, never guessed: ``num_layers`` must be a multiple of the pattern's
length (a nested spec counts as its ``num_layers`` layers), and the outer spec must build
exactly ``TransformerConfig.num_layers`` layers. ``GPTModel.summary()`` lists which mixer
every layer got. The program then trains a few steps of AdamW on one fixed batch, so the
loss falls.

Run: ``python -m examples.hybrid_stack``
"""

from __future__ import annotations

from dataclasses import replace

import torch

from examples.custom_mixer import CausalConvMixer, ConvMixerConfig
from megaspec.backends import torch as torch_backend
from megaspec.layers import BlockSequenceSpec, TransformerLayer
from megaspec.models import GPTModel
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig

VOCAB_SIZE = 256
NUM_LAYERS = 7


def hybrid_blocks() -> BlockSequenceSpec:
    """``[attn, attn, conv] x 2`` nested in a spec that appends one attention layer."""
    llama = torch_backend.llama_layer_submodules(
        AttentionConfig(num_heads=4, num_query_groups=2), MlpConfig(ffn_hidden_size=128)
    )
    attention = TransformerLayer.as_layer_submodule(llama)
    convolution = TransformerLayer.as_layer_submodule(
        replace(llama, mixer=CausalConvMixer.as_mixer_submodule(ConvMixerConfig(kernel_size=4)))
    )
    hybrid = BlockSequenceSpec(pattern=[attention, attention, convolution], num_layers=6)
    return BlockSequenceSpec(pattern=[hybrid, attention], num_layers=NUM_LAYERS)


def build_model(groups: ParallelGroups | None = None) -> GPTModel:
    """A small GPT model over :func:`hybrid_blocks` (hidden 64, 7 layers)."""
    config = TransformerConfig(hidden_size=64, num_layers=NUM_LAYERS)
    return GPTModel(
        config=config,
        vocab_size=VOCAB_SIZE,
        submodules=torch_backend.gpt_submodules(hybrid_blocks()),
        groups=groups,
    )


def train(model: GPTModel, tokens: torch.Tensor, steps: int) -> list[float]:
    """``steps`` AdamW steps of next-token prediction on ``tokens`` (``[batch, seq + 1]``).

    Returns the mean loss before each step.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses: list[float] = []
    for _ in range(steps):
        loss = model(tokens[:, :-1], labels=tokens[:, 1:]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def main() -> None:
    torch.manual_seed(0)
    model = build_model()
    print(model.summary())
    tokens = torch.randint(0, VOCAB_SIZE, (4, 33))
    for step, loss in enumerate(train(model, tokens, steps=8)):
        print(f"step {step}: loss {loss:.4f}")


if __name__ == "__main__":
    main()
