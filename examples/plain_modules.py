"""Example (e): plain PyTorch modules, with no tensor-parallel code, in the mixer and MLP slots.

``PlainSelfAttention`` is causal self-attention written the way one writes it without
Megatron (``torch.nn.Linear`` and SDPA), ``PlainMlp`` a GELU feed-forward block. Neither knows
about tensor parallelism: both declare ``handles_sequence_parallel = False``, which is all
they need to be correct at any tensor-parallel size:

* without sequence parallelism the layer hands them the whole sequence, replicated on every
  tensor-parallel rank; each rank computes the same output and the same full gradients;
* with sequence parallelism each rank holds a slice of the sequence, so the layer
  all-gathers the sequence before the call and keeps this rank's slice of the output.

Either way TP=N trains exactly as TP=1 (``tests/models/test_tensor_parallel.py`` checks
it), at the cost of running these modules unsharded on every rank. A module that declares
``True`` instead takes this rank's slice and must gather what it needs itself (see
``examples/custom_mixer.py``). mypy rejects a mixer or MLP that declares neither.

Run: ``python -m examples.plain_modules``
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from megaspec.backends import torch as torch_backend
from megaspec.context import LayerContext
from megaspec.layers import BlockSequenceSpec, TransformerLayer
from megaspec.models import GPTModel
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig

VOCAB_SIZE = 256


class PlainSelfAttention(nn.Module):
    """Causal multi-head self-attention on plain ``torch.nn.Linear`` layers.

    Shapes: ``[s, b, hidden] -> [s, b, hidden]``, always the whole sequence.
    """

    handles_sequence_parallel = False  # the layer gathers the sequence for it

    def __init__(
        self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int, num_heads: int
    ) -> None:
        super().__init__()
        if config.hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size {config.hidden_size} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        dtype = config.params_dtype
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False, dtype=dtype)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False, dtype=dtype)

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor:
        sequence, batch, width = hidden.shape
        # [s, b, 3 * h] -> 3 x [b, heads, s, head_dim]
        qkv = self.qkv(hidden).view(sequence, batch, 3, self.num_heads, width // self.num_heads)
        query, key, value = qkv.permute(2, 1, 3, 0, 4).unbind(0)
        attended = F.scaled_dot_product_attention(query, key, value, is_causal=True)
        # [b, heads, s, head_dim] -> [s, b, h]
        output: Tensor = self.proj(attended.permute(2, 0, 1, 3).reshape(sequence, batch, width))
        return output


class PlainMlp(nn.Module):
    """``Linear -> GELU -> Linear``. Shapes: ``[s, b, hidden] -> [s, b, hidden]``."""

    handles_sequence_parallel = False

    def __init__(self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> None:
        super().__init__()
        width, dtype = config.hidden_size, config.params_dtype
        self.up = nn.Linear(width, 4 * width, dtype=dtype)
        self.down = nn.Linear(4 * width, width, dtype=dtype)

    def forward(self, hidden: Tensor) -> Tensor:
        output: Tensor = self.down(F.gelu(self.up(hidden)))
        return output


def build_model(
    groups: ParallelGroups | None = None, *, sequence_parallel: bool = False, num_layers: int = 2
) -> GPTModel:
    """A small model alternating megaspec's attention layers with plain-module layers."""
    config = TransformerConfig(
        hidden_size=64, num_layers=num_layers, sequence_parallel=sequence_parallel
    )
    llama = torch_backend.llama_layer_submodules(
        AttentionConfig(num_heads=4), MlpConfig(ffn_hidden_size=128)
    )
    # functools.partial binds what the mixer slot does not pass; mypy checks it.
    plain = replace(llama, mixer=functools.partial(PlainSelfAttention, num_heads=4), mlp=PlainMlp)
    pattern = [TransformerLayer.as_layer_submodule(llama), TransformerLayer.as_layer_submodule(plain)]
    return GPTModel(
        config=config,
        vocab_size=VOCAB_SIZE,
        submodules=torch_backend.gpt_submodules(BlockSequenceSpec(pattern=pattern, num_layers=num_layers)),
        groups=groups,
    )


def main() -> None:
    torch.manual_seed(0)
    model = build_model()
    print(model.summary())
    tokens = torch.randint(0, VOCAB_SIZE, (2, 33))
    loss = model(tokens[:, :-1], labels=tokens[:, 1:]).mean()
    loss.backward()
    print(f"loss {loss.item():.4f} (log({VOCAB_SIZE}) = {math.log(VOCAB_SIZE):.4f})")


if __name__ == "__main__":
    main()
