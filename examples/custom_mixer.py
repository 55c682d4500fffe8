"""Example (a): a sequence mixer written from scratch and plugged into TransformerLayer.

``CausalConvMixer`` is a gated causal depthwise convolution (the short-convolution mixer of
Hyena/H3-style models). It is tensor-parallel: the input projection is column-parallel
(channels split across ranks), the depthwise filter is split the same way, and the output
projection is row-parallel, so TP=N computes exactly what TP=1 does.

Its constructor takes a ``ConvMixerConfig`` besides the mixer slot's keywords, so it offers
``as_mixer_submodule`` to fit :class:`megaspec.builders.MixerBuilder`.

Run: ``python -m examples.custom_mixer``
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from megaspec.backends import torch as torch_backend
from megaspec.builders import MixerBuilder
from megaspec.context import LayerContext
from megaspec.layers import BlockSequenceSpec, TransformerLayer
from megaspec.models import GPTModel
from megaspec.parallel import (
    ColumnParallelLinear,
    ParallelGroups,
    RowParallelLinear,
    TensorParallelSharding,
    new_sharded_parameter,
    normal_init,
    scaled_normal_init,
)
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig


@dataclass(frozen=True)
class ConvMixerConfig:
    """Settings of :class:`CausalConvMixer`: the filter length in tokens."""

    kernel_size: int = 4


class CausalConvMixer(nn.Module):
    """``out_proj(conv(value) * silu(gate))`` with ``[value; gate] = in_proj(x)``.

    The convolution is causal (token t sees tokens t - kernel_size + 1 .. t) and depthwise
    (one filter per channel). Shapes: ``[s, b, hidden] -> [s, b, hidden]`` (``s / tp`` under
    sequence parallelism: ``in_proj`` gathers the sequence, ``out_proj`` scatters it back).
    """

    # Its linears are built with config.sequence_parallel, so it takes this rank's slice of
    # the sequence and gathers the whole sequence itself (see megaspec.builders).
    handles_sequence_parallel = True

    def __init__(
        self,
        *,
        config: TransformerConfig,
        groups: ParallelGroups,
        layer_index: int,
        conv: ConvMixerConfig,
    ) -> None:
        super().__init__()
        width = config.hidden_size
        self.kernel_size = conv.kernel_size
        self.in_proj = ColumnParallelLinear(
            input_size=width,
            output_size=2 * width,
            groups=groups,
            init_method=normal_init(config.init_std),
            sequence_parallel=config.sequence_parallel,
            stacked_parts=2,  # [value; gate], each split across ranks
            params_dtype=config.params_dtype,
        )
        # [channels, kernel_size], channels split like in_proj's output.
        self.filter = new_sharded_parameter(
            (width, conv.kernel_size),
            TensorParallelSharding(dim=0),
            normal_init(1.0 / conv.kernel_size),
            groups,
            dtype=config.params_dtype,
        )
        self.out_proj = RowParallelLinear(
            input_size=width,
            output_size=width,
            groups=groups,
            init_method=scaled_normal_init(config.init_std, config.num_layers),
            sequence_parallel=config.sequence_parallel,
            params_dtype=config.params_dtype,
        )

    @classmethod
    def as_mixer_submodule(cls, conv: ConvMixerConfig) -> MixerBuilder:
        """A mixer builder with ``conv`` bound."""

        def build(
            *, config: TransformerConfig, groups: ParallelGroups, layer_index: int
        ) -> CausalConvMixer:
            return cls(config=config, groups=groups, layer_index=layer_index, conv=conv)

        build.__qualname__ = f"{cls.__qualname__}.as_mixer_submodule(...)"
        return build

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor:
        value, gate = self.in_proj(hidden).chunk(2, dim=-1)  # [s, b, channels / tp] each
        channels = value.shape[-1]
        signal = F.pad(value.permute(1, 2, 0), (self.kernel_size - 1, 0))  # [b, c, k - 1 + s]
        mixed: Tensor = F.conv1d(signal, self.filter.unsqueeze(1), groups=channels)  # [b, c, s]
        # nn.Module.__call__ returns Any; annotate to keep the forward checked.
        output: Tensor = self.out_proj(mixed.permute(2, 0, 1) * F.silu(gate))
        return output


def build_model(groups: ParallelGroups | None = None) -> GPTModel:
    """A small model whose every layer uses the convolution mixer instead of attention."""
    config = TransformerConfig(hidden_size=64, num_layers=2)
    llama = torch_backend.llama_layer_submodules(
        AttentionConfig(num_heads=4), MlpConfig(ffn_hidden_size=128)
    )
    # Start from the standard spec and change one slot.
    conv_layer = replace(llama, mixer=CausalConvMixer.as_mixer_submodule(ConvMixerConfig()))
    blocks = BlockSequenceSpec(pattern=[TransformerLayer.as_layer_submodule(conv_layer)], num_layers=2)
    return GPTModel(
        config=config,
        vocab_size=256,
        submodules=torch_backend.gpt_submodules(blocks),
        groups=groups,
    )


def main() -> None:
    torch.manual_seed(0)
    model = build_model()
    print(model.summary())
    tokens = torch.randint(0, 256, (2, 33))
    loss = model(tokens[:, :-1], labels=tokens[:, 1:]).mean()
    loss.backward()
    print(f"loss {loss.item():.4f} (log(256) = {torch.log(torch.tensor(256.0)).item():.4f})")


if __name__ == "__main__":
    main()
