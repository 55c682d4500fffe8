"""Typed, frozen configs: explicit-field tracking, declared checks, conversion from data.

The bottom of the library: the layer configs (:mod:`megaspec.transformer_config`) and the
YAML front end (:mod:`megaspec.config`) are both built on :class:`Config`, so each setting
and each check is defined once.
"""

from megaspec.schema.checks import (
    Check,
    at_least,
    checks,
    non_negative,
    optional,
    positive,
    within,
)
from megaspec.schema.config import (
    Config,
    ConfigT,
    DynamicConfig,
    check_config,
    construct,
    deferred_validation,
    validate_tree,
)
from megaspec.schema.convert import convert, from_data, to_data, update, update_or_create
from megaspec.schema.errors import ConfigError, join_path, suggestion

__all__ = [
    "Check",
    "Config",
    "ConfigError",
    "ConfigT",
    "DynamicConfig",
    "at_least",
    "check_config",
    "checks",
    "construct",
    "convert",
    "deferred_validation",
    "from_data",
    "join_path",
    "non_negative",
    "optional",
    "positive",
    "suggestion",
    "to_data",
    "update",
    "update_or_create",
    "validate_tree",
    "within",
]
