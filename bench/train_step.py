#!/usr/bin/env python3
"""Training-step throughput and peak memory: megaspec against HF transformers and Megatron-core.

One run builds, times and frees each framework in turn on the same Llama-style config
(16 layers, hidden 2048, 16 heads with 16 KV heads, gated SiLU MLP 5632, RMSNorm 1e-5,
RoPE 10000, vocab 32000 untied, sequence 2048, micro-batch 4, no biases, no dropout):

1. megaspec ``GPTModel`` from ``megaspec.backends.torch.llama_submodules`` (bf16 weights);
2. Hugging Face ``LlamaForCausalLM`` with ``attn_implementation="sdpa"`` in bf16;
3. Megatron-core ``GPTModel`` with ``get_gpt_layer_with_transformer_engine_spec()`` (bf16,
   TP=1, on a one-process ``torch.distributed`` group), with the fusions Megatron-LM's
   training script turns on by default (bias-SwiGLU, bias-dropout-add, RoPE fusion).

A step is forward + backward of the mean token cross-entropy (float32 softmax in every
framework), gradients set to ``None`` before each step, no optimizer. Steps are timed with
CUDA events after warm-up; the median is reported as tokens/s (= batch * sequence / step
time). Peak memory is ``torch.cuda.max_memory_allocated`` over warm-up and timed steps,
reset after the model was built and the previous framework freed: weights + gradients +
activations. A peer that cannot be imported is listed as ``not run: <import error>``.

Usage::

    python bench/train_step.py                  # full config, needs a CUDA GPU
    python bench/train_step.py --small          # tiny config, CPU smoke test (megaspec + HF)
    python bench/train_step.py --profile        # + torch.profiler kernel summary

See bench/README.md for running it on the device machine with Transformer Engine.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import re
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The repository root, so `python bench/train_step.py` finds megaspec without installing it.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GIB = 2.0**30
FRAMEWORKS = ("megaspec", "megaspec-eager", "hf", "megatron")
LABELS = {
    "megaspec": "megaspec",
    "megaspec-eager": "megaspec (eager)",
    "hf": "HF transformers",
    "megatron": "Megatron-core+TE",
}


@dataclass(frozen=True)
class BenchConfig:
    """The model and batch shared by every framework."""

    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    ffn_hidden_size: int
    vocab_size: int
    sequence: int
    batch: int
    norm_epsilon: float = 1e-5
    rotary_base: float = 10000.0
    init_std: float = 0.02

    @property
    def tokens(self) -> int:
        return self.batch * self.sequence

    def expected_parameters(self) -> int:
        """Parameters of an untied Llama of this shape (no biases)."""
        head_dim = self.hidden_size // self.num_heads
        qkv = (self.num_heads + 2 * self.num_kv_heads) * head_dim * self.hidden_size
        proj = self.num_heads * head_dim * self.hidden_size
        mlp = 3 * self.ffn_hidden_size * self.hidden_size
        layer = qkv + proj + mlp + 2 * self.hidden_size
        return self.num_layers * layer + self.hidden_size + 2 * self.vocab_size * self.hidden_size

    def matmul_flops_per_step(self) -> float:
        """Forward + backward FLOPs of the matrix products (6 per parameter-token + attention)."""
        dense = 6.0 * (self.expected_parameters() - self.vocab_size * self.hidden_size) * self.tokens
        # QK^T and PV: 4 * b * s^2 * h forward, causal half, backward twice the forward.
        attention = 3 * 0.5 * 4.0 * self.batch * self.sequence**2 * self.hidden_size * self.num_layers
        return dense + attention


FULL = BenchConfig(
    num_layers=16, hidden_size=2048, num_heads=16, num_kv_heads=16, ffn_hidden_size=5632,
    vocab_size=32000, sequence=2048, batch=4,
)
SMALL = BenchConfig(
    num_layers=2, hidden_size=128, num_heads=4, num_kv_heads=4, ffn_hidden_size=352,
    vocab_size=512, sequence=64, batch=2,
)


class PeerUnavailable(Exception):
    """A peer framework that cannot be imported; the message is the import error."""


@dataclass
class Built:
    """A model ready to train and the function computing its scalar loss."""

    model: nn.Module
    loss: Callable[[Tensor, Tensor], Tensor]
    cleanup: Callable[[], None] | None = None


@dataclass
class Result:
    """One framework's row of the final table."""

    name: str
    status: str
    parameters: int | None = None
    step_ms: float | None = None
    step_ms_min: float | None = None
    step_ms_max: float | None = None
    tokens_per_s: float | None = None
    tflops: float | None = None
    weights_gib: float | None = None
    peak_gib: float | None = None
    first_loss: float | None = None
    last_loss: float | None = None
    profile: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok" or self.status.startswith("ok (")


# --------------------------------------------------------------------------- builders


def build_megaspec(config: BenchConfig, device: torch.device, *, fused: bool = True) -> Built:
    """megaspec's Llama spec; ``fused`` compiles RoPE and SwiGLU (``fuse_elementwise``)."""
    from megaspec.backends.torch import llama_submodules
    from megaspec.models import GPTModel
    from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig

    transformer = TransformerConfig(
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        norm_epsilon=config.norm_epsilon,
        init_std=config.init_std,
        params_dtype=torch.bfloat16,
        fuse_elementwise=fused,
    )
    attention = AttentionConfig(
        num_heads=config.num_heads,
        num_query_groups=config.num_kv_heads,
        rotary_base=config.rotary_base,
    )
    mlp = MlpConfig(ffn_hidden_size=config.ffn_hidden_size, activation=F.silu, gated=True)
    with torch.device(device):
        model = GPTModel(
            config=transformer,
            vocab_size=config.vocab_size,
            submodules=llama_submodules(attention, mlp, config.num_layers),
        )
    model.train()
    print(model.summary())

    def loss(inputs: Tensor, labels: Tensor) -> Tensor:
        losses: Tensor = model(inputs, labels=labels)  # [b, s] float32
        return losses.mean()

    return Built(model=model, loss=loss)


def build_hf(config: BenchConfig, device: torch.device) -> Built:
    try:
        import transformers
        from transformers import LlamaConfig, LlamaForCausalLM
    except Exception as error:  # any import failure means the peer cannot run
        raise PeerUnavailable(f"{type(error).__name__}: {error}") from error
    print(f"transformers {transformers.__version__}")
    settings: dict[str, Any] = dict(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.ffn_hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        hidden_act="silu",
        max_position_embeddings=config.sequence,
        initializer_range=config.init_std,
        rms_norm_eps=config.norm_epsilon,
        rope_parameters={"rope_type": "default", "rope_theta": config.rotary_base},
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        attention_dropout=0.0,
        use_cache=False,
        attn_implementation="sdpa",
    )
    hf_config = LlamaConfig(**settings)
    with torch.device(device):
        model = LlamaForCausalLM(hf_config)
    module: nn.Module = model
    module.to(torch.bfloat16)
    module.train()
    implementation = getattr(model.config, "_attn_implementation", None)
    theta = getattr(model.config, "rope_parameters", {}) or {}
    print(f"HF attention implementation: {implementation}; rope: {theta}")
    if implementation != "sdpa":
        raise RuntimeError(f"HF model uses attention {implementation!r}, expected 'sdpa'")

    def loss(inputs: Tensor, labels: Tensor) -> Tensor:
        logits: Tensor = model(input_ids=inputs, use_cache=False).logits
        # What HF's ForCausalLMLoss does, on labels that are already shifted.
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten())

    return Built(model=module, loss=loss)


