"""Example: a Llama model on Transformer Engine, one slot switched back to PyTorch, FP8 training,
and its weights moved to the torch backend.

* ``te.llama_submodules`` is the torch backend's ``llama_submodules`` with Transformer Engine
  modules: RMSNorms fused into the QKV and fc1 linears (``LayerNormLinear``; the layer's norm
  slots hold ``IdentityNorm``), TE attention, TE linears.
* A spec is plain dataclasses: ``replace`` puts the torch backend's MLP (and its RMSNorm) into
  the te layer, and mypy checks that each slot still gets a builder of its kind.
* ``fp8_autocast(Fp8Config(recipe="current"))`` runs the forward's TE GEMMs in FP8 (Hopper or
  newer); ``recipe="delayed"`` uses an amax history instead.
* ``portable_state_dict`` names the weights as the torch backend does, so they load into a
  torch-backend model (``load_portable_state_dict``) and back.

Needs a CUDA GPU and the ``te`` extra (``pip install 'megaspec[te]'``); without them importing
``megaspec.backends.te`` raises an ``ImportError`` naming the extra.

Run: ``python -m examples.te_backend``
"""

from __future__ import annotations

from dataclasses import replace

import torch

from megaspec.backends import te
from megaspec.backends import torch as torch_backend
from megaspec.backends.fp8 import Fp8Config, fp8_autocast
from megaspec.backends.portable import load_portable_state_dict, portable_state_dict
from megaspec.layers import MLP, BlockSequenceSpec, RMSNorm, TransformerLayer
from megaspec.models import GPTModel, GPTSubmodules
from megaspec.parallel import seeded_initialization
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig

VOCAB_SIZE = 256
NUM_LAYERS = 2
ATTENTION = AttentionConfig(num_heads=4, num_query_groups=2)
MLP_CONFIG = MlpConfig(ffn_hidden_size=256)  # FP8 GEMMs want multiples of 16


def mixed_submodules() -> GPTSubmodules:
    """Transformer Engine attention (norm fused into QKV) with the torch backend's MLP."""
    layer = replace(
        te.llama_layer_submodules(ATTENTION, MLP_CONFIG),
        pre_mlp_norm=RMSNorm,
        mlp=MLP.as_mlp_submodule(MLP_CONFIG, torch_backend.mlp_submodules()),
    )
    blocks = BlockSequenceSpec(pattern=[TransformerLayer.as_layer_submodule(layer)], num_layers=NUM_LAYERS)
    return te.gpt_submodules(blocks)


def build(submodules: GPTSubmodules, seed: int = 0) -> GPTModel:
    config = TransformerConfig(hidden_size=128, num_layers=NUM_LAYERS, params_dtype=torch.bfloat16)
    with seeded_initialization(seed), torch.device("cuda"):
        return GPTModel(config=config, vocab_size=VOCAB_SIZE, submodules=submodules)


def train(model: GPTModel, fp8: Fp8Config | None, steps: int = 30) -> float:
    """``steps`` AdamW updates on one batch of counting sequences; returns the last loss."""
    starts = torch.randint(0, VOCAB_SIZE, (4, 1))
    tokens = ((starts + torch.arange(65)) % VOCAB_SIZE).cuda()  # [4, 65]: each next = +1
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    loss = torch.zeros(())
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        with fp8_autocast(fp8):  # the forward (and loss) in FP8; None: plain bf16
            loss = model(tokens[:, :-1], labels=tokens[:, 1:]).mean()
        torch.autograd.backward(loss)  # outside the autocast region
        optimizer.step()
    return float(loss.item())


def main() -> None:
    torch.manual_seed(0)
    model = build(te.llama_submodules(ATTENTION, MLP_CONFIG, NUM_LAYERS))
    print(model.summary())
    print(f"te, bf16: loss {train(model, None):.4f}")
    import transformer_engine.pytorch as te_pytorch  # only to ask whether this GPU has FP8

    available, reason = te_pytorch.is_fp8_available(return_reason=True)
    if available:
        fp8_model = build(te.llama_submodules(ATTENTION, MLP_CONFIG, NUM_LAYERS))
        print(f"te, FP8 current scaling: loss {train(fp8_model, Fp8Config(recipe='current')):.4f}")
    else:
        print(f"FP8 skipped: this GPU has no FP8 ({reason})")
    mixed = build(mixed_submodules())
    print(f"te attention + torch MLP, bf16: loss {train(mixed, None):.4f}")
    # The te model's weights, under the torch backend's names, in a torch-backend model.
    portable = build(torch_backend.llama_submodules(ATTENTION, MLP_CONFIG, NUM_LAYERS), seed=1)
    load_portable_state_dict(portable, portable_state_dict(model))
    tokens = torch.randint(0, VOCAB_SIZE, (2, 32)).cuda()
    with torch.no_grad():
        gap = (model(tokens).float() - portable(tokens).float()).abs().max().item()
    print(f"torch backend with the te weights: largest logit difference {gap:.3f} (bf16 rounding)")


if __name__ == "__main__":
    main()
