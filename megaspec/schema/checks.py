"""Declared checks of single config fields.

A field states its checks where it is declared, once, and every config family (the Python
layer configs and the YAML front end) runs the same ones::

    num_heads: int = field(default=8, metadata=checks(positive))
    rotary_fraction: float = field(default=1.0, metadata=checks(within(0, 1)))

A check returns the message for a bad value (``"must be positive, got 0"``) or ``None``;
:func:`field_errors` turns the first failure into a :class:`ConfigError` naming the field.
Checks that relate several fields stay in the config's ``validate`` method.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from megaspec.schema.errors import ConfigError

Check = Callable[[Any], "str | None"]
"""Returns what is wrong with a value, or ``None`` when it is fine."""

_CHECKS_KEY = "megaspec_checks"


def checks(*declared: Check) -> Mapping[str, Any]:
    """Field metadata declaring ``declared`` checks: ``field(..., metadata=checks(...))``."""
    return {_CHECKS_KEY: declared}


def positive(value: float) -> str | None:
    """``value > 0``."""
    return None if value > 0 else f"must be positive, got {value}"


def at_least(minimum: float) -> Check:
    """``value >= minimum``."""

    def check(value: float) -> str | None:
        return None if value >= minimum else f"must be >= {minimum}, got {value}"

    return check


non_negative = at_least(0)
"""``value >= 0``."""


def within(
    low: float, high: float, *, open_low: bool = False, open_high: bool = False, shown: str = ""
) -> Check:
    """``low <= value <= high``, each end open when asked (``shown`` spells the interval)."""
    interval = shown or f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"

    def check(value: float) -> str | None:
        above = value > low if open_low else value >= low
        below = value < high if open_high else value <= high
        return None if above and below else f"must lie in {interval}, got {value}"

    return check


def optional(check: Check) -> Check:
    """``check``, letting ``None`` (unset) pass."""

    def check_if_set(value: Any) -> str | None:
        return None if value is None else check(value)

    return check_if_set


def field_errors(config: Any) -> ConfigError | None:
    """The first declared check that a field of ``config`` (a dataclass) fails, as an error."""
    for field in dataclasses.fields(config):
        for check in field.metadata.get(_CHECKS_KEY, ()):
            message = check(getattr(config, field.name))
            if message is not None:
                return ConfigError(field.name, message)
    return None