def build_megatron(config: BenchConfig, device: torch.device, *, fused: bool = True) -> Built:
    """Megatron-core GPTModel with the TE layer spec.

    ``fused`` turns on what Megatron-LM's pretrain_gpt.py enables by default (bias-SwiGLU,
    bias-dropout-add and RoPE fusions); the driver retries with ``fused=False`` if that fails.
    """
    try:
        import transformer_engine
        import transformer_engine.pytorch  # noqa: F401  (the TE layer spec needs it)
        import megatron.core
        from megatron.core import parallel_state
        from megatron.core.models.gpt import GPTModel as MegatronGPTModel
        from megatron.core.models.gpt.gpt_layer_specs import (
            get_gpt_layer_with_transformer_engine_spec,
        )
        from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed
        from megatron.core.transformer.transformer_config import (
            TransformerConfig as MegatronConfig,
        )
    except Exception as error:  # any import failure means the peer cannot run
        raise PeerUnavailable(f"{type(error).__name__}: {error}") from error
    if device.type != "cuda":
        raise PeerUnavailable("Megatron-core with Transformer Engine needs a CUDA device")
    print(
        f"megatron-core {getattr(megatron.core, '__version__', '?')}, "
        f"transformer_engine {getattr(transformer_engine, '__version__', '?')}"
    )
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    created_group = not dist.is_initialized()
    if created_group:
        dist.init_process_group(backend="nccl", world_size=1, rank=0)
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=1, pipeline_model_parallel_size=1
    )
    model_parallel_cuda_manual_seed(1234)

    def cleanup() -> None:
        parallel_state.destroy_model_parallel()
        if created_group:
            dist.destroy_process_group()

    try:
        return _megatron_model(
            config, device, fused, MegatronConfig, MegatronGPTModel,
            get_gpt_layer_with_transformer_engine_spec, cleanup,
        )
    except BaseException:
        cleanup()
        raise


