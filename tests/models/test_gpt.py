"""GPTModel on one process: the vocabulary is padded to a multiple of 128, padded entries take
no part in logits, loss or gradients, and the summary says so."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from megaspec.backends import torch as torch_backend
from megaspec.models import GPTModel
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig

HIDDEN = 32
ATTENTION = AttentionConfig(num_heads=4)
MLP_CONFIG = MlpConfig(ffn_hidden_size=48)


@pytest.mark.parametrize("tie_embeddings", [False, True])
def test_vocab_padding(tie_embeddings: bool) -> None:
    torch.manual_seed(0)
    model = GPTModel(
        config=TransformerConfig(hidden_size=HIDDEN, num_layers=1),
        vocab_size=300,
        submodules=torch_backend.llama_submodules(ATTENTION, MLP_CONFIG, 1),
        tie_embeddings=tie_embeddings,
    )
    assert model.padded_vocab_size == 384
    assert (
        "  note: vocabulary 300 padded to 384 (a multiple of tensor-parallel size 1 x 128); "
        "padded entries are excluded from logits and loss"
    ) in model.summary()
    embedding = model.get_parameter("embedding.weight")
    assert embedding.shape == (384, HIDDEN)
    assert torch.count_nonzero(embedding[300:]) == 0
    assert torch.count_nonzero(embedding[:300]) == 300 * HIDDEN
    if not tie_embeddings:
        assert torch.count_nonzero(model.get_parameter("output_layer.weight")[300:]) == 0

    tokens = torch.randint(0, 300, (2, 9))
    tokens[0, -1] = 299  # the last real entry
    labels = tokens[:, 1:].clone()
    labels[1, 2] = -100
    logits = model(tokens[:, :-1])
    assert logits.shape == (2, 8, 300)
    losses = model(tokens[:, :-1], labels=labels)
    assert losses.shape == (2, 8) and losses.dtype == torch.float32
    expected = F.cross_entropy(
        logits.reshape(-1, 300), labels.reshape(-1), reduction="none"
    ).reshape(2, 8)
    torch.testing.assert_close(losses, expected, rtol=0, atol=1e-6)
    assert losses[1, 2] == 0

    # Padded entries take no part in training either: their gradients are zero.
    losses.mean().backward()
    grad = embedding.grad
    assert grad is not None and torch.count_nonzero(grad[300:]) == 0
    if not tie_embeddings:
        output_grad = model.get_parameter("output_layer.weight").grad
        assert output_grad is not None and torch.count_nonzero(output_grad[300:]) == 0


def test_no_padding_note_when_vocab_is_a_multiple() -> None:
    model = GPTModel(
        config=TransformerConfig(hidden_size=HIDDEN, num_layers=1),
        vocab_size=256,
        submodules=torch_backend.llama_submodules(ATTENTION, MLP_CONFIG, 1),
    )
    assert model.padded_vocab_size == 256
    assert "padded" not in model.summary()


def test_whole_model_compiles_as_one_graph() -> None:
    # No graph breaks (fullgraph=True raises on one): configs, slot guards and the loss are
    # all traceable, so `torch.compile(model)` sees the whole step. The "eager" backend runs
    # Dynamo's tracing without generating kernels, which keeps the test fast.
    torch.manual_seed(0)
    model = GPTModel(
        config=TransformerConfig(hidden_size=64, num_layers=2, sequence_parallel=False),
        vocab_size=256,
        submodules=torch_backend.llama_submodules(AttentionConfig(num_heads=4), MlpConfig(ffn_hidden_size=128), 2),
    )
    tokens = torch.randint(0, 256, (2, 17))
    expected = model(tokens[:, :-1], labels=tokens[:, 1:])
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(tokens[:, :-1], labels=tokens[:, 1:]), expected, rtol=0, atol=0)
