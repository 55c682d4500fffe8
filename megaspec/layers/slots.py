"""Run-time guards around builders: what mypy cannot see (a builder typed ``Any``, a wrong
output shape) fails loudly, naming the slot and the builder."""

from __future__ import annotations

import functools
from typing import TypeVar

from torch import Tensor, nn

Child = TypeVar("Child")


def describe_builder(builder: object) -> str:
    """A readable name for a builder: ``MLP.as_mlp_submodule(...)``, ``partial(MyMLP, ...)``."""
    if isinstance(builder, functools.partial):
        keywords = ", ".join(f"{key}={value!r}" for key, value in builder.keywords.items())
        inner = describe_builder(builder.func)
        return f"functools.partial({inner}{', ' if keywords else ''}{keywords})"
    qualname = getattr(builder, "__qualname__", None)
    if isinstance(qualname, str):
        return qualname
    return repr(builder)


def checked_module(child: object, *, owner: str, slot: str, builder: object) -> nn.Module:
    """Return ``child`` if it is an ``nn.Module``, else raise naming the slot and builder.

    Raises:
        TypeError: if ``child`` is not a ``torch.nn.Module`` or defines no ``forward``.
    """
    if not isinstance(child, nn.Module):
        raise TypeError(
            f"{owner}: builder {describe_builder(builder)} for slot '{slot}' returned "
            f"{type(child).__name__}, expected a torch.nn.Module"
        )
    if type(child).forward is nn.Module.forward:
        raise TypeError(
            f"{owner}: builder {describe_builder(builder)} for slot '{slot}' returned "
            f"{type(child).__name__}, which defines no forward"
        )
    return child


def checked_child(child: Child, *, owner: str, slot: str, builder: object) -> Child:
    """:func:`checked_module` keeping the slot's Protocol type, for assignment to a slot."""
    checked_module(child, owner=owner, slot=slot, builder=builder)
    return child


def checked_output(output: object, expected: Tensor, *, owner: str, slot: str, builder: str) -> Tensor:
    """Return ``output`` if it is a tensor shaped like ``expected``, else raise.

    Raises:
        TypeError: if ``output`` is not a tensor.
        ValueError: if its shape differs from ``expected``'s.
    """
    if not isinstance(output, Tensor):
        raise TypeError(
            f"{owner}: slot '{slot}' (built by {builder}) returned {type(output).__name__}, "
            f"expected a Tensor"
        )
    if output.shape != expected.shape:
        raise ValueError(
            f"{owner}: slot '{slot}' (built by {builder}) returned shape {tuple(output.shape)}, "
            f"expected {tuple(expected.shape)}"
        )
    return output
