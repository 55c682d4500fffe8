#!/usr/bin/env python3
"""What-if measurements for megaspec's training step: how much each suggested change would buy.

Runs the same step as ``bench/train_step.py`` (megaspec only) with megaspec's attention and MLP
``forward`` methods monkeypatched here, in the benchmark, to try changes without editing
the library:

- ``baseline``: megaspec as it is;
- ``split-qkv``: ``torch.split`` of the fused QKV output instead of three indexing ops (the
  backward of indexing builds three zero-filled QKV-sized gradients and adds them; the
  backward of ``split`` is one ``cat``);
- ``+rope``: RoPE of q and k in one ``torch.compile``d function (one fused kernel per pass
  instead of chunk/neg/cat/mul/mul/add on strided tensors);
- ``+swiglu``: ``silu(gate) * up`` in one ``torch.compile``d function;
- ``compiled-layers``: megaspec unchanged, each ``TransformerLayer`` under ``torch.compile``
  (what fusion can reach without touching the layout).

Each variant's first loss is compared with the baseline's (same seed, same weights).

Usage: ``python bench/megaspec_whatif.py [--small] [--steps N] [--warmup N] [--only a,b]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import train_step  # noqa: E402  (the benchmark's helpers, same folder)
from megaspec.context import LayerContext  # noqa: E402
from megaspec.layers import fused as fused_module  # noqa: E402
from megaspec.layers.attention import SelfAttention  # noqa: E402
from megaspec.layers.mlp import MLP  # noqa: E402

Rope = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


def eager_rope(query: Tensor, key: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    return fused_module.rotate(query, cos, sin), fused_module.rotate(key, cos, sin)


def eager_swiglu(intermediate: Tensor) -> Tensor:
    gate, up = intermediate.chunk(2, dim=-1)
    return F.silu(gate) * up


def attention_forward(split: bool, rope: Rope) -> Callable[..., Tensor]:
    """SelfAttention.forward with the QKV split and the RoPE application swappable."""

    def forward(self: SelfAttention, hidden: Tensor, *, context: LayerContext) -> Tensor:
        qkv = self.linear_qkv(hidden)
        sequence, batch = qkv.shape[0], qkv.shape[1]
        qkv = qkv.view(sequence, batch, self.local_groups, self.heads_per_group + 2, self.head_dim)
        if split:
            query, key, value = torch.split(qkv, [self.heads_per_group, 1, 1], dim=3)
            query = query.reshape(sequence, batch, self.local_heads, self.head_dim)
            key, value = key.squeeze(3), value.squeeze(3)
        else:
            query = qkv[:, :, :, : self.heads_per_group].reshape(
                sequence, batch, self.local_heads, self.head_dim
            )
            key = qkv[:, :, :, self.heads_per_group]
            value = qkv[:, :, :, self.heads_per_group + 1]
        if self.q_norm is not None:
            query = self.q_norm(query)
        if self.k_norm is not None:
            key = self.k_norm(key)
        if self.rotary_dim > 0:
            cos, sin = context.rotary.cos_sin(self.rotary_dim, self.rotary_base, query.dtype)
            query, key = rope(query, key, cos, sin)
        attended = self.core_attention(
            query.permute(1, 2, 0, 3), key.permute(1, 2, 0, 3), value.permute(1, 2, 0, 3),
            context=context,
        )
        attended = attended.permute(2, 0, 1, 3).reshape(sequence, batch, self.local_heads * self.head_dim)
        result: Tensor = self.linear_proj(attended)
        return result

    return forward


def mlp_forward(swiglu: Callable[[Tensor], Tensor]) -> Callable[[MLP, Tensor], Tensor]:
    def forward(self: MLP, hidden: Tensor) -> Tensor:
        result: Tensor = self.linear_fc2(swiglu(self.linear_fc1(hidden)))
        return result

    return forward


@contextlib.contextmanager
def patched(split: bool, rope: Rope | None, swiglu: Callable[[Tensor], Tensor] | None) -> Iterator[None]:
    original_attention, original_mlp = SelfAttention.forward, MLP.forward
    if split or rope is not None:
        SelfAttention.forward = attention_forward(split, rope or eager_rope)  # type: ignore[method-assign]
    if swiglu is not None:
        MLP.forward = mlp_forward(swiglu)  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        SelfAttention.forward = original_attention  # type: ignore[method-assign]
        MLP.forward = original_mlp  # type: ignore[method-assign]


def compiled(function: Callable[..., object]) -> Callable[..., object]:
    return torch.compile(function, fullgraph=True, dynamic=False)


def run_variant(
    name: str,
    config: train_step.BenchConfig,
    device: torch.device,
    args: argparse.Namespace,
    inputs: Tensor,
    labels: Tensor,
) -> train_step.Result:
    print(f"\n=== {name} ===", flush=True)
    rope: Rope | None = None
    swiglu: Callable[[Tensor], Tensor] | None = None
    split = name != "baseline" and name != "compiled-layers"
    if name in ("+rope", "+swiglu"):
        rope = compiled(eager_rope)  # type: ignore[assignment]
    if name == "+swiglu":
        swiglu = compiled(eager_swiglu)  # type: ignore[assignment]
    train_step.free_memory(device)
    try:
        with patched(split, rope, swiglu):
            torch.manual_seed(0)
            built = train_step.build_megaspec(config, device)
            if name == "compiled-layers":
                for layer in built.model.blocks.layers:  # type: ignore[union-attr]
                    layer.compile(dynamic=False)
            step = train_step.make_step(built, inputs, labels)
            started = time.perf_counter()
            first_loss = float(step().item())
            print(f"first step (compiles) {time.perf_counter() - started:.1f} s")
            for _ in range(args.warmup - 1):
                step()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times, _ = train_step.time_steps(step, args.steps, device)
            median = statistics.median(times)
            peak = torch.cuda.max_memory_allocated(device) / train_step.GIB if device.type == "cuda" else None
            profile = train_step.profile_steps(step, device, 2, step_ms=median)
            print("\n".join(profile.splitlines()[:12]), flush=True)
            del built, step
            return train_step.Result(
                name=name, status="ok", step_ms=median, tokens_per_s=config.tokens / (median / 1e3),
                peak_gib=peak, first_loss=first_loss,
            )
    except Exception as error:
        traceback.print_exc()
        return train_step.Result(name=name, status=f"failed: {type(error).__name__}: {error}")
    finally:
        train_step.free_memory(device)


VARIANTS = ("baseline", "split-qkv", "+rope", "+swiglu", "compiled-layers")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--only", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    config = train_step.SMALL if args.small else train_step.FULL
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    print(f"torch {torch.__version__}; device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}")
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.vocab_size, (config.batch, config.sequence + 1), generator=generator)
    inputs, labels = tokens[:, :-1].contiguous().to(device), tokens[:, 1:].contiguous().to(device)
    results = [run_variant(n, config, device, args, inputs, labels) for n in args.only.split(",")]
    base = next((r for r in results if r.name == "baseline" and r.ok), None)
    print(f"\nmegaspec what-if, {config.tokens} tokens/step ('+x' = split-qkv plus the changes above it)")
    print(f"{'variant':<16} {'step ms':>8} {'tokens/s':>9} {'vs base':>8} {'peak GiB':>9} {'loss0':>9}  status")
    for r in results:
        speed = (
            f"x{r.tokens_per_s / base.tokens_per_s:.3f}"
            if base is not None and base.tokens_per_s and r.tokens_per_s else "-"
        )
        print(
            f"{r.name:<16} {train_step._fmt(r.step_ms, '.1f'):>8} {train_step._fmt(r.tokens_per_s, ',.0f'):>9} "
            f"{speed:>8} {train_step._fmt(r.peak_gib, '.2f'):>9} {train_step._fmt(r.first_loss, '.5f'):>9}  {r.status}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