def _megatron_model(
    config: BenchConfig,
    device: torch.device,
    fused: bool,
    MegatronConfig: Any,
    MegatronGPTModel: Any,
    layer_spec: Callable[[], Any],
    cleanup: Callable[[], None],
) -> Built:
    megatron_config = MegatronConfig(
        num_layers=config.num_layers,
        hidden_size=config.hidden_size,
        num_attention_heads=config.num_heads,
        num_query_groups=config.num_kv_heads,
        ffn_hidden_size=config.ffn_hidden_size,
        normalization="RMSNorm",
        layernorm_epsilon=config.norm_epsilon,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=config.init_std,
        bf16=True,
        params_dtype=torch.bfloat16,
        # Megatron-LM's pretrain_gpt.py turns these on unless told otherwise.
        bias_activation_fusion=fused,
        bias_dropout_fusion=fused,
        masked_softmax_fusion=fused,
        apply_rope_fusion=fused,
    )
    model = MegatronGPTModel(
        config=megatron_config,
        transformer_layer_spec=layer_spec(),
        vocab_size=config.vocab_size,
        max_sequence_length=config.sequence,
        pre_process=True,
        post_process=True,
        parallel_output=True,
        share_embeddings_and_output_weights=False,
        position_embedding_type="rope",
        rotary_percent=1.0,
        rotary_base=int(config.rotary_base),
    )
    model.to(device)
    model.train()
    positions = torch.arange(config.sequence, device=device).expand(config.batch, config.sequence)

    def loss(inputs: Tensor, labels: Tensor) -> Tensor:
        losses: Tensor = model(inputs, positions, None, labels=labels)  # [b, s] float32
        return losses.mean()

    return Built(model=model, loss=loss, cleanup=cleanup)


def _build_megaspec_eager(config: BenchConfig, device: torch.device) -> Built:
    return build_megaspec(config, device, fused=False)


def _build_megatron_unfused(config: BenchConfig, device: torch.device) -> Built:
    return build_megatron(config, device, fused=False)


Builder = Callable[[BenchConfig, torch.device], Built]
BUILDERS: dict[str, Sequence[tuple[str, Builder]]] = {
    "megaspec": [("", build_megaspec)],
    "megaspec-eager": [("", _build_megaspec_eager)],
    "hf": [("", build_hf)],
    "megatron": [("", build_megatron), ("fusions off", _build_megatron_unfused)],
}


# --------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def make_step(built: Built, inputs: Tensor, labels: Tensor) -> Callable[[], Tensor]:
    """One training step: drop gradients, forward, backward; returns the detached loss."""

    def step() -> Tensor:
        built.model.zero_grad(set_to_none=True)
        loss = built.loss(inputs, labels)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss.detach()

    return step


def time_steps(
    step: Callable[[], Tensor], steps: int, device: torch.device
) -> tuple[list[float], Tensor]:
    """Per-step milliseconds of ``steps`` back-to-back steps, and the last loss."""
    synchronize(device)
    loss = torch.zeros(())
    if device.type == "cuda":
        events = [
            torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            for _ in range(steps + 1)
        ]
        events[0].record()
        for index in range(steps):
            loss = step()
            events[index + 1].record()
        synchronize(device)
        return [events[i].elapsed_time(events[i + 1]) for i in range(steps)], loss
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = step()
        times.append((time.perf_counter() - start) * 1e3)
    return times, loss


# --------------------------------------------------------------------------- profiling

