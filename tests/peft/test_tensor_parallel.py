"""LoRA and (IA)^3 at tensor-parallel sizes 2 and 4 (spawned gloo processes) against size 1:
the same logits, the same adapter gradients (gathered to full), for column- and row-parallel
bases (a Llama-style model has both), with and without sequence parallelism, and merging on
each rank's shards gives the unmerged logits. In fp32, tolerance 1e-5."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from megaspec.config import ModelConfig, resolve
from megaspec.models import GPTModel
from megaspec.parallel import ParallelGroups, gather_full, seeded_initialization, sharding_of
from megaspec.peft import IA3Config, LoraConfig, add_adapter, adapter_parameters, merge, train_adapters_only
from tests.helpers.distributed import run_on_ranks

CONFIG = resolve(ModelConfig, overrides=[
    "hidden_size=64", "vocab_size=300", "decoder.num_blocks=2", "decoder.block.mixer.num_heads=8",
    "decoder.block.mixer.num_query_groups=4", "decoder.block.mlp.ffn_hidden_size=96",
    "decoder.block.mlp.bias=true",
])  # fmt: skip


def adapted_model(groups: ParallelGroups, sequence_parallel: bool) -> GPTModel:
    """The config's model with a LoRA (every mixer/MLP linear) and an (IA)^3 (fc1, fc2),
    their weights moved off their initial values so every one of them matters."""
    with seeded_initialization(3):
        model = CONFIG.build(groups, sequence_parallel=sequence_parallel)
        add_adapter(model, LoraConfig(rank=4, alpha=8.0))
        add_adapter(model, IA3Config(name="scales", targets=["*.linear_fc1", "*.linear_fc2"]))
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, parameter in sorted(model.named_parameters()):
            if ".adapters." not in name:
                continue
            full = gather_full(parameter, sharding_of(parameter), groups)
            noise = torch.randn(full.shape, generator=generator)
            full = 1 + 0.2 * noise if name.endswith("ia3_scale") else 0.1 * noise
            parameter.copy_(_local(full, parameter, groups))
    return model


def _local(full: torch.Tensor, parameter: torch.Tensor, groups: ParallelGroups) -> torch.Tensor:
    from megaspec.parallel import shard_of_full

    sharding = sharding_of(parameter)
    return full if sharding is None else shard_of_full(full, sharding, groups.tensor_rank, groups.tensor_size)


def run_case(groups: ParallelGroups, sequence_parallel: bool) -> dict[str, Any]:
    model = adapted_model(groups, sequence_parallel)
    train_adapters_only(model)
    tokens = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(1))
    loss = model(tokens[:, :-1], labels=tokens[:, 1:]).mean()
    loss.backward()
    with torch.no_grad():
        logits = model(tokens[:, :-1])
    grads = {
        name: gather_full(parameter.grad, sharding_of(parameter), groups)
        for name, parameter in model.named_parameters()
        if parameter.grad is not None
    }
    base_untouched = all(p.grad is None for n, p in model.named_parameters() if ".adapters." not in n)
    merge(model)
    with torch.no_grad():
        merged = model(tokens[:, :-1])
    return {"logits": logits, "loss": loss.detach(), "grads": grads, "merged": merged,
            "base_untouched": base_untouched, "adapters": len(adapter_parameters(model))}  # fmt: skip


def tensor_parallel_cases() -> dict[bool, dict[str, Any]]:
    groups = ParallelGroups.tensor_parallel_over_world()
    return {sequence_parallel: run_case(groups, sequence_parallel) for sequence_parallel in (False, True)}


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    return run_case(ParallelGroups.single(), False)


@pytest.mark.parametrize("tensor_parallel_size", [2, 4])
def test_adapters_match_single_process(tensor_parallel_size: int, reference: dict[str, Any]) -> None:
    # 2 layers x (4 LoRA linears x 2 + 2 (IA)^3 linears x 1) adapter tensors.
    assert reference["adapters"] == 2 * (4 * 2 + 2)
    assert reference["base_untouched"]
    for rank, cases in enumerate(run_on_ranks(tensor_parallel_size, tensor_parallel_cases)):
        for sequence_parallel, result in cases.items():
            where = f"tp={tensor_parallel_size}, sp={sequence_parallel}, rank {rank}"
            assert result["base_untouched"], where
            torch.testing.assert_close(result["logits"], reference["logits"], atol=1e-5, rtol=0, msg=where)
            torch.testing.assert_close(result["loss"], reference["loss"], atol=1e-5, rtol=0, msg=where)
            assert result["grads"].keys() == reference["grads"].keys(), where
            for name, grad in reference["grads"].items():
                torch.testing.assert_close(result["grads"][name], grad, atol=1e-5, rtol=0, msg=f"{name} ({where})")
            # Merged on this rank's shards: the same logits as unmerged.
            torch.testing.assert_close(result["merged"], reference["logits"], atol=1e-5, rtol=0, msg=where)
