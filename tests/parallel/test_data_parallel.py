"""Layout equivalence: data parallel (FSDP2 and DDP), tensor parallel and both at once train
exactly like one process on the same global batch (spawned gloo processes, float32).

For 10 AdamW steps with gradient clipping that clips every step (so the global gradient
norm across ``dp`` and ``tp`` is exercised), DP=2, TP=2 and DP=2 x TP=2 must reproduce one
process's losses and pre-clipping gradient norms within rtol 1e-5, atol 1e-6; clipping that
ignores the ``tp`` dimension must not.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

from megaspec.config import (
    AttentionMixerConfig,
    BlockConfig,
    FeedForwardConfig,
    ModelConfig,
    RepeatSequenceConfig,
)
from megaspec.models import GPTModel
from megaspec.optim import parameter_groups
from megaspec.parallel import (
    ParallelGroups,
    data_parallel,
    init_parallel,
    local_batch,
    seeded_initialization,
    sharding_of,
    train_step,
)
from tests.helpers.distributed import run_on_ranks

# Biases make row-parallel biases replicated parameters next to the norm weights.
CONFIG = ModelConfig(
    hidden_size=32,
    vocab_size=256,
    decoder=RepeatSequenceConfig(
        num_blocks=2,
        block=BlockConfig(
            mixer=AttentionMixerConfig(num_heads=4, bias=True),
            mlp=FeedForwardConfig(ffn_hidden_size=64, bias=True),
        ),
    ),
)
STEPS, GLOBAL_BATCH, SEQUENCE = 10, 4, 8
MAX_NORM = 0.5  # below every step's gradient norm (checked), so every step clips
RTOL, ATOL = 1e-5, 1e-6

History = dict[str, list[float]]


def global_batches() -> torch.Tensor:
    """[steps, global_batch, sequence + 1] random byte tokens, the same on every rank."""
    generator = torch.Generator().manual_seed(7)
    return torch.randint(0, 256, (STEPS, GLOBAL_BATCH, SEQUENCE + 1), generator=generator)


def train(model: torch.nn.Module, groups: ParallelGroups, clip_groups: ParallelGroups) -> History:
    """10 steps on this replica's slice of each global batch; the global losses and norms."""
    optimizer = torch.optim.AdamW(parameter_groups(model, learning_rate=1e-2, weight_decay=0.1))
    history: History = {"loss": [], "grad_norm": []}
    for tokens in global_batches():
        rows = local_batch(tokens, groups)
        result = train_step(
            model, optimizer, rows[:, :-1], rows[:, 1:], clip_groups, max_norm=MAX_NORM
        )
        history["loss"].append(float(result.loss))
        history["grad_norm"].append(float(result.grad_norm))
    return history


def build(groups: ParallelGroups) -> GPTModel:
    with seeded_initialization(0):
        return CONFIG.build(groups)


def train_layouts(tensor_parallel_size: int, runs: list[tuple[str, bool]]) -> list[History]:
    """On each rank: one training per (engine, clip ignores tp) on a fresh model."""
    histories = []
    for engine, ignore_tensor_parallel in runs:
        groups = init_parallel(tensor_parallel_size)
        data_size = torch.distributed.get_world_size() // tensor_parallel_size
        assert (groups.data_size, groups.tensor_size) == (data_size, tensor_parallel_size)
        assert (groups.tensor is None) == (tensor_parallel_size == 1)  # layers skip collectives
        model: torch.nn.Module = build(groups)
        shardings = {name: sharding_of(p) for name, p in model.named_parameters()}
        model = data_parallel(model, groups, engine="ddp" if engine == "ddp" else "fsdp")
        # FSDP2 replaces the parameters; megaspec's tags must survive it.
        names = {n.removeprefix("module."): sharding_of(p) for n, p in model.named_parameters()}
        assert names == shardings
        # Groups without the tp group: clipping that ignores the tp shards' norms.
        clip_groups = (
            ParallelGroups(data=groups.data, mesh=groups.mesh) if ignore_tensor_parallel else groups
        )
        histories.append(train(model, groups, clip_groups))
    return histories


@pytest.fixture(scope="module")
def one_process() -> History:
    groups = ParallelGroups.single()
    return train(build(groups), groups, groups)


