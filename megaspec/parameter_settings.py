"""Per-parameter optimisation settings recorded on the parameters themselves.

Configs tag the parameters of the modules they build (learning-rate scale, weight decay,
whether adapters apply); :mod:`megaspec.optim` reads the tags to build optimizer parameter
groups. An untagged parameter has learning-rate scale 1 and decays when it is a matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

_SETTINGS_ATTRIBUTE = "_megaspec_parameter_settings"


@dataclass(frozen=True)
class ParameterSettings:
    """How the optimizer (and adapters) treat one parameter.

    Attributes:
        lr_scale: multiplies the learning rate; 0 freezes the parameter.
        weight_decay: whether weight decay applies.
        apply_peft: whether parameter-efficient adapters wrap the layer owning it.
    """

    lr_scale: float = 1.0
    weight_decay: bool = True
    apply_peft: bool = False


def parameter_settings(parameter: Tensor) -> ParameterSettings | None:
    """The settings tagged on ``parameter``, or ``None``."""
    settings = getattr(parameter, _SETTINGS_ATTRIBUTE, None)
    assert settings is None or isinstance(settings, ParameterSettings)
    return settings


def default_parameter_settings(parameter: Tensor) -> ParameterSettings:
    """Settings of an untagged parameter: scale 1, decay only for matrices."""
    return ParameterSettings(lr_scale=1.0, weight_decay=parameter.dim() >= 2)


def tag_module_parameters(
    module: nn.Module,
    *,
    lr_scale: float,
    weight_decay: bool | None,
    apply_peft: bool,
) -> None:
    """Tag every parameter of ``module`` that has no settings yet.

    ``weight_decay=None`` decays matrices and exempts vectors (biases, norm scales).
    Parameters already tagged (by a more specific setting deeper in the tree) keep theirs.
    """
    for parameter in module.parameters():
        if parameter_settings(parameter) is not None:
            continue
        decay = parameter.dim() >= 2 if weight_decay is None else weight_decay
        settings = ParameterSettings(lr_scale=lr_scale, weight_decay=decay, apply_peft=apply_peft)
        setattr(parameter, _SETTINGS_ATTRIBUTE, settings)
