"""Adapted linears in the base-layer pattern: a wrapper around any linear of a slot, calling
the base layer's own ``forward`` and adding what its active adapters contribute.

* :class:`AdaptedColumnLinear` wraps a column-parallel linear (anything with the
  ``gather_output`` of :class:`~megaspec.builders.ColumnLinear`) and satisfies that Protocol;
* :class:`AdaptedRowLinear` wraps a row-parallel one (``input_is_parallel``) and satisfies
  :class:`~megaspec.builders.RowLinear`. When its base can split its forward into
  ``partial_output`` and ``reduce_partial`` (``RowParallelLinear`` can, and so can an adapted
  row linear), the adapters' partial terms join the base's one reduction; otherwise they are
  reduced on their own (a second, smaller all-reduce).

One wrapper holds any number of named adapters of one type (``lora``, ``ia3``); types mix by
nesting wrappers, each calling its base (``lora.ia3.RowParallelLinear``). (IA)^3 wrappers sit
next to the base and LoRA outside them, so the effects of the two add up. ``repr`` reads
``lora.ColumnParallelLinear(...)``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from megaspec.parallel import (
    ParallelGroups,
    reduce_from_tensor_parallel_region,
    reduce_scatter_to_sequence_parallel_region,
    sharding_of,
)
from megaspec.peft.adapters import Adapter, LinearGeometry, LinearKind, build_adapter
from megaspec.config.adapters import AdapterConfig


@runtime_checkable
class SplitReduction(Protocol):
    """A row-parallel linear whose forward is ``reduce_partial(partial_output(x))``."""

    def partial_output(self, hidden: Tensor) -> Tensor: ...

    def reduce_partial(self, partial: Tensor) -> Tensor: ...


def linear_geometry(module: nn.Module, groups: ParallelGroups) -> LinearGeometry:
    """The geometry of a linear in a slot (megaspec's, an adapted one, or a user's).

    A user's linear must have its slot's marker (``gather_output`` or ``input_is_parallel``),
    ``input_size``/``output_size`` (or ``in_features``/``out_features``) and a ``weight``;
    above tensor-parallel size 1 its weight must record its sharding.

    Raises:
        ValueError: for a module that is not such a linear.
    """
    if isinstance(module, AdaptedLinear):
        return module.geometry
    kind: LinearKind | None = None
    if hasattr(module, "gather_output"):
        kind = "column"
    elif hasattr(module, "input_is_parallel"):
        kind = "row"
    sizes = _sizes(module)
    weight = getattr(module, "weight", None)
    if kind is None or sizes is None or not isinstance(weight, Tensor):
        raise ValueError(
            f"cannot adapt {type(module).__name__}: a linear needs gather_output (column) or "
            f"input_is_parallel (row), input_size/output_size and a weight"
        )
    sharding = sharding_of(weight)
    groups = getattr(module, "groups", groups)
    if sharding is None and groups.tensor_size > 1:
        raise ValueError(f"cannot adapt {type(module).__name__}: its weight records no tensor-parallel sharding")
    return LinearGeometry(
        kind=kind,
        input_size=sizes[0],
        output_size=sizes[1],
        parts=1 if sharding is None else sharding.parts,
        sequence_parallel=bool(getattr(module, "sequence_parallel", False)),
        gather_output=bool(getattr(module, "gather_output", False)),
        input_is_parallel=bool(getattr(module, "input_is_parallel", True)),
        groups=groups,
    )


def _sizes(module: nn.Module) -> tuple[int, int] | None:
    for input_name, output_name in (("input_size", "output_size"), ("in_features", "out_features")):
        input_size, output_size = getattr(module, input_name, None), getattr(module, output_name, None)
        if isinstance(input_size, int) and isinstance(output_size, int):
            return input_size, output_size
    return None


class AdaptedLinear(nn.Module):
    """A linear with named adapters of one type (see the module docstring).

    Attributes:
        base_layer: the wrapped linear (possibly itself adapted); its ``forward`` is called.
        adapters: the named adapters.
        active: the names whose adapters take part in ``forward`` (and are not merged).
        merged: the names folded into the innermost base weight.
        disabled: while true, ``forward`` is the base's alone.
    """

    def __init__(self, base: nn.Module, adapter_type: str, groups: ParallelGroups) -> None:
        super().__init__()
        self.base_layer = base
        self.adapter_type = adapter_type
        self.geometry = linear_geometry(base, groups)
        self.adapters = nn.ModuleDict()
        self.active: tuple[str, ...] = ()
        self.merged: tuple[str, ...] = ()
        self.disabled = False

    def get_base_layer(self) -> nn.Module:
        """The innermost linear under every adapter wrapper."""
        base = self.base_layer
        return base.get_base_layer() if isinstance(base, AdaptedLinear) else base

    def add(self, name: str, config: AdapterConfig) -> None:
        """Add adapter ``name`` (not yet active).

        Raises:
            ValueError: if the name is taken here, or the adapter does not fit this linear.
        """
        if name in self.adapters:
            raise ValueError(f"adapter {name!r} already exists on this layer")
        weight = self.get_base_layer().weight
        assert isinstance(weight, Tensor)
        adapter = build_adapter(config, self.geometry, weight)
        # A new module starts in training mode; an adapter added to a model in eval mode
        # must not then apply dropout.
        self.adapters[name] = adapter.train(self.training)

    def adapter(self, name: str) -> Adapter:
        """Adapter ``name`` of this linear."""
        found = self.adapters[name]
        assert isinstance(found, Adapter)
        return found

    def running(self) -> list[Adapter]:
        """The adapters ``forward`` applies now."""
        if self.disabled:
            return []
        return [self.adapter(name) for name in self.active if name not in self.merged]

    def extra_repr(self) -> str:
        names = ", ".join(
            f"{name}{' (merged)' if name in self.merged else ''}{' (active)' if name in self.active else ''}"
            for name in self.adapters
        )
        return names or "none"

    def __repr__(self) -> str:
        # lora.ia3.ColumnParallelLinear(...) [lora: default (active); ia3: scales (active)]
        chain = [self]
        while isinstance(chain[-1].base_layer, AdaptedLinear):
            chain.append(chain[-1].base_layer)
        types = ".".join(wrapper.adapter_type for wrapper in chain)
        adapters = "; ".join(f"{wrapper.adapter_type}: {wrapper.extra_repr()}" for wrapper in chain)
        return f"{types}.{self.get_base_layer()!r} [{adapters}]"


class AdaptedColumnLinear(AdaptedLinear):
    """A column-parallel linear with adapters; satisfies :class:`~megaspec.builders.ColumnLinear`."""

    @property
    def gather_output(self) -> bool:
        """The base's ``gather_output``."""
        return self.geometry.gather_output

    def forward(self, hidden: Tensor) -> Tensor:
        output: Tensor = self.base_layer(hidden)
        for adapter in self.running():
            output = adapter.adapt_output(output, hidden)
        return output


