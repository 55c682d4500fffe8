"""Per-weight settings (initialisation, bias, learning-rate scale, weight decay, adapters) and
the builder wrappers that apply them to what a slot builds.

A parent passes its sensible default (e.g. scaled init for output projections) through the
builder's keywords; a wrapper replaces only what the config sets explicitly, then tags the
built parameters for the optimizer (:mod:`megaspec.parameter_settings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from megaspec.builders import (
    ColumnLinear,
    ColumnLinearBuilder,
    Norm,
    NormBuilder,
    RowLinear,
    RowLinearBuilder,
)
from megaspec.config.inits import InitConfig
from megaspec.layers.slots import checked_module
from megaspec.parallel import InitMethod, ParallelGroups, padded_rows_init
from megaspec.parameter_settings import tag_module_parameters
from megaspec.schema import Config, checks, non_negative
from megaspec.transformer_config import TransformerConfig


@dataclass(frozen=True, kw_only=True)
class LearningRateScaled(Config):
    """A config part of the learning-rate tree (sequence, block, layer, weight).

    Attributes:
        lr_scale: multiplies the learning rate of everything below it; scales multiply down
            the tree, and a product of 0 freezes a weight.
    """

    lr_scale: float = field(default=1.0, metadata=checks(non_negative))


@dataclass(frozen=True, kw_only=True)
class WeightConfig(LearningRateScaled):
    """Settings of one weight.

    Attributes:
        init: initialisation; ``null`` keeps the parent's default.
        weight_decay: ``null`` decays matrices only (not biases, norms or embeddings).
        apply_peft: whether adapters wrap this layer; ``null`` keeps the parent's default.
    """

    init: InitConfig | None = None
    weight_decay: bool | None = None
    apply_peft: bool | None = None

    def init_method(
        self, default: InitMethod, model: TransformerConfig, *, valid_rows: int | None = None
    ) -> InitMethod:
        """The configured init, or ``default``.

        With ``valid_rows`` (a padded vocabulary) the configured init draws only those rows
        and zeroes the padding, so the draws do not depend on the tensor-parallel size.
        """
        if self.init is None:
            return default
        method = self.init.method(model)
        return method if valid_rows is None else padded_rows_init(method, valid_rows)

    def tag(self, module: object, *, owner: str, lr_scale: float, apply_peft: bool) -> None:
        """Tag ``module``'s untagged parameters with these settings under ``lr_scale``."""
        tag_module_parameters(
            checked_module(module, owner=owner, slot="weights", builder=type(module)),
            lr_scale=lr_scale * self.lr_scale,
            weight_decay=self.weight_decay,
            apply_peft=apply_peft if self.apply_peft is None else self.apply_peft,
        )


@dataclass(frozen=True, kw_only=True)
class LinearConfig(WeightConfig):
    """Settings of a linear layer; ``bias: null`` keeps the parent's default."""

    bias: bool | None = None


def configured_column_linear(
    builder: ColumnLinearBuilder,
    weight: LinearConfig,
    model: TransformerConfig,
    lr_scale: float,
    *,
    valid_rows: int | None = None,
    apply_peft: bool = True,
) -> ColumnLinearBuilder:
    """``builder`` with ``weight``'s settings applied to what it builds.

    ``valid_rows``: the real rows of a padded output (vocabulary); ``apply_peft``: the
    default when ``weight.apply_peft`` is unset.
    """

    def build(
        *,
        input_size: int,
        output_size: int,
        groups: ParallelGroups,
        init_method: InitMethod,
        bias: bool,
        gather_output: bool,
        sequence_parallel: bool,
        stacked_parts: int,
        params_dtype: torch.dtype,
    ) -> ColumnLinear:
        linear = builder(
            input_size=input_size,
            output_size=output_size,
            groups=groups,
            init_method=weight.init_method(init_method, model, valid_rows=valid_rows),
            bias=bias if weight.bias is None else weight.bias,
            gather_output=gather_output,
            sequence_parallel=sequence_parallel,
            stacked_parts=stacked_parts,
            params_dtype=params_dtype,
        )
        weight.tag(linear, owner="column linear", lr_scale=lr_scale, apply_peft=apply_peft)
        return linear

    return build


def configured_row_linear(
    builder: RowLinearBuilder, weight: LinearConfig, model: TransformerConfig, lr_scale: float
) -> RowLinearBuilder:
    """``builder`` with ``weight``'s settings applied to what it builds."""

    def build(
        *,
        input_size: int,
        output_size: int,
        groups: ParallelGroups,
        init_method: InitMethod,
        bias: bool,
        input_is_parallel: bool,
        sequence_parallel: bool,
        params_dtype: torch.dtype,
    ) -> RowLinear:
        linear = builder(
            input_size=input_size,
            output_size=output_size,
            groups=groups,
            init_method=weight.init_method(init_method, model),
            bias=bias if weight.bias is None else weight.bias,
            input_is_parallel=input_is_parallel,
            sequence_parallel=sequence_parallel,
            params_dtype=params_dtype,
        )
        weight.tag(linear, owner="row linear", lr_scale=lr_scale, apply_peft=True)
        return linear

    return build


def configured_norm(builder: NormBuilder, weight: WeightConfig, lr_scale: float) -> NormBuilder:
    """``builder`` with ``weight``'s settings applied to what it builds."""

    def build(
        *,
        hidden_size: int,
        config: TransformerConfig,
        groups: ParallelGroups,
        sharded_input: bool,
        init_method: InitMethod,
    ) -> Norm:
        norm = builder(
            hidden_size=hidden_size,
            config=config,
            groups=groups,
            sharded_input=sharded_input,
            init_method=weight.init_method(init_method, config),
        )
        weight.tag(norm, owner="norm", lr_scale=lr_scale, apply_peft=False)
        return norm

    return build
