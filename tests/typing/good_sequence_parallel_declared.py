"""Right: children that declare how they take sequence-parallel input.

Covers ``bad_sequence_parallel_undeclared``: a class attribute, an instance attribute set in
``__init__`` (e.g. from ``config.sequence_parallel`` handling), and ``ClassVar``/``Final``
declarations all satisfy the Protocols.
"""

from dataclasses import replace
from typing import ClassVar, Final

from torch import Tensor, nn

from megaspec.backends import torch as torch_backend
from megaspec.builders import LayerSpec
from megaspec.context import LayerContext
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig


class WholeSequenceMixer(nn.Module):
    handles_sequence_parallel = False

    def __init__(self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> None:
        super().__init__()

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor:
        return hidden


class InstanceDeclaredMixer(WholeSequenceMixer):
    def __init__(self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> None:
        super().__init__(config=config, groups=groups, layer_index=layer_index)
        self.handles_sequence_parallel = True


class ClassVarMlp(nn.Module):
    handles_sequence_parallel: ClassVar[bool] = True

    def __init__(self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> None:
        super().__init__()

    def forward(self, hidden: Tensor) -> Tensor:
        return hidden


class FinalMlp(nn.Module):
    handles_sequence_parallel: Final = False

    def __init__(self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> None:
        super().__init__()

    def forward(self, hidden: Tensor) -> Tensor:
        return hidden


llama = torch_backend.llama_layer_submodules(
    AttentionConfig(num_heads=4), MlpConfig(ffn_hidden_size=128)
)
whole = replace(llama, mixer=WholeSequenceMixer, mlp=ClassVarMlp)
instance = replace(llama, mixer=InstanceDeclaredMixer, mlp=FinalMlp)
layer = LayerSpec(WholeSequenceMixer)
