"""What bench/generate.py times: the model shapes, and one decoder per way of generating.

Every decoder generates greedily (argmax, no sampling) from the same random prompts for the
same number of new tokens, with no end-of-sequence token, so every run produces exactly
``batch * new_tokens`` tokens:

- ``megaspec-cache``: ``megaspec.generate.generate`` with key/value caches (prefill, then one
  token per call);
- ``megaspec-recompute``: the same model and call with ``use_cache=False``: the whole
  sequence again for every new token (what a model with an uncached mixer does);
- ``hf``: Hugging Face ``LlamaForCausalLM.generate`` (sdpa attention, ``use_cache=True``,
  ``do_sample=False``) on a model of the same shape.

The weights are random (each framework initialises its own): speed does not depend on them,
and token-for-token agreement with transformers is tested in tests/test_generate.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.peers.base import PeerUnavailable, unavailable


@dataclass(frozen=True)
class DecodeConfig:
    """A Llama-style model (untied embeddings, no biases) and what it generates."""

    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    ffn_hidden_size: int
    vocab_size: int
    batch: int
    prompt_length: int
    new_tokens: int
    norm_epsilon: float = 1e-5
    rotary_base: float = 10000.0
    init_std: float = 0.02

    @property
    def generated_tokens(self) -> int:
        """Tokens one generation produces: ``batch * new_tokens``."""
        return self.batch * self.new_tokens


# fmt: off
SMALL = DecodeConfig(num_layers=2, hidden_size=128, num_heads=4, num_kv_heads=2, ffn_hidden_size=352,
                     vocab_size=512, batch=2, prompt_length=16, new_tokens=16)
"""Seconds on a CPU: the smoke test."""
CPU = DecodeConfig(num_layers=8, hidden_size=512, num_heads=8, num_kv_heads=2, ffn_hidden_size=1408,
                   vocab_size=32000, batch=1, prompt_length=128, new_tokens=64)
"""The CPU default: a 50M-parameter GQA model, one prompt."""
GPU = DecodeConfig(num_layers=16, hidden_size=2048, num_heads=16, num_kv_heads=16, ffn_hidden_size=5632,
                   vocab_size=32000, batch=8, prompt_length=512, new_tokens=128)
"""The CUDA default: bench/train_step.py's 1B model, in bf16."""
# fmt: on


@dataclass
class Decoder:
    """One way to generate: ``run()`` returns ``[batch, prompt + new_tokens]`` token ids."""

    name: str
    label: str
    run: Callable[[], Tensor]
    parameters: int


def random_prompts(config: DecodeConfig, device: torch.device) -> Tensor:
    """``[batch, prompt_length]`` token ids from a fixed seed (never 0, the padding id)."""
    generator = torch.Generator().manual_seed(0)
    shape = (config.batch, config.prompt_length)
    return torch.randint(1, config.vocab_size, shape, generator=generator).to(device)


def megaspec_model(config: DecodeConfig, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """megaspec's Llama spec (``megaspec.backends.torch.llama_submodules``), in eval mode."""
    from megaspec import AttentionConfig, GPTModel, MlpConfig, TransformerConfig
    from megaspec.backends.torch import llama_submodules
    from megaspec.parallel import seeded_initialization

    transformer = TransformerConfig(
        hidden_size=config.hidden_size, num_layers=config.num_layers,
        norm_epsilon=config.norm_epsilon, init_std=config.init_std, params_dtype=dtype,
    )  # fmt: skip
    attention = AttentionConfig(
        num_heads=config.num_heads,
        num_query_groups=config.num_kv_heads,
        rotary_base=config.rotary_base,
    )
    mlp = MlpConfig(ffn_hidden_size=config.ffn_hidden_size, activation=F.silu, gated=True)
    submodules = llama_submodules(attention, mlp, config.num_layers)
    with torch.device(device), seeded_initialization(0):
        model = GPTModel(config=transformer, vocab_size=config.vocab_size, submodules=submodules)
    return model.eval()


def megaspec_decoders(model: nn.Module, prompts: Tensor, config: DecodeConfig) -> list[Decoder]:
    """``megaspec-cache`` and ``megaspec-recompute`` on one model."""
    from megaspec.generate import generate
    from megaspec.models import GPTModel

    assert isinstance(model, GPTModel)
    parameters = sum(parameter.numel() for parameter in model.parameters())

    def decode(use_cache: bool) -> Callable[[], Tensor]:
        return lambda: generate(
            model,
            prompts,
            max_new_tokens=config.new_tokens,
            temperature=0.0,
            use_cache=use_cache,
        )

    return [
        Decoder("megaspec-cache", "megaspec (KV cache)", decode(True), parameters),
        Decoder("megaspec-recompute", "megaspec (recompute)", decode(False), parameters),
    ]


def hf_model(config: DecodeConfig, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A ``LlamaForCausalLM`` of the same shape with sdpa attention, in eval mode.

    Raises:
        PeerUnavailable: without transformers.
    """
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except Exception as error:  # any import failure means the peer cannot run
        raise unavailable(error) from error
    hf_config = LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        intermediate_size=config.ffn_hidden_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
        hidden_act="silu", max_position_embeddings=config.prompt_length + config.new_tokens,
        initializer_range=config.init_std, rms_norm_eps=config.norm_epsilon,
        rope_parameters={"rope_type": "default", "rope_theta": config.rotary_base},
        tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
        bos_token_id=1, eos_token_id=None, pad_token_id=0, attn_implementation="sdpa",
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):
        model: nn.Module = LlamaForCausalLM(hf_config)
    return model.to(dtype).eval()


def hf_decoder(model: nn.Module, prompts: Tensor, config: DecodeConfig) -> Decoder:
    """``hf``: ``model.generate``, greedy, with its key/value cache."""
    hf: Any = model
    # No end-of-sequence token and no length limit but max_new_tokens: every run is full.
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    mask = torch.ones_like(prompts)

    def run() -> Tensor:
        tokens: Tensor = hf.generate(
            input_ids=prompts, attention_mask=mask, max_new_tokens=config.new_tokens,
            do_sample=False, use_cache=True,
        )  # fmt: skip
        return tokens

    parameters = sum(parameter.numel() for parameter in model.parameters())
    return Decoder("hf", "HF transformers (generate)", run, parameters)


__all__ = [
    "CPU", "GPU", "SMALL", "DecodeConfig", "Decoder", "PeerUnavailable", "hf_decoder", "hf_model",
    "megaspec_decoders", "megaspec_model", "random_prompts",
]  # fmt: skip
