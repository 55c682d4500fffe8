"""Run-time guards around builders: what mypy cannot see (a builder typed ``Any``, a wrong
output shape, a ``functools.partial`` that binds a keyword the slot passes itself) fails
loudly, naming the slot and the builder."""

from __future__ import annotations

import functools
import inspect
from types import TracebackType
from typing import TypeVar

from torch import Tensor, nn

from megaspec.builders import LayerSpec

Child = TypeVar("Child")


def describe_builder(builder: object) -> str:
    """A readable name for a builder: ``MLP.as_mlp_submodule(...)``, ``partial(MyMLP, ...)``."""
    if isinstance(builder, LayerSpec):
        return describe_builder(builder.builder)
    if isinstance(builder, functools.partial):
        keywords = ", ".join(
            f"{key}={_short_repr(value)}" for key, value in builder.keywords.items()
        )
        inner = describe_builder(builder.func)
        return f"functools.partial({inner}{', ' if keywords else ''}{keywords})"
    qualname = getattr(builder, "__qualname__", None)
    if isinstance(qualname, str):
        return qualname
    return repr(builder)


class SlotBuildError(TypeError):
    """A slot's builder failed: it returned a non-module, or raised a ``TypeError``."""


def _short_repr(value: object) -> str:
    # Numbers and strings read well; configs and functions are named by their type.
    if isinstance(value, (bool, int, float, str)) or value is None:
        return repr(value)
    name = getattr(value, "__qualname__", None)
    return name if isinstance(name, str) else f"<{type(value).__name__}>"


def checked_module(child: object, *, owner: str, slot: str, builder: object) -> nn.Module:
    """Return ``child`` if it is an ``nn.Module``, else raise naming the slot and builder.

    Raises:
        SlotBuildError: (a ``TypeError``) if ``child`` is not a ``torch.nn.Module`` or
            defines no ``forward``.
    """
    if not isinstance(child, nn.Module):
        raise SlotBuildError(
            f"{owner}: builder {describe_builder(builder)} for slot '{slot}' returned "
            f"{type(child).__name__}, expected a torch.nn.Module"
        )
    if type(child).forward is nn.Module.forward:
        raise SlotBuildError(
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


def declared_sequence_parallel(child: object, *, owner: str, slot: str, builder: object) -> bool:
    """``child.handles_sequence_parallel`` (see :mod:`megaspec.builders`), checked to be a bool.

    Raises:
        SlotBuildError: if ``child`` does not declare it.
    """
    flag = getattr(child, "handles_sequence_parallel", None)
    if not isinstance(flag, bool):
        raise SlotBuildError(
            f"{owner}: builder {describe_builder(builder)} for slot '{slot}' returned "
            f"{type(child).__name__}, which does not declare handles_sequence_parallel (True: it "
            f"takes this rank's slice of the sequence under sequence parallelism; False: it needs "
            f"the whole sequence, which the parent then gathers for it)"
        )
    return flag


def _bound_keywords(builder: object) -> set[str]:
    bound: set[str] = set()
    while isinstance(builder, functools.partial):
        bound.update(builder.keywords)
        builder = builder.func
    return bound


@functools.cache
def _slot_keywords(interface: type) -> frozenset[str]:
    parameters = inspect.signature(getattr(interface, "__call__")).parameters
    return frozenset(name for name in parameters if name != "self")


def refuse_rebound_keywords(builder: object, *, interface: type, owner: str, slot: str) -> None:
    """Refuse a ``functools.partial`` binding a keyword that the slot passes itself.

    The parent's value would silently replace the bound one at call time (and mypy does not
    see it: it checks a partial only by its bound keywords and its return type).

    Raises:
        SlotBuildError: naming the keywords.
    """
    rebound = sorted(_bound_keywords(builder) & _slot_keywords(interface))
    if rebound:
        raise SlotBuildError(
            f"{owner}: builder {describe_builder(builder)} for slot '{slot}' binds "
            f"{', '.join(rebound)}, which the slot passes itself and would silently replace; "
            f"leave {'them' if len(rebound) > 1 else 'it'} unbound or write an adapter function"
        )


class building_slot:  # noqa: N801 - used like a function: `with building_slot(...) as slot:`
    """Context for calling one slot's builder: names the slot and builder in every failure.

    ``interface`` is the slot's builder Protocol. A ``functools.partial`` that binds one of
    its keywords is refused before the call; a ``TypeError`` raised while building (e.g. a
    partial that left a required keyword unbound, which mypy cannot see) is re-raised as
    :class:`SlotBuildError` naming the owner, slot and builder; :meth:`checked` applies
    :func:`checked_child`::

        with building_slot(owner="MLP (layer 3)", slot="linear_fc1", builder=builder,
                           interface=ColumnLinearBuilder) as slot:
            self.linear_fc1 = slot.checked(builder(...))
    """

    def __init__(self, *, owner: str, slot: str, builder: object, interface: type) -> None:
        refuse_rebound_keywords(builder, interface=interface, owner=owner, slot=slot)
        self.owner = owner
        self.slot = slot
        self.builder = builder

    def __enter__(self) -> building_slot:
        return self

    def __exit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # An error already naming an inner slot is the more precise one: pass it on.
        if isinstance(error, TypeError) and not isinstance(error, SlotBuildError):
            raise SlotBuildError(
                f"{self.owner}: building slot '{self.slot}' with "
                f"{describe_builder(self.builder)} failed: {error}"
            ) from error

    def checked(self, child: Child) -> Child:
        """:func:`checked_child` for this slot."""
        return checked_child(child, owner=self.owner, slot=self.slot, builder=self.builder)
