"""Round trip over random override sets: resolve -> save -> load gives an equal config.

Every drawn override is valid whatever came before it (a field of one mixer type is only ever
set together with its ``type:``), so every drawn set resolves. The overrides are spread over
the pipeline's steps (pretrained config or saved file, YAML files, command-line strings and
Python mappings, some holding config objects) in their drawn order.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from megaspec.config import (
    AttentionMixerConfig,
    BlockConfig,
    Config,
    LayerNormConfig,
    LinearConfig,
    NormalInit,
    PatternSequenceConfig,
    RunConfig,
    UniformInit,
    WeightConfig,
    load,
    read_saved,
    resolve,
    save,
    to_data,
)
from megaspec.transformer_config import RECOMPUTED_SLOTS
from tests.helpers.configs import ProbeMixerConfig


Path_ = tuple[str, ...]
Override = tuple[Path_, Any]
"""A dotted path (as a tuple of names) and the value to put there."""

# --- value strategies -------------------------------------------------------------------------

SCALES = st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0]) | st.floats(0.0, 100.0, allow_nan=False)
POSITIVE = st.floats(1e-6, 1e3, allow_nan=False)
OPTIONAL_BOOLS = st.sampled_from([None, True, False])
# 2, 4 and 8 heads divide every width drawn; query groups of 2 divide every head count; all of
# them and every ffn_hidden_size drawn are divisible by the tensor-parallel sizes drawn (1, 2).
# Head widths (>= 4, also 64 / 8 by default) times rotary fractions (0, or >= 0.5) rotate at
# least one pair of dimensions: a fraction that rotates none is an error.
WIDTHS = st.sampled_from([64, 128, 256])
HEADS = st.sampled_from([2, 4, 8])
EVEN = st.integers(1, 2048).map(lambda half: 2 * half)
MIXER_TYPES = st.sampled_from(["attention", "probe"])
NORM_TYPES = st.sampled_from(["rms_norm", "layer_norm"])
INIT_TYPES = st.sampled_from(["normal", "scaled_normal", "uniform", "zeros", "ones"])
BLOCK_NAMES = ["attn", "ssm", "null", "on", "x1"]  # "null" and "on" must stay strings in YAML


def optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


INITS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.fixed_dictionaries({"type": st.just("normal")}, optional={"std": st.none() | POSITIVE}),
    st.fixed_dictionaries({"type": st.just("scaled_normal")}, optional={"std": st.none() | POSITIVE}),
    st.fixed_dictionaries(
        {"type": st.just("uniform")},
        optional={"low": st.floats(-1.0, -0.01), "high": st.floats(0.01, 1.0)},
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["zeros", "ones"])}),
)
LINEARS = optional(
    bias=OPTIONAL_BOOLS, lr_scale=SCALES, weight_decay=OPTIONAL_BOOLS, apply_peft=OPTIONAL_BOOLS, init=INITS
)
WEIGHTS = optional(lr_scale=SCALES, weight_decay=OPTIONAL_BOOLS, apply_peft=OPTIONAL_BOOLS, init=INITS)
OBJECT_INITS = st.none() | st.builds(NormalInit, std=POSITIVE) | st.builds(UniformInit, low=st.just(-0.5))
WEIGHT_OBJECTS = st.builds(WeightConfig, lr_scale=SCALES, init=OBJECT_INITS)
NORMS = st.fixed_dictionaries({"type": NORM_TYPES}, optional={"weight": WEIGHTS})
LINEAR_OBJECTS = st.builds(LinearConfig, lr_scale=SCALES, init=OBJECT_INITS, bias=OPTIONAL_BOOLS)


def at(path: Path_, values: st.SearchStrategy[Any]) -> st.SearchStrategy[Override]:
    return values.map(lambda value: (path, value))


def weight_overrides(path: Path_, *, linear: bool = False) -> list[st.SearchStrategy[Override]]:
    return [
        at(path, LINEARS if linear else WEIGHTS),
        at(path, LINEAR_OBJECTS if linear else WEIGHT_OBJECTS),
        at((*path, "lr_scale"), SCALES),
        at((*path, "init"), INITS),
        at((*path, "init", "type"), INIT_TYPES),
    ]


def block_overrides(path: Path_) -> list[st.SearchStrategy[Override]]:
    mixer, mlp, norm = (*path, "mixer"), (*path, "mlp"), (*path, "norm")
    attention = st.fixed_dictionaries(
        {"type": st.just("attention")},
        optional={
            "num_heads": HEADS,
            "num_query_groups": st.sampled_from([None, 2]),
            "head_dim": st.none() | st.integers(4, 256),
            "rotary_base": POSITIVE,
            "rotary_fraction": st.just(0.0) | st.floats(0.5, 1.0),
            "qk_norm": st.booleans(),
            "causal": st.booleans(),
            "bias": st.booleans(),
            "sdpa_backend": st.sampled_from(["auto", "flash", "cudnn", "efficient", "math"]),
            "recompute_core_attention": st.booleans(),
            "lr_scale": SCALES,
            "add_linear_biases": st.booleans(),
            "qkv": LINEARS,
            "proj": LINEARS,
        },
    )
    probe = st.fixed_dictionaries(
        {"type": st.just("probe")},
        optional={"kernel_size": st.integers(1, 64), "gate": st.booleans(), "apply_peft": st.booleans()},
    )
    feed_forward = st.fixed_dictionaries(
        {"type": st.just("mlp")},
        optional={
            "ffn_hidden_size": EVEN,
            "activation": st.sampled_from(["silu", "gelu", "gelu_tanh", "relu"]),
            "gated": st.booleans(),
            "bias": st.booleans(),
            "lr_scale": SCALES,
            "add_linear_biases": st.booleans(),
            "fc1": LINEARS,
            "fc2": LINEARS,
        },
    )
    mixer_objects = st.builds(AttentionMixerConfig, num_heads=HEADS) | st.builds(
        ProbeMixerConfig, kernel_size=st.integers(1, 64)
    )
    return [
        at(mixer, attention | probe),
        at(mixer, mixer_objects),
        at((*mixer, "type"), MIXER_TYPES),
        # Fields every mixer type has.
        at((*mixer, "lr_scale"), SCALES),
        at((*mixer, "apply_peft"), st.booleans()),
        at(mlp, feed_forward),
        at((*mlp, "ffn_hidden_size"), EVEN),
        at((*norm, "type"), NORM_TYPES),
        at(norm, NORMS),
        *weight_overrides((*norm, "weight")),
        at((*path, "post_norms"), st.booleans()),
        at((*path, "lr_scale"), SCALES),
        # The block shortcut needs an attention mixer (naming its type keeps its fields).
        at(path, st.fixed_dictionaries({"add_linear_biases": st.booleans(), "mixer": st.just({"type": "attention"})})),
        at(path, st.builds(BlockConfig, post_norms=st.booleans(), mixer=mixer_objects)),
    ]


GLOBAL_OVERRIDES: list[st.SearchStrategy[Override]] = [
    at(("model", "hidden_size"), WIDTHS),
    at(("model", "vocab_size"), st.integers(1, 2**20)),
    at(("model", "init_std"), POSITIVE),
    at(("model", "norm_epsilon"), st.floats(1e-12, 1e-2)),
    at(("model", "tie_embeddings"), st.booleans()),
    at(("model", "fuse_elementwise"), st.booleans()),
    at(("model", "recompute"), st.lists(st.sampled_from(RECOMPUTED_SLOTS), unique=True)),
    at(("model", "fused_cross_entropy"), st.booleans()),
    at(("model", "cross_entropy_chunk_tokens"), st.none() | st.integers(1, 2**16)),
    at(("model", "final_norm", "type"), NORM_TYPES),
    at(("model", "final_norm"), NORMS),
    at(("model", "final_norm"), st.builds(LayerNormConfig, weight=WEIGHT_OBJECTS)),
    *weight_overrides(("model", "final_norm", "weight")),
    *weight_overrides(("model", "embedding")),
    *weight_overrides(("model", "output_layer"), linear=True),
    at(("parallel", "tensor_parallel_size"), st.sampled_from([1, 2])),
    at(("parallel", "sequence_parallel"), st.booleans()),
    at(("training", "sequence_length"), EVEN),
    at(("training", "learning_rate"), POSITIVE),
    at(("training", "seed"), st.integers(0, 2**31)),
    at(("training",), optional(steps=st.integers(1, 10**6), warmup_steps=st.integers(0, 1000))),
]


@dataclass(frozen=True)
class Layout:
    """The decoder's shape: its defining override (if any) and the paths of its blocks."""

    first: list[Override]
    block_paths: list[Path_]
    decoder_overrides: list[st.SearchStrategy[Override]]


