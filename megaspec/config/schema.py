"""Typed, frozen configs with explicit-field tracking and path-aware conversion from data.

A :class:`Config` is a frozen, keyword-only dataclass whose fields all have defaults (the
first step of resolution). It remembers which fields were set explicitly (passed to its
constructor, or named by a YAML file or an override), so a saved config holds only those.

:func:`update` applies plain data (a mapping from YAML, the command line or Python) to a
config and returns a new one:

* a nested mapping changes only the fields it names;
* a :class:`Config` instance replaces the sub-config whole;
* a new ``type:`` for a :class:`DynamicConfig` starts that sub-config afresh from the new
  class's defaults, so no field of the old type leaks into the new one;
* sequences and scalars replace.

Errors are :class:`ConfigError` values that name the full dotted path of the bad field, the
bad value and what was expected; unknown names suggest the closest valid one.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from typing_extensions import Self

ConfigT = TypeVar("ConfigT", bound="Config")

# Set while a config's defaults are the starting point of an update: defaults need not be
# valid on their own (a pattern with no blocks), only the config after the update.
_DEFERRED_VALIDATION = contextvars.ContextVar("megaspec_config_deferred_validation", default=False)


class ConfigError(ValueError):
    """A bad config value. ``str(error)`` is ``"<dotted.path>: <what is wrong>"``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message

    def under(self, prefix: str) -> ConfigError:
        """The same error with ``prefix`` put in front of its path."""
        return ConfigError(join_path(prefix, self.path), self.message)


def join_path(prefix: str, name: str) -> str:
    """``"model" + "hidden_size" -> "model.hidden_size"``; list indices join as ``[i]``."""
    if not prefix:
        return name
    if not name:
        return prefix
    return f"{prefix}{name}" if name.startswith("[") else f"{prefix}.{name}"


