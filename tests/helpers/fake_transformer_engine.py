"""A plain-PyTorch stand-in for ``transformer_engine.pytorch``, for CPU tests of the adapters.

It follows Transformer Engine 2.20's constructor signatures and forward conventions for the
classes ``megaspec.backends.te`` uses (``Linear``, ``LayerNormLinear``, ``RMSNorm``,
``LayerNorm``, ``DotProductAttention``, ``autocast``, ``is_fp8_available``) on one process:
``device="meta"`` defers parameters, parameters are registered under TE's names,
``_extra_state`` is an empty uint8 tensor, ``DotProductAttention`` takes ``sbhd`` and returns
``[s, b, heads * head_dim]``. It tests megaspec's wiring (layouts, names, shapes, slots) where
Transformer Engine cannot run; ``tests/backends/test_te.py`` tests the real one on a GPU.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _Base(nn.Module):
    def get_extra_state(self) -> Tensor:
        return torch.empty(0, dtype=torch.uint8)

    def set_extra_state(self, state: Tensor) -> None:
        assert state.numel() == 0


def _local(size: int, tp_size: int) -> int:
    assert size % tp_size == 0
    return size // tp_size


class Linear(_Base):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        sequence_parallel: bool = False,
        tp_group: Any = None,
        tp_size: int = 1,
        init_method: Any = None,
        bias: bool = True,
        params_dtype: torch.dtype | None = None,
        parallel_mode: str | None = None,
        device: str = "cuda",
    ) -> None:
        super().__init__()
        assert parallel_mode in (None, "column", "row") and tp_group is None and tp_size == 1
        out_local = _local(out_features, tp_size) if parallel_mode == "column" else out_features
        in_local = _local(in_features, tp_size) if parallel_mode == "row" else in_features
        self.use_bias = bias
        self.weight = nn.Parameter(torch.empty(out_local, in_local, device=device, dtype=params_dtype))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_local, device=device, dtype=params_dtype))
        else:
            self.bias = torch.Tensor().to(dtype=params_dtype, device=device)  # not a parameter

    def forward(self, inp: Tensor) -> Tensor:
        return F.linear(inp, self.weight, self.bias if self.use_bias else None)


class LayerNormLinear(Linear):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        eps: float = 1e-5,
        sequence_parallel: bool = False,
        tp_group: Any = None,
        tp_size: int = 1,
        init_method: Any = None,
        bias: bool = True,
        normalization: str = "LayerNorm",
        params_dtype: torch.dtype | None = None,
        parallel_mode: str | None = None,
        zero_centered_gamma: bool = False,
        device: str = "cuda",
    ) -> None:
        assert normalization in ("LayerNorm", "RMSNorm") and not zero_centered_gamma
        super().__init__(
            in_features, out_features, sequence_parallel, tp_group, tp_size, init_method, bias,
            params_dtype, parallel_mode, device,
        )  # fmt: skip
        self.eps = eps
        self.normalization = normalization
        self.layer_norm_weight = nn.Parameter(torch.empty(in_features, device=device, dtype=params_dtype))
        self.layer_norm_bias: nn.Parameter | None = None
        if normalization == "LayerNorm":
            self.layer_norm_bias = nn.Parameter(torch.empty(in_features, device=device, dtype=params_dtype))

    def forward(self, inp: Tensor) -> Tensor:
        shape = (inp.shape[-1],)
        if self.normalization == "RMSNorm":
            normed = F.rms_norm(inp, shape, self.layer_norm_weight, self.eps)
        else:
            normed = F.layer_norm(inp, shape, self.layer_norm_weight, self.layer_norm_bias, self.eps)
        return super().forward(normed)


class RMSNorm(_Base):
    def __init__(
        self, normalized_shape: int, eps: float = 1e-5, device: str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(normalized_shape, device=device, dtype=dtype))

    def forward(self, inp: Tensor) -> Tensor:
        return F.rms_norm(inp, (inp.shape[-1],), self.weight, self.eps)


class LayerNorm(_Base):
    def __init__(
        self, normalized_shape: int, eps: float = 1e-5, device: str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(normalized_shape, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(normalized_shape, device=device, dtype=dtype))

    def forward(self, inp: Tensor) -> Tensor:
        return F.layer_norm(inp, (inp.shape[-1],), self.weight, self.bias, self.eps)


class DotProductAttention(_Base):
    def __init__(
        self,
        num_attention_heads: int,
        kv_channels: int,
        num_gqa_groups: int | None = None,
        attention_dropout: float = 0.0,
        qkv_format: str = "sbhd",
        attn_mask_type: str = "causal",
        tp_size: int = 1,
        tp_group: Any = None,
        layer_number: int | None = None,
    ) -> None:
        super().__init__()
        assert qkv_format == "sbhd" and attention_dropout == 0.0 and layer_number is not None
        assert attn_mask_type in ("causal", "no_mask")
        self.causal = attn_mask_type == "causal"
        self.grouped = num_gqa_groups not in (None, num_attention_heads)

    def forward(self, query_layer: Tensor, key_layer: Tensor, value_layer: Tensor) -> Tensor:
        assert all(part.is_contiguous() for part in (query_layer, key_layer, value_layer))
        sequence, batch = query_layer.shape[:2]
        # [s, b, n, d] -> [b, n, s, d] and back to [s, b, n * d]
        query, key, value = (part.permute(1, 2, 0, 3) for part in (query_layer, key_layer, value_layer))
        attended = F.scaled_dot_product_attention(
            query, key, value, is_causal=self.causal, enable_gqa=self.grouped
        )
        return attended.permute(2, 0, 1, 3).reshape(sequence, batch, -1)


def is_fp8_available(return_reason: bool = False) -> tuple[bool, str]:
    assert return_reason
    return False, "the CPU stand-in has no FP8"


@contextmanager
def autocast(**keywords: Any) -> Iterator[None]:
    yield


def modules() -> dict[str, types.ModuleType]:
    """``sys.modules`` entries that make ``import transformer_engine.pytorch`` give this one."""
    package = types.ModuleType("transformer_engine")
    pytorch = types.ModuleType("transformer_engine.pytorch")
    for name in ("Linear", "LayerNormLinear", "RMSNorm", "LayerNorm", "DotProductAttention",
                 "is_fp8_available", "autocast"):  # fmt: skip
        setattr(pytorch, name, globals()[name])
    package.pytorch = pytorch  # type: ignore[attr-defined]
    return {"transformer_engine": package, "transformer_engine.pytorch": pytorch}
