"""Adapters in the base-layer pattern: LoRA and (IA)^3 on any linear of any slot, tensor-parallel.

An adapter layer wraps its base linear and calls the base's own ``forward`` (so adapters
nest, and wrap ``ColumnParallelLinear``, ``RowParallelLinear`` or a user's linear alike); the
wrapper satisfies the base's slot Protocol, so a typed spec stays true.

    from megaspec.peft import LoraConfig, add_adapter, train_adapters_only, merge_and_unload

    add_adapter(model, LoraConfig(rank=8, targets=["*.linear_qkv", "*.linear_proj"]))
    train_adapters_only(model)           # optimizer groups then hold only adapter weights
    ...                                  # train
    plain = merge_and_unload(model)      # the plain typed model, adapters folded in
"""

from megaspec.config.adapters import AdapterConfig, IA3Config, LoraConfig
from megaspec.peft.adapters import Adapter, IA3Adapter, LinearGeometry, LoraAdapter
from megaspec.peft.layers import (
    AdaptedColumnLinear,
    AdaptedLinear,
    AdaptedRowLinear,
    adapted,
    linear_geometry,
)
from megaspec.peft.merging import (
    adapter_parameters,
    delete_adapter,
    merge,
    merge_and_unload,
    train_adapters_only,
    unload,
    unmerge,
)
from megaspec.peft.model import (
    active_adapters,
    adapted_linears,
    adapter_names,
    adapters_disabled,
    add_adapter,
    add_adapter_to_linears,
    check_adapter_names,
    model_groups,
    refuse_adapters,
    set_active_adapters,
    slot_linears,
    target_linears,
)

__all__ = [
    "AdaptedColumnLinear",
    "AdaptedLinear",
    "AdaptedRowLinear",
    "Adapter",
    "AdapterConfig",
    "IA3Adapter",
    "IA3Config",
    "LinearGeometry",
    "LoraAdapter",
    "LoraConfig",
    "active_adapters",
    "adapted",
    "adapted_linears",
    "linear_geometry",
    "adapter_names",
    "adapter_parameters",
    "adapters_disabled",
    "add_adapter",
    "add_adapter_to_linears",
    "check_adapter_names",
    "delete_adapter",
    "merge",
    "merge_and_unload",
    "model_groups",
    "refuse_adapters",
    "set_active_adapters",
    "slot_linears",
    "target_linears",
    "train_adapters_only",
    "unload",
    "unmerge",
]
