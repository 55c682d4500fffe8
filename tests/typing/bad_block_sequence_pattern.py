"""Wrong: block-sequence patterns holding things that are not layer builders.

Layer submodules without ``TransformerLayer.as_layer_submodule``, the ``TransformerLayer``
class itself (its ``__init__`` also wants ``submodules``), a bare builder instead of a list,
a layer count given as a string, and a mixer builder where a layer builder belongs (a mixer
has a layer's forward signature but no ``layer_index``: no norms, no residual).
"""

from megaspec.backends import torch as torch_backend
from megaspec.layers import BlockSequenceSpec, TransformerLayer
from megaspec.transformer_config import AttentionConfig, MlpConfig

attention = AttentionConfig(num_heads=4)
mlp = MlpConfig(ffn_hidden_size=128)
llama_submodules = torch_backend.llama_layer_submodules(attention, mlp)
llama_layer = torch_backend.llama_layer(attention, mlp)

unwrapped = BlockSequenceSpec(pattern=[llama_submodules], num_layers=2)  # expect: list-item
layer_class = BlockSequenceSpec(pattern=[TransformerLayer], num_layers=2)  # expect: list-item
not_a_list = BlockSequenceSpec(pattern=llama_layer, num_layers=2)  # expect: arg-type
count_as_text = BlockSequenceSpec(pattern=[llama_layer], num_layers="2")  # expect: arg-type
mixer_as_layer = BlockSequenceSpec(pattern=[llama_submodules.mixer], num_layers=2)  # expect: list-item
