"""The resolution pipeline, YAML files and command-line overrides.

``resolve(cls, pretrained=..., files=[...], overrides=[...])`` is a pure function:

    class defaults -> pretrained config -> YAML files (in order) -> overrides (in order)
    -> derived values and validation -> immutable resolved config

Each step overrides the earlier ones (see :mod:`megaspec.config.schema` for how a nested
mapping, a config object and a ``type:`` change apply). YAML is read with ``yaml.safe_load``
only: a config can never construct Python objects or run code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from megaspec.schema import (
    Config,
    ConfigError,
    ConfigT,
    deferred_validation,
    from_data,
    to_data,
    update,
    validate_tree,
)

PathLike = str | os.PathLike[str]
"""A file or directory path: a ``str`` or a ``pathlib.Path`` (any ``os.PathLike[str]``)."""

FORMAT_VERSION = 1
FORMAT_KEY = "format_version"
_PATH_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

Override = str | Mapping[str, Any]
"""A command-line override ``dotted.path=yaml_value`` or a nested mapping."""


class _SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-5`` as a float (YAML 1.1 wants ``1.0e-5``)."""


_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _safe_load(text: str) -> Any:
    return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass


def load_yaml(path: PathLike) -> dict[str, Any]:
    """The mapping in a YAML file, read with the safe loader.

    Raises:
        ConfigError: for a syntax error (with line and column), or a file whose top level is
            not a mapping.
    """
    text = Path(path).read_text()
    try:
        data = _safe_load(text)
    except yaml.constructor.ConstructorError as error:
        # Python-object tags and the like: refused, never constructed.
        mark = error.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(
            "", f"{path}: tag not allowed{where}: {error.problem} (configs are plain data)"
        ) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError("", f"{path}: YAML syntax error{where}: {error.problem}") from None
    except yaml.YAMLError as error:
        raise ConfigError("", f"{path}: YAML error: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("", f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_override(text: str) -> dict[str, Any]:
    """``"model.decoder.block.mixer.num_heads=8"`` as ``{"model": {...: {"num_heads": 8}}}``.

    The value is parsed as YAML (``8`` is an int, ``true`` a bool, ``[a, b]`` a list,
    ``{type: conv}`` a mapping).

    Raises:
        ConfigError: for a malformed override.
    """
    path, separator, value_text = text.partition("=")
    path = path.strip()
    if not separator or not _PATH_PATTERN.match(path):
        raise ConfigError(
            "", f"malformed override {text!r}: expected dotted.path=value, e.g. model.hidden_size=512"
        )
    try:
        value = _safe_load(value_text) if value_text.strip() else None
    except yaml.YAMLError:
        raise ConfigError(path, f"malformed override value {value_text!r}: not valid YAML") from None
    for name in reversed(path.split(".")):
        value = {name: value}
    assert isinstance(value, dict)
    return value


def resolve(
    cls: type[ConfigT],
    *,
    pretrained: ConfigT | PathLike | None = None,
    files: Sequence[PathLike] = (),
    overrides: Sequence[Override] = (),
) -> ConfigT:
    """Resolve a config of ``cls`` (see the module docstring).

    ``pretrained`` is a config object or a saved config file; only its explicitly set fields
    take part, so they can be overridden like any other layer.

    Raises:
        ConfigError: naming the full dotted path of the first bad value.
    """
    # Intermediate layers need not be valid on their own (a YAML file may name a block that
    # an override defines); the result is validated once, at the end.
    with deferred_validation():
        config = from_data(cls, {})
        if pretrained is not None:
            data = to_data(pretrained) if isinstance(pretrained, Config) else read_saved(pretrained)
            config = update(config, data)
        for path in files:
            config = update(config, read_config_file(path))
        for override in overrides:
            layer: Mapping[str, Any] = (
                parse_override(override) if isinstance(override, str) else override
            )
            config = update(config, layer)
    validate_tree(config)
    return config


def read_config_file(path: PathLike) -> dict[str, Any]:
    """A YAML config file's data; a saved config (with a format version) is accepted too."""
    data = load_yaml(path)
    return read_saved(path) if FORMAT_KEY in data else data


def read_saved(path: PathLike) -> dict[str, Any]:
    """The explicit data of a config saved by :func:`save`, its format version checked.

    Raises:
        ConfigError: for a missing or unsupported format version.
    """
    data = load_yaml(path)
    version = data.pop(FORMAT_KEY, None)
    if version != FORMAT_VERSION:
        raise ConfigError(
            FORMAT_KEY, f"{path}: expected format version {FORMAT_VERSION}, got {version!r}"
        )
    return data


def saved_text(config: Config) -> str:
    """The YAML text :func:`save` writes: the explicitly set fields and the format version.

    Call it before long work to learn early that a config cannot be saved.

    Raises:
        ConfigError: for a value YAML cannot hold (a Python function set from Python),
            naming its path.
    """
    return yaml.safe_dump({FORMAT_KEY: FORMAT_VERSION, **to_data(config)}, sort_keys=False)


def save(config: Config, path: PathLike) -> None:
    """Write :func:`saved_text` to ``path`` atomically (a temporary file, then a rename).

    Raises:
        ConfigError: as :func:`saved_text`, before anything is written.
    """
    text = saved_text(config)
    target = Path(path)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, target)


def load(cls: type[ConfigT], path: PathLike) -> ConfigT:
    """Load and resolve a config saved by :func:`save`."""
    return resolve(cls, pretrained=path)
