"""Example (b): a subclass of ``MLP`` that needs one more constructor argument.

``ScaledResidualMLP`` multiplies the MLP's output by a constant ``residual_scale`` before the
layer adds it to the residual stream (depth-scaled residual branches, as in MiniCPM's
``scale_depth / sqrt(num_layers)``): with the same weights,
``ScaledResidualMLP(x) == residual_scale * MLP(x)``.

Its ``__init__`` takes the keywords of :class:`megaspec.layers.MLP` plus ``residual_scale``.
The parent (``TransformerLayer``) passes only the ``mlp`` slot's keywords (``config``,
``groups``, ``layer_index``), so the settings it does not know about are bound with
``functools.partial``. mypy checks the keywords the partial binds where it is written (a
misspelled or mistyped one is a type error), but not that the keywords it leaves unbound are
exactly the :class:`megaspec.builders.MlpBuilder` ones: forgetting ``residual_scale`` here
passes mypy and fails as a ``TypeError`` when the layer is built.

The scale is applied after ``linear_fc2``'s reduction over tensor-parallel ranks; scaling
commutes with that sum, so tensor-parallel runs compute exactly what TP=1 does.

Run: ``python -m examples.mlp_subclass_partial``
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace

import torch
from torch import Tensor

from megaspec.backends import torch as torch_backend
from megaspec.layers import MLP, BlockSequenceSpec, MlpSubmodules, TransformerLayer
from megaspec.models import GPTModel
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig

VOCAB_SIZE = 256


class ScaledResidualMLP(MLP):
    """:class:`~megaspec.layers.MLP` whose output is multiplied by ``residual_scale``.

    Shapes: ``[s, b, hidden] -> [s, b, hidden]`` (``s / tp`` when sequence parallel).

    Raises:
        ValueError: if ``residual_scale`` is not a positive finite number, or for any
            setting :class:`~megaspec.layers.MLP` rejects.
    """

    def __init__(
        self,
        *,
        config: TransformerConfig,
        mlp: MlpConfig,
        groups: ParallelGroups,
        layer_index: int,
        submodules: MlpSubmodules,
        residual_scale: float,
    ) -> None:
        if not (math.isfinite(residual_scale) and residual_scale > 0):
            raise ValueError(
                f"ScaledResidualMLP (layer {layer_index}): residual_scale must be a positive "
                f"finite number, got {residual_scale}"
            )
        super().__init__(
            config=config, mlp=mlp, groups=groups, layer_index=layer_index, submodules=submodules
        )
        self.residual_scale = residual_scale

    def forward(self, hidden: Tensor) -> Tensor:
        return super().forward(hidden) * self.residual_scale

    def extra_repr(self) -> str:
        return f"residual_scale={self.residual_scale}"


def build_model(residual_scale: float, num_layers: int = 2) -> GPTModel:
    """A small Llama-style model whose every MLP is a :class:`ScaledResidualMLP`."""
    config = TransformerConfig(hidden_size=64, num_layers=num_layers)
    mlp_config = MlpConfig(ffn_hidden_size=128)
    llama = torch_backend.llama_layer_submodules(AttentionConfig(num_heads=4), mlp_config)
    # The partial binds what the mlp slot does not pass; mypy checks it against MlpBuilder.
    scaled_mlp = functools.partial(
        ScaledResidualMLP,
        mlp=mlp_config,
        submodules=torch_backend.mlp_submodules(),
        residual_scale=residual_scale,
    )
    layer = TransformerLayer.as_layer_submodule(replace(llama, mlp=scaled_mlp))
    blocks = BlockSequenceSpec(pattern=[layer], num_layers=num_layers)
    return GPTModel(
        config=config, vocab_size=VOCAB_SIZE, submodules=torch_backend.gpt_submodules(blocks)
    )


def main() -> None:
    torch.manual_seed(0)
    num_layers = 2
    residual_scale = 1.4 / math.sqrt(num_layers)
    model = build_model(residual_scale, num_layers)
    print(model.summary())
    first_mlp = model.blocks.layers[0].get_submodule("mlp")
    print(f"mlp of layer 0: {first_mlp.extra_repr()}")
    tokens = torch.randint(0, VOCAB_SIZE, (2, 33))
    loss = model(tokens[:, :-1], labels=tokens[:, 1:]).mean()
    loss.backward()
    print(f"loss {loss.item():.4f} (log({VOCAB_SIZE}) = {math.log(VOCAB_SIZE):.4f})")


if __name__ == "__main__":
    main()
