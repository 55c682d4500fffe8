"""Adapters on a whole model: add by name pattern or ``apply_peft``, activate several at once,
disable, delete, merge (safely, on tensor-parallel shards), unmerge and unload.

Every function takes the model (any ``nn.Module``; a ``GPTModel`` gives its process groups)
and works on the adapted linears found in it, so a user's own mixer needs no code: its
``ColumnParallelLinear``/``RowParallelLinear`` (or any linear with a slot's marker) are
targets like megaspec's own.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterator, Sequence

from torch import Tensor, nn

from megaspec.parallel import ParallelGroups
from megaspec.parameter_settings import parameter_settings
from megaspec.config.adapters import AdapterConfig
from megaspec.peft.layers import AdaptedLinear, adapted, linear_geometry

# Wrappers nearer the base come first: (IA)^3 scales what the base computes, LoRA adds beside it.
_NEARNESS = {"ia3": 0, "lora": 1}


def model_groups(model: nn.Module) -> ParallelGroups:
    """The model's process groups (``ParallelGroups.single()`` if it has none)."""
    groups = getattr(model, "groups", None)
    return groups if isinstance(groups, ParallelGroups) else ParallelGroups.single()


def slot_linears(model: nn.Module) -> dict[str, nn.Module]:
    """Every linear in a slot, by name: the outermost module there (a wrapper if adapted).

    Modules inside wrappers and adapters are left out; so are modules that are not linears of
    a slot (a plain ``torch.nn.Linear`` has neither ``gather_output`` nor
    ``input_is_parallel``).
    """
    groups = model_groups(model)
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if any(name.startswith(f"{outer}.") for outer in found) or ".adapters." in f".{name}.":
            continue
        if isinstance(module, AdaptedLinear):
            found[name] = module
            continue
        with contextlib.suppress(ValueError):
            linear_geometry(module, groups)
            found[name] = module
    return found


def _chain(module: nn.Module) -> list[nn.Module]:
    """``module`` and the bases under it, outermost first."""
    chain = [module]
    while isinstance(chain[-1], AdaptedLinear):
        chain.append(chain[-1].base_layer)
    return chain


def _innermost_weight(module: nn.Module) -> Tensor | None:
    weight = getattr(_chain(module)[-1], "weight", None)
    return weight if isinstance(weight, Tensor) else None


def target_linears(model: nn.Module, patterns: Sequence[str] | None) -> dict[str, nn.Module]:
    """The slot linears ``patterns`` select (glob patterns over module names), or, for
    ``None``, those whose weight's config sets ``apply_peft``.

    Raises:
        ValueError: naming every pattern that matched no linear (and any non-linear it
            matched), or saying that no linear sets ``apply_peft``.
    """
    linears = slot_linears(model)
    if patterns is None:
        chosen = {name: module for name, module in linears.items() if _applies_peft(module)}
        if not chosen:
            raise ValueError(
                "no linear of the model sets apply_peft (models built from a config set it on "
                "mixer and MLP linears); give target patterns, e.g. targets=['*.linear_qkv']"
            )
        return chosen
    chosen, unmatched = {}, []
    names = [name for name, _ in model.named_modules() if name]
    for pattern in patterns:
        hits = {name: module for name, module in linears.items() if fnmatch.fnmatchcase(name, pattern)}
        if not hits:
            others = [name for name in names if fnmatch.fnmatchcase(name, pattern)][:3]
            note = f" (it matches {', '.join(others)}, which are not linears of a slot)" if others else ""
            unmatched.append(f"{pattern!r}{note}")
        chosen.update(hits)
    if unmatched:
        raise ValueError(f"target patterns matched no linear: {'; '.join(unmatched)}")
    return chosen


def _applies_peft(module: nn.Module) -> bool:
    weight = _innermost_weight(module)
    settings = None if weight is None else parameter_settings(weight)
    return settings is not None and settings.apply_peft


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at ``name`` (a dotted path) in ``model``."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _wrapper_for(model: nn.Module, name: str, adapter_type: str) -> AdaptedLinear:
    """The wrapper of ``adapter_type`` at slot ``name``, inserted where its kind belongs."""
    chain = _chain(model.get_submodule(name))
    for module in chain:
        if isinstance(module, AdaptedLinear) and module.adapter_type == adapter_type:
            return module
    groups = model_groups(model)
    nearness = _NEARNESS[adapter_type]
    # Insert above the first module (from the base up) whose wrapper type sits farther out.
    position = len(chain) - 1
    while position > 0:
        outer = chain[position - 1]
        assert isinstance(outer, AdaptedLinear)
        if _NEARNESS[outer.adapter_type] > nearness:
            break
        position -= 1
    wrapper = adapted(chain[position], adapter_type, groups)
    if position == 0:
        set_module(model, name, wrapper)
    else:
        parent = chain[position - 1]
        assert isinstance(parent, AdaptedLinear)
        parent.base_layer = wrapper
    return wrapper


