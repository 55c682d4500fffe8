"""Tensor-parallel sizes 2 and 4 (spawned gloo processes) against size 1, in float32.

For a Llama-style model (GQA, RoPE, QK-norm, gated MLP), a hybrid stack (attention and
the custom convolution mixer of examples/custom_mixer.py, tied embeddings) and a model of
plain modules with no tensor-parallel code (examples/plain_modules.py's attention and MLP,
and the torch.nn.GRU of examples/foreign_module_adapter.py, all declaring
``handles_sequence_parallel = False``), with and without sequence parallelism, every rank
must reproduce size 1's initial full weights exactly and its logits, loss and full
(gathered) gradients within 1e-5.

Settings that do not divide over the tensor-parallel size (4 gloo ranks) are clear errors.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

import pytest
import torch


from examples.custom_mixer import CausalConvMixer, ConvMixerConfig
from examples.foreign_module_adapter import gru_mixer
from examples.plain_modules import PlainMlp, PlainSelfAttention
from megaspec.backends import torch as torch_backend
from megaspec.layers import BlockSequenceSpec, TransformerLayer
from megaspec.models import GPTModel
from megaspec.parallel import ParallelGroups, gather_full, seeded_initialization, sharding_of
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig
from tests.helpers.distributed import run_on_ranks

VOCAB = 300
VOCAB_PARAMETERS = ("embedding.weight", "output_layer.weight")
ATTENTION = AttentionConfig(num_heads=8, num_query_groups=4, rotary_fraction=0.5)
MLP = MlpConfig(ffn_hidden_size=96)
KINDS = ("llama", "hybrid", "plain")


def build_model(kind: str, groups: ParallelGroups, sequence_parallel: bool) -> GPTModel:
    """The model ``kind``: "llama", "hybrid" or "plain"."""
    config = TransformerConfig(hidden_size=64, num_layers=3, sequence_parallel=sequence_parallel)
    if kind == "llama":
        submodules = torch_backend.llama_submodules(ATTENTION, MLP, 3, qk_norm=True)
        return GPTModel(config=config, vocab_size=VOCAB, submodules=submodules, groups=groups)
    llama = torch_backend.llama_layer_submodules(ATTENTION, MLP)
    attention = TransformerLayer.as_layer_submodule(llama)
    if kind == "hybrid":
        conv_mixer = CausalConvMixer.as_mixer_submodule(ConvMixerConfig(kernel_size=3))
        conv = TransformerLayer.as_layer_submodule(replace(llama, mixer=conv_mixer))
        pattern = [attention, conv, attention]
    else:
        plain = replace(llama, mixer=functools.partial(PlainSelfAttention, num_heads=4), mlp=PlainMlp)
        gru = replace(llama, mixer=gru_mixer)
        pattern = [attention, TransformerLayer.as_layer_submodule(plain), TransformerLayer.as_layer_submodule(gru)]
    blocks = BlockSequenceSpec(pattern=pattern, num_layers=3)
    return GPTModel(
        config=config,
        vocab_size=VOCAB,
        submodules=torch_backend.gpt_submodules(blocks),
        groups=groups,
        tie_embeddings=kind == "hybrid",
    )


def batch(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(99)
    tokens = torch.randint(0, VOCAB, (2, 9), generator=generator).to(device)
    return tokens[:, :-1], tokens[:, 1:]


def full_tensors(model: GPTModel, groups: ParallelGroups, *, grads: bool) -> dict[str, torch.Tensor]:
    """Every parameter (or gradient) in its full, TP=1 form, vocabulary padding removed."""
    result = {}
    for name, parameter in model.named_parameters():
        tensor = parameter.grad if grads else parameter.data
        assert tensor is not None, f"{name} has no gradient"
        full = gather_full(tensor, sharding_of(parameter), groups)
        result[name] = (full[:VOCAB] if name in VOCAB_PARAMETERS else full).cpu()
    return result


def run_case(
    kind: str, groups: ParallelGroups, sequence_parallel: bool, device: torch.device
) -> dict[str, Any]:
    # fp32 means fp32 on GPUs too: no TF32 in matrix products or cuDNN convolutions.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with torch.device(device), seeded_initialization(1234):
        model = build_model(kind, groups, sequence_parallel)
    initial = full_tensors(model, groups, grads=False)
    inputs, labels = batch(device)
    with torch.no_grad():
        logits = model(inputs)
    loss = model(inputs, labels=labels).mean()
    loss.backward()
    return {
        "initial": initial,
        "logits": logits.cpu(),
        "loss": loss.detach().cpu(),
        "grads": full_tensors(model, groups, grads=True),
    }


def tensor_parallel_cases(device_type: str) -> dict[tuple[str, bool], dict[str, Any]]:
    """Runs on every rank of a spawned tensor-parallel group."""
    groups = ParallelGroups.tensor_parallel_over_world()
    device = torch.device("cpu")
    if device_type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    return {
        (kind, sequence_parallel): run_case(kind, groups, sequence_parallel, device)
        for kind in KINDS
        for sequence_parallel in (False, True)
    }


def reference_cases(device: torch.device) -> dict[str, dict[str, Any]]:
    return {kind: run_case(kind, ParallelGroups.single(), False, device) for kind in KINDS}


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, Any]]:
    return reference_cases(torch.device("cpu"))


@pytest.mark.parametrize("tensor_parallel_size", [2, 4])
def test_tensor_parallel_matches_single_process(
    tensor_parallel_size: int, reference: dict[str, dict[str, Any]]
) -> None:
    per_rank = run_on_ranks(tensor_parallel_size, tensor_parallel_cases, "cpu")
    assert_matches(per_rank, reference, tensor_parallel_size)


@pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="needs two CUDA GPUs (run on the GPU machine)"
)
def test_tensor_parallel_matches_single_gpu_over_nccl() -> None:
    reference = reference_cases(torch.device("cuda", 0))
    per_rank = run_on_ranks(2, tensor_parallel_cases, "cuda", backend="nccl")
    assert_matches(per_rank, reference, 2)


def assert_matches(
    per_rank: list[Any], reference: dict[str, dict[str, Any]], tensor_parallel_size: int
) -> None:
    for rank, cases in enumerate(per_rank):
        for (kind, sequence_parallel), result in cases.items():
            expected = reference[kind]
            where = f"{kind}, tp={tensor_parallel_size}, sp={sequence_parallel}, rank {rank}"
            assert result["initial"].keys() == expected["initial"].keys(), where
            for name, full in expected["initial"].items():
                assert torch.equal(result["initial"][name], full), f"initial {name} ({where})"
            torch.testing.assert_close(result["logits"], expected["logits"], atol=1e-5, rtol=0, msg=where)
            torch.testing.assert_close(result["loss"], expected["loss"], atol=1e-5, rtol=0, msg=where)
            for name, grad in expected["grads"].items():
                torch.testing.assert_close(
                    result["grads"][name], grad, atol=1e-5, rtol=0, msg=f"grad {name} ({where})"
                )


# --- divisibility errors ---------------------------------------------------------------------


def build_over_world(
    attention: AttentionConfig, mlp: MlpConfig, vocab_size: int = 256
) -> GPTModel:
    return GPTModel(
        config=TransformerConfig(hidden_size=48, num_layers=1),
        vocab_size=vocab_size,
        submodules=torch_backend.llama_submodules(attention, mlp, 1),
        groups=ParallelGroups.tensor_parallel_over_world(),
    )


def error_of(attention: AttentionConfig, mlp: MlpConfig) -> str:
    try:
        build_over_world(attention, mlp)
    except ValueError as error:
        return str(error)
    return "no error"


def construction_outcomes() -> dict[str, str]:
    """Runs on every rank of a tensor-parallel group of size 4."""
    torch.manual_seed(0)
    good_mlp = MlpConfig(ffn_hidden_size=64)
    return {
        "heads": error_of(AttentionConfig(num_heads=6, num_query_groups=2), good_mlp),
        "groups": error_of(AttentionConfig(num_heads=8, num_query_groups=2), good_mlp),
        "ffn": error_of(AttentionConfig(num_heads=4), MlpConfig(ffn_hidden_size=66)),
        "summary": build_over_world(
            AttentionConfig(num_heads=4), good_mlp, vocab_size=300
        ).summary(),
    }


def test_tensor_parallel_divisibility_errors() -> None:
    for outcome in run_on_ranks(4, construction_outcomes):
        # The same check (AttentionConfig / MlpConfig.check_model) as the config front end's.
        assert outcome["heads"] == (
            "SelfAttention (layer 0): num_heads: 6 is not divisible by the tensor-parallel size (4)"
        )
        assert outcome["groups"] == (
            "SelfAttention (layer 0): num_query_groups: 2 is not divisible by the "
            "tensor-parallel size (4)"
        )
        assert outcome["ffn"] == (
            "MLP (layer 0): ffn_hidden_size: 66 is not divisible by the tensor-parallel size (4)"
        )
        assert (
            "note: vocabulary 300 padded to 512 (a multiple of tensor-parallel size 4 x 128); "
            "padded entries are excluded from logits and loss"
        ) in outcome["summary"]
