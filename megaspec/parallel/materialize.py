"""Materialise a model built on the meta device: each rank draws only its own shards.

Build the structure first (no memory, no draws but one integer per parameter), then draw each
parameter's local shard straight into the target device and dtype::

    with seeded_initialization(1234), torch.device("meta"):
        model = GPTModel(config=config, vocab_size=vocab, submodules=submodules, groups=groups)
    materialize(model, device="cuda", dtype=torch.bfloat16)

The weights are bitwise those of eager construction under the same seed (the scheme is in
:mod:`megaspec.parallel.draws`), cast to ``dtype``, and at any tensor-parallel size they are
the slices of the size-1 weights. Every meta parameter must come from
:func:`~megaspec.parallel.new_sharded_parameter`, which records how to draw it; a parameter
or buffer made otherwise (e.g. a plain ``torch.nn`` module built on meta) is an error naming
it, raised before anything changes: build such modules after materialising, or through
``new_sharded_parameter``. megaspec's own modules hold no buffers (RoPE tables are computed
per forward pass), so there is nothing to recompute.
"""

from __future__ import annotations

import torch
from torch import nn

from megaspec.parallel.sharding import _INIT_ATTRIBUTE, ParameterInit, parameter_init


def materialize(
    model: nn.Module, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> nn.Module:
    """Replace every meta-device parameter of ``model`` by its drawn local shard; returns ``model``.

    ``device``: where the shards go (default: torch's default device). ``dtype``: the
    floating-point parameters' dtype (default: each one's own, i.e. ``params_dtype``); values
    are drawn in float32 and cast. Host memory grows by one draw chunk at a time beyond what
    the parameters themselves take on a CPU ``device``. Parameter attributes (sharding,
    optimizer settings) and ``requires_grad`` are kept; a parameter shared by two modules
    stays shared.

    Raises:
        ValueError: if ``model`` has no meta-device parameter, the target is the meta device,
            or a meta parameter or buffer was not made by ``new_sharded_parameter`` (named).
    """
    target = torch.device(device) if device is not None else torch.get_default_device()
    if target.type == "meta":
        raise ValueError("materialize: the target device is the meta device; name a real device")
    work = _meta_parameters(model)
    if not work:
        raise ValueError("materialize: the model has no parameter on the meta device")
    done: dict[int, nn.Parameter] = {}
    for module, name, parameter, record in work:
        if id(parameter) not in done:
            done[id(parameter)] = _drawn(parameter, record, target, dtype)
        module._parameters[name] = done[id(parameter)]
    return model


def _meta_parameters(model: nn.Module) -> list[tuple[nn.Module, str, nn.Parameter, ParameterInit]]:
    """Every (module, name, parameter, record) to draw, after checking all of them."""
    work = []
    for prefix, module in model.named_modules(remove_duplicate=False):
        where = f"{prefix}." if prefix else ""
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.is_meta:
                raise ValueError(
                    f"materialize: buffer {where}{name} is on the meta device; megaspec cannot "
                    f"recompute it (build {type(module).__name__} after materialising)"
                )
        for name, parameter in module._parameters.items():
            if parameter is None or not parameter.is_meta:
                continue
            record = parameter_init(parameter)
            if record is None:
                raise ValueError(
                    f"materialize: parameter {where}{name} of {type(module).__name__} was not made "
                    f"by new_sharded_parameter, so it records no initialisation; build the module "
                    f"after materialising, or make its parameters with new_sharded_parameter"
                )
            work.append((module, name, parameter, record))
    return work


def _drawn(
    parameter: nn.Parameter, record: ParameterInit, device: torch.device, dtype: torch.dtype | None
) -> nn.Parameter:
    """A real parameter with ``record``'s values, ``parameter``'s attributes and ``requires_grad``."""
    target_dtype = dtype if dtype is not None and parameter.dtype.is_floating_point else parameter.dtype
    data = torch.empty(tuple(parameter.shape), dtype=target_dtype, device=device)
    with torch.no_grad():
        record.fill_(data)
    drawn = nn.Parameter(data, requires_grad=parameter.requires_grad)
    for attribute, value in vars(parameter).items():
        if attribute != _INIT_ATTRIBUTE:  # the drawn parameter is no longer a recipe
            setattr(drawn, attribute, value)
    return drawn
