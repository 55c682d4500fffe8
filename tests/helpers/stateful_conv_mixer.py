"""A convolution mixer that decodes incrementally through the generic per-layer state.

:class:`CachedConvMixer` is ``examples/custom_mixer.py``'s ``CausalConvMixer`` plus what a
mixer needs to support an inference cache (see ``megaspec.inference``):

* it declares ``supports_inference_cache = True``;
* it keeps its last ``kernel_size - 1`` inputs per row in
  ``context.inference.layer_state(layer_index, ...)``, so a decode step convolves the new token
  with the cached history instead of recomputing the sequence;
* it zeroes the inputs at padded positions (``context.attention_mask``), so a left-padded row
  convolves exactly like its prompt alone (whose history is the zero padding of ``F.pad``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from examples.custom_mixer import CausalConvMixer, ConvMixerConfig
from megaspec.context import LayerContext
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import TransformerConfig


@dataclass
class ConvHistory:
    """The last ``kernel_size - 1`` convolution inputs of every row: ``[b, channels, k - 1]``."""

    inputs: Tensor


class CachedConvMixer(CausalConvMixer):
    """``CausalConvMixer`` that continues from its cached inputs between decode calls."""

    supports_inference_cache = True

    def __init__(
        self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int,
        conv: ConvMixerConfig,
    ) -> None:  # fmt: skip
        super().__init__(config=config, groups=groups, layer_index=layer_index, conv=conv)
        self.layer_index = layer_index

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor:
        value, gate = self.in_proj(hidden).chunk(2, dim=-1)  # [s, b, channels / tp] each
        if context.attention_mask is not None:
            # This call's columns of the mask: [b, s] -> [s, b, 1].
            real = context.attention_mask[:, -hidden.shape[0] :].t().unsqueeze(-1)
            value = value * real
        batch, channels = value.shape[1], value.shape[2]
        history = torch.zeros(batch, channels, self.kernel_size - 1, dtype=value.dtype, device=value.device)
        state = None
        if context.inference is not None:
            state = context.inference.layer_state(self.layer_index, ConvHistory, lambda: ConvHistory(history))
            history = state.inputs
        signal = torch.cat((history, value.permute(1, 2, 0)), dim=-1)  # [b, c, k - 1 + s]
        if state is not None:
            state.inputs = signal[..., signal.shape[-1] - (self.kernel_size - 1) :]
        mixed: Tensor = F.conv1d(signal, self.filter.unsqueeze(1), groups=channels)  # [b, c, s]
        output: Tensor = self.out_proj(mixed.permute(2, 0, 1) * F.silu(gate))
        return output
