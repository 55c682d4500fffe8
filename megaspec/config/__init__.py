"""Typed, layered configs: a YAML / command-line front end to the typed specs.

Resolution is a pure pipeline (see :func:`resolve`): class defaults -> pretrained config ->
YAML files -> command-line overrides -> validation -> an immutable config. A resolved
:class:`ModelConfig` builds the same ``TransformerLayerSubmodules`` a Python user would write
(:meth:`ModelConfig.submodules`, :meth:`ModelConfig.build`). The slot configs are the layer
configs of :mod:`megaspec.transformer_config` (one definition of each setting and check);
the config machinery itself lives in :mod:`megaspec.schema`.
"""

from megaspec.config.adapters import AdapterConfig, IA3Config, LoraConfig
from megaspec.config.blocks import (
    BlockConfig,
    BlockSequenceConfig,
    PatternSequenceConfig,
    RepeatSequenceConfig,
)
from megaspec.config.inits import (
    InitConfig,
    NormalInit,
    OnesInit,
    ScaledNormalInit,
    UniformInit,
    ZerosInit,
)
from megaspec.config.model import ModelConfig
from megaspec.config.resolve import (
    FORMAT_VERSION,
    PathLike,
    load,
    load_yaml,
    parse_override,
    read_saved,
    resolve,
    save,
    saved_text,
)
from megaspec.config.run import ParallelConfig, RunConfig, TrainingConfig
from megaspec.config.slots import (
    AttentionMixerConfig,
    FeedForwardConfig,
    LayerNormConfig,
    MixerConfig,
    MlpLayerConfig,
    NormConfig,
    RMSNormConfig,
    register_mixer,
)
from megaspec.config.te_slots import (
    TEAttentionMixerConfig,
    TEFeedForwardConfig,
    TELayerNormConfig,
    TERMSNormConfig,
)
from megaspec.config.weights import LearningRateScaled, LinearConfig, WeightConfig
from megaspec.schema import (
    Config,
    ConfigError,
    DynamicConfig,
    from_data,
    to_data,
    update,
    validate_tree,
)

__all__ = [
    "FORMAT_VERSION",
    "AdapterConfig",
    "IA3Config",
    "LoraConfig",
    "AttentionMixerConfig",
    "BlockConfig",
    "BlockSequenceConfig",
    "Config",
    "ConfigError",
    "DynamicConfig",
    "FeedForwardConfig",
    "InitConfig",
    "LayerNormConfig",
    "LearningRateScaled",
    "LinearConfig",
    "MixerConfig",
    "MlpLayerConfig",
    "ModelConfig",
    "NormConfig",
    "NormalInit",
    "OnesInit",
    "ParallelConfig",
    "PathLike",
    "PatternSequenceConfig",
    "RMSNormConfig",
    "RepeatSequenceConfig",
    "RunConfig",
    "ScaledNormalInit",
    "TEAttentionMixerConfig",
    "TEFeedForwardConfig",
    "TELayerNormConfig",
    "TERMSNormConfig",
    "TrainingConfig",
    "UniformInit",
    "WeightConfig",
    "ZerosInit",
    "from_data",
    "load",
    "load_yaml",
    "parse_override",
    "read_saved",
    "register_mixer",
    "resolve",
    "save",
    "saved_text",
    "to_data",
    "update",
    "validate_tree",
]
