"""megaspec.schema: explicit fields (also through dataclasses.replace), declared checks, no
mutation of frozen configs, and what plain data cannot hold."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch.nn.functional as F

from megaspec.config import (
    AttentionMixerConfig,
    ModelConfig,
    RepeatSequenceConfig,
    RunConfig,
    load,
    resolve,
    save,
    to_data,
    update,
)
from megaspec.schema import ConfigError
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig


def test_constructor_keywords_are_the_explicit_fields() -> None:
    assert AttentionConfig(num_heads=4, causal=True).explicit_fields == {"num_heads", "causal"}
    assert AttentionConfig().explicit_fields == frozenset()


def test_replace_marks_only_the_fields_it_is_given() -> None:
    original = AttentionConfig(num_heads=4)
    replaced = dataclasses.replace(original, rotary_base=500000.0)
    assert replaced.explicit_fields == {"num_heads", "rotary_base"}
    assert original.explicit_fields == {"num_heads"}  # the original is untouched


def test_replace_with_the_current_value_still_marks_it() -> None:
    # `True is True`: an identity comparison could not tell this from an untouched field.
    assert dataclasses.replace(AttentionConfig(), causal=True).explicit_fields == {"causal"}
    assert dataclasses.replace(AttentionConfig(), num_heads=8).explicit_fields == {"num_heads"}


def test_replace_with_nothing_keeps_the_explicit_fields() -> None:
    assert dataclasses.replace(MlpConfig(gated=False)).explicit_fields == {"gated"}


@pytest.mark.skipif(not hasattr(copy, "replace"), reason="copy.replace is new in Python 3.13")
def test_copy_replace_marks_only_the_fields_it_is_given() -> None:
    replace = getattr(copy, "replace")
    assert replace(AttentionConfig(num_heads=4), causal=True).explicit_fields == {"num_heads", "causal"}


def test_nested_replace() -> None:
    model = resolve(ModelConfig, overrides=["hidden_size=128"])
    decoder = model.decoder
    assert isinstance(decoder, RepeatSequenceConfig)
    block = dataclasses.replace(
        decoder.block, mixer=dataclasses.replace(decoder.block.mixer, num_heads=2)
    )
    changed = dataclasses.replace(model, decoder=dataclasses.replace(decoder, block=block))
    assert changed.explicit_fields == {"hidden_size", "decoder"}
    assert changed.decoder.explicit_fields == {"block"}
    assert to_data(changed) == {
        "hidden_size": 128,
        "decoder": {"type": "repeat", "block": {"mixer": {"type": "attention", "num_heads": 2}}},
    }


def test_save_after_replace_is_minimal_and_loads_back_equal(tmp_path: Path) -> None:
    run = resolve(RunConfig, overrides=["training.steps=10"])
    changed = dataclasses.replace(run, training=dataclasses.replace(run.training, seed=7))
    save(changed, tmp_path / "run.yaml")
    text = (tmp_path / "run.yaml").read_text()
    assert text == "format_version: 1\ntraining:\n  steps: 10\n  seed: 7\n"
    assert load(RunConfig, tmp_path / "run.yaml") == changed


def test_a_default_set_through_replace_wins_when_the_saved_config_is_layered(tmp_path: Path) -> None:
    # Setting a field to its default is a choice: over a base that differs, it must win.
    run = resolve(RunConfig)
    save(dataclasses.replace(run, training=dataclasses.replace(run.training, seed=0)), tmp_path / "run.yaml")
    base = resolve(RunConfig, overrides=["training.seed=5"])
    assert resolve(RunConfig, pretrained=base, files=[tmp_path / "run.yaml"]).training.seed == 0


def test_updates_build_new_configs_and_never_mutate() -> None:
    base = resolve(ModelConfig, overrides=["hidden_size=128"])
    snapshot = (base.explicit_fields, base.decoder.explicit_fields, to_data(base))
    update(base, {"vocab_size": 512, "decoder": {"num_blocks": 2}})
    assert (base.explicit_fields, base.decoder.explicit_fields, to_data(base)) == snapshot


def test_copies_keep_the_explicit_fields() -> None:
    config = AttentionMixerConfig(num_heads=2, qk_norm=True)
    assert copy.deepcopy(config).explicit_fields == {"num_heads", "qk_norm"}
    assert copy.copy(config).explicit_fields == {"num_heads", "qk_norm"}


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: TransformerConfig(hidden_size=0, num_layers=2),
         "TransformerConfig.hidden_size: must be positive, got 0"),
        (lambda: AttentionConfig(rotary_fraction=1.5),
         "AttentionConfig.rotary_fraction: must lie in [0, 1], got 1.5"),
        (lambda: MlpConfig(activation="swish"),  # type: ignore[arg-type]  # run-time check
         "MlpConfig.activation: unknown activation 'swish'; expected one of silu, gelu, "
         "gelu_tanh, relu"),
        (lambda: AttentionMixerConfig(lr_scale=-1.0),
         "AttentionMixerConfig.lr_scale: must be >= 0, got -1.0"),
    ],
)
def test_python_construction_names_class_and_field(make: object, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        make()  # type: ignore[operator]
    assert str(error.value) == expected


def test_a_function_cannot_be_saved_and_the_error_names_its_path() -> None:
    run = update(resolve(RunConfig), {"model": {"decoder": {"block": {"mlp": {"activation": F.gelu}}}}})
    assert run.model.decoder.num_layers == 4
    with pytest.raises(ConfigError) as error:
        to_data(run)
    assert str(error.value) == (
        "model.decoder.block.mlp.activation: gelu cannot be saved as plain data; a saved "
        "config names it (e.g. by a string)"
    )
