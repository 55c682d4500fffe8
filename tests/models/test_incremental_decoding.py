"""GPTModel decoding incrementally (prefill, then one token per call, through the key/value
caches of megaspec.inference) gives the logits of the full forward in float32 within 1e-5:
for Llama-style models (GQA and MQA, full and partial RoPE, QK-norm), for batched prompts of
different lengths (left-padded, as transformers pads them) against each prompt alone, and at
tensor-parallel size 2 (spawned gloo processes), where each rank caches its own heads.
Under sequence parallelism, incremental decoding is refused with a clear error."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from megaspec.backends import torch as torch_backend
from megaspec.generate import generate
from megaspec.inference import InferenceState
from megaspec.models import GPTModel
from megaspec.parallel import ParallelGroups, seeded_initialization
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig
from tests.helpers.distributed import run_on_ranks

VOCAB = 300
PROMPT_LENGTHS = (5, 9, 1, 9)
NEW_TOKENS = 6
MODELS = {
    "gqa_full_rotary_qk_norm": (AttentionConfig(num_heads=8, num_query_groups=2), True),
    "gqa_partial_rotary": (
        AttentionConfig(num_heads=8, num_query_groups=4, rotary_fraction=0.5), False
    ),
    "mqa_partial_rotary_qk_norm_bias": (
        AttentionConfig(
            num_heads=4, num_query_groups=1, rotary_fraction=0.25, rotary_base=500.0, bias=True
        ),
        True,
    ),
}


def build_model(
    name: str, groups: ParallelGroups | None = None, *, sequence_parallel: bool = False
) -> GPTModel:
    """A 3-layer Llama-style model; init_std 0.1: logits of a few units, so every weight matters.

    Built on the current default device (``with torch.device(...)``).
    """
    attention, qk_norm = MODELS[name]
    config = TransformerConfig(
        hidden_size=64, num_layers=3, init_std=0.1, sequence_parallel=sequence_parallel
    )
    submodules = torch_backend.llama_submodules(
        attention, MlpConfig(ffn_hidden_size=96), 3, qk_norm=qk_norm
    )
    with seeded_initialization(7):
        model = GPTModel(config=config, vocab_size=VOCAB, submodules=submodules, groups=groups)
    return model.eval()


def prompts_and_continuations(
    device: torch.device = torch.device("cpu"),
) -> tuple[list[Tensor], Tensor]:
    generator = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, VOCAB, (length,), generator=generator) for length in PROMPT_LENGTHS]
    continuations = torch.randint(0, VOCAB, (len(prompts), NEW_TOKENS), generator=generator)
    return [prompt.to(device) for prompt in prompts], continuations.to(device)


def left_padded(prompts: list[Tensor]) -> tuple[Tensor, Tensor]:
    """``[batch, longest]`` tokens (padding 0) and the mask, 1 for real tokens."""
    longest = max(len(prompt) for prompt in prompts)
    device = prompts[0].device
    tokens = torch.zeros(len(prompts), longest, dtype=torch.long, device=device)
    mask = torch.zeros(len(prompts), longest, dtype=torch.long, device=device)
    for row, prompt in enumerate(prompts):
        tokens[row, longest - len(prompt) :] = prompt
        mask[row, longest - len(prompt) :] = 1
    return tokens, mask


@torch.no_grad()
def incremental_logits(model: GPTModel, prompts: list[Tensor], continuations: Tensor) -> Tensor:
    """Prefill the padded prompts, then feed the continuations one token per call.

    Returns ``[batch, 1 + NEW_TOKENS, vocab]``: the logits after each prompt and after each
    continuation token.
    """
    tokens, mask = left_padded(prompts)
    state = InferenceState(max_length=tokens.shape[1] + NEW_TOKENS)
    logits = [model(tokens, attention_mask=mask, inference=state)[:, -1]]
    for step in range(NEW_TOKENS):
        mask = torch.cat((mask, torch.ones_like(mask[:, :1])), dim=1)
        logits.append(model(continuations[:, step : step + 1], attention_mask=mask, inference=state)[:, -1])
    assert state.length == tokens.shape[1] + NEW_TOKENS
    return torch.stack(logits, dim=1)


@torch.no_grad()
def logits_alone(model: GPTModel, prompt: Tensor, continuation: Tensor) -> Tensor:
    """The full forward of one prompt and its continuation: ``[1 + NEW_TOKENS, vocab]``."""
    sequence = torch.cat((prompt, continuation)).unsqueeze(0)
    logits: Tensor = model(sequence)[0, len(prompt) - 1 :]
    return logits


def assert_each_row_matches_alone(model: GPTModel, incremental: Tensor) -> None:
    prompts, continuations = prompts_and_continuations(incremental.device)
    for row, prompt in enumerate(prompts):
        expected = logits_alone(model, prompt, continuations[row])
        torch.testing.assert_close(incremental[row], expected, rtol=0, atol=1e-5, msg=f"row {row}")


@pytest.mark.parametrize("name", list(MODELS))
def test_incremental_logits_of_padded_prompts_match_each_prompt_alone(name: str) -> None:
    model = build_model(name)
    prompts, continuations = prompts_and_continuations()
    incremental = incremental_logits(model, prompts, continuations)
    assert incremental.shape == (len(prompts), 1 + NEW_TOKENS, VOCAB)
    assert incremental.abs().max() > 1  # the weights are large enough to matter
    assert_each_row_matches_alone(model, incremental)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_incremental_logits_on_cuda_match_each_prompt_alone() -> None:
    # SDPA's CUDA kernels with an explicit mask; fp32 means fp32 (no TF32).
    torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device("cuda", torch.cuda.current_device())
    with torch.device(device):
        model = build_model("gqa_full_rotary_qk_norm")
    prompts, continuations = prompts_and_continuations(device)
    assert_each_row_matches_alone(model, incremental_logits(model, prompts, continuations))


def test_unpadded_batch_decodes_without_a_mask() -> None:
    model = build_model("gqa_full_rotary_qk_norm")
    prompts, continuations = prompts_and_continuations()
    same_length = [prompts[1], prompts[3]]
    incremental = incremental_logits(model, same_length, continuations[[1, 3]])
    for row, index in enumerate((1, 3)):
        expected = logits_alone(model, prompts[index], continuations[index])
        torch.testing.assert_close(incremental[row], expected, rtol=0, atol=1e-5)


def test_full_forward_of_padded_prompts_matches_each_prompt_alone() -> None:
    # The attention mask alone (no cache): positions count from each row's first real token.
    model = build_model("gqa_partial_rotary")
    prompts, _ = prompts_and_continuations()
    tokens, mask = left_padded(prompts)
    with torch.no_grad():
        logits = model(tokens, attention_mask=mask)
        for row, prompt in enumerate(prompts):
            alone = model(prompt.unsqueeze(0))[0]
            torch.testing.assert_close(logits[row, -len(prompt) :], alone, rtol=0, atol=1e-5)


def test_attention_mask_of_the_wrong_shape() -> None:
    model = build_model("gqa_partial_rotary")
    state = InferenceState(max_length=8)
    with torch.no_grad():
        model(torch.zeros(2, 3, dtype=torch.long), inference=state)
        with pytest.raises(ValueError, match=r"attention_mask must be \[batch, cached \+ sequence\] = \[2, 4\], got \[2, 1\]"):
            model(torch.zeros(2, 1, dtype=torch.long), attention_mask=torch.ones(2, 1), inference=state)


# --- tensor-parallel size 2 -------------------------------------------------------------------


def decode_on_rank() -> dict[str, Any]:
    """Runs on every rank of a spawned tensor-parallel group of size 2."""
    groups = ParallelGroups.tensor_parallel_over_world()
    model = build_model("gqa_full_rotary_qk_norm", groups)
    prompts, continuations = prompts_and_continuations()
    incremental = incremental_logits(model, prompts, continuations)
    alone = [logits_alone(model, prompt, continuations[row]) for row, prompt in enumerate(prompts)]
    greedy = generate(model, prompts, max_new_tokens=NEW_TOKENS, temperature=0.0)
    local_groups = model.get_submodule("blocks.layers.0.mixer").local_groups
    split = build_model("gqa_full_rotary_qk_norm", groups, sequence_parallel=True)
    errors = []
    for call in (
        lambda: generate(split, prompts, max_new_tokens=1),
        lambda: split(torch.zeros(1, 2, dtype=torch.long), inference=InferenceState(max_length=2)),
    ):
        try:
            call()
        except ValueError as error:
            errors.append(str(error))
    return {"incremental": incremental, "alone": alone, "greedy": greedy,
            "local_groups": local_groups, "errors": errors}  # fmt: skip


def test_tensor_parallel_decoding_matches_the_full_forward_and_one_process() -> None:
    single = build_model("gqa_full_rotary_qk_norm")
    prompts, continuations = prompts_and_continuations()
    reference = incremental_logits(single, prompts, continuations)
    reference_tokens = generate(single, prompts, max_new_tokens=NEW_TOKENS, temperature=0.0)
    for rank, result in enumerate(run_on_ranks(2, decode_on_rank)):
        assert result["local_groups"] == 1, rank  # each rank caches one of the two KV groups
        for row, alone in enumerate(result["alone"]):
            torch.testing.assert_close(result["incremental"][row], alone, rtol=0, atol=1e-5)
        torch.testing.assert_close(result["incremental"], reference, rtol=0, atol=1e-5)
        assert torch.equal(result["greedy"], reference_tokens), rank
        assert len(result["errors"]) == 2, result["errors"]
        assert "a model with sequence parallelism cannot generate" in result["errors"][0]
        assert result["errors"][1].startswith(
            "GPTModel: incremental decoding does not run under sequence parallelism: a decode "
            "step of one token cannot be split over 2 tensor-parallel ranks"
        )
