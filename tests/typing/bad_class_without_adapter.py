"""Wrong: classes put directly in a slot although their ``__init__`` wants other keywords.

``MLP`` also needs ``mlp`` and ``submodules``, ``SelfAttention`` needs ``attention`` and
``submodules``, and the example's ``CausalConvMixer`` needs ``conv``: each must go through
its ``as_*_submodule`` adapter (or ``functools.partial``).
"""

from examples.custom_mixer import CausalConvMixer
from megaspec.layers import MLP, RMSNorm, SelfAttention, TransformerLayerSubmodules

layer = TransformerLayerSubmodules(
    input_norm=RMSNorm,
    mixer=SelfAttention,  # expect: arg-type
    pre_mlp_norm=RMSNorm,
    mlp=MLP,  # expect: arg-type
)
conv_layer = TransformerLayerSubmodules(
    input_norm=RMSNorm,
    mixer=CausalConvMixer,  # expect: arg-type
    pre_mlp_norm=RMSNorm,
    mlp=MLP,  # expect: arg-type
)
