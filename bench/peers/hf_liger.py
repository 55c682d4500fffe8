"""Hugging Face ``LlamaForCausalLM`` with Liger kernels: RoPE, SwiGLU, RMSNorm, fused linear CE.

``apply_liger_kernel_to_llama`` patches ``transformers.models.llama.modeling_llama`` in place
(module-level RoPE function, norm and MLP classes, ``LlamaForCausalLM.forward``). RoPE is looked
up there at every call, so the patches stay while this peer trains; its ``cleanup`` puts the
originals back, so that a later HF model in the same process is plain HF again.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from bench.config import BenchConfig
from bench.peers.base import Built, Peer, PeerUnavailable, Variant, unavailable
from bench.peers.hf_llama import new_llama

# What apply_liger_kernel_to_llama (liger-kernel 0.8) replaces in modeling_llama.
PATCHED_NAMES = ("apply_rotary_pos_emb", "LlamaRMSNorm", "LlamaMLP")


def _import_liger() -> tuple[Callable[..., None], ModuleType]:
    """Liger's Llama patcher and the HF module it patches; ``PeerUnavailable`` if missing."""
    try:
        from liger_kernel.transformers import apply_liger_kernel_to_llama
        from transformers.models.llama import modeling_llama
    except Exception as error:  # any import failure means the peer cannot run
        raise unavailable(error) from error
    print(f"liger-kernel {metadata.version('liger-kernel')}")
    patch: Callable[..., None] = apply_liger_kernel_to_llama
    return patch, modeling_llama


def _restorer(modeling_llama: ModuleType) -> Callable[[], None]:
    """A function putting back what Liger is about to patch in ``modeling_llama``."""
    originals = {name: getattr(modeling_llama, name) for name in PATCHED_NAMES}
    causal_lm: Any = modeling_llama.LlamaForCausalLM
    forward = vars(causal_lm).get("forward")  # None if the class inherits it

    def restore() -> None:
        for name, original in originals.items():
            setattr(modeling_llama, name, original)
        if forward is not None:
            causal_lm.forward = forward
        elif "forward" in vars(causal_lm):
            del causal_lm.forward

    return restore


def build_hf_liger(config: BenchConfig, device: torch.device) -> Built:
    """HF Llama built after ``apply_liger_kernel_to_llama``; the loss is Liger's fused linear CE.

    Liger's kernels are Triton GPU kernels: on a CPU this raises ``PeerUnavailable``.
    """
    if device.type != "cuda":
        raise PeerUnavailable(f"Liger's kernels are Triton kernels for CUDA GPUs (device: {device})")
    apply_liger_kernel_to_llama, modeling_llama = _import_liger()
    restore = _restorer(modeling_llama)
    try:
        apply_liger_kernel_to_llama(
            rope=True, swiglu=True, rms_norm=True, cross_entropy=False, fused_linear_cross_entropy=True
        )
        model: Any = new_llama(config, device)
        kinds = {type(model.model.norm).__name__, type(model.model.layers[0].mlp).__name__}
        if kinds != {"LigerRMSNorm", "LigerSwiGLUMLP"}:
            raise RuntimeError(f"Liger's patches did not take: norm and MLP are {sorted(kinds)}")
    except BaseException:
        restore()
        raise

    def loss(inputs: Tensor, labels: Tensor) -> Tensor:
        # `shift_labels`, not `labels`: ours are already the next tokens, and HF's `labels`
        # would be shifted once more. `skip_logits` makes sure the fused linear CE runs (it
        # never materialises the [tokens, vocab] logits; its softmax is float32).
        output = model(input_ids=inputs, shift_labels=labels, skip_logits=True, use_cache=False)
        mean: Tensor = output.loss
        return mean

    return Built(model=model, loss=loss, cleanup=restore)


HF_LIGER = Peer("hf-liger", "HF + Liger", [Variant("", build_hf_liger)])
