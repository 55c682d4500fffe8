#!/usr/bin/env python3
"""Logits of Megatron-core's GPTModel and of megaspec's on converted weights (CUDA GPU).

For two small models (``llama``: RMSNorm, GQA, QK-norm, SwiGLU, no biases, untied; ``gpt``:
Megatron's defaults, LayerNorm, GeLU, biases, with partial RoPE and a tied output layer) and
both Megatron layer specs (``local``, ``transformer_engine``), on a one-rank NCCL group (as
bench/peers/megatron_te.py), each case checks:

1. Megatron -> megaspec: Megatron initialises the weights (norm weights and biases then
   perturbed, so their layouts matter; everything rounded to bf16 values, so the bf16 and fp32
   copies of a model hold the same numbers); ``from_megatron`` converts them.
2. megaspec -> Megatron: megaspec initialises (perturbed and rounded the same way);
   ``to_megatron`` converts, and Megatron loads with ``load_state_dict(strict=True)``.
3. Keys: the keys ``to_megatron`` writes are exactly those of Megatron's own state dict.
4. Round trip: ``to_megatron(from_megatron(d))`` holds Megatron's weights bit for bit.

In both directions, each library computes logits in fp32 and in bf16 on the same batch.

Tolerances (``max |difference|`` over the real vocabulary's logits):

* fp32: ``1e-3 x max(1, max |logit|)``: the same function on the same weights with TF32 off
  (``NVIDIA_TF32_OVERRIDE=0``) differs only in summation order; a wrong layout moves logits by
  their own size.
* bf16: ``3 x e`` with ``e = max |Megatron bf16 - Megatron fp32|``, Megatron's own bf16 rounding
  on these weights and this batch. If megaspec's bf16 is as accurate as Megatron's, the triangle
  inequality bounds their difference by ``2 e`` plus the fp32 difference; the third ``e`` leaves
  room for rounding at other places (RoPE tables, TE's fused norms). megaspec's own bf16 error is
  reported beside it.

Usage (device machine: ``bash bench/gpu_setup.sh parity``, see bench/README.md):
``python3 bench/megatron_parity.py --json parity.json [--models llama,gpt] [--specs
local,transformer_engine] [--fused]``. Exit status: 0 all passed, 1 a case failed or raised,
77 Megatron-core / TE / CUDA missing.
"""

from __future__ import annotations

import os

# Before CUDA starts: no TF32 in cuBLAS / cuDNN, whichever library calls them (TE included).
os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

# The repository root, so `python3 bench/megatron_parity.py` finds megaspec and bench.
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPOSITORY not in sys.path:
    sys.path.insert(0, REPOSITORY)

from bench import environment  # noqa: E402
from bench.peers.base import PeerUnavailable, unavailable  # noqa: E402
from bench.peers.megatron_te import start_parallel_state  # noqa: E402
from megaspec.checkpoint import (  # noqa: E402
    MegatronArguments,
    MegatronSpec,
    from_megatron,
    model_config,
    to_megatron,
)
from megaspec.config import ModelConfig  # noqa: E402
from megaspec.models import GPTModel  # noqa: E402
from megaspec.parallel import seeded_initialization  # noqa: E402

FORMAT = "megaspec-megatron-parity/1"
NOT_RUN = 77
BATCH, SEQUENCE = 2, 128
MODELS: dict[str, MegatronArguments] = {
    "llama": MegatronArguments(
        num_layers=4, hidden_size=256, num_attention_heads=8, num_query_groups=2, ffn_hidden_size=704,
        vocab_size=1000, normalization="RMSNorm", gated_linear_unit=True, activation_func=F.silu,
        add_bias_linear=False, qk_layernorm=True, position_embedding_type="rope",
    ),
    "gpt": MegatronArguments(
        num_layers=4, hidden_size=256, num_attention_heads=8, ffn_hidden_size=1024, vocab_size=1000,
        position_embedding_type="rope", rotary_percent=0.5, share_embeddings_and_output_weights=True,
    ),
}  # fmt: skip
SPECS: tuple[MegatronSpec, ...] = ("local", "transformer_engine")
DTYPES = (torch.float32, torch.bfloat16)


