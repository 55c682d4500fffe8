"""Right: activations that map a ``Tensor`` to a ``Tensor``.

Covers ``bad_activation_type``: names (the only form a YAML file or a saved config can
hold) and functions. A module *instance* such as ``torch.nn.SiLU()`` also fits (its
``__call__`` is typed ``Callable[..., Any]``) and works at run time.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from megaspec.transformer_config import MlpConfig


def squared_relu(hidden: Tensor) -> Tensor:
    return F.relu(hidden).square()


by_name = MlpConfig(ffn_hidden_size=128, activation="gelu_tanh")
silu = MlpConfig(ffn_hidden_size=128, activation=F.silu)
gelu = MlpConfig(ffn_hidden_size=128, activation=F.gelu, gated=False)
relu = MlpConfig(ffn_hidden_size=128, activation=torch.relu)
custom = MlpConfig(ffn_hidden_size=128, activation=squared_relu)
lambda_tanh = MlpConfig(ffn_hidden_size=128, activation=lambda hidden: torch.tanh(hidden))
module_instance = MlpConfig(ffn_hidden_size=128, activation=torch.nn.SiLU())
