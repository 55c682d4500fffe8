"""Tiny random Hugging Face models of each supported family, for the checkpoint tests.

Every family has grouped-query attention (4 heads, 2 KV groups), hidden 64, 2 layers and a
vocabulary of 300 (padded to 384 or 512 by megaspec). Weights are moved far from
transformers' initialisation, so each one matters to a logits comparison.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen3Config,
)

VOCAB = 300
COMMON: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": VOCAB,
    "max_position_embeddings": 64,
}
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    # Short, so the test sequences reach the rescaled (and the interpolated) frequencies.
    "original_max_position_embeddings": 16,
}
FAMILIES = ("llama3", "llama_tied", "mistral", "qwen2", "qwen3")


def family_config(family: str) -> PretrainedConfig:
    """The config of ``family``: Llama with llama3 RoPE scaling; Llama with tied embeddings
    and biases everywhere; Mistral without sliding window; Qwen2 (q/k/v biases); Qwen3
    (QK-norm, head_dim 32 where hidden / heads is 16)."""
    if family == "llama3":
        return LlamaConfig(**COMMON, rope_parameters=LLAMA3_ROPE)
    if family == "llama_tied":
        return LlamaConfig(**COMMON, tie_word_embeddings=True, attention_bias=True, mlp_bias=True)
    if family == "mistral":
        return MistralConfig(**COMMON, sliding_window=None)
    if family == "qwen2":
        return Qwen2Config(**COMMON)
    if family == "qwen3":
        return Qwen3Config(**COMMON, head_dim=32)
    raise ValueError(f"unknown family {family!r}")


def tiny_model(family: str, seed: int = 0) -> PreTrainedModel:
    """A random ``family`` model in eval mode, float32 on the CPU."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(family_config(family))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if name.endswith("norm.weight"):
                parameter.copy_(1.0 + 0.3 * noise)
            elif parameter.dim() == 1:
                parameter.copy_(0.1 * noise)
            else:
                parameter.copy_(noise / math.sqrt(parameter.shape[1]))
    return model.eval()


def save(model: PreTrainedModel, directory: Path, max_shard_size: str | None = None) -> Path:
    """``model.save_pretrained(directory)``, sharded when ``max_shard_size`` is given."""
    if max_shard_size is None:
        model.save_pretrained(directory)
    else:
        model.save_pretrained(directory, max_shard_size=max_shard_size)
    return directory


def tokens(batch: int = 2, sequence: int = 40) -> torch.Tensor:
    """Fixed token ids ``[batch, sequence]``."""
    return torch.randint(0, VOCAB, (batch, sequence), generator=torch.Generator().manual_seed(7))


def hf_logits(model: PreTrainedModel, input_ids: torch.Tensor) -> torch.Tensor:
    """The model's logits ``[batch, sequence, vocab]``."""
    with torch.no_grad():
        logits: torch.Tensor = model(input_ids).logits
    return logits