def import_megatron() -> dict[str, Any]:
    """The Megatron-core pieces needed, by name; ``PeerUnavailable`` if they are missing."""
    try:
        import transformer_engine.pytorch  # noqa: F401  (the TE spec needs it)
        from megatron.core import parallel_state
        from megatron.core.models.gpt import GPTModel as MegatronGPTModel
        from megatron.core.models.gpt.gpt_layer_specs import (
            get_gpt_layer_local_spec,
            get_gpt_layer_with_transformer_engine_spec,
        )
        from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed
        from megatron.core.transformer.transformer_config import TransformerConfig
    except Exception as error:  # any import failure means nothing here can run
        raise unavailable(error) from error
    if not torch.cuda.is_available():
        raise PeerUnavailable("Megatron-core's GPTModel needs a CUDA device")
    return {
        "parallel_state": parallel_state,
        "GPTModel": MegatronGPTModel,
        "local": get_gpt_layer_local_spec,
        "transformer_engine": get_gpt_layer_with_transformer_engine_spec,
        "manual_seed": model_parallel_cuda_manual_seed,
        "TransformerConfig": TransformerConfig,
    }


def megatron_model(
    parts: dict[str, Any], arguments: MegatronArguments, spec: MegatronSpec, dtype: torch.dtype, fused: bool
) -> Any:
    """Megatron's GPTModel for ``arguments`` with ``spec``'s layers, on the GPU in ``dtype``, eval."""
    config = parts["TransformerConfig"](
        **arguments.transformer_config_kwargs(),
        bf16=dtype == torch.bfloat16,
        params_dtype=dtype,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        bias_activation_fusion=fused,
        bias_dropout_fusion=fused,
        masked_softmax_fusion=fused,
        apply_rope_fusion=fused,
    )
    if spec == "transformer_engine":
        layer_spec = parts[spec](qk_layernorm=arguments.qk_layernorm)
    else:
        layer_spec = parts[spec](qk_layernorm=arguments.qk_layernorm, normalization=arguments.normalization)
    model = parts["GPTModel"](
        config=config,
        transformer_layer_spec=layer_spec,
        max_sequence_length=SEQUENCE,
        pre_process=True,
        post_process=True,
        parallel_output=True,
        **arguments.gpt_model_kwargs(),
    )
    # The local spec's torch norms are created in float32 on the CPU whatever params_dtype says
    # (Megatron-LM casts the whole model, Float16Module); do the same.
    return model.to(device="cuda", dtype=dtype).eval()


def megaspec_model(config: ModelConfig, dtype: torch.dtype) -> GPTModel:
    with torch.device("cuda"):
        model = config.build(params_dtype=dtype)
    return model.eval()


def megatron_logits(model: Any, tokens: Tensor, vocab_size: int) -> Tensor:
    positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
    with torch.no_grad():
        logits: Tensor = model(tokens, positions, None)  # [batch, sequence, padded vocabulary]
    return logits[..., :vocab_size].float()


def megaspec_logits(model: GPTModel, tokens: Tensor) -> Tensor:
    with torch.no_grad():
        logits: Tensor = model(tokens)  # [batch, sequence, vocabulary]
    return logits.float()


