"""Exact messages for bad configs: each names the full dotted path, the bad value and what was
expected; unknown names suggest the closest valid one. YAML can never run code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from megaspec.config import (
    ConfigError,
    ModelConfig,
    RunConfig,
    WeightConfig,
    load_yaml,
    parse_override,
    resolve,
)


def error_of(*overrides: str | dict[str, Any], files: list[Path] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as error:
        resolve(RunConfig, files=files or [], overrides=list(overrides))
    return error.value


def pattern(**decoder: Any) -> dict[str, Any]:
    return {"model": {"decoder": {"type": "pattern", **decoder}}}


def message_of(*overrides: str | dict[str, Any]) -> str:
    return str(error_of(*overrides))


# --- unknown keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "model.decoder.block.mixer.num_head=4",
            "model.decoder.block.mixer.num_head: unknown field; did you mean 'num_heads'?",
        ),
        ("mdoel.hidden_size=128", "mdoel: unknown field; did you mean 'model'?"),
        (
            "model.decoder.block.mlp.ffn_hiden_size=512",
            "model.decoder.block.mlp.ffn_hiden_size: unknown field; did you mean 'ffn_hidden_size'?",
        ),
        (
            "model.decoder.block.mlp.weird=1",
            "model.decoder.block.mlp.weird: unknown field; valid names: activation, bias, fc1, fc2, "
            "ffn_hidden_size, gated, lr_scale",
        ),
        (
            "parallel.foo=1",
            "parallel.foo: unknown field; valid names: data_parallel_engine, sequence_parallel, tensor_parallel_size",
        ),
        # Only configs chosen by type take a `type:` key.
        (
            "model.decoder.block.type=x",
            "model.decoder.block.type: unknown field; valid names: lr_scale, mixer, mlp, norm, post_norms",
        ),
        # A repeat sequence has no `blocks`; the path says where.
        (
            "model.decoder.blocks.attn.post_norms=true",
            "model.decoder.blocks: unknown field; did you mean 'block'?",
        ),
    ],
)
def test_unknown_key(override: str, expected: str) -> None:
    error = error_of(override)
    assert str(error) == expected
    assert error.path == expected.split(":")[0]


def test_unknown_key_in_a_yaml_file_names_the_full_path(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(
        "model:\n"
        "  decoder:\n"
        "    type: pattern\n"
        "    blocks:\n"
        "      attn:\n"
        "        mixer: {type: attention, qkv: {biass: true}}\n"
        "    pattern: [attn]\n"
    )
    assert str(error_of(files=[path])) == (
        "model.decoder.blocks.attn.mixer.qkv.biass: unknown field; did you mean 'bias'?"
    )


# --- wrong types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.hidden_size=abc", "model.hidden_size: expected int, got 'abc' (str)"),
        ("model.hidden_size='256'", "model.hidden_size: expected int, got '256' (str)"),
        ("model.tie_embeddings=1", "model.tie_embeddings: expected bool, got 1 (int)"),
        ("model.vocab_size=[1, 2]", "model.vocab_size: expected int, got [1, 2] (list)"),
        ("model.vocab_size={a: 1}", "model.vocab_size: expected int, got {'a': 1} (dict)"),
        ("model.decoder.num_blocks=4.5", "model.decoder.num_blocks: expected int, got 4.5 (float)"),
        ("model.init_std=true", "model.init_std: expected float, got True (bool)"),
        ("model.hidden_size=", "model.hidden_size: expected int, got None (NoneType)"),
        (
            "model.decoder.block.mlp.activation=swish",
            "model.decoder.block.mlp.activation: expected one of 'silu', 'gelu', 'gelu_tanh', 'relu', "
            "got 'swish' (str)",
        ),
        (
            "model.decoder.block.norm=3",
            "model.decoder.block.norm: expected a NormConfig mapping with 'type' one of "
            "['layer_norm', 'rms_norm', 'te_layer_norm', 'te_rms_norm'], got 3 (int)",
        ),
        ("model.embedding=null", "model.embedding: expected a WeightConfig mapping, got None (NoneType)"),
    ],
)
def test_wrong_type(override: str, expected: str) -> None:
    assert message_of(override) == expected


def test_wrong_types_inside_a_pattern() -> None:
    assert message_of(pattern(blocks={"attn": {}}, pattern="attn")) == (
        "model.decoder.pattern: expected a list of str, got 'attn' (str)"
    )
    assert message_of(pattern(blocks={"attn": {}}, pattern=["attn", 3])) == (
        "model.decoder.pattern[1]: expected str, got 3 (int)"
    )
    assert message_of(pattern(blocks={1: {}}, pattern=["attn"])) == (
        "model.decoder.blocks: names must be strings, got 1"
    )


def test_config_object_of_the_wrong_class() -> None:
    assert message_of({"model": {"decoder": WeightConfig()}}) == (
        "model.decoder: expected a BlockSequenceConfig mapping with 'type' one of ['pattern', 'repeat'], "
        "got WeightConfig(lr_scale=1.0, init=None, weight_decay=None, apply_peft=None) (WeightConfig)"
    )


# --- out of range -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.decoder.block.mixer.lr_scale=-1", "model.decoder.block.mixer.lr_scale: must be >= 0, got -1.0"),
        ("model.embedding.lr_scale=-0.5", "model.embedding.lr_scale: must be >= 0, got -0.5"),
        ("model.decoder.lr_scale=-2", "model.decoder.lr_scale: must be >= 0, got -2.0"),
        ("model.decoder.block.mixer.num_heads=0", "model.decoder.block.mixer.num_heads: must be positive, got 0"),
        (
            "model.decoder.block.mixer.rotary_fraction=1.5",
            "model.decoder.block.mixer.rotary_fraction: must lie in [0, 1], got 1.5",
        ),
        ("model.decoder.block.mixer.head_dim=0", "model.decoder.block.mixer.head_dim: must be positive, got 0"),
        (
            "model.decoder.block.mixer.num_query_groups=3",
            "model.decoder.block.mixer.num_query_groups: 3 must be positive and divide num_heads (8)",
        ),
        ("model.decoder.num_blocks=0", "model.decoder.num_blocks: must be >= 1, got 0"),
        ("model.hidden_size=-3", "model.hidden_size: must be positive, got -3"),
        ("parallel.tensor_parallel_size=0", "parallel.tensor_parallel_size: must be >= 1, got 0"),
        ("training.learning_rate=0", "training.learning_rate: must be positive, got 0.0"),
        (
            "model.decoder.block.mixer.qkv.init={type: normal, std: -1}",
            "model.decoder.block.mixer.qkv.init.std: must be positive, got -1.0",
        ),
        (
            "model.output_layer.init={type: uniform, low: 0.5}",
            "model.output_layer.init.high: must be greater than low (0.5), got 0.02",
        ),
    ],
)
def test_out_of_range(override: str, expected: str) -> None:
    error = error_of(override)
    assert str(error) == expected
    assert error.path == expected.split(": ")[0]


def test_heads_that_do_not_divide_the_width() -> None:
    assert message_of("model.decoder.block.mixer.num_heads=6") == (
        "model.decoder.block.mixer.num_heads: 6 does not divide hidden_size (256); set head_dim"
    )
    # With head_dim set, any head count is fine.
    config = resolve(ModelConfig, overrides=["decoder.block.mixer.num_heads=6", "decoder.block.mixer.head_dim=32"])
    assert config.hidden_size == 256


def test_rotary_fraction_that_rotates_nothing_fails_at_resolution() -> None:
    # The layer's own check (AttentionConfig.check_model), now run before anything is built.
    assert message_of("model.decoder.block.mixer.head_dim=8", "model.decoder.block.mixer.rotary_fraction=0.1") == (
        "model.decoder.block.mixer.rotary_fraction: 0.1 of head_dim 8 rotates no dimension; use 0 "
        "to disable RoPE"
    )


def test_training_config_errors_name_the_field_value_and_expectation() -> None:
    cases = {
        "training.batch_size=0": "training.batch_size: must be >= 1, got 0",
        "training.grad_clip=0": "training.grad_clip: must be positive, got 0.0",
        "training.validation_fraction=1": (
            "training.validation_fraction: must lie in (0, 1), got 1.0"
        ),
        "training.min_learning_rate=0.01": (
            "training.min_learning_rate: must lie in [0, learning_rate (0.003)], got 0.01"
        ),
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError) as raised:
            resolve(RunConfig, overrides=[override])
        assert str(raised.value) == message


# --- bad `type:` names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "model.decoder.block.mixer.type=atention",
            "model.decoder.block.mixer.type: unknown type 'atention'; did you mean 'attention'?",
        ),
        (
            "model.decoder.block.norm.type=rmsnorm",
            "model.decoder.block.norm.type: unknown type 'rmsnorm'; did you mean 'rms_norm'?",
        ),
        ("model.decoder.type=repeats", "model.decoder.type: unknown type 'repeats'; did you mean 'repeat'?"),
        (
            "model.decoder.block.norm.type=foo",
            "model.decoder.block.norm.type: unknown type 'foo'; valid names: layer_norm, rms_norm, "
            "te_layer_norm, te_rms_norm",
        ),
        (
            "model.embedding.init.type=gaussian",
            "model.embedding.init.type: unknown type 'gaussian'; valid names: normal, ones, scaled_normal, "
            "uniform, zeros",
        ),
        (
            "model.decoder.block.norm.type=1",
            "model.decoder.block.norm.type: unknown type 1; valid names: layer_norm, rms_norm, "
            "te_layer_norm, te_rms_norm",
        ),
        # A mixer's type must name a mixer, not an MLP.
        ("model.decoder.block.mixer.type=mlp", None),
    ],
)
def test_bad_type_name(override: str, expected: str | None) -> None:
    error = error_of(override)
    if expected is None:
        assert str(error).startswith("model.decoder.block.mixer.type: unknown type 'mlp'; valid names: ")
        assert "attention" in str(error).split("valid names: ")[1].split(", ")
    else:
        assert str(error) == expected
    assert error.path.endswith(".type")


def test_missing_type_for_a_config_chosen_by_type() -> None:
    # No init is set, so a field alone cannot say which init it belongs to.
    assert message_of("model.embedding.init.std=0.5") == (
        "model.embedding.init.type: missing; expected one of normal, ones, scaled_normal, uniform, zeros"
    )
    assert message_of(pattern(blocks={"attn": {}}, sequences={"inner": {"num_blocks": 2}}, pattern=["attn"])) == (
        "model.decoder.sequences.inner.type: missing; expected one of pattern, repeat"
    )


# --- patterns ---------------------------------------------------------------------------------


def test_pattern_naming_an_undefined_block() -> None:
    assert message_of(pattern(blocks={"attn": {}, "ssm": {}}, pattern=["attn", "atn"])) == (
        "model.decoder.pattern[1]: unknown block 'atn'; did you mean 'attn'?"
    )
    assert message_of(pattern(blocks={"attn": {}, "ssm": {}}, pattern=["attn", "ssm", "mamba"])) == (
        "model.decoder.pattern[2]: unknown block 'mamba'; valid names: attn, ssm"
    )
    # Nested sequences count as names too.
    assert message_of(
        pattern(blocks={"attn": {}}, sequences={"inner": {"type": "repeat"}}, pattern=["attn", "mamba"])
    ) == "model.decoder.pattern[1]: unknown block 'mamba'; valid names: attn, inner"


def test_nested_pattern_naming_an_undefined_block() -> None:
    inner = {"type": "pattern", "blocks": {"b": {}}, "pattern": ["b", "c"]}
    assert message_of(pattern(blocks={"a": {}}, sequences={"inner": inner}, pattern=["a", "inner"])) == (
        "model.decoder.sequences.inner.pattern[1]: unknown block 'c'; valid names: b"
    )


def test_pattern_structure_errors() -> None:
    assert message_of(pattern(blocks={"attn": {}}, pattern=[])) == (
        "model.decoder.pattern: must name at least one block"
    )
    assert message_of(
        pattern(blocks={"attn": {}}, sequences={"attn": {"type": "repeat"}}, pattern=["attn"])
    ) == "model.decoder.sequences.attn: name 'attn' is also a block; names must be unique"


@pytest.mark.parametrize("num_blocks", [4, 0, -3])
def test_num_blocks_not_a_multiple_of_the_pattern(num_blocks: int) -> None:
    data = pattern(blocks={"a": {}, "b": {}}, pattern=["a", "b", "a"], num_blocks=num_blocks)
    assert message_of(data) == (
        f"model.decoder.num_blocks: must be a positive multiple of the pattern's length (3), got {num_blocks}"
    )


# --- tensor-parallel divisibility -------------------------------------------------------------


def test_tensor_parallel_divisibility_of_heads() -> None:
    error = error_of(
        "parallel.tensor_parallel_size=4",
        "model.hidden_size=384",
        "model.decoder.block.mixer.num_heads=6",
    )
    assert str(error) == "model.decoder.block.mixer.num_heads: 6 is not divisible by the tensor-parallel size (4)"
    assert error.path == "model.decoder.block.mixer.num_heads"


def test_tensor_parallel_divisibility_of_query_groups() -> None:
    assert message_of("parallel.tensor_parallel_size=4", "model.decoder.block.mixer.num_query_groups=2") == (
        "model.decoder.block.mixer.num_query_groups: 2 is not divisible by the tensor-parallel size (4)"
    )


def test_tensor_parallel_divisibility_of_ffn_hidden_size() -> None:
    assert message_of("parallel.tensor_parallel_size=4", "model.decoder.block.mlp.ffn_hidden_size=1026") == (
        "model.decoder.block.mlp.ffn_hidden_size: 1026 is not divisible by the tensor-parallel size (4)"
    )


def test_tensor_parallel_errors_name_pattern_and_nested_blocks() -> None:
    blocks = {"attn": {}, "wide": {"mixer": {"num_heads": 6}}}
    assert message_of(
        "parallel.tensor_parallel_size=4",
        {"model": {"hidden_size": 384}},
        pattern(blocks=blocks, pattern=["attn", "wide"]),
    ) == "model.decoder.blocks.wide.mixer.num_heads: 6 is not divisible by the tensor-parallel size (4)"
    inner = {"type": "repeat", "block": {"mlp": {"ffn_hidden_size": 1026}}}
    assert message_of(
        "parallel.tensor_parallel_size=4",
        pattern(blocks={"attn": {}}, sequences={"inner": inner}, pattern=["attn", "inner"]),
    ) == (
        "model.decoder.sequences.inner.block.mlp.ffn_hidden_size: 1026 is not divisible by the "
        "tensor-parallel size (4)"
    )


def test_tensor_parallel_is_fine_when_everything_divides() -> None:
    config = resolve(
        RunConfig,
        overrides=["parallel.tensor_parallel_size=2", "model.hidden_size=384", "model.decoder.block.mixer.num_heads=6"],
    )
    assert config.parallel.tensor_parallel_size == 2


def test_sequence_parallel_needs_a_divisible_sequence_length() -> None:
    assert message_of(
        "parallel.tensor_parallel_size=4", "parallel.sequence_parallel=true", "training.sequence_length=126"
    ) == (
        "training.sequence_length: 126 is not divisible by the tensor-parallel size (4), "
        "which sequence parallelism needs"
    )


# --- command-line overrides -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "model.hidden_size",
        "model..hidden_size=1",
        "model.hidden-size=1",
        "=3",
        ".model=1",
        "model.hidden_size.=1",
        "model.3d=1",
        "model hidden=1",
        "",
    ],
)
def test_malformed_override_path(text: str) -> None:
    error = error_of(text)
    assert str(error) == f"malformed override {text!r}: expected dotted.path=value, e.g. model.hidden_size=512"
    assert error.path == ""


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("model.hidden_size=[1", "[1"),
        ("model.decoder.pattern={a: [b}", "{a: [b}"),
        ("model.hidden_size=a: b: c", "a: b: c"),
        ("model.hidden_size='abc", "'abc"),
    ],
)
def test_override_value_that_is_not_yaml(text: str, value: str) -> None:
    path = text.partition("=")[0]
    error = error_of(text)
    assert str(error) == f"{path}: malformed override value {value!r}: not valid YAML"
    assert error.path == path


# --- YAML files -------------------------------------------------------------------------------


def test_yaml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  hidden_size: 128\n   vocab_size: 64\n")
    error = error_of(files=[path])
    assert str(error) == f"{path}: YAML syntax error at line 3, column 14: mapping values are not allowed here"


def test_yaml_syntax_error_in_a_flow_list(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  decoder:\n    type: pattern\n    pattern: [attn, ssm\n    blocks: {}\n")
    with pytest.raises(ConfigError) as error:
        load_yaml(path)
    assert str(error.value) == (
        f"{path}: YAML syntax error at line 5, column 11: expected ',' or ']', but got ':'"
    )


def test_yaml_tab_indentation(tmp_path: Path) -> None:
    path = tmp_path / "tab.yaml"
    path.write_text("model:\n\thidden_size: 128\n")
    assert str(error_of(files=[path])) == (
        f"{path}: YAML syntax error at line 2, column 1: found character '\\t' that cannot start any token"
    )


@pytest.mark.parametrize(("text", "kind"), [("- 1\n- 2\n", "list"), ("hello\n", "str"), ("3\n", "int")])
def test_yaml_top_level_must_be_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "top.yaml"
    path.write_text(text)
    assert str(error_of(files=[path])) == f"{path}: expected a mapping at the top level, got {kind}"


def test_empty_yaml_file_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n")
    assert resolve(RunConfig, files=[path]) == RunConfig()


def test_saved_file_with_a_syntax_error_as_pretrained(tmp_path: Path) -> None:
    path = tmp_path / "saved.yaml"
    path.write_text("format_version: 1\nmodel: {hidden_size: 128\n")
    with pytest.raises(ConfigError) as error:
        resolve(RunConfig, pretrained=path)
    assert str(error.value) == (
        f"{path}: YAML syntax error at line 3, column 1: expected ',' or '}}', but got '<stream end>'"
    )


# --- safety: a config can never run code -------------------------------------------------------

UNSAFE_TAGS = [
    ('!!python/object/apply:os.system ["touch {target}"]', "python/object/apply:os.system"),
    ('!!python/object/new:os.system ["touch {target}"]', "python/object/new:os.system"),
    ("!!python/name:os.system", "python/name:os.system"),
    ('!!python/object/apply:subprocess.check_call [["touch", "{target}"]]', "python/object/apply:subprocess.check_call"),
]


def assert_rejected_tag(error: ConfigError, path: Path, tag: str, column: int) -> None:
    # The message names the file, the place and the refused tag. (Its wording, "YAML syntax
    # error", is asserted loosely on purpose: the tag is not a syntax error.)
    message = str(error)
    assert message.startswith(f"{path}: ")
    assert f"at line 1, column {column}: " in message
    assert f"'tag:yaml.org,2002:{tag}'" in message


@pytest.mark.parametrize(("template", "tag"), UNSAFE_TAGS)
def test_python_tags_in_a_yaml_file_are_rejected(tmp_path: Path, template: str, tag: str) -> None:
    target = tmp_path / "created_by_yaml"
    path = tmp_path / "evil.yaml"
    path.write_text(f"model:\n  hidden_size: {template.format(target=target)}\n")
    for attempt in (lambda: load_yaml(path), lambda: resolve(RunConfig, files=[path])):
        with pytest.raises(ConfigError) as error:
            attempt()
        message = str(error.value)
        assert message.startswith(f"{path}: ")
        assert "at line 2, column 16: " in message
        assert f"'tag:yaml.org,2002:{tag}'" in message
    assert not target.exists()


@pytest.mark.parametrize(("template", "tag"), UNSAFE_TAGS)
def test_python_tags_at_the_top_of_a_saved_file_are_rejected(tmp_path: Path, template: str, tag: str) -> None:
    target = tmp_path / "created_by_yaml"
    path = tmp_path / "evil.yaml"
    path.write_text(template.format(target=target) + "\n")
    with pytest.raises(ConfigError) as error:
        resolve(RunConfig, pretrained=path)
    assert_rejected_tag(error.value, path, tag, column=1)
    assert not target.exists()


@pytest.mark.parametrize(("template", "tag"), UNSAFE_TAGS)
def test_python_tags_in_an_override_value_are_rejected(tmp_path: Path, template: str, tag: str) -> None:
    target = tmp_path / "created_by_yaml"
    value = template.format(target=target)
    with pytest.raises(ConfigError) as error:
        parse_override(f"model.hidden_size={value}")
    assert str(error.value) == f"model.hidden_size: malformed override value {value!r}: not valid YAML"
    assert not target.exists()


def test_config_errors_are_value_errors() -> None:
    error = error_of("model.hidden_size=abc")
    assert isinstance(error, ValueError)
    assert (error.path, error.message) == ("model.hidden_size", "expected int, got 'abc' (str)")