class AdaptedRowLinear(AdaptedLinear):
    """A row-parallel linear with adapters; satisfies :class:`~megaspec.builders.RowLinear`."""

    @property
    def input_is_parallel(self) -> bool:
        """The base's ``input_is_parallel``."""
        return self.geometry.input_is_parallel

    def splits_reduction(self) -> bool:
        """Whether the base (through any wrappers) exposes its unreduced output."""
        base = self.base_layer
        if isinstance(base, AdaptedRowLinear):
            return base.splits_reduction()
        return isinstance(base, SplitReduction)

    def _terms(self, hidden: Tensor) -> tuple[Tensor, Tensor | None]:
        base_input = hidden
        extra: Tensor | None = None
        for adapter in self.running():
            base_input = adapter.adapt_input(base_input)
            term = adapter.partial_term(hidden)
            if term is not None:
                extra = term if extra is None else extra + term
        return base_input, extra

    def partial_output(self, hidden: Tensor) -> Tensor:
        """The base's unreduced output of the adapted input plus the adapters' terms."""
        base_input, extra = self._terms(hidden)
        base = self.base_layer
        assert isinstance(base, SplitReduction), "partial_output needs a base that splits its reduction"
        partial = base.partial_output(base_input)
        return partial if extra is None else partial + extra

    def reduce_partial(self, partial: Tensor) -> Tensor:
        """The base's reduction (and bias)."""
        base = self.base_layer
        assert isinstance(base, SplitReduction), "reduce_partial needs a base that splits its reduction"
        return base.reduce_partial(partial)

    def forward(self, hidden: Tensor) -> Tensor:
        if self.splits_reduction():
            return self.reduce_partial(self.partial_output(hidden))
        base_input, extra = self._terms(hidden)
        output: Tensor = self.base_layer(base_input)
        if extra is None:
            return output
        group = self.geometry.groups.tensor
        if self.geometry.sequence_parallel:
            return output + reduce_scatter_to_sequence_parallel_region(extra, group)
        return output + reduce_from_tensor_parallel_region(extra, group)


def adapted(module: nn.Module, adapter_type: str, groups: ParallelGroups) -> AdaptedLinear:
    """``module`` wrapped for adapters of ``adapter_type`` (column or row by its marker).

    Raises:
        ValueError: as :func:`linear_geometry`.
    """
    kind = linear_geometry(module, groups).kind
    wrapper = AdaptedColumnLinear if kind == "column" else AdaptedRowLinear
    # The wrapper takes the base's train/eval mode (a new module starts in training mode).
    return wrapper(module, adapter_type, groups).train(module.training)


__all__ = [
    "AdaptedColumnLinear",
    "AdaptedLinear",
    "AdaptedRowLinear",
    "SplitReduction",
    "adapted",
    "linear_geometry",
]
