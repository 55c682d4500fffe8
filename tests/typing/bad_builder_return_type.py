"""Wrong: builders that do not return a module with the slot's ``forward``.

A builder returning a plain function (no ``forward``), one returning a ``Tensor``, and one
returning ``None``.
"""

from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from megaspec.backends import torch as torch_backend
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig


def function_mlp(
    *, config: TransformerConfig, groups: ParallelGroups, layer_index: int
) -> Callable[[Tensor], Tensor]:
    return F.gelu


def tensor_mlp(*, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> Tensor:
    return torch.zeros(config.hidden_size)


def no_mlp(*, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> None:
    return None


llama = torch_backend.llama_layer_submodules(
    AttentionConfig(num_heads=4), MlpConfig(ffn_hidden_size=128)
)
returns_function = replace(llama, mlp=function_mlp)  # expect: arg-type
returns_tensor = replace(llama, mlp=tensor_mlp)  # expect: arg-type
returns_none = replace(llama, mlp=no_mlp)  # expect: arg-type