KERNEL_CATEGORIES: Sequence[tuple[str, re.Pattern[str]]] = (
    ("attention", re.compile(r"flash|fmha|sdpa|attn|attention", re.I)),
    ("gemm", re.compile(r"gemm|nvjet|cutlass|xmma|cublas|matmul", re.I)),
    ("norm", re.compile(r"norm|rms", re.I)),
    ("rope", re.compile(r"rope|rotary", re.I)),
    ("softmax/loss", re.compile(r"softmax|entropy|nll|logsumexp", re.I)),
    ("reduction", re.compile(r"reduce_kernel", re.I)),
    ("copy/cat/fill", re.compile(r"copy|CatArray|memcpy|memset|Fill|(?<!no)cast", re.I)),
    ("triton (fused)", re.compile(r"triton", re.I)),
)


def _category(name: str) -> str:
    for category, pattern in KERNEL_CATEGORIES:
        if pattern.search(name):
            return category
    return "elementwise/other"


def _short(name: str, width: int) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."


def profile_steps(
    step: Callable[[], Tensor],
    device: torch.device,
    steps: int,
    *,
    step_ms: float | None = None,
    detail_path: str | None = None,
) -> str:
    """torch.profiler over ``steps`` steps: top kernels, time by category, top ops.

    ``step_ms`` (the timed median) is what GPU busy time is compared with; ``detail_path``
    also gets the top 60 kernels with full names and the top 60 ops grouped by input shapes.
    """
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    synchronize(device)
    # One profiled warm-up step keeps the profiler's own start-up out of the numbers.
    with profile(
        activities=activities,
        schedule=schedule(wait=0, warmup=1, active=steps, repeat=1),
        record_shapes=detail_path is not None,
    ) as prof:
        for _ in range(steps + 1):
            step()
            synchronize(device)
            prof.step()
    averages: Any = prof.key_averages()
    lines: list[str] = []
    details: list[str] = []
    if device.type == "cuda":
        # GPU-side events, less annotations that span other kernels ("ProfilerStep#N" around
        # each step, "## Call CompiledFxGraph ... ##" around torch.compile'd regions).
        kernels = [
            e for e in averages
            if getattr(e.device_type, "name", "") == "CUDA"
            and not str(e.key).startswith(("ProfilerStep", "## "))
        ]
        total_us = sum(float(e.self_device_time_total) for e in kernels)
        launches = sum(int(e.count) for e in kernels)
        measured = f" of {step_ms:.1f} ms/step timed" if step_ms is not None else ""
        lines.append(
            f"GPU busy {total_us / 1e3 / steps:.1f} ms/step{measured}, "
            f"{launches / steps:.0f} kernels/step"
        )
        by_category: dict[str, float] = {}
        for event in kernels:
            key = _category(str(event.key))
            by_category[key] = by_category.get(key, 0.0) + float(event.self_device_time_total)
        lines.append("GPU time by kernel category (ms/step, share):")
        for key, micros in sorted(by_category.items(), key=lambda item: -item[1]):
            lines.append(f"  {key:<18} {micros / 1e3 / steps:8.2f}  {100 * micros / total_us:5.1f}%")
        ranked = sorted(kernels, key=lambda e: -float(e.self_device_time_total))
        header = "kernels by GPU time (ms/step, calls/step, share, category):"
        lines.append(f"Top 15 {header}")
        details.append(f"Top 60 {header}")
        for index, event in enumerate(ranked[:60]):
            micros = float(event.self_device_time_total)
            name = str(event.key)
            prefix = (
                f"  {micros / 1e3 / steps:8.2f} {event.count / steps:5.0f} "
                f"{100 * micros / total_us:5.1f}% {_category(name)[:8]:<8} "
            )
            if index < 15:
                lines.append(prefix + _short(name, 96))
            details.append(prefix + _short(name, 400))
        sort_by = "self_device_time_total"
    else:
        sort_by = "self_cpu_time_total"
    lines.append(f"Top 15 ops by {sort_by} (over {steps} steps):")
    lines.append(str(averages.table(sort_by=sort_by, row_limit=15, max_name_column_width=60)))
    if detail_path is not None:
        by_shape: Any = prof.key_averages(group_by_input_shape=True)
        details.append(f"\nTop 60 ops by {sort_by}, grouped by input shapes (over {steps} steps):")
        details.append(
            str(by_shape.table(sort_by=sort_by, row_limit=60, max_name_column_width=50, max_shapes_column_width=90))
        )
        with open(detail_path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines + ["", *details]) + "\n")
    return "\n".join(lines)


