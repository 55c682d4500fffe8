"""The base of every config: frozen, keyword-only dataclasses that remember explicit fields.

A :class:`Config` records which fields were set explicitly: the keywords its constructor
was given, the fields a YAML file or an override named, or the fields given to
``dataclasses.replace`` or ``copy.replace`` (on top of the original's explicit fields). A
saved config holds only those, so it is small and applies as an override to another config.

Configs are validated on construction: first every field's declared checks
(:mod:`megaspec.schema.checks`), then the class's own :meth:`Config.validate` for checks
that relate several fields. Errors name the field (``AttentionConfig.num_heads: must be
positive, got 0``); configs built from data name the full dotted path instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from typing_extensions import Self

from megaspec.schema.checks import field_errors
from megaspec.schema.errors import ConfigError, join_path, suggestion

ConfigT = TypeVar("ConfigT", bound="Config")

# Set while a config's defaults are the starting point of an update: defaults need not be
# valid on their own (a pattern with no blocks), only the config after the update.
_DEFERRED_VALIDATION = contextvars.ContextVar("megaspec_config_deferred_validation", default=False)
# The explicit fields of the next config constructed (see `construct`); consumed by __new__.
_EXPLICIT_FOR_NEXT: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar(
    "megaspec_config_explicit_for_next", default=None
)
# dataclasses.replace(obj, **changes) fills `changes` with every field it was not given before
# it calls the constructor, so the constructor alone cannot tell given fields from copied
# ones. replace first checks that type(obj) is a dataclass by reading its class attribute
# __dataclass_fields__, before filling: the metaclass notes the given names then, for the
# constructor call that follows. (A metaclass hook leaves instance attribute access alone, so
# torch.compile traces code reading config fields as usual.)
_REPLACE_CODES = frozenset(
    function.__code__
    for function in (getattr(dataclasses, "replace", None), getattr(dataclasses, "_replace", None))
    if function is not None
)


@dataclasses.dataclass(frozen=True)
class _ReplaceCall:
    frame_id: int  # the dataclasses.replace call, alive until it constructs the new config
    explicit: frozenset[str]  # the original's explicit fields
    named: frozenset[str]  # the fields given to replace


class _PendingReplace(threading.local):
    call: _ReplaceCall | None = None


_pending_replace = _PendingReplace()


class _ConfigMeta(type):
    if not TYPE_CHECKING:  # mypy would accept any class attribute name on a class defining this

        def __getattribute__(cls, name: str) -> Any:
            if name == "__dataclass_fields__":
                _note_replace_call(sys._getframe(1))
            elif name == "__replace__":  # copy.replace (Python 3.13+) looks it up on the class
                return _replace_config
            return super().__getattribute__(name)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(metaclass=_ConfigMeta):
    """Base of all configs: frozen, keyword-only.

    Front-end configs (built from YAML and overrides) give every field a default, the first
    step of resolution. Subclasses declare single-field checks with ``field(...,
    metadata=checks(...))``, override :meth:`validate` for checks relating several fields
    (raise ``ConfigError("field_name", "...")``), and override :meth:`expand_shortcuts` for
    convenience keys that expand into real fields (listed in ``shortcuts``).
    """

    shortcuts: ClassVar[frozenset[str]] = frozenset()

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        instance = super().__new__(cls)
        object.__setattr__(instance, "_explicit_fields", _explicit_fields_of_new(kwargs))
        return instance

    def __post_init__(self) -> None:
        if not _DEFERRED_VALIDATION.get():
            try:
                check_config(self)
            except ConfigError as error:
                raise error.under(type(self).__name__) from None

    def validate(self) -> None:
        """Checks relating several fields; raise :class:`ConfigError` naming a field."""

    @classmethod
    def expand_shortcuts(cls, data: Mapping[str, Any], current: Self) -> dict[str, Any]:
        """Rewrite convenience keys of ``data`` (applied to ``current``) into real fields."""
        return dict(data)

    @property
    def explicit_fields(self) -> frozenset[str]:
        """Names of the fields that were set explicitly."""
        explicit: frozenset[str] = getattr(self, "_explicit_fields", frozenset())
        return explicit


def _explicit_fields_of_new(keywords: Mapping[str, Any]) -> frozenset[str]:
    given = _EXPLICIT_FOR_NEXT.get()
    if given is not None:
        _EXPLICIT_FOR_NEXT.set(None)  # for this construction only, not its default factories
        return given
    caller = sys._getframe(2)  # the caller of Config.__new__
    pending = _pending_replace.call
    if pending is not None and caller.f_code in _REPLACE_CODES:
        # Python 3.13 constructs in dataclasses._replace, called by the replace that was noted.
        if pending.frame_id in (id(caller), id(caller.f_back)):
            _pending_replace.call = None
            return pending.explicit | pending.named
    return frozenset(keywords)


def _note_replace_call(frame: Any) -> None:
    # A few frames up from the class attribute read sits the dataclasses.replace call, if any.
    for _ in range(3):
        if frame is None:
            return
        if frame.f_code in _REPLACE_CODES:
            original = frame.f_locals.get("obj", frame.f_locals.get("self"))
            if isinstance(original, Config):
                named = frozenset(frame.f_locals.get("changes", ()))
                _pending_replace.call = _ReplaceCall(id(frame), original.explicit_fields, named)
            return
        frame = frame.f_back


def _replace_config(config: ConfigT, /, **changes: Any) -> ConfigT:
    """``copy.replace(config, **changes)``: the fields given become explicit, as with
    ``dataclasses.replace``."""
    values = {field.name: getattr(config, field.name) for field in dataclasses.fields(config) if field.init}
    values.update(changes)
    replaced = construct(type(config), values, config.explicit_fields | frozenset(changes))
    try:
        check_config(replaced)
    except ConfigError as error:
        raise error.under(type(config).__name__) from None
    return replaced


def construct(cls: type[ConfigT], values: Mapping[str, Any], explicit: frozenset[str]) -> ConfigT:
    """``cls(**values)`` recording ``explicit`` as its explicit fields, not yet validated."""
    token = _EXPLICIT_FOR_NEXT.set(explicit)
    try:
        with deferred_validation():
            return cls(**values)
    finally:
        _EXPLICIT_FOR_NEXT.reset(token)


def check_config(config: Config) -> None:
    """Run ``config``'s declared field checks, then its :meth:`Config.validate`.

    Raises:
        ConfigError: naming the failing field (relative to ``config``).
    """
    error = field_errors(config)
    if error is not None:
        raise error
    config.validate()


@contextlib.contextmanager
def deferred_validation() -> Iterator[None]:
    """Inside this block, configs are not validated on construction; call :func:`validate_tree`."""
    token = _DEFERRED_VALIDATION.set(True)
    try:
        yield
    finally:
        _DEFERRED_VALIDATION.reset(token)


def validation_deferred() -> bool:
    """Whether configs are being built inside :func:`deferred_validation`."""
    return _DEFERRED_VALIDATION.get()


def validate_tree(config: Config, path: str = "") -> None:
    """Validate ``config`` and every config inside it, innermost first.

    Raises:
        ConfigError: with the full path of the first failing field.
    """
    for field in dataclasses.fields(config):
        _validate_value(getattr(config, field.name), join_path(path, field.name))
    try:
        check_config(config)
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
    def type_names(cls) -> list[str]:
        """The registered ``type:`` names, sorted."""
        return sorted(cls._registry)

    @classmethod
    def class_for(cls, name: object, path: str) -> type[DynamicConfig]:
        """The registered class for ``type: name``, checked to be a ``cls``.

        Raises:
            ConfigError: for an unknown name (suggesting the closest) or a wrong class.
        """
        names = cls.type_names()
        if not isinstance(name, str) or name not in cls._registry:
            hint = suggestion(name, names) if isinstance(name, str) else f"; valid names: {', '.join(names)}"
            raise ConfigError(join_path(path, "type"), f"unknown type {name!r}{hint}")
        chosen = cls._registry[name]
        if not issubclass(chosen, cls):
            raise ConfigError(join_path(path, "type"), f"type '{name}' is not a {cls.__name__}")
        return chosen
