"""Right: a plain ``torch.nn`` module enters a slot through a builder function.

Covers ``bad_torch_nn_modules``: the function takes the norm slot's keywords and maps them
to ``torch.nn.RMSNorm``'s constructor.
"""

from dataclasses import replace

import torch

from megaspec.backends import torch as torch_backend
from megaspec.parallel import InitMethod, ParallelGroups, init_tensor_
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig


def torch_rms_norm(
    *,
    hidden_size: int,
    config: TransformerConfig,
    groups: ParallelGroups,
    sharded_input: bool,
    init_method: InitMethod,
) -> torch.nn.RMSNorm:
    if sharded_input and groups.tensor_size > 1:
        raise ValueError("torch.nn.RMSNorm does not sum its gradients over tensor-parallel ranks")
    norm = torch.nn.RMSNorm(hidden_size, eps=config.norm_epsilon, dtype=config.params_dtype)
    init_tensor_(norm.weight, init_method)
    return norm


llama = torch_backend.llama_layer_submodules(
    AttentionConfig(num_heads=4), MlpConfig(ffn_hidden_size=128)
)
torch_norms = replace(llama, input_norm=torch_rms_norm, pre_mlp_norm=torch_rms_norm)
