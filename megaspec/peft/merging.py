"""Fold adapters into the base weights and back, remove them, and train only them.

Merging works on each rank's shards: LoRA's ``s B A`` is computed from the local ``B``
(column bases) or local ``A`` (row bases) and has exactly the local weight's shape.
Wrappers are merged from the base outwards (and unmerged the other way), so an (IA)^3 scale
and a LoRA on one linear fold into the same function they compute unmerged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from megaspec.peft.layers import AdaptedLinear
from megaspec.peft.model import (
    active_adapters,
    adapted_linears,
    check_adapter_names,
    model_groups,
    set_module,
)


def _base_tensors(wrapper: AdaptedLinear) -> tuple[Tensor, Tensor | None]:
    base = wrapper.get_base_layer()
    weight, bias = getattr(base, "weight", None), getattr(base, "bias", None)
    assert isinstance(weight, Tensor)
    return weight, bias if isinstance(bias, Tensor) else None


def _all_finite(tensor: Tensor, model: nn.Module) -> bool:
    finite = torch.tensor([float(torch.isfinite(tensor).all())])
    group = model_groups(model).tensor
    if group is not None:  # every rank must agree, or the shards would diverge
        dist.all_reduce(finite, op=dist.ReduceOp.MIN, group=group)
    return bool(finite.item())


@torch.no_grad()
def merge(model: nn.Module, names: Sequence[str] | None = None, *, safe: bool = True) -> None:
    """Fold adapters ``names`` (default: the active ones) into the base weights.

    With ``safe``, each merged weight is checked for non-finite values (over every
    tensor-parallel rank) before it is written; nothing of that linear changes if one is found.

    Raises:
        ValueError: for a name no adapter has, or (``safe``) a merge that would write a
            non-finite value, naming the linear and the adapter.
    """
    chosen = list(active_adapters(model) if names is None else names)
    check_adapter_names(model, chosen, "merge")
    for slot, wrappers in adapted_linears(model).items():
        for wrapper in reversed(wrappers):  # from the base outwards
            for name in chosen:
                if name not in wrapper.adapters or name in wrapper.merged:
                    continue
                _merge_one(model, slot, wrapper, name, safe)


def _merge_one(model: nn.Module, slot: str, wrapper: AdaptedLinear, name: str, safe: bool) -> None:
    weight, bias = _base_tensors(wrapper)
    new_weight = weight.detach().clone()
    new_bias = None if bias is None else bias.detach().clone()
    adapter = wrapper.adapter(name)
    adapter.merge_into(new_weight, new_bias, undo=False)
    if safe and not _all_finite(new_weight if new_bias is None else torch.cat((new_weight.flatten(), new_bias)), model):
        raise ValueError(f"{slot}: merging adapter {name!r} would write non-finite values; nothing was merged here")
    weight.copy_(new_weight)
    if bias is not None and new_bias is not None:
        bias.copy_(new_bias)
    wrapper.merged = (*wrapper.merged, name)


@torch.no_grad()
def unmerge(model: nn.Module) -> None:
    """Take every merged adapter back out of the base weights (up to rounding)."""
    for wrappers in adapted_linears(model).values():
        for wrapper in wrappers:  # from the outside in
            weight, bias = _base_tensors(wrapper)
            for name in reversed(wrapper.merged):
                wrapper.adapter(name).merge_into(weight, bias, undo=True)
            wrapper.merged = ()


def unload(model: nn.Module) -> nn.Module:
    """Remove every adapter wrapper, leaving the base linears (merged adapters stay merged
    in them: use :func:`unmerge` first to drop them); returns ``model``."""
    for slot, wrappers in adapted_linears(model).items():
        set_module(model, slot, wrappers[0].get_base_layer())
    return model


def merge_and_unload(model: nn.Module, *, safe: bool = True) -> nn.Module:
    """:func:`merge` the active adapters, then :func:`unload`: the plain typed model back."""
    merge(model, safe=safe)
    return unload(model)


def delete_adapter(model: nn.Module, name: str) -> None:
    """Remove adapter ``name`` everywhere; wrappers left with none are removed.

    Raises:
        ValueError: for a name no adapter has, or an adapter that is merged (unmerge first).
    """
    check_adapter_names(model, [name], "delete")
    for slot, wrappers in adapted_linears(model).items():
        if any(name in wrapper.merged for wrapper in wrappers):
            raise ValueError(f"{slot}: adapter {name!r} is merged; unmerge it before deleting it")
    for slot, wrappers in adapted_linears(model).items():
        for index, wrapper in enumerate(wrappers):
            if name not in wrapper.adapters:
                continue
            del wrapper.adapters[name]
            wrapper.active = tuple(active for active in wrapper.active if active != name)
            if len(wrapper.adapters) == 0:
                _remove_wrapper(model, slot, wrappers, index)


def _remove_wrapper(model: nn.Module, slot: str, wrappers: list[AdaptedLinear], index: int) -> None:
    inner = wrappers[index].base_layer
    if index == 0:
        set_module(model, slot, inner)
    else:
        wrappers[index - 1].base_layer = inner


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every adapter parameter of the model."""
    return [
        parameter
        for wrappers in adapted_linears(model).values()
        for wrapper in wrappers
        for parameter in wrapper.adapters.parameters()
    ]


def train_adapters_only(model: nn.Module) -> list[nn.Parameter]:
    """Freeze every parameter but the adapters' (``requires_grad``); returns the adapters'.

    ``megaspec.optim.parameter_groups`` then holds only adapter weights.
    """
    trainable = {id(parameter) for parameter in adapter_parameters(model)}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in trainable)
    return adapter_parameters(model)
