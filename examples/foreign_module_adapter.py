"""Example (c): a module with a foreign constructor, wired in through an adapter function.

``torch.nn.GRU`` knows nothing about megaspec: its constructor takes positional sizes
``GRU(input_size, hidden_size)``, and its forward returns a tuple ``(output, final_state)``.
A unidirectional GRU is causal (token t sees tokens 0 .. t), so it is a valid sequence mixer
once two small adaptations are made:

- :func:`gru_mixer` is a function with exactly the keywords of
  :class:`megaspec.builders.MixerBuilder` (``config``, ``groups``, ``layer_index``). It turns
  them into the GRU's positional arguments (``config.hidden_size`` twice, ``dtype`` from
  ``config.params_dtype``) and returns the GRU wrapped in :class:`GruMixer`.
- :class:`GruMixer` gives the GRU the Mixer Protocol's forward,
  ``forward(hidden [s, b, h], *, context) -> [s, b, h]``: the GRU already uses the
  ``[sequence, batch, features]`` layout (``batch_first=False``), so the wrapper only drops
  the final state from the GRU's output tuple.

Tensor parallelism: the GRU is not sharded. It runs replicated on every tensor-parallel rank
(each computes the same output and the same full gradients, so TP=N trains exactly as TP=1),
and :class:`GruMixer` declares ``handles_sequence_parallel = False``: under sequence
parallelism, where each rank holds a slice of the sequence, the layer gathers the whole
sequence for it and keeps this rank's slice of its output. Other things the adapter does not carry over: the GRU keeps torch's own initialisation
(uniform in ``+-1/sqrt(hidden_size)``, drawn from the seeded CPU generator, so still
reproducible) rather than ``config.init_std``, and it ignores ``context.position_ids``, so
every sequence is read from its first token (no packed sequences).

Run: ``python -m examples.foreign_module_adapter``
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor, nn

from megaspec.backends import torch as torch_backend
from megaspec.context import LayerContext
from megaspec.layers import BlockSequenceSpec, TransformerLayer
from megaspec.models import GPTModel
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig

VOCAB_SIZE = 256


class GruMixer(nn.Module):
    """A single-layer unidirectional ``torch.nn.GRU`` as a mixer.

    Shapes: ``[s, b, hidden] -> [s, b, hidden]``, always the whole sequence (it reads every
    token from the first): the layer gathers it under sequence parallelism. ``context`` is
    accepted and unused.
    """

    handles_sequence_parallel = False

    def __init__(self, gru: nn.GRU) -> None:
        super().__init__()
        if gru.batch_first or gru.bidirectional or gru.input_size != gru.hidden_size:
            raise ValueError(
                "GruMixer needs a unidirectional GRU with batch_first=False and "
                f"input_size == hidden_size, got {gru}"
            )
        self.gru = gru

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor:
        output, _final_state = self.gru(hidden)  # [s, b, hidden], [1, b, hidden]
        result: Tensor = output
        return result


def gru_mixer(*, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> GruMixer:
    """A :class:`~megaspec.builders.MixerBuilder` that builds a :class:`GruMixer`.

    The GRU is replicated on every tensor-parallel rank (see the module docstring).
    """
    gru = nn.GRU(config.hidden_size, config.hidden_size, dtype=config.params_dtype)
    return GruMixer(gru)


def build_model(groups: ParallelGroups | None = None) -> GPTModel:
    """A small model alternating self-attention layers and GRU layers."""
    config = TransformerConfig(hidden_size=64, num_layers=2)
    llama = torch_backend.llama_layer_submodules(
        AttentionConfig(num_heads=4), MlpConfig(ffn_hidden_size=128)
    )
    attention_layer = TransformerLayer.as_layer_submodule(llama)
    # The adapter function goes into the mixer slot like any builder; mypy checks it.
    gru_layer = TransformerLayer.as_layer_submodule(replace(llama, mixer=gru_mixer))
    blocks = BlockSequenceSpec(pattern=[attention_layer, gru_layer], num_layers=2)
    return GPTModel(
        config=config,
        vocab_size=VOCAB_SIZE,
        submodules=torch_backend.gpt_submodules(blocks),
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