# --------------------------------------------------------------------------- driver


def run_framework(
    name: str,
    config: BenchConfig,
    device: torch.device,
    args: argparse.Namespace,
    inputs: Tensor,
    labels: Tensor,
) -> Result:
    print(f"\n=== {LABELS[name]} ===", flush=True)
    free_memory(device)
    if device.type == "cuda":
        leftover = torch.cuda.memory_allocated(device) / GIB
        print(f"memory allocated before build: {leftover:.3f} GiB (inputs and leftovers)")
    built: Built | None = None
    note = ""
    try:
        variants = BUILDERS[name]
        for attempt, (_, builder) in enumerate(variants):
            try:
                started = time.perf_counter()
                built = builder(config, device)
                parameters = sum(p.numel() for p in built.model.parameters())
                print(f"built in {time.perf_counter() - started:.1f} s; parameters: {parameters:,}")
                step = make_step(built, inputs, labels)
                free_memory(device)
                weights = 0.0
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                    weights = torch.cuda.memory_allocated(device) / GIB
                first_loss = float(step().item())
                break
            except PeerUnavailable:
                raise
            except Exception as error:
                if attempt + 1 == len(variants):
                    raise
                traceback.print_exc()
                print(f"{LABELS[name]} failed ({type(error).__name__}: {error}); "
                      f"retrying with {variants[attempt + 1][0]}", flush=True)
                note = f"{variants[attempt + 1][0]} after {type(error).__name__}: {error}"
                if built is not None and built.cleanup is not None:
                    built.cleanup()
                built = None
                free_memory(device)
        for _ in range(max(args.warmup - 1, 0)):
            step()
        times, last = time_steps(step, args.steps, device)
        peak = torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None
        median = statistics.median(times)
        tokens_per_s = config.tokens / (median / 1e3)
        result = Result(
            name=name,
            status="ok" if not note else f"ok ({note})",
            parameters=parameters,
            step_ms=median,
            step_ms_min=min(times),
            step_ms_max=max(times),
            tokens_per_s=tokens_per_s,
            tflops=config.matmul_flops_per_step() / (median / 1e3) / 1e12,
            weights_gib=weights if device.type == "cuda" else None,
            peak_gib=peak,
            first_loss=first_loss,
            last_loss=float(last.item()),
        )
        print(
            f"step {median:.2f} ms median (min {min(times):.2f}, max {max(times):.2f}, "
            f"{len(times)} steps); {tokens_per_s:,.0f} tokens/s; loss {first_loss:.4f} "
            f"(first) -> {result.last_loss:.4f}; peak "
            + (f"{peak:.2f} GiB (weights {weights:.2f} GiB)" if peak is not None else "n/a"),
            flush=True,
        )
        if not math.isfinite(first_loss) or abs(first_loss - math.log(config.vocab_size)) > 1.0:
            print(f"WARNING: initial loss {first_loss} is far from ln(vocab)")
        if args.profile:
            detail = (
                os.path.join(args.profile_dir, f"profile_{name}.txt") if args.profile_dir else None
            )
            result.profile = profile_steps(
                step, device, args.profile_steps, step_ms=median, detail_path=detail
            )
            print(result.profile, flush=True)
        return result
    except PeerUnavailable as error:
        print(f"not run: {error}")
        return Result(name=name, status=f"not run: {error}")
    except Exception as error:  # report, keep benchmarking the others
        traceback.print_exc()
        return Result(name=name, status=f"failed: {type(error).__name__}: {error}")
    finally:
        if built is not None:
            if built.cleanup is not None:
                try:
                    built.cleanup()
                except Exception:
                    traceback.print_exc()
            del built
        free_memory(device)


