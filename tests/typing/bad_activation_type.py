"""Wrong: ``MlpConfig.activation`` set to neither a known name nor ``Tensor -> Tensor``.

A misspelled name (``"swish"``: names are a ``Literal``), the module class ``torch.nn.SiLU``
(calling it builds a module; its argument is ``inplace: bool``), and a function on floats.
"""

import torch

from megaspec.transformer_config import MlpConfig


def scalar_relu(value: float) -> float:
    return max(value, 0.0)


unknown_name = MlpConfig(ffn_hidden_size=128, activation="swish")  # expect: arg-type
module_class = MlpConfig(ffn_hidden_size=128, activation=torch.nn.SiLU)  # expect: arg-type
on_floats = MlpConfig(ffn_hidden_size=128, activation=scalar_relu)  # expect: arg-type
