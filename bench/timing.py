"""Timing a training step (CUDA events or ``perf_counter``), its memory, and profiling it.

A step is: gradients set to ``None``, forward, backward; no optimizer. Times are per step in
milliseconds; memory is ``torch.cuda``'s allocator view (weights + gradients + activations),
and ``None`` on a CPU, where the benchmark does not measure it.
"""

from __future__ import annotations

import gc
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from bench.peers.base import Built

GIB = 2.0**30


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (nothing to wait for on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    """Collect garbage and hand cached CUDA blocks back, so the next peer starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def allocated_gib(device: torch.device) -> float | None:
    """Memory held by live tensors now, in GiB; ``None`` on a CPU."""
    return torch.cuda.memory_allocated(device) / GIB if device.type == "cuda" else None


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: ``peak_gib`` then reports the maximum from here on."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    """The most memory live tensors held since ``reset_peak_memory``, in GiB; ``None`` on a CPU."""
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None


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
    """Per-step milliseconds of ``steps`` back-to-back steps, and the last loss.

    On CUDA, events between the steps time the GPU without a synchronisation per step, so the
    host may run ahead as it does in training.
    """
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


def kernel_category(name: str) -> str:
    """The first of ``KERNEL_CATEGORIES`` whose pattern matches a kernel's name."""
    for category, pattern in KERNEL_CATEGORIES:
        if pattern.search(name):
            return category
    return "elementwise/other"


def _shorten(name: str, width: int) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."


def _run_profiler(step: Callable[[], Tensor], device: torch.device, steps: int, shapes: bool) -> Any:
    """``torch.profiler`` over ``steps`` steps after one profiled warm-up step."""
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    synchronize(device)
    # The warm-up step keeps the profiler's own start-up out of the numbers.
    with profile(
        activities=activities,
        schedule=schedule(wait=0, warmup=1, active=steps, repeat=1),
        record_shapes=shapes,
    ) as prof:
        for _ in range(steps + 1):
            step()
            synchronize(device)
            prof.step()
    return prof


def _kernel_lines(averages: Any, steps: int, step_ms: float | None) -> tuple[list[str], list[str]]:
    """GPU busy time, time by category and the top kernels: (summary lines, detail lines)."""
    # GPU-side events, less annotations that span other kernels ("ProfilerStep#N" around
    # each step, "## Call CompiledFxGraph ... ##" around torch.compile'd regions).
    kernels = [
        e for e in averages
        if getattr(e.device_type, "name", "") == "CUDA"
        and not str(e.key).startswith(("ProfilerStep", "## "))
    ]
    total_us = sum(float(e.self_device_time_total) for e in kernels) or 1.0
    launches = sum(int(e.count) for e in kernels)
    measured = f" of {step_ms:.1f} ms/step timed" if step_ms is not None else ""
    lines = [
        f"GPU busy {total_us / 1e3 / steps:.1f} ms/step{measured}, {launches / steps:.0f} kernels/step",
        "GPU time by kernel category (ms/step, share):",
    ]
    by_category: dict[str, float] = {}
    for event in kernels:
        key = kernel_category(str(event.key))
        by_category[key] = by_category.get(key, 0.0) + float(event.self_device_time_total)
    for key, micros in sorted(by_category.items(), key=lambda item: -item[1]):
        lines.append(f"  {key:<18} {micros / 1e3 / steps:8.2f}  {100 * micros / total_us:5.1f}%")
    header = "kernels by GPU time (ms/step, calls/step, share, category):"
    lines.append(f"Top 15 {header}")
    details = [f"Top 60 {header}"]
    ranked = sorted(kernels, key=lambda e: -float(e.self_device_time_total))
    for index, event in enumerate(ranked[:60]):
        micros, name = float(event.self_device_time_total), str(event.key)
        prefix = (
            f"  {micros / 1e3 / steps:8.2f} {event.count / steps:5.0f} "
            f"{100 * micros / total_us:5.1f}% {kernel_category(name)[:8]:<8} "
        )
        if index < 15:
            lines.append(prefix + _shorten(name, 96))
        details.append(prefix + _shorten(name, 400))
    return lines, details


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
    prof = _run_profiler(step, device, steps, shapes=detail_path is not None)
    averages: Any = prof.key_averages()
    lines: list[str] = []
    details: list[str] = []
    if device.type == "cuda":
        lines, details = _kernel_lines(averages, steps, step_ms)
    sort_by = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    lines.append(f"Top 15 ops by {sort_by} (over {steps} steps):")
    lines.append(str(averages.table(sort_by=sort_by, row_limit=15, max_name_column_width=60)))
    if detail_path is not None:
        by_shape: Any = prof.key_averages(group_by_input_shape=True)
        details.append(f"\nTop 60 ops by {sort_by}, grouped by input shapes (over {steps} steps):")
        details.append(str(by_shape.table(
            sort_by=sort_by, row_limit=60, max_name_column_width=50, max_shapes_column_width=90
        )))
        with open(detail_path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines + ["", *details]) + "\n")
    return "\n".join(lines)
