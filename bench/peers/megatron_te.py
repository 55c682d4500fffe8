"""Megatron-core ``GPTModel`` with the Transformer Engine layer spec (bf16, TP=1)."""

from __future__ import annotations

import os
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


def start_parallel_state(parallel_state: Any, manual_seed: Callable[[int], None]) -> Callable[[], None]:
    """A one-process NCCL group and Megatron's TP=1 state; returns the function ending both."""
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    created_group = not dist.is_initialized()
    if created_group:
        dist.init_process_group(backend="nccl", world_size=1, rank=0)
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=1, pipeline_model_parallel_size=1
    )
    manual_seed(1234)

    def cleanup() -> None:
        parallel_state.destroy_model_parallel()
        if created_group:
            dist.destroy_process_group()

    return cleanup


def _megatron_config(config: BenchConfig, fused: bool, TransformerConfig: Any) -> Any:
    """Megatron's ``TransformerConfig`` for ``config``'s Llama shape."""
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
        bf16=True,
        params_dtype=torch.bfloat16,
        # Megatron-LM's pretrain_gpt.py turns these on unless told otherwise.
        bias_activation_fusion=fused,
        bias_dropout_fusion=fused,
        masked_softmax_fusion=fused,
        apply_rope_fusion=fused,
    )


def _megatron_model(config: BenchConfig, device: torch.device, fused: bool, parts: dict[str, Any]) -> Any:
    """Megatron's ``GPTModel`` (untied embeddings, RoPE) on ``device``, in train mode."""
    model = parts["GPTModel"](
        config=_megatron_config(config, fused, parts["TransformerConfig"]),
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


def build_megatron(config: BenchConfig, device: torch.device, *, fused: bool) -> Built:
    """Megatron-core GPTModel with the TE layer spec on a one-process group.

    ``fused`` turns on what Megatron-LM's pretrain_gpt.py enables by default (bias-SwiGLU,
    bias-dropout-add and RoPE fusions). Raises ``PeerUnavailable`` without TE, Megatron or CUDA.
    """
    parts = _import_megatron()
    if device.type != "cuda":
        raise PeerUnavailable("Megatron-core with Transformer Engine needs a CUDA device")
    cleanup = start_parallel_state(parts["parallel_state"], parts["manual_seed"])
    try:
        model = _megatron_model(config, device, fused, parts)
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
)
