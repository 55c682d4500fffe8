"""The resolution pipeline: precedence of every step, nested updates, whole replacement, type
changes, pattern blocks, shortcuts, saved configs applied as overrides, format versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from megaspec.config import (
    AttentionMixerConfig,
    BlockConfig,
    ConfigError,
    FeedForwardConfig,
    LayerNormConfig,
    LinearConfig,
    ModelConfig,
    NormalInit,
    PatternSequenceConfig,
    RepeatSequenceConfig,
    RMSNormConfig,
    UniformInit,
    WeightConfig,
    ZerosInit,
    load,
    parse_override,
    read_saved,
    resolve,
    save,
    to_data,
)
from tests.helpers.configs import ProbeMixerConfig


def block_of(config: ModelConfig) -> BlockConfig:
    """The block of a model whose decoder repeats one block."""
    assert isinstance(config.decoder, RepeatSequenceConfig)
    return config.decoder.block


def write(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- precedence -------------------------------------------------------------------------------

# Layer i of the pipeline sets the fields PRECEDENCE_FIELDS[i:], each to a value of its own, so
# field j must come out as layer j set it: every step overrides all earlier ones, and later
# steps leave the fields they do not name alone.
PRECEDENCE_FIELDS = (
    "vocab_size",
    "decoder.num_blocks",
    "decoder.block.mlp.ffn_hidden_size",
    "decoder.block.mixer.rotary_base",
    "embedding.lr_scale",
)
LAYER_NAMES = ("pretrained", "file 1", "file 2", "command line", "mapping")


def layer_value(field: str, layer: int) -> Any:
    return {
        "vocab_size": 100 + layer,
        "decoder.num_blocks": 1 + layer,
        "decoder.block.mlp.ffn_hidden_size": 64 * (layer + 1),
        "decoder.block.mixer.rotary_base": 1000.0 * (layer + 1),
        "embedding.lr_scale": (layer + 1) / 8,
    }[field]


def nested(path: str, value: Any) -> dict[str, Any]:
    result: Any = value
    for name in reversed(path.split(".")):
        result = {name: result}
    assert isinstance(result, dict)
    return result


def merged(*mappings: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for mapping in mappings:
        for key, value in mapping.items():
            if isinstance(value, dict) and isinstance(result.get(key), dict):
                result[key] = merged(result[key], value)
            else:
                result[key] = value
    return result


def layer_data(layer: int) -> dict[str, Any]:
    return merged(*(nested(field, layer_value(field, layer)) for field in PRECEDENCE_FIELDS[layer:]))


def field_value(config: ModelConfig, path: str) -> Any:
    value: Any = config
    for name in path.split("."):
        value = getattr(value, name)
    return value


@pytest.mark.parametrize("pretrained_kind", ["object", "saved file"])
def test_each_step_overrides_all_earlier_steps(tmp_path: Path, pretrained_kind: str) -> None:
    pretrained_config = resolve(ModelConfig, overrides=[layer_data(0)])
    pretrained: ModelConfig | Path = pretrained_config
    if pretrained_kind == "saved file":
        pretrained = tmp_path / "pretrained.yaml"
        save(pretrained_config, pretrained)
    files = [write(tmp_path / "one.yaml", layer_data(1)), write(tmp_path / "two.yaml", layer_data(2))]
    command_line = [f"{field}={layer_value(field, 3)}" for field in PRECEDENCE_FIELDS[3:]]
    config = resolve(
        ModelConfig,
        pretrained=pretrained,
        files=files,
        overrides=[*command_line, layer_data(4)],
    )
    came_from = {
        field: LAYER_NAMES[[layer_value(field, layer) for layer in range(5)].index(field_value(config, field))]
        for field in PRECEDENCE_FIELDS
    }
    assert came_from == dict(zip(PRECEDENCE_FIELDS, LAYER_NAMES, strict=True))
    # Untouched fields keep their defaults.
    assert config.hidden_size == 256
    assert block_of(config).mixer == AttentionMixerConfig(rotary_base=1000.0 * 4)
    assert to_data(config) == {
        "vocab_size": 100,
        "decoder": {
            "type": "repeat",
            "num_blocks": 2,
            "block": {
                "mlp": {"type": "mlp", "ffn_hidden_size": 192},
                "mixer": {"type": "attention", "rotary_base": 4000.0},
            },
        },
        "embedding": {"lr_scale": 5 / 8},
    }


@pytest.mark.parametrize("step", ["pretrained object", "pretrained file", "file", "command line", "mapping"])
def test_each_step_alone_overrides_the_defaults(tmp_path: Path, step: str) -> None:
    saved = tmp_path / "saved.yaml"
    save(ModelConfig(vocab_size=300), saved)
    steps: dict[str, dict[str, Any]] = {
        "pretrained object": {"pretrained": ModelConfig(vocab_size=300)},
        "pretrained file": {"pretrained": saved},
        "file": {"files": [write(tmp_path / "file.yaml", {"vocab_size": 300})]},
        "command line": {"overrides": ["vocab_size=300"]},
        "mapping": {"overrides": [{"vocab_size": 300}]},
    }
    config = resolve(ModelConfig, **steps[step])
    assert config == ModelConfig(vocab_size=300)
    assert config.explicit_fields == {"vocab_size"}


def test_defaults_alone_are_the_class_defaults_with_nothing_explicit() -> None:
    config = resolve(ModelConfig)
    assert config == ModelConfig()
    assert config.explicit_fields == frozenset()
    assert to_data(config) == {}


def test_overrides_apply_in_order_whatever_their_form() -> None:
    string_last = resolve(ModelConfig, overrides=[{"vocab_size": 1}, "vocab_size=2"])
    mapping_last = resolve(ModelConfig, overrides=["vocab_size=2", {"vocab_size": 1}])
    assert (string_last.vocab_size, mapping_last.vocab_size) == (2, 1)


def test_files_apply_in_the_order_given(tmp_path: Path) -> None:
    first = write(tmp_path / "first.yaml", {"vocab_size": 1, "hidden_size": 64})
    second = write(tmp_path / "second.yaml", {"vocab_size": 2})
    assert resolve(ModelConfig, files=[first, second]).vocab_size == 2
    assert resolve(ModelConfig, files=[second, first]).vocab_size == 1
    assert resolve(ModelConfig, files=[second, first]).hidden_size == 64


def test_resolve_is_pure() -> None:
    pretrained = resolve(ModelConfig, overrides=["decoder.block.mixer.num_heads=4"])
    before = to_data(pretrained)
    first = resolve(ModelConfig, pretrained=pretrained, overrides=["decoder.block.mixer.num_heads=2"])
    second = resolve(ModelConfig, pretrained=pretrained, overrides=["decoder.block.mixer.num_heads=2"])
    assert first == second
    assert to_data(pretrained) == before
    assert block_of(pretrained).mixer == AttentionMixerConfig(num_heads=4)


# --- nested updates and whole replacement ---------------------------------------------------

PRETRAINED_DATA = {
    "decoder": {
        "block": {
            "mixer": {"num_heads": 4, "qkv": {"lr_scale": 0.5}},
            "mlp": {"ffn_hidden_size": 512},
        }
    }
}


def test_nested_override_changes_only_the_fields_it_names() -> None:
    pretrained = resolve(ModelConfig, overrides=[PRETRAINED_DATA])
    config = resolve(ModelConfig, pretrained=pretrained, overrides=["decoder.block.mixer.qkv.bias=true"])
    mixer = block_of(config).mixer
    assert mixer == AttentionMixerConfig(num_heads=4, qkv=LinearConfig(lr_scale=0.5, bias=True))
    assert block_of(config).mlp == FeedForwardConfig(ffn_hidden_size=512)
    # Explicit-field bookkeeping at every level.
    assert config.explicit_fields == {"decoder"}
    assert config.decoder.explicit_fields == {"block"}
    assert block_of(config).explicit_fields == {"mixer", "mlp"}
    assert mixer.explicit_fields == {"num_heads", "qkv"}
    assert isinstance(mixer, AttentionMixerConfig)
    assert mixer.qkv.explicit_fields == {"lr_scale", "bias"}
    assert mixer.proj.explicit_fields == frozenset()
    assert block_of(config).norm.explicit_fields == frozenset()


def test_explicitly_setting_a_default_value_is_recorded() -> None:
    config = resolve(ModelConfig, overrides=["hidden_size=256", "decoder.block.mixer.num_heads=8"])
    assert config == ModelConfig()
    assert to_data(config) == {
        "hidden_size": 256,
        "decoder": {"type": "repeat", "block": {"mixer": {"type": "attention", "num_heads": 8}}},
    }


def test_assigning_a_config_object_replaces_the_sub_config() -> None:
    pretrained = resolve(ModelConfig, overrides=[PRETRAINED_DATA])
    replacement = AttentionMixerConfig(num_query_groups=2)
    config = resolve(
        ModelConfig, pretrained=pretrained, overrides=[{"decoder": {"block": {"mixer": replacement}}}]
    )
    # num_heads and qkv.lr_scale of the pretrained mixer are gone; the MLP is untouched.
    assert block_of(config).mixer == AttentionMixerConfig(num_query_groups=2)
    assert block_of(config).mlp == FeedForwardConfig(ffn_hidden_size=512)
    assert to_data(config)["decoder"]["block"]["mixer"] == {"type": "attention", "num_query_groups": 2}


def test_assigning_a_whole_block_object_drops_every_earlier_block_setting() -> None:
    pretrained = resolve(ModelConfig, overrides=[PRETRAINED_DATA])
    config = resolve(
        ModelConfig, pretrained=pretrained, overrides=[{"decoder": {"block": BlockConfig(post_norms=True)}}]
    )
    assert block_of(config) == BlockConfig(post_norms=True)
    assert to_data(config) == {"decoder": {"type": "repeat", "block": {"post_norms": True}}}


def test_a_mapping_of_the_same_type_updates_instead_of_replacing() -> None:
    pretrained = resolve(ModelConfig, overrides=[PRETRAINED_DATA])
    config = resolve(
        ModelConfig,
        pretrained=pretrained,
        overrides=[{"decoder": {"block": {"mixer": {"type": "attention", "num_query_groups": 2}}}}],
    )
    assert block_of(config).mixer == AttentionMixerConfig(
        num_heads=4, num_query_groups=2, qkv=LinearConfig(lr_scale=0.5)
    )


# --- type changes -----------------------------------------------------------------------------


def test_changing_the_mixer_type_starts_afresh() -> None:
    pretrained = resolve(
        ModelConfig,
        overrides=[
            "decoder.block.mixer.num_heads=4",
            # lr_scale and apply_peft exist on both types: they must not leak either.
            "decoder.block.mixer.lr_scale=0.5",
            "decoder.block.mixer.apply_peft=false",
            "decoder.block.mixer.qkv.bias=true",
        ],
    )
    config = resolve(ModelConfig, pretrained=pretrained, overrides=["decoder.block.mixer.type=probe"])
    mixer = block_of(config).mixer
    assert type(mixer) is ProbeMixerConfig
    assert mixer == ProbeMixerConfig()
    assert mixer.explicit_fields == frozenset()
    assert to_data(config) == {"decoder": {"type": "repeat", "block": {"mixer": {"type": "probe"}}}}


def test_a_new_type_takes_its_own_fields_from_the_same_mapping() -> None:
    config = resolve(
        ModelConfig,
        overrides=[
            "decoder.block.mixer.num_heads=4",
            {"decoder": {"block": {"mixer": {"type": "probe", "kernel_size": 8, "lr_scale": 2.0}}}},
        ],
    )
    assert block_of(config).mixer == ProbeMixerConfig(kernel_size=8, lr_scale=2.0)
    assert block_of(config).mixer.explicit_fields == {"kernel_size", "lr_scale"}


def test_switching_back_gives_the_defaults_of_the_old_type() -> None:
    config = resolve(
        ModelConfig,
        overrides=[
            "decoder.block.mixer.num_heads=4",
            "decoder.block.mixer.type=probe",
            "decoder.block.mixer.kernel_size=8",
            "decoder.block.mixer.type=attention",
        ],
    )
    assert block_of(config).mixer == AttentionMixerConfig()
    assert block_of(config).mixer.explicit_fields == frozenset()


def test_naming_the_current_type_keeps_the_current_fields() -> None:
    config = resolve(
        ModelConfig,
        overrides=["decoder.block.mixer.num_heads=4", "decoder.block.mixer.type=attention"],
    )
    assert block_of(config).mixer == AttentionMixerConfig(num_heads=4)


def test_fields_of_the_old_type_are_unknown_after_a_switch() -> None:
    with pytest.raises(ConfigError) as error:
        resolve(
            ModelConfig,
            overrides=["decoder.block.mixer.type=probe", "decoder.block.mixer.num_heads=4"],
        )
    assert str(error.value) == (
        "decoder.block.mixer.num_heads: unknown field; valid names: apply_peft, gate, kernel_size, lr_scale"
    )


def test_changing_the_norm_type_starts_afresh() -> None:
    config = resolve(
        ModelConfig,
        overrides=["final_norm.weight.lr_scale=0.5", "final_norm.type=layer_norm"],
    )
    assert type(config.final_norm) is LayerNormConfig
    assert config.final_norm == LayerNormConfig()
    assert to_data(config) == {"final_norm": {"type": "layer_norm"}}


def test_changing_the_init_type_starts_afresh() -> None:
    config = resolve(
        ModelConfig,
        overrides=[
            {"embedding": {"init": {"type": "normal", "std": 0.1}}},
            {"embedding": {"init": {"type": "uniform", "high": 0.5}}},
        ],
    )
    assert config.embedding == WeightConfig(init=UniformInit(high=0.5))
    switched = resolve(ModelConfig, pretrained=config, overrides=["embedding.init.type=zeros"])
    assert switched.embedding == WeightConfig(init=ZerosInit())
    cleared = resolve(ModelConfig, pretrained=config, overrides=["embedding.init=null"])
    assert cleared.embedding == WeightConfig()
    assert to_data(cleared) == {"embedding": {"init": None}}


def test_changing_the_sequence_type_starts_afresh() -> None:
    config = resolve(
        ModelConfig,
        overrides=[
            "decoder.num_blocks=2",
            "decoder.lr_scale=0.5",
            {"decoder": {"type": "pattern", "blocks": {"attn": {}}, "pattern": ["attn"]}},
        ],
    )
    assert config.decoder == PatternSequenceConfig(blocks={"attn": BlockConfig()}, pattern=("attn",))


# --- named blocks of a pattern ----------------------------------------------------------------

PATTERN_DATA = {
    "decoder": {
        "type": "pattern",
        "blocks": {"attn": {"mixer": {"num_heads": 4}, "mlp": {"ffn_hidden_size": 512}}},
        "pattern": ["attn", "attn"],
    }
}


def test_named_blocks_are_updated_by_name_and_new_names_are_added() -> None:
    pretrained = resolve(ModelConfig, overrides=[PATTERN_DATA])
    config = resolve(
        ModelConfig,
        pretrained=pretrained,
        overrides=[
            {
                "decoder": {
                    "blocks": {
                        "attn": {"mlp": {"ffn_hidden_size": 256}},
                        "probe": {"mixer": {"type": "probe"}},
                    },
                    "pattern": ["attn", "probe", "attn"],
                }
            },
            "decoder.blocks.extra.post_norms=true",
        ],
    )
    decoder = config.decoder
    assert isinstance(decoder, PatternSequenceConfig)
    assert list(decoder.blocks) == ["attn", "probe", "extra"]
    assert decoder.blocks["attn"] == BlockConfig(
        mixer=AttentionMixerConfig(num_heads=4), mlp=FeedForwardConfig(ffn_hidden_size=256)
    )
    assert decoder.blocks["probe"] == BlockConfig(mixer=ProbeMixerConfig())
    assert decoder.blocks["extra"] == BlockConfig(post_norms=True)
    # A list replaces the old one; it is not merged.
    assert decoder.pattern == ("attn", "probe", "attn")
    assert decoder.num_layers == 3


def test_a_nested_sequence_is_updated_by_name() -> None:
    pretrained = resolve(
        ModelConfig,
        overrides=[
            {
                "decoder": {
                    "type": "pattern",
                    "blocks": {"attn": {}},
                    "sequences": {"inner": {"type": "repeat", "num_blocks": 2, "block": {"post_norms": True}}},
                    "pattern": ["attn", "inner"],
                    "num_blocks": 4,
                }
            }
        ],
    )
    config = resolve(ModelConfig, pretrained=pretrained, overrides=["decoder.sequences.inner.num_blocks=3"])
    decoder = config.decoder
    assert isinstance(decoder, PatternSequenceConfig)
    assert decoder.sequences["inner"] == RepeatSequenceConfig(num_blocks=3, block=BlockConfig(post_norms=True))
    # Two passes over (attn, 3 x inner).
    assert decoder.num_layers == 8


# --- shortcuts --------------------------------------------------------------------------------


def block_biases(block: BlockConfig) -> dict[str, bool | None]:
    assert isinstance(block.mixer, AttentionMixerConfig)
    assert isinstance(block.mlp, FeedForwardConfig)
    return {
        "qkv": block.mixer.qkv.bias,
        "proj": block.mixer.proj.bias,
        "fc1": block.mlp.fc1.bias,
        "fc2": block.mlp.fc2.bias,
    }


def linear_biases(config: ModelConfig) -> dict[str, bool | None]:
    return block_biases(block_of(config))


def test_block_shortcut_sets_every_linear_bias(tmp_path: Path) -> None:
    config = resolve(ModelConfig, overrides=["decoder.block.add_linear_biases=true"])
    assert linear_biases(config) == {"qkv": True, "proj": True, "fc1": True, "fc2": True}
    saved = tmp_path / "saved.yaml"
    save(config, saved)
    assert "add_linear_biases" not in saved.read_text()
    assert yaml.safe_load(saved.read_text()) == {
        "format_version": 1,
        "decoder": {
            "type": "repeat",
            "block": {
                "mixer": {"type": "attention", "qkv": {"bias": True}, "proj": {"bias": True}},
                "mlp": {"type": "mlp", "fc1": {"bias": True}, "fc2": {"bias": True}},
            },
        },
    }
    assert load(ModelConfig, saved) == config


def test_mixer_and_mlp_shortcuts_set_only_their_own_linears() -> None:
    mixer = resolve(ModelConfig, overrides=["decoder.block.mixer.add_linear_biases=true"])
    mlp = resolve(ModelConfig, overrides=["decoder.block.mlp.add_linear_biases=false"])
    assert linear_biases(mixer) == {"qkv": True, "proj": True, "fc1": None, "fc2": None}
    assert linear_biases(mlp) == {"qkv": None, "proj": None, "fc1": False, "fc2": False}
    assert "add_linear_biases" not in str(to_data(mixer)) + str(to_data(mlp))


def test_explicit_linear_bias_wins_over_the_shortcut() -> None:
    config = resolve(
        ModelConfig,
        overrides=[
            {
                "decoder": {
                    "block": {
                        "add_linear_biases": True,
                        "mixer": {"proj": {"bias": False}},
                        "mlp": {"fc2": {"bias": False, "lr_scale": 0.5}},
                    }
                }
            }
        ],
    )
    assert linear_biases(config) == {"qkv": True, "proj": False, "fc1": True, "fc2": False}
    assert block_of(config).mlp == FeedForwardConfig(
        fc1=LinearConfig(bias=True), fc2=LinearConfig(bias=False, lr_scale=0.5)
    )


def test_inner_shortcut_wins_over_the_block_shortcut() -> None:
    config = resolve(
        ModelConfig,
        overrides=[{"decoder": {"block": {"add_linear_biases": True, "mixer": {"add_linear_biases": False}}}}],
    )
    assert linear_biases(config) == {"qkv": False, "proj": False, "fc1": True, "fc2": True}


def test_block_shortcut_with_a_mixer_that_has_no_linears() -> None:
    # The block-level switch sets the biases its slots have; a mixer type without linear
    # biases (like a convolution) is left as it is instead of failing on a key it never saw.
    config = resolve(
        ModelConfig,
        overrides=["decoder.block.mixer.type=probe", "decoder.block.add_linear_biases=true"],
    )
    assert block_of(config).mixer == ProbeMixerConfig()
    assert block_of(config).mlp == FeedForwardConfig(
        fc1=LinearConfig(bias=True), fc2=LinearConfig(bias=True)
    )
    assert "add_linear_biases" not in str(to_data(config))


def test_shortcut_in_a_yaml_file_of_a_pattern_block(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(
        "decoder:\n"
        "  type: pattern\n"
        "  blocks:\n"
        "    attn: {add_linear_biases: true, mixer: {qkv: {bias: false}}}\n"
        "  pattern: [attn]\n"
    )
    config = resolve(ModelConfig, files=[path])
    assert isinstance(config.decoder, PatternSequenceConfig)
    assert block_biases(config.decoder.blocks["attn"]) == {"qkv": False, "proj": True, "fc1": True, "fc2": True}
    saved = tmp_path / "saved.yaml"
    save(config, saved)
    assert "add_linear_biases" not in saved.read_text()
    assert load(ModelConfig, saved) == config


def test_shortcut_biases_reach_the_built_model() -> None:
    config = resolve(
        ModelConfig,
        overrides=[
            "hidden_size=32",
            "vocab_size=64",
            "decoder.num_blocks=1",
            "decoder.block.mixer.num_heads=2",
            "decoder.block.mlp.ffn_hidden_size=64",
            "decoder.block.add_linear_biases=true",
            "decoder.block.mixer.proj.bias=false",
        ],
    )
    names = {name for name, _ in config.build().named_parameters() if name.endswith(".bias")}
    assert names == {
        "blocks.layers.0.mixer.linear_qkv.bias",
        "blocks.layers.0.mlp.linear_fc1.bias",
        "blocks.layers.0.mlp.linear_fc2.bias",
    }


def test_layer_bias_is_the_default_of_its_linears() -> None:
    # `bias` comes from AttentionConfig / MlpConfig (the same field in Python and YAML); a
    # linear's own `bias` wins over it.
    config = resolve(
        ModelConfig,
        overrides=[
            "hidden_size=32",
            "vocab_size=64",
            "decoder.num_blocks=1",
            "decoder.block.mixer.num_heads=2",
            "decoder.block.mixer.bias=true",
            "decoder.block.mixer.qkv.bias=false",
            "decoder.block.mlp.ffn_hidden_size=64",
            "decoder.block.mlp.bias=true",
        ],
    )
    names = {name for name, _ in config.build().named_parameters() if name.endswith(".bias")}
    assert names == {
        "blocks.layers.0.mixer.linear_proj.bias",
        "blocks.layers.0.mlp.linear_fc1.bias",
        "blocks.layers.0.mlp.linear_fc2.bias",
    }


# --- saved configs as overrides ---------------------------------------------------------------


def saved_and_base(tmp_path: Path) -> tuple[Path, ModelConfig]:
    saved = tmp_path / "saved.yaml"
    save(resolve(ModelConfig, overrides=["vocab_size=100", "decoder.block.mixer.num_heads=4"]), saved)
    base = resolve(
        ModelConfig,
        overrides=["hidden_size=128", "vocab_size=300", "decoder.block.mixer.qkv.lr_scale=0.5"],
    )
    return saved, base


EXPECTED_MERGE = ModelConfig(
    hidden_size=128,
    vocab_size=100,
    decoder=RepeatSequenceConfig(
        block=BlockConfig(mixer=AttentionMixerConfig(num_heads=4, qkv=LinearConfig(lr_scale=0.5)))
    ),
)


def test_saved_config_applies_as_an_override_mapping(tmp_path: Path) -> None:
    saved, base = saved_and_base(tmp_path)
    config = resolve(ModelConfig, pretrained=base, overrides=[read_saved(saved)])
    assert config == EXPECTED_MERGE


def test_saved_config_applies_as_a_yaml_file(tmp_path: Path) -> None:
    saved, base = saved_and_base(tmp_path)
    config = resolve(ModelConfig, pretrained=base, files=[saved])
    assert config == EXPECTED_MERGE


def test_saved_file_as_pretrained_under_files_and_overrides(tmp_path: Path) -> None:
    saved, _ = saved_and_base(tmp_path)
    extra = write(tmp_path / "extra.yaml", {"hidden_size": 128, "decoder": {"block": {"mixer": {"num_heads": 2}}}})
    config = resolve(ModelConfig, pretrained=saved, files=[extra], overrides=["decoder.num_blocks=2"])
    assert config == ModelConfig(
        hidden_size=128,
        vocab_size=100,
        decoder=RepeatSequenceConfig(num_blocks=2, block=BlockConfig(mixer=AttentionMixerConfig(num_heads=2))),
    )


def test_save_writes_only_explicit_fields_and_the_format_version(tmp_path: Path) -> None:
    config = resolve(ModelConfig, overrides=["vocab_size=100", "decoder.block.norm.weight.lr_scale=0.5"])
    saved = tmp_path / "saved.yaml"
    save(config, saved)
    assert saved.read_text() == (
        "format_version: 1\n"
        "vocab_size: 100\n"
        "decoder:\n"
        "  type: repeat\n"
        "  block:\n"
        "    norm:\n"
        "      type: rms_norm\n"
        "      weight:\n"
        "        lr_scale: 0.5\n"
    )
    loaded = load(ModelConfig, saved)
    assert loaded == config
    assert to_data(loaded) == to_data(config)


def test_saved_python_config_object_round_trips(tmp_path: Path) -> None:
    config = ModelConfig(
        hidden_size=128,
        decoder=PatternSequenceConfig(
            blocks={"attn": BlockConfig(norm=LayerNormConfig()), "probe": BlockConfig(mixer=ProbeMixerConfig(gate=True))},
            pattern=("attn", "probe"),
            num_blocks=4,
        ),
        embedding=WeightConfig(init=NormalInit(std=0.5)),
        final_norm=RMSNormConfig(weight=WeightConfig(lr_scale=0.0)),
    )
    saved = tmp_path / "saved.yaml"
    save(config, saved)
    loaded = load(ModelConfig, saved)
    assert loaded == config
    assert to_data(loaded) == to_data(config)


# --- intermediate states ----------------------------------------------------------------------


def test_yaml_pattern_may_name_a_block_that_a_later_override_defines(tmp_path: Path) -> None:
    path = write(
        tmp_path / "hybrid.yaml",
        {"decoder": {"type": "pattern", "blocks": {"attn": {}}, "pattern": ["attn", "probe"], "num_blocks": 4}},
    )
    config = resolve(
        ModelConfig, files=[path], overrides=["decoder.blocks.probe.mixer.type=probe"]
    )
    assert config.decoder == PatternSequenceConfig(
        blocks={"attn": BlockConfig(), "probe": BlockConfig(mixer=ProbeMixerConfig())},
        pattern=("attn", "probe"),
        num_blocks=4,
    )
    # Alone, the file is still checked at the end.
    with pytest.raises(ConfigError) as error:
        resolve(ModelConfig, files=[path])
    assert str(error.value) == "decoder.pattern[1]: unknown block 'probe'; valid names: attn"


def test_cross_field_checks_run_on_the_final_config_only(tmp_path: Path) -> None:
    # 6 heads do not divide the default width 256, but they do divide the final width 384.
    path = write(tmp_path / "heads.yaml", {"decoder": {"block": {"mixer": {"num_heads": 6}}}})
    config = resolve(ModelConfig, files=[path], overrides=["hidden_size=384"])
    assert config.hidden_size == 384
    assert block_of(config).mixer == AttentionMixerConfig(num_heads=6)


def test_an_invalid_value_overridden_later_is_fine() -> None:
    config = resolve(ModelConfig, overrides=["decoder.block.mixer.num_heads=0", "decoder.block.mixer.num_heads=2"])
    assert block_of(config).mixer == AttentionMixerConfig(num_heads=2)


# --- format versions --------------------------------------------------------------------------


def test_saved_file_without_format_version_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "old.yaml", {"vocab_size": 100})
    with pytest.raises(ConfigError) as error:
        load(ModelConfig, path)
    assert str(error.value) == f"format_version: {path}: expected format version 1, got None"
    assert error.value.path == "format_version"


@pytest.mark.parametrize(("version", "shown"), [(2, "2"), (0, "0"), ("1", "'1'"), (1.5, "1.5")])
def test_saved_file_with_another_format_version_is_an_error(tmp_path: Path, version: object, shown: str) -> None:
    path = write(tmp_path / "other.yaml", {"format_version": version, "vocab_size": 100})
    with pytest.raises(ConfigError) as error:
        resolve(ModelConfig, pretrained=path)
    assert str(error.value) == f"format_version: {path}: expected format version 1, got {shown}"


def test_read_saved_strips_the_format_version(tmp_path: Path) -> None:
    path = tmp_path / "saved.yaml"
    save(ModelConfig(vocab_size=100), path)
    assert path.read_text().startswith("format_version: 1\n")
    assert read_saved(path) == {"vocab_size": 100}


# --- command-line overrides -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a.b.c=8", {"a": {"b": {"c": 8}}}),
        ("a=true", {"a": True}),
        ("a=0.5", {"a": 0.5}),
        ("a=1.0e-5", {"a": 1.0e-5}),
        ("a=null", {"a": None}),
        ("a=", {"a": None}),
        ("a=silu", {"a": "silu"}),
        ("a='8'", {"a": "8"}),
        ("a=[attn, 'null', 3]", {"a": ["attn", "null", 3]}),
        ("a={type: conv, kernel_size: 8}", {"a": {"type": "conv", "kernel_size": 8}}),
        (" a.b = x=y", {"a": {"b": "x=y"}}),
    ],
)
def test_parse_override_reads_the_value_as_yaml(text: str, expected: dict[str, Any]) -> None:
    assert parse_override(text) == expected


@pytest.mark.parametrize(("text", "expected"), [("norm_epsilon=1e-5", 1e-5), ("init_std=2e-2", 0.02)])
def test_command_line_floats_in_exponent_notation(text: str, expected: float) -> None:
    # PyYAML follows YAML 1.1, where "1e-5" (no dot) is a string, not a float; on the command
    # line it must still set a float field.
    field = text.partition("=")[0]
    assert getattr(resolve(ModelConfig, overrides=[text]), field) == expected
