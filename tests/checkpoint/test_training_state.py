"""Training checkpoints (megaspec.checkpoint.training_state): round trips, resharding between
tensor-parallel sizes on spawned gloo processes, atomic saves, keep-last-K, every refusal,
and the consolidated export."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.distributed.checkpoint.filesystem import FileSystemWriter

from megaspec.checkpoint import (
    CheckpointError,
    export_consolidated,
    latest_checkpoint,
    load_training_checkpoint,
    save_training_checkpoint,
)
from megaspec.config import RunConfig, resolve
from megaspec.models import GPTModel
from megaspec.parallel import ParallelGroups, seeded_initialization, sharding_of
from megaspec.parallel.sharding import gather_full
from megaspec.training import load_trained_model, make_optimizer
from tests.helpers.distributed import run_on_ranks

OVERRIDES = [
    "model.hidden_size=64", "model.vocab_size=300", "model.decoder.num_blocks=2",
    "model.decoder.block.mixer.num_heads=8", "model.decoder.block.mixer.num_query_groups=4",
    "model.decoder.block.mlp.ffn_hidden_size=96",
]  # fmt: skip
RUN = resolve(RunConfig, overrides=OVERRIDES)
TOKENS = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(0))


def trained(groups: ParallelGroups, seed: int = 0) -> tuple[GPTModel, torch.optim.AdamW]:
    """A model and its AdamW after one step (so the optimizer has state)."""
    with seeded_initialization(seed):
        model = RUN.model.build(groups)
    optimizer = make_optimizer(model, RUN.training)
    model(TOKENS, labels=TOKENS).mean().backward()
    optimizer.step()
    optimizer.zero_grad()
    return model, optimizer


def fresh(groups: ParallelGroups) -> tuple[GPTModel, torch.optim.AdamW]:
    with seeded_initialization(7):
        model = RUN.model.build(groups)
    return model, make_optimizer(model, RUN.training)


def logits(model: GPTModel) -> torch.Tensor:
    with torch.no_grad():
        result: torch.Tensor = model(TOKENS)
    return result


def save(root: Path, step: int = 100, **kwargs: Any) -> Path:
    model, optimizer = trained(ParallelGroups.single())
    return save_training_checkpoint(
        root, step=step, model=model, optimizer=optimizer, run=RUN, data_position=3 * step,
        groups=ParallelGroups.single(), **kwargs,
    )  # fmt: skip


def full_optimizer_states(model: GPTModel, optimizer: torch.optim.Optimizer, groups: ParallelGroups) -> dict[str, torch.Tensor]:
    """exp_avg and exp_avg_sq of every parameter, gathered to the full (padded) shape."""
    states = {}
    for name, parameter in model.named_parameters():
        for key in ("exp_avg", "exp_avg_sq"):
            states[f"{name}.{key}"] = gather_full(optimizer.state[parameter][key], sharding_of(parameter), groups)
    return states


def test_round_trip_restores_model_optimizer_rng_step_and_data_position(tmp_path: Path) -> None:
    model, optimizer = trained(ParallelGroups.single())
    path = save_training_checkpoint(
        tmp_path, step=100, model=model, optimizer=optimizer, run=RUN, data_position=42,
        groups=ParallelGroups.single(),
    )  # fmt: skip
    expected_draw = torch.rand(3)
    assert path == tmp_path / "step-00000100" and latest_checkpoint(tmp_path) == path
    loaded, loaded_optimizer = fresh(ParallelGroups.single())
    state = load_training_checkpoint(path, model=loaded, optimizer=loaded_optimizer, run=RUN, groups=ParallelGroups.single())
    assert (state.step, state.data_position, state.rng_restored) == (100, 42, True)
    assert torch.equal(torch.rand(3), expected_draw)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    before, after = optimizer.state_dict(), loaded_optimizer.state_dict()
    assert before["param_groups"] == after["param_groups"]
    for index, values in before["state"].items():
        assert all(torch.equal(value, after["state"][index][key]) for key, value in values.items())


def save_at_tensor_parallel_size_2(root: str) -> dict[str, Any]:
    groups = ParallelGroups.tensor_parallel_over_world()
    model, optimizer = trained(groups)
    save_training_checkpoint(root, step=5, model=model, optimizer=optimizer, run=RUN, data_position=10, groups=groups)
    return {"logits": logits(model), "states": full_optimizer_states(model, optimizer, groups)}


@pytest.fixture(scope="module")
def saved_at_tp2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("tp2")
    result = run_on_ranks(2, save_at_tensor_parallel_size_2, str(root))[0]
    return root / "step-00000005", result


def test_saved_at_tensor_parallel_size_2_loads_at_1(saved_at_tp2: tuple[Path, dict[str, Any]]) -> None:
    path, saved = saved_at_tp2
    model, optimizer = fresh(ParallelGroups.single())
    state = load_training_checkpoint(path, model=model, optimizer=optimizer, run=RUN, groups=ParallelGroups.single())
    assert (state.step, state.data_position, state.rng_restored) == (5, 10, False)  # 2 ranks saved, 1 loads
    torch.testing.assert_close(logits(model), saved["logits"], rtol=0, atol=1e-5)
    for key, value in full_optimizer_states(model, optimizer, ParallelGroups.single()).items():
        rows = min(value.shape[0], saved["states"][key].shape[0])  # vocabulary padding differs
        assert torch.equal(value[:rows], saved["states"][key][:rows]), key


def load_at_tensor_parallel_size_4(path: str) -> dict[str, Any]:
    groups = ParallelGroups.tensor_parallel_over_world()
    model, optimizer = fresh(groups)
    load_training_checkpoint(path, model=model, optimizer=optimizer, run=RUN, groups=groups)
    return {"logits": logits(model), "states": full_optimizer_states(model, optimizer, groups)}


def test_saved_at_tensor_parallel_size_1_loads_at_4(tmp_path: Path) -> None:
    model, optimizer = trained(ParallelGroups.single())
    path = save_training_checkpoint(
        tmp_path, step=1, model=model, optimizer=optimizer, run=RUN, data_position=0, groups=ParallelGroups.single()
    )
    states = full_optimizer_states(model, optimizer, ParallelGroups.single())
    for result in run_on_ranks(4, load_at_tensor_parallel_size_4, str(path)):
        torch.testing.assert_close(result["logits"], logits(model), rtol=0, atol=1e-5)
        for key, value in states.items():
            rows = min(value.shape[0], result["states"][key].shape[0])
            assert torch.equal(value[:rows], result["states"][key][:rows]), key


def test_a_failed_save_leaves_the_previous_checkpoint_loadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    previous = save(tmp_path, step=1)

    def disk_full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FileSystemWriter, "write_data", disk_full)
    with pytest.raises(CheckpointError, match="(?s)saving failed: .*No space left on device"):
        save(tmp_path, step=2)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["step-00000001"]  # no step-2, no staging directory
    assert latest_checkpoint(tmp_path) == previous
    model, _ = fresh(ParallelGroups.single())
    assert load_training_checkpoint(previous, model=model, groups=ParallelGroups.single()).step == 1


def save_with_rank_1_failing(root: str) -> str:
    """Save on 2 tensor-parallel ranks whose rank 1 cannot write its RNG file; the message
    each rank raised."""
    groups = ParallelGroups.tensor_parallel_over_world()
    model, optimizer = trained(groups)
    write_bytes = Path.write_bytes

    def failing(path: Path, data: Any) -> int:
        if path.name == "rank-00001.bin":
            raise OSError(28, "No space left on device")
        return write_bytes(path, data)

    Path.write_bytes = failing  # type: ignore[method-assign]  # a full disk on rank 1 only
    try:
        save_training_checkpoint(root, step=5, model=model, optimizer=optimizer, run=RUN,
                                 data_position=10, groups=groups)  # fmt: skip
    except CheckpointError as error:
        return str(error)
    finally:
        Path.write_bytes = write_bytes  # type: ignore[method-assign]  # restored
    return "saved"


def test_a_save_failing_on_one_rank_raises_on_every_rank(tmp_path: Path) -> None:
    messages = run_on_ranks(2, save_with_rank_1_failing, str(tmp_path))  # returns: no rank waits
    target = tmp_path / "step-00000005"
    assert messages == [
        f"{target}: saving failed on rank 1 (see its error)",
        f"{target}: saving failed on rank 1: [Errno 28] No space left on device",
    ]
    assert os.listdir(tmp_path) == []  # no step directory, no staging directory


def test_keeps_the_last_k_checkpoints(tmp_path: Path) -> None:
    for step in (1, 2, 3, 4):
        save(tmp_path, step=step, keep_last=2)
    assert sorted(os.listdir(tmp_path)) == ["step-00000003", "step-00000004"]
    assert latest_checkpoint(tmp_path) == tmp_path / "step-00000004"


def load_into_fresh(path: Path, run: RunConfig = RUN) -> None:
    model, optimizer = fresh(ParallelGroups.single())
    load_training_checkpoint(path, model=model, optimizer=optimizer, run=run, groups=ParallelGroups.single())


def test_refuses_a_truncated_file(tmp_path: Path) -> None:
    path = save(tmp_path)
    data = path / "__0_0.distcp"
    data.write_bytes(data.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"__0_0.distcp: truncated or altered file: \d+ bytes, manifest.json says"):
        load_into_fresh(path)


@pytest.mark.parametrize("name", ["__0_0.distcp", ".metadata"])
def test_refuses_a_corrupt_file_of_the_same_length(tmp_path: Path, name: str) -> None:
    path = save(tmp_path)
    data = bytearray((path / name).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(byte ^ 0xFF for byte in data[middle : middle + 16])
    (path / name).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{name}: corrupt file: its sha256 differs"):
        load_into_fresh(path)


def test_refuses_a_checkpoint_of_another_architecture(tmp_path: Path) -> None:
    path = save(tmp_path)
    other = resolve(RunConfig, overrides=[*OVERRIDES, "model.decoder.block.mlp.ffn_hidden_size=128"])
    with pytest.raises(CheckpointError, match=r"another architecture: model.decoder.block.mlp.ffn_hidden_size is 96 in the checkpoint, 128"):
        load_into_fresh(path, other)


def test_refuses_a_checkpoint_with_a_missing_file(tmp_path: Path) -> None:
    path = save(tmp_path)
    (path / "rng" / "rank-00000.bin").unlink()
    with pytest.raises(CheckpointError, match=r"rank-00000.bin: missing file: listed in manifest.json"):
        load_into_fresh(path)


def test_refuses_an_incomplete_checkpoint(tmp_path: Path) -> None:
    path = save(tmp_path)
    (path / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match=r"incomplete checkpoint: no manifest.json \(the save never finished\)"):
        load_into_fresh(path)
    assert latest_checkpoint(tmp_path) is None


def test_export_consolidated_loads_as_a_trained_model(saved_at_tp2: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    path, saved = saved_at_tp2
    export_consolidated(path, tmp_path / "run")
    model, run = load_trained_model(tmp_path / "run")
    assert run.parallel.tensor_parallel_size == 1 and run.model == RUN.model
    torch.testing.assert_close(logits(model), saved["logits"], rtol=0, atol=1e-5)