def add_adapter(model: nn.Module, config: AdapterConfig, *, activate: bool = True) -> list[str]:
    """Add adapter ``config.name`` to the linears ``config.targets`` select; returns their names.

    Build adapters inside ``megaspec.parallel.seeded_initialization(seed)`` for reproducible
    (and tensor-parallel-invariant) initial weights.

    Raises:
        ValueError: for targets that match nothing, a name already used, a rank a layer does
            not allow, or a linear an adapter cannot wrap (nothing is changed then).
    """
    targets = target_linears(model, config.targets)
    add_adapter_to_linears(model, config, list(targets), activate=activate)
    return list(targets)


def add_adapter_to_linears(
    model: nn.Module, config: AdapterConfig, slots: Sequence[str], *, activate: bool = True
) -> None:
    """Add adapter ``config.name`` to the slot linears named ``slots`` (exact names).

    Raises:
        ValueError: as :func:`add_adapter`; every check runs before anything changes.
    """
    if config.name in adapter_names(model):
        raise ValueError(f"adapter {config.name!r} already exists; delete it first or choose another name")
    linears = slot_linears(model)
    groups = model_groups(model)
    for slot in slots:
        if slot not in linears:
            raise ValueError(f"{slot}: not a linear of a slot of this model")
        geometry = linear_geometry(linears[slot], groups)
        rank = getattr(config, "rank", 0)
        largest = min(geometry.input_size, geometry.output_size)
        if rank > largest:
            raise ValueError(
                f"{slot}: LoRA rank {rank} is larger than this linear allows: min(input_size "
                f"{geometry.input_size}, output_size {geometry.output_size}) = {largest}"
            )
    for slot in slots:
        wrapper = _wrapper_for(model, slot, config.type_name)
        wrapper.add(config.name, config)
        if activate:
            wrapper.active = (*wrapper.active, config.name)


def adapted_linears(model: nn.Module) -> dict[str, list[AdaptedLinear]]:
    """Every slot holding adapters, with its wrappers outermost first."""
    return {
        name: [module for module in _chain(outer) if isinstance(module, AdaptedLinear)]
        for name, outer in slot_linears(model).items()
        if isinstance(outer, AdaptedLinear)
    }


def adapter_names(model: nn.Module) -> list[str]:
    """The names of every adapter in the model, in the order they were added."""
    names: dict[str, None] = {}
    for wrappers in adapted_linears(model).values():
        for wrapper in wrappers:
            names.update(dict.fromkeys(wrapper.adapters))
    return list(names)


def check_adapter_names(model: nn.Module, names: Sequence[str], action: str) -> None:
    """Refuse names no adapter of ``model`` has, saying which names exist.

    Raises:
        ValueError: ``cannot <action> 'x': no adapter of that name (adapters: ...)``.
    """
    known = adapter_names(model)
    missing = [name for name in names if name not in known]
    if missing:
        raise ValueError(
            f"cannot {action} {', '.join(repr(name) for name in missing)}: no adapter of that name "
            f"(adapters: {', '.join(known) or 'none'})"
        )


def refuse_adapters(model: nn.Module) -> None:
    """For writers of plain models: refuse a model that still has adapters.

    Raises:
        ValueError: naming the adapters and what to do instead.
    """
    attached = adapter_names(model)
    if attached:
        raise ValueError(
            f"the model has adapters ({', '.join(attached)}): fold them in with "
            f"megaspec.peft.merge_and_unload or drop them with unload first (adapters alone "
            f"are written by save_adapters or export_peft)"
        )


def set_active_adapters(model: nn.Module, names: Sequence[str]) -> None:
    """Make exactly ``names`` active on every linear that has them (several at once).

    Raises:
        ValueError: for a name no adapter has.
    """
    check_adapter_names(model, names, "activate")
    for wrappers in adapted_linears(model).values():
        for wrapper in wrappers:
            wrapper.active = tuple(name for name in names if name in wrapper.adapters)


def active_adapters(model: nn.Module) -> list[str]:
    """The names active anywhere in the model."""
    names: dict[str, None] = {}
    for wrappers in adapted_linears(model).values():
        for wrapper in wrappers:
            names.update(dict.fromkeys(wrapper.active))
    return list(names)


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Inside this block the model computes as its base (merged adapters stay merged)."""
    wrappers = [wrapper for chain in adapted_linears(model).values() for wrapper in chain]
    previous = [wrapper.disabled for wrapper in wrappers]
    for wrapper in wrappers:
        wrapper.disabled = True
    try:
        yield
    finally:
        for wrapper, disabled in zip(wrappers, previous, strict=True):
            wrapper.disabled = disabled
