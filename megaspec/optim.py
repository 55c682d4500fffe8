"""Optimizer parameter groups from the settings tagged on a model's parameters.

Learning-rate scales (already multiplied down the config tree when the model was built)
become per-group ``lr``; a scale of 0 freezes the parameter (``requires_grad=False``, left
out of the groups), and so is a parameter already frozen (``requires_grad=False``, e.g. a
base weight under :func:`megaspec.peft.train_adapters_only`); weight decay applies to matrices only unless a weight's config says
otherwise (see :mod:`megaspec.parameter_settings`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from megaspec.parameter_settings import default_parameter_settings, parameter_settings


def parameter_groups(
    model: nn.Module, *, learning_rate: float, weight_decay: float
) -> list[dict[str, Any]]:
    """Groups for ``torch.optim`` optimizers, one per (lr scale, decays) combination.

    Each group carries ``lr``, ``weight_decay``, ``lr_scale`` (for schedulers that rescale
    ``lr``: multiply the scheduled rate by it) and ``names`` (for inspection).
    Frozen parameters get ``requires_grad=False`` as a side effect; parameters that already
    have it are left out.

    Raises:
        ValueError: if no parameter is left to train.
    """
    groups: dict[tuple[float, bool], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        settings = parameter_settings(parameter) or default_parameter_settings(parameter)
        if settings.lr_scale == 0:
            parameter.requires_grad_(False)
            continue
        key = (settings.lr_scale, settings.weight_decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "names": [],
                "lr": learning_rate * settings.lr_scale,
                "lr_scale": settings.lr_scale,
                "weight_decay": weight_decay if settings.weight_decay else 0.0,
            }
        groups[key]["params"].append(parameter)
        groups[key]["names"].append(name)
    if not groups:
        raise ValueError(
            "no parameter to train: every parameter has requires_grad=False or lr_scale 0"
        )
    return list(groups.values())
