"""A Hugging Face config's data, read field by field with errors that name the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from megaspec.checkpoint.errors import CheckpointError, show


class HasToDict(Protocol):
    """A ``transformers.PretrainedConfig`` (anything with ``to_dict()``)."""

    def to_dict(self) -> dict[str, Any]: ...


class HfFields:
    """A config's data with errors that name ``where`` it came from (``config.json``) and the
    field's path (``prefix`` for a nested mapping, e.g. ``rope_parameters.``)."""

    def __init__(self, data: Mapping[str, Any], where: str, prefix: str = "") -> None:
        self.data = data
        self.where = where
        self.prefix = prefix

    def nested(self, name: str, data: Mapping[str, Any]) -> HfFields:
        """The fields of the mapping ``data`` found at ``name`` (errors name ``name.<field>``)."""
        return HfFields(data, self.where, f"{self.prefix}{name}.")

    def error(self, name: str, message: str) -> CheckpointError:
        """``"<where>: <prefix><name>: <message>"`` (``name`` "" names the mapping itself)."""
        path = f"{self.prefix}{name}" if name else self.prefix.rstrip(".")
        return CheckpointError(f"{self.where}: {path}: {message}")

    def unsupported(self, name: str, value: object, supported: str) -> CheckpointError:
        """``"<where>: <name>: <value> is not supported (<supported>)"``."""
        return self.error(name, f"{show(value)} is not supported ({supported})")

    def get(self, name: str, default: Any = None) -> Any:
        """The value of ``name``; ``default`` when absent or null."""
        value = self.data.get(name)
        return default if value is None else value

    def integer(self, name: str, default: int | None = None) -> int:
        """A positive integer field (``default`` when absent or null).

        Raises:
            CheckpointError: if missing without default, or not a positive integer.
        """
        value = self.get(name, default)
        if value is None:
            raise self.error(name, "missing")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.error(name, f"expected a positive integer, got {show(value)}")
        return value

    def number(self, name: str, default: float) -> float:
        """A number field (``default`` when absent or null).

        Raises:
            CheckpointError: if not a number.
        """
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(name, f"expected a number, got {show(value)}")
        return float(value)

    def flag(self, name: str, default: bool = False) -> bool:
        """A boolean field (``default`` when absent or null).

        Raises:
            CheckpointError: if not a boolean.
        """
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {show(value)}")
        return value


def as_mapping(hf_config: Mapping[str, Any] | HasToDict) -> Mapping[str, Any]:
    """``config.json`` data, or a ``PretrainedConfig``'s ``to_dict()``."""
    return hf_config if isinstance(hf_config, Mapping) else hf_config.to_dict()