def assert_same(history: History, reference: History, what: str) -> None:
    for key in ("loss", "grad_norm"):
        if os.environ.get("SHOW_DIFFERENCES"):
            difference = (torch.tensor(history[key]) - torch.tensor(reference[key])).abs()
            print(what, key, f"max abs difference {float(difference.max()):.3g}")
        torch.testing.assert_close(
            torch.tensor(history[key]), torch.tensor(reference[key]), rtol=RTOL, atol=ATOL,
            msg=lambda message: f"{what}, {key}: {message}",
        )  # fmt: skip


def test_the_reference_clips_every_step(one_process: History) -> None:
    assert min(one_process["grad_norm"]) > MAX_NORM, one_process["grad_norm"]


def test_dp2_and_tp2_match_one_process(one_process: History) -> None:
    runs = [("fsdp", False), ("ddp", False)]
    for rank, (data_only, tensor_only) in enumerate(run_on_ranks(2, train_layouts_two_ways, runs)):
        for (engine, _), history in zip(runs, data_only, strict=True):
            assert_same(history, one_process, f"DP=2 {engine}, rank {rank}")
        for (engine, _), history in zip(runs, tensor_only, strict=True):
            assert_same(history, one_process, f"TP=2 {engine}, rank {rank}")


def train_layouts_two_ways(runs: list[tuple[str, bool]]) -> tuple[list[History], list[History]]:
    """On 2 ranks: DP=2 x TP=1, then DP=1 x TP=2 (and a meta-device model is refused)."""
    groups = init_parallel(1)
    with torch.device("meta"):
        model = build(groups)
    with pytest.raises(ValueError, match=r"^embedding.weight \(and \d+ more\) is on the meta"):
        data_parallel(model, groups)
    return train_layouts(1, runs), train_layouts(2, runs)


def four_ranks(runs: list[tuple[str, bool]]) -> tuple[dict[str, Any], list[History]]:
    """On 4 ranks (one spawn, to save time): the mesh's layout, then DP=2 x TP=2 training."""
    return groups_of_a_mesh(), train_layouts(2, runs)


def test_dp2_by_tp2_matches_one_process_and_needs_the_tp_norm(one_process: History) -> None:
    runs = [("fsdp", False), ("ddp", False), ("fsdp", True)]
    results = run_on_ranks(4, four_ranks, runs)
    check_layout_of_four_ranks([layout for layout, _ in results])
    for rank, (_, (fsdp, ddp, clip_ignoring_tp)) in enumerate(results):
        assert_same(fsdp, one_process, f"DP=2 x TP=2 fsdp, rank {rank}")
        assert_same(ddp, one_process, f"DP=2 x TP=2 ddp, rank {rank}")
        with pytest.raises(AssertionError):
            assert_same(clip_ignoring_tp, one_process, "clipping that ignores tp")


def test_data_parallel_needs_a_data_group() -> None:
    with pytest.raises(ValueError, match=r"needs groups with a data-parallel group"):
        data_parallel(build(ParallelGroups.single()), ParallelGroups.single())


def from_mesh_errors() -> str:
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (1, 2), mesh_dim_names=("tp", "dp"))
    try:
        ParallelGroups.from_mesh(mesh)
    except ValueError as error:
        return str(error)
    return "no error"


def groups_of_a_mesh() -> dict[str, Any]:
    groups = init_parallel(2)
    assert groups.mesh is not None
    return {
        "sizes": (groups.data_size, groups.tensor_size),
        "ranks": (groups.data_rank, groups.tensor_rank),
        "mesh": groups.mesh.mesh.tolist(),
        "repr": repr(groups),
        "bad mesh": from_mesh_errors(),
    }


def check_layout_of_four_ranks(results: list[dict[str, Any]]) -> None:
    """init_parallel(2) on 4 ranks: consecutive ranks share a tensor-parallel group."""
    assert [r["ranks"] for r in results] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert {r["sizes"] for r in results} == {(2, 2)}
    assert results[0]["mesh"] == [[0, 1], [2, 3]]
    assert results[0]["repr"] == "ParallelGroups(data size 2, tensor size 2)"
    assert results[0]["bad mesh"].startswith(
        "ParallelGroups.from_mesh needs a mesh with dimensions ('dp', 'tp')"
    )
