"""Hugging Face ``LlamaForCausalLM`` with sdpa attention in bf16, eager or ``model.compile()``d."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.config import BenchConfig
from bench.peers.base import Built, Peer, Variant, unavailable


def new_llama(config: BenchConfig, device: torch.device) -> nn.Module:
    """A freshly initialised bf16 ``LlamaForCausalLM`` of ``config``'s shape, in train mode.

    It is built from ``transformers.models.llama.modeling_llama`` as that module stands, so
    Liger's patches (applied before) take effect. Raises ``PeerUnavailable`` without
    transformers, and ``RuntimeError`` if HF picked another attention than sdpa.
    """
    try:
        import transformers
        from transformers import LlamaConfig, LlamaForCausalLM
    except Exception as error:  # any import failure means the peer cannot run
        raise unavailable(error) from error
    print(f"transformers {transformers.__version__}")
    hf_config = LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.ffn_hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        hidden_act="silu",
        max_position_embeddings=config.sequence,
        initializer_range=config.init_std,
        rms_norm_eps=config.norm_epsilon,
        rope_parameters={"rope_type": "default", "rope_theta": config.rotary_base},
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        attention_dropout=0.0,
        use_cache=False,
        attn_implementation="sdpa",
    )
    with torch.device(device):
        model: nn.Module = LlamaForCausalLM(hf_config)
    model.to(torch.bfloat16)
    model.train()
    settings: Any = model.config
    implementation = getattr(settings, "_attn_implementation", None)
    print(f"HF attention implementation: {implementation}; rope: {settings.rope_parameters}")
    if implementation != "sdpa":
        raise RuntimeError(f"HF model uses attention {implementation!r}, expected 'sdpa'")
    return model


def causal_lm_loss(model: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    """``loss(inputs, labels)`` of an HF causal LM (or a PEFT model around one): the mean
    cross-entropy of float32 logits, as HF's ``ForCausalLMLoss``, on labels already shifted."""

    def loss(inputs: Tensor, labels: Tensor) -> Tensor:
        logits: Tensor = model(input_ids=inputs, use_cache=False).logits  # [batch, sequence, vocab]
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten())

    return loss


def build_hf(config: BenchConfig, device: torch.device, *, compiled: bool) -> Built:
    """HF Llama; the loss is HF's own (float32 logits, mean cross-entropy) on shifted labels."""
    model = new_llama(config, device)
    if compiled:
        model.compile()  # the whole forward; the loss stays outside, as with the eager model
    return Built(model=model, loss=causal_lm_loss(model))


def build_hf_eager(config: BenchConfig, device: torch.device) -> Built:
    """HF Llama, eager."""
    return build_hf(config, device, compiled=False)


def build_hf_compiled(config: BenchConfig, device: torch.device) -> Built:
    """HF Llama under ``model.compile()`` (default inductor settings)."""
    return build_hf(config, device, compiled=True)


HF = Peer("hf", "HF transformers", [Variant("", build_hf_eager)])
# Opt-in: compiling 16 layers costs a minute or more of a 10-minute device call.
HF_COMPILED = Peer(
    "hf-compile", "HF (compile)", [Variant("", build_hf_compiled)], in_small=False, opt_in=True
)