def _fmt(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(results: list[Result], config: BenchConfig) -> str:
    lines = [
        "",
        f"Training step (fwd+bwd, bf16, mean CE), batch {config.batch} x sequence "
        f"{config.sequence} = {config.tokens} tokens, {config.num_layers} layers, hidden "
        f"{config.hidden_size}, ffn {config.ffn_hidden_size}, vocab {config.vocab_size}",
        f"{'framework':<18} {'parameters':>14} {'step ms':>9} {'tokens/s':>10} "
        f"{'TFLOP/s':>8} {'peak GiB':>9} {'loss0':>7}  status",
    ]
    for r in results:
        lines.append(
            f"{LABELS[r.name]:<18} {_fmt(r.parameters, ',d'):>14} {_fmt(r.step_ms, '.1f'):>9} "
            f"{_fmt(r.tokens_per_s, ',.0f'):>10} {_fmt(r.tflops, '.0f'):>8} "
            f"{_fmt(r.peak_gib, '.2f'):>9} {_fmt(r.first_loss, '.3f'):>7}  {r.status}"
        )
    counts = {r.parameters for r in results if r.parameters is not None}
    expected = config.expected_parameters()
    verdict = "DIFFER" if len(counts) > 1 else "equal" if len(counts) == 1 else "none measured"
    if len(counts) == 1 and sum(r.parameters is not None for r in results) == 1:
        verdict = "(one framework)"
    lines.append(
        f"parameter counts {verdict}: "
        + ", ".join(f"{LABELS[r.name]} {r.parameters:,}" for r in results if r.parameters)
        + f" (expected {expected:,})"
    )
    mine = next((r for r in results if r.name == "megaspec" and r.ok), None)
    for r in results:
        if r.name == "megaspec":
            continue
        if mine is None or not r.ok:
            lines.append(f"megaspec/{LABELS[r.name]}: - ({r.status if not r.ok else 'megaspec not ok'})")
            continue
        assert mine.tokens_per_s is not None and r.tokens_per_s is not None
        memory = (
            f", peak memory x{mine.peak_gib / r.peak_gib:.3f}"
            if mine.peak_gib is not None and r.peak_gib
            else ""
        )
        lines.append(
            f"megaspec/{LABELS[r.name]}: tokens/s x{mine.tokens_per_s / r.tokens_per_s:.3f}{memory}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="tiny config (CPU smoke test; megaspec + HF)")
    parser.add_argument("--profile", action="store_true", help="torch.profiler summary per framework")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--profile-steps", type=int, default=3, help="steps under the profiler")
    parser.add_argument(
        "--profile-dir", default=None,
        help="with --profile: write profile_<framework>.txt (top 60 kernels, ops by input shape) here",
    )
    parser.add_argument(
        "--only", default=None,
        help=f"comma-separated subset of {','.join(FRAMEWORKS)} (default: all; --small: megaspec,hf)",
    )
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 1 or args.profile_steps < 1:
        parser.error("--steps, --warmup and --profile-steps must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = SMALL if args.small else FULL
    device = torch.device(args.device or ("cuda:0" if torch.cuda.is_available() else "cpu"))
    if str(device) == "cuda":  # no index given
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type == "cpu" and not args.small:
        print("the full config needs a CUDA GPU; use --small for a CPU smoke test", file=sys.stderr)
        return 2
    default = "megaspec,megaspec-eager,hf" if args.small else ",".join(FRAMEWORKS)
    names = (args.only or default).split(",")
    unknown = [n for n in names if n not in FRAMEWORKS]
    if unknown:
        print(f"unknown framework(s) {unknown}; choose from {FRAMEWORKS}", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.cuda.set_device(device)
        print(f"device: {torch.cuda.get_device_name(device)}")
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}")
    print(f"config: {config}; parameters expected {config.expected_parameters():,}")
    print(f"warm-up {args.warmup} steps, timed {args.steps} steps", flush=True)

    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.vocab_size, (config.batch, config.sequence + 1), generator=generator)
    inputs = tokens[:, :-1].contiguous().to(device)
    labels = tokens[:, 1:].contiguous().to(device)

    results = []
    for name in FRAMEWORKS:
        if name in names:
            torch.manual_seed(0)
            results.append(run_framework(name, config, device, args, inputs, labels))
        else:
            reason = "skipped (--only)" if args.only else "skipped (--small)"
            results.append(Result(name=name, status=reason))

    if args.profile:
        mine = next((r for r in results if r.name == "megaspec" and r.ok), None)
        peers = [r for r in results if r.name != "megaspec" and r.ok and r.tokens_per_s]
        fastest = max(peers, key=lambda r: r.tokens_per_s or 0.0) if peers else None
        for chosen in (mine, fastest):
            if chosen is not None and chosen.profile is not None:
                print(f"\n--- profile: {LABELS[chosen.name]} ---\n{chosen.profile}")
    table = report(results, config)
    print(table, flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"config": asdict(config), "results": [asdict(r) for r in results]}, handle, indent=2)
    return 0 if all(r.ok or not r.status.startswith("failed") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
