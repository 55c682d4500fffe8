"""Plain data (YAML, command-line overrides, Python mappings) to typed configs and back.

:func:`update` applies data to a config and returns a new one:

* a nested mapping changes only the fields it names;
* a :class:`~megaspec.schema.Config` instance replaces the sub-config whole;
* a new ``type:`` for a :class:`~megaspec.schema.DynamicConfig` starts that sub-config afresh
  from the new class's defaults, so no field of the old type leaks into the new one;
* sequences and scalars replace.

Errors are :class:`~megaspec.schema.ConfigError` values naming the full dotted path of the
bad field, the bad value and what was expected; unknown names suggest the closest valid one.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from megaspec.schema.config import (
    Config,
    ConfigT,
    DynamicConfig,
    check_config,
    construct,
    validation_deferred,
)
from megaspec.schema.errors import ConfigError, join_path, suggestion


def _describe(hint: Any) -> str:
    if isinstance(hint, type):
        if issubclass(hint, DynamicConfig):
            return f"a {hint.__name__} mapping with 'type' one of {hint.type_names()}"
        if issubclass(hint, Config):
            return f"a {hint.__name__} mapping"
        return hint.__name__
    origin = typing.get_origin(hint)
    arguments = typing.get_args(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(argument) for argument in arguments)
    if origin in (types.UnionType, typing.Union):
        # A function alternative is for Python callers; data can only name one.
        described = [_describe(argument) for argument in arguments if not _is_callable(argument)]
        return " or ".join("null" if text == "NoneType" else text for text in described)
    if origin in (tuple, list, Sequence):
        return f"a list of {_describe(arguments[0])}"
    if origin in (dict, Mapping):
        return f"a mapping of names to {_describe(arguments[1])}"
    return str(hint)


def _is_callable(hint: Any) -> bool:
    return typing.get_origin(hint) is collections.abc.Callable


def _mismatch(path: str, hint: Any, value: Any) -> ConfigError:
    return ConfigError(path, f"expected {_describe(hint)}, got {value!r} ({type(value).__name__})")


def convert(hint: Any, value: Any, path: str, current: Any = None) -> Any:
    """``value`` (plain data) as a value of type ``hint``; ``current`` is the value it updates.

    Raises:
        ConfigError: if ``value`` does not fit ``hint``.
    """
    origin = typing.get_origin(hint)
    arguments = typing.get_args(hint)
    if isinstance(hint, type) and issubclass(hint, Config):
        if isinstance(value, Config):
            if not isinstance(value, hint):
                raise _mismatch(path, hint, value)
            return value
        if not isinstance(value, Mapping):
            raise _mismatch(path, hint, value)
        base = current if isinstance(current, hint) else None
        return update_or_create(hint, base, value, path)
    if origin in (types.UnionType, typing.Union):
        return _convert_union(hint, value, path, current)
    if origin is typing.Literal:
        if value not in arguments:
            raise _mismatch(path, hint, value)
        return value
    if _is_callable(hint):
        if isinstance(value, (str, bytes)) or not callable(value):
            raise _mismatch(path, hint, value)
        return value
    if origin in (tuple, list, Sequence):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _mismatch(path, hint, value)
        return tuple(convert(arguments[0], item, f"{path}[{index}]") for index, item in enumerate(value))
    if origin in (dict, Mapping):
        return _convert_mapping(arguments[1], value, path, current)
    return _convert_scalar(hint, value, path)


def _convert_union(hint: Any, value: Any, path: str, current: Any) -> Any:
    arguments = typing.get_args(hint)
    if value is None and type(None) in arguments:
        return None
    options = [argument for argument in arguments if argument is not type(None)]
    if len(options) == 1:
        return convert(options[0], value, path, current)
    for option in options:
        try:
            return convert(option, value, path, current)
        except ConfigError:
            continue
    raise _mismatch(path, hint, value)


def _convert_mapping(value_hint: Any, value: Any, path: str, current: Any) -> Mapping[str, Any]:
    if isinstance(value, Config) or not isinstance(value, Mapping):
        raise _mismatch(path, dict[str, value_hint], value)
    # Named entries update the existing entry of that name; new names are added.
    result = dict(current) if isinstance(current, Mapping) else {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise ConfigError(path, f"names must be strings, got {key!r}")
        result[key] = convert(value_hint, item, join_path(path, key), result.get(key))
    return result


def _convert_scalar(hint: Any, value: Any, path: str) -> Any:
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise _mismatch(path, hint, value)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _mismatch(path, hint, value)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _mismatch(path, hint, value)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _mismatch(path, hint, value)
        return value
    raise TypeError(f"{path}: config fields of type {hint!r} are not supported")


def update_or_create(
    cls: type[ConfigT], base: ConfigT | None, data: Mapping[str, Any], path: str
) -> ConfigT:
    """Apply ``data`` to ``base`` (or to ``cls``'s defaults when ``base`` is ``None``).

    For a :class:`DynamicConfig`, a ``type`` naming a class other than ``base``'s starts
    afresh from that class's defaults.

    Raises:
        ConfigError: for unknown fields, wrong types or failed validation, with full paths.
    """
    target: type[Config] = type(base) if base is not None else cls
    if issubclass(cls, DynamicConfig) and "type" in data:
        chosen = cls.class_for(data["type"], path)
        if chosen is not target:
            target, base = chosen, None
    if base is None and target is cls and issubclass(cls, DynamicConfig) and not cls.type_name:
        raise ConfigError(
            join_path(path, "type"), f"missing; expected one of {', '.join(cls.type_names())}"
        )
    instance = base if base is not None else construct(target, {}, frozenset())
    # target is cls or a registered subclass of it (checked by class_for).
    return typing.cast(ConfigT, _apply(instance, data, path))


def _apply(instance: Config, data: Mapping[str, Any], path: str) -> Config:
    cls = type(instance)
    try:
        data = cls.expand_shortcuts(data, instance)
    except ConfigError as error:
        raise error.under(path) from None
    hints = typing.get_type_hints(cls)
    names = [field.name for field in dataclasses.fields(cls) if field.init]
    values = {name: getattr(instance, name) for name in names}
    for key, value in data.items():
        if key == "type" and isinstance(instance, DynamicConfig):
            continue
        field_path = join_path(path, str(key))
        if key not in values:
            raise ConfigError(field_path, f"unknown field{suggestion(str(key), names)}")
        values[key] = convert(hints[key], value, field_path, values[key])
    explicit = instance.explicit_fields | {key for key in data if key != "type"}
    updated = construct(cls, values, frozenset(explicit))
    if not validation_deferred():
        try:
            check_config(updated)
        except ConfigError as error:
            raise error.under(path) from None
    return updated


def update(config: ConfigT, data: Mapping[str, Any], path: str = "") -> ConfigT:
    """A new config: ``config`` with ``data`` applied (see the module docstring)."""
    return update_or_create(type(config), config, data, path)


def from_data(cls: type[ConfigT], data: Mapping[str, Any], path: str = "") -> ConfigT:
    """A config of ``cls`` built from its defaults and ``data``."""
    return update_or_create(cls, None, data, path)


def to_data(config: Config, *, explicit_only: bool = True, path: str = "") -> dict[str, Any]:
    """Plain data (YAML-safe) for ``config``: only explicit fields unless asked for all.

    A :class:`DynamicConfig` always records its ``type``, so loading it back selects the
    same class.

    Raises:
        ConfigError: for a value that plain data cannot hold (a Python function), naming
            its path.
    """
    data: dict[str, Any] = {}
    if isinstance(config, DynamicConfig):
        data["type"] = config.type_name
    for field in dataclasses.fields(config):
        if not field.init or (explicit_only and field.name not in config.explicit_fields):
            continue
        field_path = join_path(path, field.name)
        data[field.name] = _plain(getattr(config, field.name), explicit_only, field_path)
    return data


def _plain(value: Any, explicit_only: bool, path: str) -> Any:
    if isinstance(value, Config):
        return to_data(value, explicit_only=explicit_only, path=path)
    if isinstance(value, Mapping):
        return {key: _plain(item, explicit_only, join_path(path, key)) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(item, explicit_only, f"{path}[{index}]") for index, item in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    name = getattr(value, "__qualname__", type(value).__name__)
    raise ConfigError(
        path, f"{name} cannot be saved as plain data; a saved config names it (e.g. by a string)"
    )
