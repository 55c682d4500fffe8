"""A transformers ``LlamaForCausalLM`` and a megaspec model holding the same weights.

Only what the generation tests need to hold megaspec's padding and position conventions
against ``transformers``' ``generate``: one process, full RoPE, no QK-norm, untied
embeddings. The real importer lives in the library; this copy is written out by hand so that
the test does not depend on it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from megaspec.backends import torch as torch_backend
from megaspec.models import GPTModel
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig

VOCAB = 200
HIDDEN = 64
HEADS = 8
KV_HEADS = 2
FFN = 96
LAYERS = 2
EPS = 1e-5


def hf_llama(seed: int) -> Any:
    """A float32 ``LlamaForCausalLM`` with random weights (std 0.1: logits of a few units)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, rms_norm_eps=EPS,
        initializer_range=0.1, tie_word_embeddings=False, attn_implementation="sdpa",
        bos_token_id=1, eos_token_id=None, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def megaspec_copy(hf: Any) -> GPTModel:
    """A megaspec Llama with ``hf``'s weights: QKV packed per KV group, fc1 as ``[gate; up]``."""
    model = GPTModel(
        config=TransformerConfig(hidden_size=HIDDEN, num_layers=LAYERS, norm_epsilon=EPS),
        vocab_size=VOCAB,
        submodules=torch_backend.llama_submodules(
            AttentionConfig(num_heads=HEADS, num_query_groups=KV_HEADS, rotary_base=10000.0),
            MlpConfig(ffn_hidden_size=FFN, activation=F.silu, gated=True),
            LAYERS,
        ),
    )
    weights = hf.state_dict()
    head_dim, per_group = HIDDEN // HEADS, HEADS // KV_HEADS
    with torch.no_grad():
        model.get_parameter("embedding.weight")[:VOCAB] = weights["model.embed_tokens.weight"]
        model.get_parameter("output_layer.weight")[:VOCAB] = weights["lm_head.weight"]
        model.get_parameter("final_norm.weight").copy_(weights["model.norm.weight"])
        for index in range(LAYERS):
            hf_layer, layer = f"model.layers.{index}.", f"blocks.layers.{index}."

            def take(name: str) -> torch.Tensor:
                tensor: torch.Tensor = weights[hf_layer + name]
                return tensor

            query = take("self_attn.q_proj.weight").view(KV_HEADS, per_group * head_dim, HIDDEN)
            key = take("self_attn.k_proj.weight").view(KV_HEADS, head_dim, HIDDEN)
            value = take("self_attn.v_proj.weight").view(KV_HEADS, head_dim, HIDDEN)
            qkv = torch.cat((query, key, value), dim=1).reshape(-1, HIDDEN)
            model.get_parameter(layer + "mixer.linear_qkv.weight").copy_(qkv)
            model.get_parameter(layer + "mixer.linear_proj.weight").copy_(take("self_attn.o_proj.weight"))
            fc1 = torch.cat((take("mlp.gate_proj.weight"), take("mlp.up_proj.weight")))
            model.get_parameter(layer + "mlp.linear_fc1.weight").copy_(fc1)
            model.get_parameter(layer + "mlp.linear_fc2.weight").copy_(take("mlp.down_proj.weight"))
            model.get_parameter(layer + "input_norm.weight").copy_(take("input_layernorm.weight"))
            model.get_parameter(layer + "pre_mlp_norm.weight").copy_(take("post_attention_layernorm.weight"))
    return model.eval()