def perturbed(state_dict: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Norm weights ``1 + 0.1 N(0, 1)``, biases ``0.05 N(0, 1)`` (their layouts then matter),
    every floating tensor rounded to a bf16 value (so bf16 and fp32 copies are equal)."""
    generator = torch.Generator().manual_seed(seed)
    result: dict[str, Any] = {}
    for key, value in state_dict.items():
        if isinstance(value, Tensor) and value.is_floating_point() and not key.endswith("_extra_state"):
            value = value.detach().float().cpu()
            noise = torch.randn(value.shape, generator=generator)
            if value.dim() == 1:
                value = 1 + 0.1 * noise if key.endswith("weight") else 0.05 * noise
            value = value.to(torch.bfloat16).float()
        result[key] = value
    return result


def compare(megatron: Mapping[torch.dtype, Tensor], megaspec: Mapping[torch.dtype, Tensor]) -> dict[str, Any]:
    """The differences and verdicts described in the module docstring."""

    def largest(tensor: Tensor) -> float:
        return float(tensor.abs().max())

    scale = max(1.0, largest(megatron[torch.float32]))
    fp32 = largest(megaspec[torch.float32] - megatron[torch.float32])
    bf16 = largest(megaspec[torch.bfloat16] - megatron[torch.bfloat16])
    megatron_noise = largest(megatron[torch.bfloat16] - megatron[torch.float32])
    agreement = megaspec[torch.bfloat16].argmax(-1) == megatron[torch.bfloat16].argmax(-1)
    return {
        "max_abs_logit": largest(megatron[torch.float32]),
        "fp32_max_abs_diff": fp32,
        "fp32_tolerance": 1e-3 * scale,
        "bf16_max_abs_diff": bf16,
        "bf16_tolerance": 3 * megatron_noise,
        "megatron_bf16_vs_fp32": megatron_noise,
        "megaspec_bf16_vs_fp32": largest(megaspec[torch.bfloat16] - megaspec[torch.float32]),
        "bf16_top1_agreement": float(agreement.float().mean()),
        "passed": fp32 <= 1e-3 * scale and bf16 <= 3 * megatron_noise,
    }


def key_differences(converted: Mapping[str, Any], megatron: Mapping[str, Any]) -> dict[str, list[str]]:
    """Keys (and tensor shapes) where ``to_megatron``'s output and Megatron's state dict differ."""
    shapes = [
        f"{key}: {tuple(value.shape)} vs {tuple(megatron[key].shape)}"
        for key, value in converted.items()
        if isinstance(value, Tensor)
        and isinstance(megatron.get(key), Tensor)
        and value.shape != megatron[key].shape
    ]
    return {
        "converted_only": sorted(set(converted) - set(megatron)),
        "megatron_only": sorted(set(megatron) - set(converted)),
        "shape_mismatches": shapes,
    }


def bitwise_round_trip(weights: Mapping[str, Any], config: ModelConfig, spec: MegatronSpec) -> str | None:
    """``None`` if ``to_megatron(from_megatron(weights))`` holds every weight bit for bit, else
    the first key that differs (padded vocabulary rows, dropped on the way, excepted)."""
    (again,) = to_megatron(from_megatron(weights, config, spec=spec), config, spec=spec)
    for key, value in weights.items():
        if not isinstance(value, Tensor) or key.endswith("_extra_state"):
            continue
        vocabulary = key in ("embedding.word_embeddings.weight", "output_layer.weight")
        rows = config.vocab_size if vocabulary else None
        other = again.get(key)
        if other is None or not torch.equal(value[:rows], other[:rows]):
            return key
    return None


@dataclass
class Case:
    """One model and spec: Megatron's and megaspec's models in fp32 and bf16, and a batch."""

    config: ModelConfig
    spec: MegatronSpec
    megatron: dict[torch.dtype, Any]
    megaspec: dict[torch.dtype, GPTModel]
    tokens: Tensor

    def compare_logits(self) -> dict[str, Any]:
        vocab_size, tokens = self.config.vocab_size, self.tokens
        return compare(
            {dtype: megatron_logits(model, tokens, vocab_size) for dtype, model in self.megatron.items()},
            {dtype: megaspec_logits(model, tokens) for dtype, model in self.megaspec.items()},
        )

    def megatron_to_megaspec(self, record: dict[str, Any]) -> None:
        """Megatron's weights, converted; also the key and round-trip checks on them."""
        weights = perturbed(self.megatron[torch.float32].state_dict(), seed=1)
        (written,) = to_megatron(self.megaspec[torch.bfloat16].state_dict(), self.config, spec=self.spec)
        record["keys"] = key_differences(written, weights)
        load_all(self.megatron.values(), weights)
        load_all(self.megaspec.values(), from_megatron(weights, self.config, spec=self.spec)[0])
        record["megatron_to_megaspec"] = self.compare_logits()
        record["round_trip_differs_at"] = bitwise_round_trip(weights, self.config, self.spec)

    def megaspec_to_megatron(self, record: dict[str, Any]) -> None:
        """megaspec's weights, converted and loaded strictly into Megatron."""
        with seeded_initialization(2):
            fresh = self.config.build(params_dtype=torch.bfloat16)
        own = perturbed(fresh.state_dict(), seed=3)
        load_all(self.megaspec.values(), own)
        load_all(self.megatron.values(), to_megatron(own, self.config, spec=self.spec)[0])
        record["megaspec_to_megatron"] = self.compare_logits()


def run_case(parts: dict[str, Any], record: dict[str, Any], fused: bool) -> None:
    """Both directions for ``record["model"]`` and ``record["spec"]`` (see the module
    docstring), filling ``record``; a step that raises leaves its traceback in ``errors`` and
    the other step still runs."""
    spec: MegatronSpec = record["spec"]
    arguments = MODELS[record["model"]]
    config = model_config(arguments)
    generator = torch.Generator().manual_seed(0)
    case = Case(
        config=config,
        spec=spec,
        megatron={dtype: megatron_model(parts, arguments, spec, dtype, fused) for dtype in DTYPES},
        megaspec={dtype: megaspec_model(config, dtype) for dtype in DTYPES},
        tokens=torch.randint(0, config.vocab_size, (BATCH, SEQUENCE), generator=generator).cuda(),
    )
    errors: dict[str, str] = {}
    for step in (case.megatron_to_megaspec, case.megaspec_to_megatron):
        try:
            step(record)
        except Exception:  # the other direction still tells something
            errors[step.__name__] = traceback.format_exc()
    if errors:
        record["errors"] = errors
    record["passed"] = (
        not errors
        and record["megatron_to_megaspec"]["passed"]
        and record["megaspec_to_megatron"]["passed"]
        and record["round_trip_differs_at"] is None
        and not any(record["keys"].values())
    )


def load_all(models: Any, state_dict: Mapping[str, Any]) -> None:
    """``load_state_dict(strict=True)`` into each model (values are cast to its dtype)."""
    for model in models:
        model.load_state_dict(state_dict, strict=True)


def print_case(case: dict[str, Any]) -> None:
    label = f"{case['model']:6} {case['spec']:18}"
    for direction in ("megatron_to_megaspec", "megaspec_to_megatron"):
        if direction not in case:
            continue
        result = case[direction]
        print(
            f"{label} {direction:21} fp32 {result['fp32_max_abs_diff']:.2e} "
            f"(tol {result['fp32_tolerance']:.1e})  bf16 {result['bf16_max_abs_diff']:.2e} "
            f"(tol {result['bf16_tolerance']:.2e}; own bf16 error Megatron "
            f"{result['megatron_bf16_vs_fp32']:.2e}, megaspec {result['megaspec_bf16_vs_fp32']:.2e})  "
            f"top-1 {result['bf16_top1_agreement']:.3f}  {'ok' if result['passed'] else 'FAILED'}"
        )
    if any(case.get("keys", {}).values()):
        print(f"{label} key differences: {case['keys']}")
    if case.get("round_trip_differs_at") is not None:
        print(f"{label} round trip differs at {case['round_trip_differs_at']}")
    for step, error in [*case.get("errors", {}).items(), ("building", case.get("error"))]:
        if error is not None:
            print(f"{label} ERROR in {step}: {error.strip().splitlines()[-1]}")
    print(f"{label} {'passed' if case['passed'] else 'FAILED'}")


def run(models: list[str], specs: list[MegatronSpec], fused: bool) -> tuple[str, list[dict[str, Any]]]:
    """Every case; ``("not run: <why>", [])`` when Megatron cannot run here."""
    try:
        parts = import_megatron()
    except PeerUnavailable as error:
        return f"not run: {error}", []
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cleanup = start_parallel_state(parts["parallel_state"], parts["manual_seed"])
    cases: list[dict[str, Any]] = []
    try:
        for name in models:
            for spec in specs:
                case: dict[str, Any] = {"model": name, "spec": spec, "passed": False}
                try:
                    run_case(parts, case, fused)
                except Exception:  # building failed; the other cases still run
                    case["error"] = traceback.format_exc()
                print_case(case)
                cases.append(case)
                torch.cuda.empty_cache()
    finally:
        cleanup()
    return ("passed" if all(case["passed"] for case in cases) else "failed"), cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--specs", default=",".join(SPECS), help=f"comma-separated, of {', '.join(SPECS)}")
    parser.add_argument("--fused", action="store_true", help="Megatron-LM's default fusions on")
    options = parser.parse_args(argv)
    models, specs = options.models.split(","), options.specs.split(",")
    for value, known in ((models, MODELS), (specs, SPECS)):
        unknown = [item for item in value if item not in known]
        if unknown:
            parser.error(f"unknown {', '.join(unknown)}; expected some of {', '.join(known)}")
    status, cases = run(models, [spec for spec in SPECS if spec in specs], options.fused)
    print(status)
    if options.json:
        write_record(options.json, status, cases, options.fused)
    return 0 if status == "passed" else NOT_RUN if status.startswith("not run") else 1


def write_record(path: str, status: str, cases: list[dict[str, Any]], fused: bool) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record = {"format": FORMAT, "status": status, "date": date, "command": environment.command_line(),
              "machine": environment.machine(device), "versions": environment.versions(),
              "batch": [BATCH, SEQUENCE], "fused": fused, "cases": cases,
              "models": {name: repr(arguments) for name, arguments in MODELS.items()}}  # fmt: skip
    with open(path, "w") as file:
        json.dump(record, file, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
