"""Megatron-core ``GPTModel`` with the Transformer Engine layer spec (TP=1, or TP=K with sequence
parallelism under ``--tensor-parallel K``): bf16, and FP8.

The FP8 peers set Megatron's own ``TransformerConfig(fp8="hybrid", fp8_recipe=...)``, what
Megatron-LM's ``--fp8-format hybrid --fp8-recipe ...`` sets: ``TransformerBlock.forward`` then
runs the layers under TE's ``fp8_autocast`` with the recipe from ``megatron.core.fp8_utils.
get_fp8_recipe`` (``delayed``: TE ``DelayedScaling`` with Megatron's defaults, amax history 1,
``most_recent``; ``tensorwise``: TE ``Float8CurrentScaling``). Weights stay bf16 (no
``fp8_param``); the embedding, final norm, output layer and loss run in bf16 as in Megatron-LM.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.config import BenchConfig
from bench.peers.base import Built, Peer, PeerUnavailable, Variant, unavailable


def _import_megatron() -> dict[str, Any]:
    """The Megatron-core pieces this peer needs, by name; ``PeerUnavailable`` if missing."""
    try:
        import transformer_engine
        import transformer_engine.pytorch  # noqa: F401  (the TE layer spec needs it)
        import megatron.core
        from megatron.core import parallel_state
        from megatron.core.models.gpt import GPTModel
        from megatron.core.models.gpt.gpt_layer_specs import (
            get_gpt_layer_with_transformer_engine_spec,
        )
        from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed
        from megatron.core.transformer.transformer_config import TransformerConfig
    except Exception as error:  # any import failure means the peer cannot run
        raise unavailable(error) from error
    print(
        f"megatron-core {getattr(megatron.core, '__version__', '?')}, "
        f"transformer_engine {getattr(transformer_engine, '__version__', '?')}"
    )
    return {
        "parallel_state": parallel_state,
        "GPTModel": GPTModel,
        "layer_spec": get_gpt_layer_with_transformer_engine_spec,
        "manual_seed": model_parallel_cuda_manual_seed,
        "TransformerConfig": TransformerConfig,
    }


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that no one listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_parallel_state(
    parallel_state: Any, manual_seed: Callable[[int], None], tensor_parallel: int = 1
) -> Callable[[], None]:
    """Megatron's model-parallel state at ``tensor_parallel`` over the default group (a
    one-process NCCL group when none exists: TP=1 without torchrun); returns the function
    ending what it started."""
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    created_group = not dist.is_initialized()
    if created_group:
        # A fresh port each time: several Megatron peers (bf16, FP8) start and end a group in
        # one process, and a port just closed may still be held by the old store's socket.
        dist.init_process_group(
            backend="nccl", init_method=f"tcp://127.0.0.1:{_free_port()}", world_size=1, rank=0
        )
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tensor_parallel, pipeline_model_parallel_size=1
    )
    manual_seed(1234)

    def cleanup() -> None:
        parallel_state.destroy_model_parallel()
        if created_group:
            dist.destroy_process_group()

    return cleanup


# Megatron's fp8_recipe name for each recipe the FP8 peers offer (TE's class in the comment).
FP8_RECIPES = {"delayed": "delayed", "current": "tensorwise"}  # DelayedScaling, Float8CurrentScaling


def _megatron_config(config: BenchConfig, fused: bool, TransformerConfig: Any, fp8: str | None = None) -> Any:
    """Megatron's ``TransformerConfig`` for ``config``'s Llama shape; ``fp8`` is a key of
    ``FP8_RECIPES`` (FP8 format ``hybrid``: E4M3 forward, E5M2 gradients) or ``None`` (bf16)."""
    precision: dict[str, Any] = {}
    if fp8 is not None:
        precision = {"fp8": "hybrid", "fp8_recipe": FP8_RECIPES[fp8]}
    return TransformerConfig(
        num_layers=config.num_layers,
        hidden_size=config.hidden_size,
        num_attention_heads=config.num_heads,
        num_query_groups=config.num_kv_heads,
        ffn_hidden_size=config.ffn_hidden_size,
        normalization="RMSNorm",
        layernorm_epsilon=config.norm_epsilon,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=config.init_std,
        tensor_model_parallel_size=config.tensor_parallel,
        sequence_parallel=config.tensor_parallel > 1,
        bf16=True,
        params_dtype=torch.bfloat16,
        # Megatron-LM's pretrain_gpt.py turns these on unless told otherwise.
        bias_activation_fusion=fused,
        bias_dropout_fusion=fused,
        masked_softmax_fusion=fused,
        apply_rope_fusion=fused,
        **precision,
    )


def _megatron_model(
    config: BenchConfig, device: torch.device, fused: bool, parts: dict[str, Any], fp8: str | None
) -> Any:
    """Megatron's ``GPTModel`` (untied embeddings, RoPE) on ``device``, in train mode."""
    model = parts["GPTModel"](
        config=_megatron_config(config, fused, parts["TransformerConfig"], fp8),
        transformer_layer_spec=parts["layer_spec"](),
        vocab_size=config.vocab_size,
        max_sequence_length=config.sequence,
        pre_process=True,
        post_process=True,
        parallel_output=True,
        share_embeddings_and_output_weights=False,
        position_embedding_type="rope",
        rotary_percent=1.0,
        rotary_base=int(config.rotary_base),
    )
    model.to(device)
    model.train()
    return model


