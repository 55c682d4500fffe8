"""The te backend against the torch backend on bench/'s reference config (one GPU, TE installed).

Two checks, each on the 953M-parameter Llama model of ``train_step.py`` with the *same*
weights (the torch backend's, moved with :func:`megaspec.backends.portable.load_portable_state_dict`):

1. **Logits.** bf16 logits of a ``[4, 2048]`` batch from the torch backend and from the te
   backend, each compared with a float32 run of the torch backend. The te backend passes when
   its mean absolute error is at most twice the torch backend's own bf16 error and its
   largest error at most four times it (bf16 rounds differently in TE's fused kernels; a
   wrong layout or a missing norm gives errors of order 1).
2. **Loss curves.** 50 AdamW steps (lr 1e-4, weights and optimizer states in bf16) on four fixed
   random batches, cycled, from the same weights: the torch backend, the te backend in bf16,
   and the te backend in FP8 (delayed and current scaling), plus the torch backend with
   ``fuse_elementwise=False`` as the noise floor: the same math with other kernels, whose bf16
   rounding differs, so its curve shows how far two correct bf16 runs drift apart (in this
   memorising regime the loss falls by up to 0.5 a step, so a small shift of the curve gives
   large pointwise differences; a fixed pointwise tolerance failed a correct run). The te bf16
   curve passes when its first-step loss is within 0.01 of the torch backend's and its mean
   absolute difference over the 50 steps is at most twice the noise floor's; the FP8 curves'
   differences are reported, and each curve must end lower than it starts.

    python -m bench.te_parity                # prints both, exit status 1 if a check fails
    python -m bench.te_parity --json FILE    # also writes the numbers

Run on the device machine with ``bash bench/gpu_setup.sh te-parity`` after ``install``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from bench.config import FULL, BenchConfig
from bench.peers.base import Built
from bench.peers.megaspec_gpt import build_megaspec_eager, build_megaspec_fused
from bench.peers.megaspec_te import build_megaspec_te
from megaspec.backends.fp8 import Fp8Config
from megaspec.backends.portable import load_portable_state_dict

STEPS, LEARNING_RATE, BATCHES = 50, 1e-4, 4


def random_batches(config: BenchConfig, device: torch.device, count: int) -> list[tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        tokens = torch.randint(0, config.vocab_size, (config.batch, config.sequence + 1), generator=generator)
        batches.append((tokens[:, :-1].to(device), tokens[:, 1:].to(device)))
    return batches


def errors(logits: Tensor, reference: Tensor) -> dict[str, float]:
    difference = (logits.float() - reference).abs()
    return {"max": float(difference.max()), "mean": float(difference.mean())}


def logits_check(config: BenchConfig, device: torch.device, weights: dict[str, Tensor]) -> dict[str, object]:
    inputs, _ = random_batches(config, device, 1)[0]
    torch_model = build_megaspec_fused(config, device).model
    torch_model.load_state_dict(weights)
    with torch.no_grad():
        torch_bf16 = torch_model(inputs).float()
        reference_model = copy.deepcopy(torch_model).float()
        del torch_model
        reference = reference_model(inputs).float()
        del reference_model
        _free()
        te_model = build_megaspec_te(config, device, fp8=None).model
        load_portable_state_dict(te_model, weights)
        te_bf16 = te_model(inputs).float()
        del te_model
    torch_error, te_error = errors(torch_bf16, reference), errors(te_bf16, reference)
    passed = te_error["mean"] <= 2 * torch_error["mean"] and te_error["max"] <= 4 * torch_error["max"]
    print(f"logits vs float32 torch backend: torch bf16 {torch_error}, te bf16 {te_error}, "
          f"te vs torch bf16 {errors(te_bf16, torch_bf16)}: {'ok' if passed else 'FAILED'}")  # fmt: skip
    del torch_bf16, reference, te_bf16
    _free()
    return {"torch_bf16": torch_error, "te_bf16": te_error, "passed": passed}


def loss_curve(built: Built, weights: dict[str, Tensor], batches: Sequence[tuple[Tensor, Tensor]]) -> list[float]:
    load_portable_state_dict(built.model, weights)
    optimizer = torch.optim.AdamW(built.model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    losses = []
    for step in range(STEPS):
        inputs, labels = batches[step % len(batches)]
        loss = built.loss(inputs, labels)
        torch.autograd.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))
    return losses


def curves_check(config: BenchConfig, device: torch.device, weights: dict[str, Tensor]) -> dict[str, object]:
    batches = random_batches(config, device, BATCHES)
    variants: dict[str, Callable[[], Built]] = {
        "torch bf16": lambda: build_megaspec_fused(config, device),
        "torch bf16 eager": lambda: build_megaspec_eager(config, device),
        "te bf16": lambda: build_megaspec_te(config, device, fp8=None),
        "te fp8 delayed": lambda: build_megaspec_te(
            config, device, fp8=Fp8Config(recipe="delayed", amax_history_len=1, amax_compute_algo="most_recent")
        ),
        "te fp8 current": lambda: build_megaspec_te(config, device, fp8=Fp8Config(recipe="current")),
    }
    curves: dict[str, list[float]] = {}
    for name, build in variants.items():
        built = build()
        curves[name] = loss_curve(built, weights, batches)
        del built
        _free()
    base = curves["torch bf16"]

    def mean_difference(curve: list[float]) -> float:
        return sum(abs(a - b) for a, b in zip(curve, base, strict=True)) / len(curve)

    noise = mean_difference(curves["torch bf16 eager"])
    report: dict[str, object] = {"curves": curves, "noise_floor": noise}
    passed = True
    for name, curve in curves.items():
        first = abs(curve[0] - base[0])
        mean = mean_difference(curve)
        lowered = curve[-1] < curve[0]
        ok = lowered and (name != "te bf16" or (first <= 0.01 and mean <= 2 * noise))
        passed = passed and ok
        report[name] = {"first_loss": curve[0], "last_loss": curve[-1], "first_difference": first,
                        "mean_difference": mean, "lowered": lowered}  # fmt: skip
        print(f"{name:16s} loss {curve[0]:.4f} -> {curve[-1]:.4f}  first-step diff {first:.4f}  "
              f"mean diff over {STEPS} steps {mean:.4f} (noise floor {noise:.4f})  "
              f"{'ok' if ok else 'FAILED'}")  # fmt: skip
    report["passed"] = passed
    return report


def _free() -> None:
    gc.collect()
    torch.cuda.empty_cache()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the numbers to this file")
    args = parser.parse_args(argv)
    device = torch.device("cuda")
    torch.manual_seed(0)
    source: nn.Module = build_megaspec_fused(FULL, device).model
    weights = {name: tensor.detach().clone() for name, tensor in source.state_dict().items()}
    del source
    _free()
    record = {"logits": logits_check(FULL, device, weights), "loss_curves": curves_check(FULL, device, weights)}
    if args.json is not None:
        args.json.write_text(json.dumps(record, indent=1))
    return 0 if all(part["passed"] for part in record.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