def suggestion(name: str, valid: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest valid name, else the list of valid names."""
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f"; valid names: {', '.join(sorted(valid))}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Base of all front-end configs: frozen, keyword-only, every field with a default.

    Subclasses override :meth:`validate` for checks of their own fields (raise
    ``ConfigError("field_name", "...")``; the path is completed by whoever converts data),
    and :meth:`expand_shortcuts` for convenience keys that expand into real fields (listed
    in ``shortcuts``).
    """

    shortcuts: ClassVar[frozenset[str]] = frozenset()

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        instance = super().__new__(cls)
        # The constructor's keywords are the explicitly set fields.
        object.__setattr__(instance, "_explicit_fields", frozenset(kwargs))
        return instance

    def __post_init__(self) -> None:
        if not _DEFERRED_VALIDATION.get():
            self.validate()

    def validate(self) -> None:
        """Check this config's own fields; raise :class:`ConfigError` naming the field."""

    @classmethod
    def expand_shortcuts(cls, data: Mapping[str, Any], current: Self) -> dict[str, Any]:
        """Rewrite convenience keys of ``data`` (applied to ``current``) into real fields."""
        return dict(data)

    @property
    def explicit_fields(self) -> frozenset[str]:
        """Names of the fields that were set explicitly."""
        explicit: frozenset[str] = getattr(self, "_explicit_fields", frozenset())
        return explicit

    def with_explicit(self, names: frozenset[str]) -> Self:
        """This config, recording ``names`` as its explicitly set fields."""
        object.__setattr__(self, "_explicit_fields", names)
        return self


class DynamicConfig(Config):
    """A config whose class is chosen by a ``type:`` key, from a registry of subclasses.

    A direct subclass declared with ``registry_base=True`` starts a registry (e.g. mixers);
    its subclasses join it with the :meth:`register` decorator.
    """

    _registry: ClassVar[dict[str, type[DynamicConfig]]]
    type_name: ClassVar[str] = ""

    def __init_subclass__(cls, *, registry_base: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if registry_base:
            cls._registry = {}

    @classmethod
    def register(cls, name: str) -> Callable[[type[ConfigT]], type[ConfigT]]:
        """Class decorator: make the decorated subclass selectable with ``type: name``.

        Raises:
            ValueError: if ``name`` is taken by another class.
        """

        def decorate(subclass: type[ConfigT]) -> type[ConfigT]:
            if not issubclass(subclass, cls):
                raise TypeError(f"{subclass.__name__} is not a subclass of {cls.__name__}")
            taken = cls._registry.get(name)
            if taken is not None and taken is not subclass:
                raise ValueError(
                    f"{cls.__name__} type '{name}' is already registered by {taken.__qualname__}"
                )
            cls._registry[name] = subclass
            subclass.type_name = name
            return subclass

        return decorate

    @classmethod
    def registered(cls) -> dict[str, type[DynamicConfig]]:
        """Every ``type:`` name of this registry and its class."""
        return dict(cls._registry)

    @classmethod
    def class_for(cls, name: object, path: str) -> type[DynamicConfig]:
        """The registered class for ``type: name``, checked to be a ``cls``.

        Raises:
            ConfigError: for an unknown name (suggesting the closest) or a wrong class.
        """
        names = sorted(cls._registry)
        if not isinstance(name, str) or name not in cls._registry:
            hint = suggestion(name, names) if isinstance(name, str) else f"; valid names: {', '.join(names)}"
            raise ConfigError(join_path(path, "type"), f"unknown type {name!r}{hint}")
        chosen = cls._registry[name]
        if not issubclass(chosen, cls):
            raise ConfigError(
                join_path(path, "type"), f"type '{name}' is not a {cls.__name__}"
            )
        return chosen


# --- converting data to typed values ---------------------------------------------------


def _field_types(cls: type[Config]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(hint: Any) -> str:
    if isinstance(hint, type):
        if issubclass(hint, DynamicConfig):
            return f"a {hint.__name__} mapping with 'type' one of {sorted(hint._registry)}"
        if issubclass(hint, Config):
            return f"a {hint.__name__} mapping"
        return hint.__name__
    origin = typing.get_origin(hint)
    arguments = typing.get_args(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(argument) for argument in arguments)
    if origin in (types.UnionType, typing.Union):
        return " or ".join("null" if a is type(None) else _describe(a) for a in arguments)
    if origin in (tuple, list, Sequence):
        return f"a list of {_describe(arguments[0])}"
    if origin in (dict, Mapping):
        return f"a mapping of names to {_describe(arguments[1])}"
    return str(hint)


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
    if origin is typing.Literal:
        if value not in arguments:
            raise _mismatch(path, hint, value)
        return value
    if origin in (tuple, list, Sequence):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _mismatch(path, hint, value)
        return tuple(convert(arguments[0], item, f"{path}[{index}]") for index, item in enumerate(value))
    if origin in (dict, Mapping):
        return _convert_mapping(arguments[1], value, path, current)
    return _convert_scalar(hint, value, path)


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
            join_path(path, "type"),
            f"missing; expected one of {', '.join(sorted(cls._registry))}",
        )
    instance = base if base is not None else _defaults(target, path)
    # target is cls or a registered subclass of it (checked by class_for).
    return typing.cast(ConfigT, _apply(instance, data, path))


@contextlib.contextmanager
def deferred_validation() -> Iterator[None]:
    """Inside this block, configs are not validated on construction; call :func:`validate_tree`."""
    token = _DEFERRED_VALIDATION.set(True)
    try:
        yield
    finally:
        _DEFERRED_VALIDATION.reset(token)


def validate_tree(config: Config, path: str = "") -> None:
    """Validate ``config`` and every config inside it, innermost first.

    Raises:
        ConfigError: with the full path of the first failing field.
    """
    for field in dataclasses.fields(config):
        _validate_value(getattr(config, field.name), join_path(path, field.name))
    try:
        config.validate()
    except ConfigError as error:
        raise error.under(path) from None


def _validate_value(value: Any, path: str) -> None:
    if isinstance(value, Config):
        validate_tree(value, path)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _validate_value(item, join_path(path, str(key)))
    elif isinstance(value, tuple):
        for index, item in enumerate(value):
            _validate_value(item, f"{path}[{index}]")


def _defaults(cls: type[Config], path: str) -> Config:
    with deferred_validation():
        return cls().with_explicit(frozenset())


def _apply(instance: Config, data: Mapping[str, Any], path: str) -> Config:
    cls = type(instance)
    try:
        data = cls.expand_shortcuts(data, instance)
    except ConfigError as error:
        raise error.under(path) from None
    hints = _field_types(cls)
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
    try:
        return cls(**values).with_explicit(frozenset(explicit))
    except ConfigError as error:
        raise error.under(path) from None


def update(config: ConfigT, data: Mapping[str, Any], path: str = "") -> ConfigT:
    """A new config: ``config`` with ``data`` applied (see the module docstring)."""
    return update_or_create(type(config), config, data, path)


def from_data(cls: type[ConfigT], data: Mapping[str, Any], path: str = "") -> ConfigT:
    """A config of ``cls`` built from its defaults and ``data``."""
    return update_or_create(cls, None, data, path)


# --- back to data -------------------------------------------------------------------------


def to_data(config: Config, *, explicit_only: bool = True) -> dict[str, Any]:
    """Plain data (YAML-safe) for ``config``: only explicit fields unless asked for all.

    A :class:`DynamicConfig` always records its ``type``, so loading it back selects the
    same class.
    """
    data: dict[str, Any] = {}
    if isinstance(config, DynamicConfig):
        data["type"] = config.type_name
    for field in dataclasses.fields(config):
        if not field.init or (explicit_only and field.name not in config.explicit_fields):
            continue
        data[field.name] = _plain(getattr(config, field.name), explicit_only)
    return data


def _plain(value: Any, explicit_only: bool) -> Any:
    if isinstance(value, Config):
        return to_data(value, explicit_only=explicit_only)
    if isinstance(value, Mapping):
        return {key: _plain(item, explicit_only) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(item, explicit_only) for item in value]
    return value