def build_megatron(
    config: BenchConfig, device: torch.device, *, fused: bool, fp8: str | None = None
) -> Built:
    """Megatron-core GPTModel with the TE layer spec, tensor- and sequence-parallel over the
    torchrun processes at ``config.tensor_parallel > 1`` (else on a one-process group).

    ``fused`` turns on what Megatron-LM's pretrain_gpt.py enables by default (bias-SwiGLU,
    bias-dropout-add and RoPE fusions); ``fp8`` (a key of ``FP8_RECIPES``) trains the layers in
    FP8 with that recipe. Raises ``PeerUnavailable`` without TE, Megatron or CUDA.
    """
    if fp8 is not None and fp8 not in FP8_RECIPES:
        raise ValueError(f"unknown FP8 recipe {fp8!r}; choose from {sorted(FP8_RECIPES)}")
    parts = _import_megatron()
    if device.type != "cuda":
        raise PeerUnavailable("Megatron-core with Transformer Engine needs a CUDA device")
    cleanup = start_parallel_state(parts["parallel_state"], parts["manual_seed"], config.tensor_parallel)
    try:
        model = _megatron_model(config, device, fused, parts, fp8)
    except BaseException:
        cleanup()
        raise
    positions = torch.arange(config.sequence, device=device).expand(config.batch, config.sequence)

    def loss(inputs: Tensor, labels: Tensor) -> Tensor:
        losses: Tensor = model(inputs, positions, None, labels=labels)  # [batch, sequence] float32
        return losses.mean()

    return Built(model=model, loss=loss, cleanup=cleanup)


def build_megatron_fused(config: BenchConfig, device: torch.device) -> Built:
    """Megatron with Megatron-LM's default fusions."""
    return build_megatron(config, device, fused=True)


def build_megatron_unfused(config: BenchConfig, device: torch.device) -> Built:
    """Megatron with the fusions off (the fallback if the fused build or first step fails)."""
    return build_megatron(config, device, fused=False)


MEGATRON = Peer(
    "megatron",
    "Megatron-core+TE",
    [Variant("", build_megatron_fused), Variant("fusions off", build_megatron_unfused)],
    in_small=False,
    tensor_parallel=True,
)


def _fp8_variants(recipe: str) -> list[Variant]:
    """The FP8 peer's builds: with Megatron-LM's fusions, then without."""

    def fused(config: BenchConfig, device: torch.device) -> Built:
        return build_megatron(config, device, fused=True, fp8=recipe)

    def unfused(config: BenchConfig, device: torch.device) -> Built:
        return build_megatron(config, device, fused=False, fp8=recipe)

    return [Variant("", fused), Variant("fusions off", unfused)]


MEGATRON_FP8 = Peer(
    "megatron-fp8", "Megatron+TE FP8 delay", _fp8_variants("delayed"), in_small=False, tensor_parallel=True
)
MEGATRON_FP8_CURRENT = Peer(
    "megatron-fp8-current",
    "Megatron+TE FP8 current",
    _fp8_variants("current"),
    in_small=False,
    tensor_parallel=True,
)
