"""init_parallel's layout checks, made before any process group or model exists.

The layout of a real job (consecutive ranks per tensor-parallel group) is checked in
tests/parallel/test_data_parallel.py, in the same 4-rank spawn as its training.
"""

from __future__ import annotations

import pytest

from megaspec.config import ConfigError, RunConfig, resolve
from megaspec.parallel import ParallelGroups, init_parallel
from tests.parallel.test_data_parallel import CONFIG


def test_a_world_size_that_tensor_parallelism_does_not_divide_is_refused_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")  # what torchrun sets; no process group is made
    message = r"^tensor_parallel_size 3 does not divide the world size 4$"
    with pytest.raises(ValueError, match=message):
        init_parallel(3)


def test_init_parallel_outside_torchrun_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(RuntimeError, match=r"start the script with torchrun"):
        init_parallel(2)


def test_more_tensor_parallel_ranks_than_heads_is_refused_before_building() -> None:
    layout = ParallelGroups.layout_only(8)  # the tensor-parallel size init_parallel(8) gives
    with pytest.raises(ConfigError, match=r"decoder.block.mixer.num_heads.*4.*8") as error:
        CONFIG.check_tensor_parallel(layout.tensor_size)
    assert str(error.value).startswith("decoder.block.mixer.num_heads")


def test_a_run_config_checks_the_model_against_its_tensor_parallel_size() -> None:
    mixer = {"type": "attention", "num_heads": 4}
    model = {"decoder": {"type": "repeat", "block": {"mixer": mixer}}}
    overrides: list[str | dict[str, object]] = [{"model": model}, "parallel.tensor_parallel_size=8"]
    message = r"^model.decoder.block.mixer.num_heads: 4 is not divisible"
    with pytest.raises(ConfigError, match=message):
        resolve(RunConfig, overrides=overrides)
