"""Wrong: mixers whose ``forward`` does not return a single ``Tensor``.

A Hugging Face-style attention returning ``(output, weights)`` and a mixer returning an
``int`` are rejected in the ``mixer`` slot although their constructors fit, also when the
class is bound with ``functools.partial``.
"""

import functools

from torch import Tensor, nn

from megaspec.backends import torch as torch_backend
from megaspec.context import LayerContext
from megaspec.layers import MLP, RMSNorm, TransformerLayerSubmodules
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import MlpConfig, TransformerConfig


class TupleMixer(nn.Module):
    def __init__(
        self,
        *,
        config: TransformerConfig,
        groups: ParallelGroups,
        layer_index: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()

    def forward(self, hidden: Tensor, *, context: LayerContext) -> tuple[Tensor, Tensor]:
        return hidden, hidden


class IntMixer(nn.Module):
    def __init__(self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> None:
        super().__init__()

    def forward(self, hidden: Tensor, *, context: LayerContext) -> int:
        return 0


mlp = MLP.as_mlp_submodule(MlpConfig(ffn_hidden_size=128), torch_backend.mlp_submodules())
tuple_layer = TransformerLayerSubmodules(
    input_norm=RMSNorm,
    mixer=TupleMixer,  # expect: arg-type
    pre_mlp_norm=RMSNorm,
    mlp=mlp,
)
int_layer = TransformerLayerSubmodules(
    input_norm=RMSNorm,
    mixer=IntMixer,  # expect: arg-type
    pre_mlp_norm=RMSNorm,
    mlp=mlp,
)
partial_tuple_layer = TransformerLayerSubmodules(
    input_norm=RMSNorm,
    mixer=functools.partial(TupleMixer, dropout=0.1),  # expect: arg-type
    pre_mlp_norm=RMSNorm,
    mlp=mlp,
)
