"""The run config's peft: section (megaspec.config.run): resolved by type, validated with the
run, saved and loaded back."""

from __future__ import annotations

from pathlib import Path

import pytest

from megaspec.config import ConfigError, IA3Config, LoraConfig, RunConfig, load, resolve, save


def test_a_peft_section_resolves_to_its_adapter_type_and_round_trips(tmp_path: Path) -> None:
    run = resolve(RunConfig, overrides=["peft={type: lora, rank: 8, alpha: 16, targets: null}"])
    assert run.peft == LoraConfig(rank=8, alpha=16, targets=None)
    save(run, tmp_path / "config.yaml")
    assert load(RunConfig, tmp_path / "config.yaml") == run
    assert resolve(RunConfig).peft is None
    assert resolve(RunConfig, overrides=["peft={type: ia3}"]).peft == IA3Config()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("peft={type: lora, rank: 0}", "peft.rank: must be positive, got 0"),
        ("peft={type: prefix}", "peft.type: unknown type 'prefix'; valid names: ia3, lora"),
        ("peft.rank=4", "peft.type: missing; expected one of ia3, lora"),
        ("peft={type: lora, targets: []}", "peft.targets: must name at least one pattern, or be null for apply_peft"),
    ],
)  # fmt: skip
def test_a_bad_peft_section_names_its_path(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        resolve(RunConfig, overrides=[override])
    assert str(error.value) == message
