"""megaspec's ``GPTModel`` with the Llama spec, through the public API only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.config import BenchConfig
from bench.peers.base import Built, Peer, Variant
from megaspec.parallel import ParallelGroups


def parallel_groups(config: BenchConfig) -> ParallelGroups:
    """One process, or every torchrun process sharing each layer (``config.tensor_parallel``)."""
    if config.tensor_parallel == 1:
        return ParallelGroups.single()
    return ParallelGroups.tensor_parallel_over_world()  # the driver checked the world size


def build_megaspec(
    config: BenchConfig, device: torch.device, *, fused: bool, compile_layers: bool = False
) -> Built:
    """megaspec's Llama spec in bf16; ``fused`` compiles RoPE and SwiGLU (``fuse_elementwise``);
    ``compile_layers`` compiles each whole ``TransformerLayer`` (``nn.Module.compile``: one
    guarded call per layer and direction instead of one per fused region, for less host time
    per step); tensor- and sequence-parallel over the torchrun processes at
    ``config.tensor_parallel > 1``."""
    from megaspec import AttentionConfig, GPTModel, MlpConfig, TransformerConfig
    from megaspec.backends.torch import llama_submodules

    transformer = TransformerConfig(
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        norm_epsilon=config.norm_epsilon,
        init_std=config.init_std,
        params_dtype=torch.bfloat16,
        fuse_elementwise=fused,
        sequence_parallel=config.tensor_parallel > 1,
    )
    attention = AttentionConfig(
        num_heads=config.num_heads,
        num_query_groups=config.num_kv_heads,
        rotary_base=config.rotary_base,
    )
    mlp = MlpConfig(ffn_hidden_size=config.ffn_hidden_size, activation=F.silu, gated=True)
    with torch.device(device):
        model = GPTModel(
            config=transformer,
            vocab_size=config.vocab_size,
            submodules=llama_submodules(attention, mlp, config.num_layers),
            groups=parallel_groups(config),
        )
    model.train()
    if compile_layers:
        for layer in model.blocks.layers:
            layer.compile()
    print(model.summary())

    def loss(inputs: Tensor, labels: Tensor) -> Tensor:
        losses: Tensor = model(inputs, labels=labels)  # [batch, sequence] float32
        return losses.mean()

    return Built(model=model, loss=loss)


def build_megaspec_fused(config: BenchConfig, device: torch.device) -> Built:
    """megaspec with ``fuse_elementwise=True``."""
    return build_megaspec(config, device, fused=True)


def build_megaspec_eager(config: BenchConfig, device: torch.device) -> Built:
    """megaspec with ``fuse_elementwise=False``."""
    return build_megaspec(config, device, fused=False)


def build_megaspec_compiled_layers(config: BenchConfig, device: torch.device) -> Built:
    """megaspec with ``fuse_elementwise=True`` and each layer under ``torch.compile``."""
    return build_megaspec(config, device, fused=True, compile_layers=True)


MEGASPEC = Peer("megaspec", "megaspec", [Variant("", build_megaspec_fused)], tensor_parallel=True)
MEGASPEC_EAGER = Peer(
    "megaspec-eager", "megaspec (eager)", [Variant("", build_megaspec_eager)], tensor_parallel=True
)
# Opt-in: an experiment on host time (compiling a layer takes a minute on a GPU machine).
MEGASPEC_COMPILED_LAYERS = Peer(
    "megaspec-compile-layers",
    "megaspec (layers compiled)",
    [Variant("", build_megaspec_compiled_layers)],
    in_small=False,
    opt_in=True,
    tensor_parallel=True,
)
