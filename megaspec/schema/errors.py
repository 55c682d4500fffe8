"""Config errors that name the full dotted path of the bad field."""

from __future__ import annotations

import difflib
from collections.abc import Sequence


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