@st.composite
def layouts(draw: st.DrawFn) -> Layout:
    decoder: Path_ = ("model", "decoder")
    if draw(st.booleans()):
        return Layout(
            first=[],
            block_paths=[(*decoder, "block")],
            decoder_overrides=[at((*decoder, "num_blocks"), st.integers(1, 64)), at((*decoder, "lr_scale"), SCALES)],
        )
    names = draw(st.lists(st.sampled_from(BLOCK_NAMES), min_size=1, max_size=3, unique=True))
    block_paths = [(*decoder, "blocks", name) for name in names]
    sequences: dict[str, Any] = {}
    decoder_overrides = [at((*decoder, "lr_scale"), SCALES)]
    inner = draw(st.sampled_from([None, "repeat", "pattern"]))
    if inner == "repeat":
        sequences["inner"] = {"type": "repeat", "num_blocks": draw(st.integers(1, 4))}
        block_paths.append((*decoder, "sequences", "inner", "block"))
        decoder_overrides.append(at((*decoder, "sequences", "inner", "num_blocks"), st.integers(1, 4)))
    elif inner == "pattern":
        sequences["inner"] = {"type": "pattern", "blocks": {"deep": {}}, "pattern": ["deep", "deep"]}
        block_paths.append((*decoder, "sequences", "inner", "blocks", "deep"))
        decoder_overrides.append(at((*decoder, "sequences", "inner", "num_blocks"), st.sampled_from([None, 2, 4])))
    pattern = draw(st.lists(st.sampled_from([*names, *sequences]), min_size=1, max_size=4))
    num_blocks = st.none() | st.integers(1, 4).map(lambda passes: passes * len(pattern))
    definition: dict[str, Any] = {
        "type": "pattern",
        "blocks": {name: {} for name in names},
        "sequences": sequences,
        "pattern": pattern,
        "num_blocks": draw(num_blocks),
    }
    decoder_overrides.append(at((*decoder, "num_blocks"), num_blocks))
    if not sequences:
        # The same blocks and pattern again, as an object: it replaces the whole decoder.
        whole = PatternSequenceConfig(blocks={name: BlockConfig() for name in names}, pattern=tuple(pattern))
        decoder_overrides.append(at(decoder, st.just(whole)))
    return Layout(first=[(decoder, definition)], block_paths=block_paths, decoder_overrides=decoder_overrides)


