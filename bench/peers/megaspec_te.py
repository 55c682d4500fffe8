"""megaspec's ``GPTModel`` on the Transformer Engine backend, in bf16 and in FP8.

``megaspec-te``: ``megaspec.backends.te.llama_submodules`` (norms fused into QKV and fc1,
TE attention) in bf16. ``megaspec-te-fp8-current`` / ``megaspec-te-fp8`` (delayed): the same
model with its forward in :func:`megaspec.backends.fp8.fp8_autocast` under the current
(tensorwise) or delayed scaling recipe; the backward runs outside the region, as the driver
calls it after ``loss``. The output layer stays bf16 in every variant. CUDA only; not in
``--small`` (the CPU smoke test). Tensor- and sequence-parallel at ``config.tensor_parallel > 1``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench.config import BenchConfig
from bench.peers.base import Built, Peer, PeerUnavailable, Variant, unavailable
from bench.peers.megaspec_gpt import parallel_groups
from megaspec.backends.fp8 import Fp8Config, Fp8Recipe, fp8_autocast


def build_megaspec_te(config: BenchConfig, device: torch.device, *, fp8: Fp8Config | None) -> Built:
    """megaspec's Llama spec on Transformer Engine in bf16, its forward in FP8 with ``fp8``."""
    if device.type != "cuda":
        raise PeerUnavailable("Transformer Engine needs CUDA")
    try:
        from megaspec.backends import te
    except ImportError as error:
        raise unavailable(error) from error
    from megaspec import AttentionConfig, GPTModel, MlpConfig, TransformerConfig

    transformer = TransformerConfig(
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        norm_epsilon=config.norm_epsilon,
        init_std=config.init_std,
        params_dtype=torch.bfloat16,
        fuse_elementwise=True,  # RoPE and SwiGLU compiled, as in the megaspec peer
        sequence_parallel=config.tensor_parallel > 1,
    )
    attention = AttentionConfig(
        num_heads=config.num_heads,
        num_query_groups=config.num_kv_heads,
        rotary_base=config.rotary_base,
    )
    mlp = MlpConfig(ffn_hidden_size=config.ffn_hidden_size, activation="silu", gated=True)
    with torch.device(device):
        model = GPTModel(
            config=transformer,
            vocab_size=config.vocab_size,
            submodules=te.llama_submodules(attention, mlp, config.num_layers),
            groups=parallel_groups(config),
        )
    model.train()
    print(model.summary())

    def loss(inputs: Tensor, labels: Tensor) -> Tensor:
        with fp8_autocast(fp8):
            losses: Tensor = model(inputs, labels=labels)  # [batch, sequence] float32
            return losses.mean()

    return Built(model=model, loss=loss)


def build_bf16(config: BenchConfig, device: torch.device) -> Built:
    """Transformer Engine modules in bf16."""
    return build_megaspec_te(config, device, fp8=None)


def _fp8_builder(recipe: Fp8Recipe) -> Variant:
    # Delayed scaling as Megatron-core's peer runs it (its defaults: amax history 1,
    # most recent), so the two FP8 rows use the same recipe.
    fp8 = Fp8Config(recipe=recipe, amax_history_len=1, amax_compute_algo="most_recent")

    def build(config: BenchConfig, device: torch.device) -> Built:
        return build_megaspec_te(config, device, fp8=fp8)

    return Variant("", build)


MEGASPEC_TE = Peer(
    "megaspec-te", "megaspec (TE, bf16)", [Variant("", build_bf16)], in_small=False, tensor_parallel=True
)
MEGASPEC_TE_FP8_CURRENT = Peer(
    "megaspec-te-fp8-current",
    "megaspec (TE, FP8 current scaling)",
    [_fp8_builder("current")],
    in_small=False,
    tensor_parallel=True,
)
MEGASPEC_TE_FP8 = Peer(
    "megaspec-te-fp8",
    "megaspec (TE, FP8 delayed scaling)",
    [_fp8_builder("delayed")],
    in_small=False,
    tensor_parallel=True,
)
