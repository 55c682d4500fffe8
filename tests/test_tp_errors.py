"""Clear errors for settings that do not divide over the tensor-parallel size (4 gloo ranks)."""

from __future__ import annotations

import torch

from megaspec.backends import torch as torch_backend
from megaspec.models import GPTModel
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig
from tests.helpers.distributed import run_on_ranks


def build(attention: AttentionConfig, mlp: MlpConfig, vocab_size: int = 256) -> GPTModel:
    return GPTModel(
        config=TransformerConfig(hidden_size=48, num_layers=1),
        vocab_size=vocab_size,
        submodules=torch_backend.llama_submodules(attention, mlp, 1),
        groups=ParallelGroups.tensor_parallel_over_world(),
    )


def error_of(attention: AttentionConfig, mlp: MlpConfig) -> str:
    try:
        build(attention, mlp)
    except ValueError as error:
        return str(error)
    return "no error"


def construction_outcomes() -> dict[str, str]:
    """Runs on every rank of a tensor-parallel group of size 4."""
    torch.manual_seed(0)
    good_mlp = MlpConfig(ffn_hidden_size=64)
    return {
        "heads": error_of(AttentionConfig(num_heads=6, num_query_groups=2), good_mlp),
        "groups": error_of(AttentionConfig(num_heads=8, num_query_groups=2), good_mlp),
        "ffn": error_of(AttentionConfig(num_heads=4), MlpConfig(ffn_hidden_size=66)),
        "summary": build(AttentionConfig(num_heads=4), good_mlp, vocab_size=300).summary(),
    }


def test_tensor_parallel_divisibility_errors() -> None:
    for outcome in run_on_ranks(4, construction_outcomes):
        assert outcome["heads"] == (
            "SelfAttention (layer 0): num_heads (6) is not divisible by the tensor-parallel size (4)"
        )
        assert outcome["groups"] == (
            "SelfAttention (layer 0): num_query_groups (2) is not divisible by the "
            "tensor-parallel size (4)"
        )
        assert outcome["ffn"] == (
            "MLP (layer 0): ffn_hidden_size (66) is not divisible by the tensor-parallel size (4)"
        )
        assert (
            "note: vocabulary 300 padded to 512 (a multiple of tensor-parallel size 4 x 128); "
            "padded entries are excluded from logits and loss"
        ) in outcome["summary"]