@dataclass(frozen=True)
class Scenario:
    """Overrides in order, split over the pipeline's steps."""

    overrides: list[Override]
    pretrained_count: int
    pretrained_kind: str  # "object" or "saved file"
    file_count: int
    as_text: list[bool]  # per command-line-or-mapping override: render as "dotted.path=value"


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    layout = draw(layouts())
    pool = GLOBAL_OVERRIDES + layout.decoder_overrides
    pool += [strategy for path in layout.block_paths for strategy in block_overrides(path)]
    drawn = draw(st.lists(st.one_of(pool), min_size=1, max_size=16))
    overrides = layout.first + drawn
    pretrained_count = draw(st.integers(0, len(overrides)))
    file_count = draw(st.integers(0, len(overrides) - pretrained_count))
    return Scenario(
        overrides=overrides,
        pretrained_count=pretrained_count,
        pretrained_kind=draw(st.sampled_from(["object", "saved file"])),
        file_count=file_count,
        as_text=[draw(st.booleans()) for _ in overrides],
    )


# --- rendering --------------------------------------------------------------------------------


def nested(path: Path_, value: Any) -> dict[str, Any]:
    for name in reversed(path):
        value = {name: value}
    assert isinstance(value, dict)
    return value


def holds_config(value: Any) -> bool:
    if isinstance(value, Config):
        return True
    if isinstance(value, dict):
        return any(holds_config(item) for item in value.values())
    return False


def yaml_text(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=2**30)
    return text.removesuffix("\n...\n").strip()


def rendered(override: Override, as_text: bool) -> str | dict[str, Any]:
    path, value = override
    if as_text and not holds_config(value):
        return f"{'.'.join(path)}={yaml_text(value)}"
    return nested(path, value)


def resolve_scenario(scenario: Scenario, directory: Path) -> RunConfig:
    overrides = scenario.overrides
    split = scenario.pretrained_count
    pretrained: RunConfig | Path | None = None
    if split:
        pretrained = resolve(
            RunConfig, overrides=[rendered(item, text) for item, text in zip(overrides[:split], scenario.as_text)]
        )
        if scenario.pretrained_kind == "saved file":
            save(pretrained, directory / "pretrained.yaml")
            pretrained = directory / "pretrained.yaml"
    files = []
    end_of_files = split + scenario.file_count
    for index, (path, value) in enumerate(overrides[split:end_of_files]):
        if holds_config(value):
            continue  # a file holds plain data only; every override is valid without it
        files.append(directory / f"file{index}.yaml")
        files[-1].write_text(yaml.safe_dump(nested(path, value)))
    rest = zip(overrides[end_of_files:], scenario.as_text[end_of_files:])
    return resolve(RunConfig, pretrained=pretrained, files=files, overrides=[rendered(o, t) for o, t in rest])


# --- the property -----------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_resolve_save_load_gives_an_equal_config(scenario: Scenario) -> None:
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        config = resolve_scenario(scenario, directory)
        saved = directory / "saved.yaml"
        save(config, saved)
        loaded = load(RunConfig, saved)
        assert loaded == config
        assert to_data(loaded) == to_data(config)
        # Shortcuts are expanded, never saved; saving again writes the same file.
        text = saved.read_text()
        assert "add_linear_biases" not in text
        save(loaded, directory / "again.yaml")
        assert (directory / "again.yaml").read_text() == text
        # The saved data applied as an override to the defaults gives the same config.
        assert resolve(RunConfig, overrides=[read_saved(saved)]) == config


@settings(max_examples=40, deadline=None)
@given(scenarios())
def test_saved_config_applied_over_its_own_source_changes_nothing(scenario: Scenario) -> None:
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        config = resolve_scenario(scenario, directory)
        saved = directory / "saved.yaml"
        save(config, saved)
        assert resolve(RunConfig, pretrained=config, overrides=[read_saved(saved)]) == config
