"""GPTModel's training loss with ``fused_cross_entropy`` (the default) against the plain path
(full logits, then the loss): the same losses and gradients of every parameter, for an untied
output layer, tied embeddings and a LoRA-adapted output layer (checkpointed chunks), at
tensor-parallel size 1 and at size 2 with sequence parallelism (gloo); and what autograd
saves for the backward pass holds no ``[tokens, vocab]`` tensor."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

from megaspec.backends import torch as torch_backend
from megaspec.config import ModelConfig, resolve
from megaspec.models import GPTModel
from megaspec.parallel import (
    LinearCrossEntropyLayer,
    ParallelGroups,
    gather_full,
    seeded_initialization,
    shard_of_full,
    sharding_of,
)
from megaspec.peft import LoraConfig, add_adapter_to_linears
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig
from tests.helpers.distributed import run_on_ranks

VOCAB = 300  # padded to 384 (512 at tensor-parallel size 2)
KINDS = ("untied", "tied", "lora_output")
TOLERANCE = {"atol": 2e-6, "rtol": 1e-6}


def build(kind: str, groups: ParallelGroups, *, fused: bool, sequence_parallel: bool = False) -> GPTModel:
    """A two-layer model; ``lora_output`` adapts its output layer with a LoRA whose weights
    are moved off zero, so the layer is no ``ColumnParallelLinear`` and its LoRA matters."""
    config = TransformerConfig(
        hidden_size=32, num_layers=2, sequence_parallel=sequence_parallel,
        fused_cross_entropy=fused, cross_entropy_chunk_tokens=5,
    )  # fmt: skip
    submodules = torch_backend.llama_submodules(AttentionConfig(num_heads=4), MlpConfig(ffn_hidden_size=48), 2)
    with seeded_initialization(7):
        model = GPTModel(
            config=config, vocab_size=VOCAB, submodules=submodules, groups=groups,
            tie_embeddings=kind == "tied",
        )  # fmt: skip
        if kind == "lora_output":
            add_adapter_to_linears(model, LoraConfig(rank=4, alpha=8.0), ["output_layer"])
    if kind == "lora_output":
        assert not isinstance(model.output_layer, LinearCrossEntropyLayer)
        generator = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for name, parameter in sorted(model.named_parameters()):
                if ".adapters." in name:
                    full = 0.1 * torch.randn(
                        gather_full(parameter, sharding_of(parameter), groups).shape, generator=generator
                    )
                    sharding = sharding_of(parameter)
                    if sharding is not None:
                        full = shard_of_full(full, sharding, groups.tensor_rank, groups.tensor_size)
                    parameter.copy_(full)
    else:
        assert model.output_layer is None or isinstance(model.output_layer, LinearCrossEntropyLayer)
    return model


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs, labels (some ignored, one the last real entry) and per-token loss weights."""
    generator = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, VOCAB, (2, 9), generator=generator)
    labels = tokens[:, 1:].clone()
    labels[0, 3] = labels[1, 7] = -100
    labels[1, 0] = VOCAB - 1
    return tokens[:, :-1], labels, torch.rand(2, 8, generator=generator)


def run_case(kind: str, groups: ParallelGroups, *, fused: bool, sequence_parallel: bool, weighted: bool) -> dict[str, Any]:
    model = build(kind, groups, fused=fused, sequence_parallel=sequence_parallel)
    inputs, labels, weights = batch()
    losses = model(inputs, labels=labels)
    (losses * weights).sum().backward() if weighted else losses.mean().backward()
    grads = {}
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        full = gather_full(parameter.grad, sharding_of(parameter), groups)
        # Vocabulary-sized tensors without their padded rows (384 at size 1, 512 at size 2).
        grads[name] = full[:VOCAB] if full.shape[0] == model.padded_vocab_size else full
    return {"losses": losses.detach(), "grads": grads}


def assert_same(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    torch.testing.assert_close(actual["losses"], expected["losses"], **TOLERANCE)
    assert actual["grads"].keys() == expected["grads"].keys()
    for name, grad in expected["grads"].items():
        torch.testing.assert_close(actual["grads"][name], grad, **TOLERANCE, msg=name)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("weighted", [False, True])
def test_fused_loss_matches_plain(kind: str, weighted: bool) -> None:
    single = ParallelGroups.single()
    expected = run_case(kind, single, fused=False, sequence_parallel=False, weighted=weighted)
    actual = run_case(kind, single, fused=True, sequence_parallel=False, weighted=weighted)
    assert actual["losses"].shape == (2, 8) and actual["losses"].dtype == torch.float32
    assert actual["losses"][0, 3] == 0 and actual["losses"][1, 7] == 0
    assert_same(actual, expected)


def tensor_parallel_cases() -> dict[str, dict[str, Any]]:
    groups = ParallelGroups.tensor_parallel_over_world()
    return {
        kind: run_case(kind, groups, fused=True, sequence_parallel=True, weighted=True)
        for kind in KINDS
    }


def test_sequence_parallel_fused_loss_matches_single_process_plain_loss() -> None:
    per_rank = run_on_ranks(2, tensor_parallel_cases)
    single = ParallelGroups.single()
    for kind in KINDS:
        expected = run_case(kind, single, fused=False, sequence_parallel=False, weighted=True)
        for result in per_rank:
            assert_same(result[kind], expected)


def saved_bytes(model: GPTModel, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """Bytes of the distinct storages autograd saves for the backward pass, and the most
    elements any one saved tensor has."""
    storages: dict[int, int] = {}
    largest = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal largest
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        largest = max(largest, tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(inputs, labels=labels).mean()
    return sum(storages.values()), largest


@pytest.mark.parametrize("kind", ["untied", "tied"])
def test_fused_loss_saves_no_logits(kind: str) -> None:
    # 256 tokens x 384 (padded) vocabulary entries: the plain path saves float32 softmax
    # probabilities of 384 KiB; the fused one [tokens, hidden] and weight-sized gradients.
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (4, 65), generator=generator)
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    plain, plain_largest = saved_bytes(build(kind, ParallelGroups.single(), fused=False), inputs, labels)
    fused_model = build(kind, ParallelGroups.single(), fused=True)
    fused_model.config = replace(fused_model.config, cross_entropy_chunk_tokens=None)
    fused, fused_largest = saved_bytes(fused_model, inputs, labels)
    logits = 256 * 384
    assert plain_largest == logits
    assert fused_largest < logits // 2
    assert plain - fused >= logits * 4 - (256 + 384) * 32 * 4


def test_yaml_loss_settings_reach_the_model() -> None:
    from megaspec.training import build_model, resolve_run

    run = resolve_run(
        preset="tiny",
        overrides=[{"model": {"fused_cross_entropy": False, "cross_entropy_chunk_tokens": 64}}],
    )
    model = build_model(run)
    assert (model.config.fused_cross_entropy, model.config.cross_entropy_chunk_tokens) == (False, 64)
