"""Elementwise steps of attention and the MLP, optionally fused into single kernels.

Eager PyTorch runs RoPE as six kernels over strided views of the fused QKV output and a gated
activation as three, each a full pass over memory; on a GPU these passes cost about a fifth
of a training step (see bench/results-h100.md). With ``TransformerConfig.fuse_elementwise``
the same functions run under ``torch.compile``, which emits one kernel per function and
recomputes the activation in the backward pass instead of saving it. Eager and fused compute
the same function; the flag is explicit because compiling needs a working ``torch.compile``
toolchain (Triton on GPUs, a C++ compiler on CPUs) and takes seconds on the first call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from megaspec.transformer_config import Activation


def rotate(hidden: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first ``cos.shape[-1]`` dimensions of ``hidden`` (rotate-half convention).

    Shapes: ``hidden [s, b, heads, head_dim]``, ``cos``/``sin`` ``[s, b, 1, rotary_dim]``.
    """
    width = cos.shape[-1]
    rotated, passed = hidden[..., :width], hidden[..., width:]
    first, second = rotated.chunk(2, dim=-1)
    rotated = rotated * cos + torch.cat((-second, first), dim=-1) * sin
    return rotated if passed.shape[-1] == 0 else torch.cat((rotated, passed), dim=-1)


def rotate_query_key(query: Tensor, key: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`rotate` applied to queries and keys (one fused kernel when compiled)."""
    return rotate(query, cos, sin), rotate(key, cos, sin)


_fused_rotate_query_key = torch.compile(rotate_query_key, fullgraph=True)


def rotary(fused: bool) -> Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The query/key rotation: compiled when ``fused``, eager otherwise."""
    return _fused_rotate_query_key if fused else rotate_query_key


def gated_activation(activation: Activation, fused: bool) -> Callable[[Tensor], Tensor]:
    """``[gate; up] -> activation(gate) * up`` on the last dimension (compiled when ``fused``)."""

    def gate_times_up(intermediate: Tensor) -> Tensor:
        gate, up = intermediate.chunk(2, dim=-1)
        return activation(gate) * up

    return torch.compile(gate_times_up, fullgraph=True) if fused else gate_times_up
