"""FP8 training through Transformer Engine recipes: a typed setting and its autocast region.

``Fp8Config(recipe="delayed")`` scales each tensor by the largest magnitude seen over an
amax history (``te.common.recipe.DelayedScaling``); ``recipe="current"`` scales by the
tensor's own current amax (``Float8CurrentScaling``, "tensorwise"). Only the te backend's
modules compute in FP8 inside :func:`fp8_autocast`; the torch backend's modules (and the
output layer) stay in their own dtype. Weights stay in ``params_dtype`` (FP8 copies are made
per step), so checkpoints are those of a bf16 run.

Example::

    with fp8_autocast(Fp8Config(recipe="current")):
        loss = model(input_ids, labels=labels).mean()
    loss.backward()        # outside the region, as Transformer Engine recommends

FP8 GEMMs need Hopper (or newer) GPUs and dimensions that are multiples of 16.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch.distributed as dist
from torch import nn

from megaspec.backends.portable import TE_MODULE_SEGMENT
from megaspec.backends.te_import import import_transformer_engine
from megaspec.schema import Config, ConfigError, at_least, checks

Fp8Recipe = Literal["delayed", "current"]
Fp8Format = Literal["hybrid", "e4m3"]


@dataclass(frozen=True, kw_only=True)
class Fp8Config(Config):
    """How the te backend's linears compute in FP8.

    Attributes:
        recipe: ``delayed`` (amax history, ``DelayedScaling``) or ``current`` (each tensor's
            own amax, ``Float8CurrentScaling``).
        format: ``hybrid`` (E4M3 forward, E5M2 gradients) or ``e4m3`` (E4M3 everywhere).
        amax_history_len: steps of amax history (``delayed`` only).
        amax_compute_algo: ``max`` over the history or its ``most_recent`` entry
            (``delayed`` only).
        margin: scale by ``2 ** -margin`` for headroom (``delayed`` only).
    """

    recipe: Fp8Recipe = "delayed"
    format: Fp8Format = "hybrid"
    amax_history_len: int = field(default=1024, metadata=checks(at_least(1)))
    amax_compute_algo: Literal["max", "most_recent"] = "max"
    margin: int = field(default=0, metadata=checks(at_least(0)))

    def validate(self) -> None:
        super().validate()
        for name, allowed in (
            ("recipe", get_args(Fp8Recipe)),
            ("format", get_args(Fp8Format)),
            ("amax_compute_algo", ("max", "most_recent")),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(name, f"must be one of {', '.join(allowed)}, got {value!r}")


def te_recipe(config: Fp8Config) -> Any:
    """The Transformer Engine recipe object for ``config`` (typed ``Any``: TE has no types).

    Raises:
        TransformerEngineNotInstalled: without Transformer Engine (naming the ``te`` extra).
    """
    import_transformer_engine()  # a clear error first, if it is missing
    from transformer_engine.common import recipe

    fp8_format = recipe.Format.HYBRID if config.format == "hybrid" else recipe.Format.E4M3
    if config.recipe == "delayed":
        return recipe.DelayedScaling(
            fp8_format=fp8_format,
            amax_history_len=config.amax_history_len,
            amax_compute_algo=config.amax_compute_algo,
            margin=config.margin,
        )
    return recipe.Float8CurrentScaling(fp8_format=fp8_format)


@contextmanager
def fp8_autocast(
    config: Fp8Config | None, *, amax_reduction_group: dist.ProcessGroup | None = None
) -> Iterator[None]:
    """Run the te backend's modules in FP8 with ``config``'s recipe inside the block.

    ``config`` ``None`` is a plain block (no FP8), so a training step can always be wrapped.
    Wrap the forward pass (the loss included); run the backward after the block.
    ``amax_reduction_group``: the processes whose amaxes are reduced together (the delayed
    recipe's scales then agree across them); pass the world group for data-parallel runs.

    Raises:
        TransformerEngineNotInstalled: for a ``config`` without Transformer Engine.
        RuntimeError: from Transformer Engine, if the GPU has no FP8 support (its reason).
    """
    if config is None:
        yield
        return
    te_pytorch = import_transformer_engine()
    available, reason = te_pytorch.is_fp8_available(return_reason=True)
    if not available:
        raise RuntimeError(f"fp8_autocast: this GPU cannot run FP8: {reason}")
    with te_pytorch.autocast(
        enabled=True, recipe=te_recipe(config), amax_reduction_group=amax_reduction_group
    ):
        yield


def check_fp8_model(config: Fp8Config | None, model: nn.Module) -> None:
    """Refuse FP8 for a model with no Transformer Engine module, where it would change nothing.

    Raises:
        ConfigError: at ``training.fp8``, for a ``config`` and a model without te modules.
    """
    if config is None:
        return
    if not any(hasattr(module, TE_MODULE_SEGMENT) for module in model.modules()):
        raise ConfigError(
            "training.fp8",
            "the model has no Transformer Engine module, so FP8 would change nothing; use te "
            "slot types (mixer: {type: te_attention}, mlp: {type: te_mlp}) or drop fp8",
        )
