"""The bf16 matrix-product peak of this GPU, measured in the run that uses it.

MFU is each row's model TFLOP/s over this peak. A datasheet number (989 dense bf16 TFLOP/s for
an H100 SXM) is what the GPU never reaches at its power and clock limits; a measured peak is what
one large ``torch.matmul`` (cuBLAS) gets on this card, today, so the percentage says how close a
framework comes to what the card can do, and runs on different cards stay comparable.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

# Large enough that cuBLAS runs at its best (three bf16 operands of 128 MiB each).
PEAK_SIZE = 8192
PEAK_REPEATS = 20
PEAK_ROUNDS = 10


@dataclass(frozen=True)
class MatmulPeak:
    """The best of ``rounds`` rounds of ``repeats`` back-to-back ``[m, k] @ [k, n]`` products."""

    tflops: float
    m: int
    n: int
    k: int
    dtype: str
    repeats: int
    rounds: int

    def as_record(self) -> dict[str, object]:
        """The JSON record's ``peak`` entry."""
        return asdict(self)


def measure_matmul_peak(
    device: torch.device,
    *,
    size: int = PEAK_SIZE,
    repeats: int = PEAK_REPEATS,
    rounds: int = PEAK_ROUNDS,
    dtype: torch.dtype = torch.bfloat16,
) -> MatmulPeak:
    """Time ``size``-cubed products on ``device`` (CUDA events; ``perf_counter`` on a CPU) and
    return the best round's TFLOP/s (``2 m n k`` FLOPs per product)."""
    if size < 1 or repeats < 1 or rounds < 1:
        raise ValueError(f"size, repeats and rounds must be at least 1, got {size}, {repeats}, {rounds}")
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    out = torch.empty(size, size, device=device, dtype=dtype)
    torch.matmul(a, b, out=out)  # warm-up: cuBLAS picks its kernel, the clocks ramp up
    best = 0.0
    for _ in range(rounds):
        seconds = _time_products(a, b, out, repeats, device)
        best = max(best, 2.0 * size**3 * repeats / seconds / 1e12)
    del a, b, out
    return MatmulPeak(best, size, size, size, str(dtype).removeprefix("torch."), repeats, rounds)


def _time_products(
    a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, repeats: int, device: torch.device
) -> float:
    """Seconds for ``repeats`` products ``a @ b`` into ``out``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()
        for _ in range(repeats):
            torch.matmul(a, b, out=out)
        end.record()
        torch.cuda.synchronize(device)
        return float(start.elapsed_time(end)) / 1e3
    started = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b, out=out)
    return time.perf_counter() - started
