"""Optimizer parameter groups (megaspec.optim): frozen parameters are left out, and a model with
nothing to train is refused."""

from __future__ import annotations

import pytest

from megaspec.optim import parameter_groups
from megaspec.training import build_model, resolve_run


def test_parameters_without_requires_grad_are_left_out() -> None:
    model = build_model(resolve_run(preset="tiny"))
    model.embedding.requires_grad_(False)
    held = {name for group in parameter_groups(model, learning_rate=1.0, weight_decay=0.1) for name in group["names"]}
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert held == trainable and not any(name.startswith("embedding.") for name in held)


def test_a_model_with_nothing_to_train_is_refused() -> None:
    model = build_model(resolve_run(preset="tiny"))
    model.requires_grad_(False)
    with pytest.raises(ValueError) as error:
        parameter_groups(model, learning_rate=1.0, weight_decay=0.1)
    assert str(error.value) == "no parameter to train: every parameter has requires_grad=False or lr_scale 0"
