"""Generation (megaspec.generate): key/value-cache decoding gives the tokens of recomputing
the whole sequence, for batched prompts of different lengths (left-padded) and each prompt
alone; greedy decoding gives transformers' tokens for the same weights; models with mixers
that keep no cache (the custom mixers of examples/) recompute, with exactly one warning
naming the layer and the mixer; a mixer may cache through the generic per-layer state; rows
end at eos; sampling is seeded; bad arguments are clear errors."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
from torch import Tensor

from examples import custom_mixer, foreign_module_adapter, hybrid_stack, plain_modules
from examples.custom_mixer import ConvMixerConfig
from megaspec.backends import torch as torch_backend
from megaspec.data import ByteTokenizer
from megaspec.generate import RecomputationWarning, generate, generate_text, recomputed_layers
from megaspec.layers import BlockSequenceSpec, TransformerLayer
from megaspec.models import GPTModel
from megaspec.parallel import seeded_initialization
from megaspec.training import build_model, preset_run
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig
from tests.helpers.reference_llama import randomise
from tests.helpers.stateful_conv_mixer import CachedConvMixer

PROMPT_LENGTHS = (3, 8, 1, 8, 5)


def prompts(vocab: int = 256, lengths: tuple[int, ...] = PROMPT_LENGTHS) -> list[Tensor]:
    generator = torch.Generator().manual_seed(11)
    return [torch.randint(1, vocab, (length,), generator=generator) for length in lengths]


def llama_model() -> GPTModel:
    """GQA, partial RoPE and QK-norm, with weights far from their initial values."""
    attention = AttentionConfig(num_heads=8, num_query_groups=2, rotary_fraction=0.5)
    with seeded_initialization(5):
        model = GPTModel(
            config=TransformerConfig(hidden_size=64, num_layers=3),
            vocab_size=256,
            submodules=torch_backend.llama_submodules(
                attention, MlpConfig(ffn_hidden_size=96), 3, qk_norm=True
            ),
        )
        randomise(model)
    return model


@torch.no_grad()
def greedy_alone(model: GPTModel, prompt: Tensor, new_tokens: int) -> Tensor:
    """The plainest greedy loop: the whole sequence of one prompt, argmax, repeat."""
    tokens = prompt.unsqueeze(0)
    for _ in range(new_tokens):
        chosen = model(tokens)[:, -1].argmax(dim=-1, keepdim=True)
        tokens = torch.cat((tokens, chosen), dim=1)
    return tokens[0]


def assert_rows_are(tokens: Tensor, expected: list[Tensor], longest: int) -> None:
    """Row i is prompt i right-aligned at ``longest`` and its new tokens, padding 0 before."""
    for row, alone in enumerate(expected):
        padding = tokens.shape[1] - len(alone)
        assert torch.equal(tokens[row, padding:], alone), f"row {row}"
        assert torch.count_nonzero(tokens[row, :padding]) == 0


def test_cached_greedy_tokens_equal_recomputation_and_each_prompt_alone() -> None:
    model = llama_model()
    assert recomputed_layers(model) == []
    batch = prompts()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every layer caches: no warning
        cached = generate(model, batch, max_new_tokens=12, temperature=0.0)
    recomputed = generate(model, batch, max_new_tokens=12, temperature=0.0, use_cache=False)
    assert cached.shape == (len(batch), 8 + 12)
    assert torch.equal(cached, recomputed)
    assert_rows_are(cached, [greedy_alone(model, prompt, 12) for prompt in batch], longest=8)


def test_a_tensor_with_an_attention_mask_is_the_same_batch_as_a_list() -> None:
    model = llama_model()
    batch = prompts()
    as_list = generate(model, batch, max_new_tokens=4, temperature=0.0)
    tokens, mask = as_list[:, :8], (as_list[:, :8] != 0).long()
    as_tensor = generate(model, tokens, attention_mask=mask, max_new_tokens=4, temperature=0.0)
    assert torch.equal(as_tensor, as_list)


def test_cached_sampling_draws_the_tokens_of_recomputation() -> None:
    # The same seeded generator draws once per step for the whole batch in both paths.
    model = llama_model()

    def sample(seed: int, use_cache: bool = True) -> Tensor:
        return generate(
            model, prompts(), max_new_tokens=10, temperature=0.8, top_k=50, top_p=0.9,
            generator=torch.Generator().manual_seed(seed), use_cache=use_cache,
        )  # fmt: skip

    cached = sample(3)
    assert torch.equal(cached, sample(3, use_cache=False))
    assert torch.equal(cached, sample(3))
    assert not torch.equal(cached, sample(4))


@pytest.mark.parametrize("family", ["llama3", "llama_tied", "mistral", "qwen2", "qwen3"])
def test_greedy_generation_from_an_imported_model_gives_transformers_tokens(family: str) -> None:
    # Imported with megaspec.from_pretrained: 64 greedy tokens of a left-padded batch equal
    # transformers' generate exactly, rows ending at the model's end-of-sequence token too.
    pytest.importorskip("transformers")
    from megaspec import from_pretrained
    from tests.helpers.hf_models import VOCAB, tiny_model

    hf = tiny_model(family)
    model = from_pretrained(hf).model
    batch = prompts(VOCAB, lengths=(5, 11, 2))
    eos = hf.generation_config.eos_token_id
    ours = generate(model, batch, max_new_tokens=64, temperature=0.0, eos_token_id=eos)
    tokens, mask = ours[:, :11], (ours[:, :11] != 0).long()
    theirs = hf.generate(
        input_ids=tokens, attention_mask=mask, max_new_tokens=64, do_sample=False,
        use_cache=True, pad_token_id=0,
    )  # fmt: skip
    assert torch.equal(ours, theirs)


# --- mixers without a cache: recomputation, one warning ----------------------------------------


def cached_conv_model() -> GPTModel:
    llama = torch_backend.llama_layer_submodules(AttentionConfig(num_heads=4), MlpConfig(ffn_hidden_size=128))
    conv = replace(llama, mixer=CachedConvMixer.as_mixer_submodule(ConvMixerConfig(kernel_size=3)))
    pattern = [TransformerLayer.as_layer_submodule(conv), TransformerLayer.as_layer_submodule(llama)]
    return GPTModel(
        config=TransformerConfig(hidden_size=64, num_layers=2),
        vocab_size=256,
        submodules=torch_backend.gpt_submodules(BlockSequenceSpec(pattern=pattern, num_layers=2)),
    )


UNCACHED = {
    "conv": (custom_mixer.build_model, "layer 0 (CausalConvMixer), layer 1 (CausalConvMixer)"),
    "gru": (foreign_module_adapter.build_model, "layer 1 (GruMixer)"),
    "plain": (plain_modules.build_model, "layer 1 (PlainSelfAttention)"),
    "hybrid": (hybrid_stack.build_model, "layer 2 (CausalConvMixer), layer 5 (CausalConvMixer)"),
}


@pytest.mark.parametrize("name", list(UNCACHED))
def test_uncached_mixers_recompute_with_one_warning(name: str) -> None:
    build, layers = UNCACHED[name]
    torch.manual_seed(0)
    model: GPTModel = build()
    randomise(model)
    batch = prompts()
    with pytest.warns(RecomputationWarning) as caught:
        tokens = generate(model, batch, max_new_tokens=6, temperature=0.0)
    assert [str(warning.message) for warning in caught] == [
        f"generate: {layers} declares no supports_inference_cache, so every new token "
        f"recomputes the whole sequence"
    ]
    assert caught[0].filename == __file__  # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for recomputation: nothing to warn about
        recomputed = generate(model, batch, max_new_tokens=6, temperature=0.0, use_cache=False)
    assert torch.equal(tokens, recomputed)
    assert_rows_are(tokens, [greedy_alone(model, prompt, 6) for prompt in batch], longest=8)


def test_a_mixer_caching_in_its_layer_state_decodes_like_recomputation() -> None:
    torch.manual_seed(0)
    model = cached_conv_model()
    randomise(model)
    assert recomputed_layers(model) == []
    batch = prompts()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached = generate(model, batch, max_new_tokens=10, temperature=0.0)
    assert_rows_are(cached, [greedy_alone(model, prompt, 10) for prompt in batch], longest=8)


# --- rows that end, windows, the text helper ------------------------------------------------


def ended_at(new_tokens: Tensor, eos: int) -> Tensor:
    """``[batch, new]`` tokens cut after each row's first ``eos`` (0 after it), and the
    columns after the last row ended dropped."""
    rows, ends = [], []
    for row in new_tokens:
        hits = (row == eos).nonzero()
        end = int(hits[0]) + 1 if len(hits) else len(row)
        rows.append(torch.cat((row[:end], torch.zeros(len(row) - end, dtype=row.dtype))))
        ends.append(end)
    return torch.stack(rows)[:, : max(ends)]


@pytest.mark.parametrize(("row", "column"), [(0, 0), (1, 3), (0, 5)])
def test_rows_end_at_eos_and_are_padded_after_it(row: int, column: int) -> None:
    model = llama_model()
    batch = prompts()[:2]
    free = generate(model, batch, max_new_tokens=8, temperature=0.0)
    eos = int(free[row, 8 + column])
    for use_cache in (True, False):
        ended = generate(
            model, batch, max_new_tokens=8, temperature=0.0, eos_token_id=eos, pad_token_id=0,
            use_cache=use_cache,
        )  # fmt: skip
        assert torch.equal(ended[:, :8], free[:, :8])
        assert torch.equal(ended[:, 8:], ended_at(free[:, 8:], eos)), (eos, use_cache)


def test_generation_stops_when_every_row_has_ended() -> None:
    model = llama_model()
    prompt = prompts()[:1]
    first = int(generate(model, prompt, max_new_tokens=1, temperature=0.0)[0, -1])
    for use_cache in (True, False):
        tokens = generate(model, prompt, max_new_tokens=8, temperature=0.0, eos_token_id=first, use_cache=use_cache)
        assert tokens.shape == (1, len(prompt[0]) + 1) and int(tokens[0, -1]) == first


def test_zero_new_tokens_returns_the_padded_prompts() -> None:
    tokens = generate(llama_model(), prompts(), max_new_tokens=0)
    assert tokens.shape == (len(PROMPT_LENGTHS), 8)
    assert_rows_are(tokens, prompts(), longest=8)


def test_generation_is_seeded_and_greedy_is_deterministic() -> None:
    model = build_model(preset_run("tiny"))
    prompt = ByteTokenizer().encode_tensor("def ").unsqueeze(0)
    # A window of 6 tokens: the output outgrows it, so every token is recomputed from it.
    greedy = generate(model, prompt, max_new_tokens=8, context_length=6, temperature=0.0)
    assert greedy.shape == (1, 12) and torch.equal(greedy[:, :4], prompt)
    assert torch.equal(
        greedy, generate(model, prompt, max_new_tokens=8, context_length=6, temperature=0.0)
    )
    windowed = prompt
    with torch.no_grad():
        for _ in range(8):
            chosen = model(windowed[:, -6:])[:, -1].argmax(dim=-1, keepdim=True)
            windowed = torch.cat((windowed, chosen), dim=1)
    assert torch.equal(greedy, windowed)
    first = generate_text(model, "def ", max_new_tokens=20, context_length=16, seed=5)
    assert first.startswith("def ")
    assert first == generate_text(model, "def ", max_new_tokens=20, context_length=16, seed=5)
    assert model.training  # generation restores the mode it found


# --- errors ----------------------------------------------------------------------------------


ERRORS: dict[str, tuple[Callable[[GPTModel], object], str]] = {
    "no prompts": (lambda m: generate(m, [], max_new_tokens=1),
                   "prompts must be a non-empty list of non-empty 1-D token sequences"),
    "empty prompt": (lambda m: generate(m, [[1, 2], []], max_new_tokens=1),
                     "prompts must be a non-empty list of non-empty 1-D token sequences"),
    "1-D tensor": (lambda m: generate(m, torch.tensor([1, 2]), max_new_tokens=1),
                   "prompt_ids must be a non-empty [batch, prompt] tensor, got shape (2,)"),
    "right padding": (lambda m: generate(m, torch.ones(1, 3, dtype=torch.long),
                                         attention_mask=torch.tensor([[1, 1, 0]]), max_new_tokens=1),
                      "attention_mask: every row needs at least one real token, and padding only "
                      "on the left (zeros first, then ones)"),
    "mask shape": (lambda m: generate(m, torch.ones(1, 3, dtype=torch.long),
                                      attention_mask=torch.ones(1, 2), max_new_tokens=1),
                   "attention_mask must have the prompts' shape (1, 3), got (1, 2)"),
    "mask with a list": (lambda m: generate(m, [[1]], attention_mask=torch.ones(1, 1), max_new_tokens=1),
                         "attention_mask goes with a [batch, prompt] tensor, not a list of prompts"),
    "negative length": (lambda m: generate(m, [[1]], max_new_tokens=-1),
                        "max_new_tokens must be >= 0 and context_length > 0, got -1 and None"),
    "zero window": (lambda m: generate(m, [[1]], max_new_tokens=1, context_length=0),
                    "max_new_tokens must be >= 0 and context_length > 0, got 1 and 0"),
    "temperature": (lambda m: generate(m, [[1]], max_new_tokens=1, temperature=-1.0),
                    "temperature must be >= 0 (0 is greedy), got -1.0"),
    "top_k": (lambda m: generate(m, [[1]], max_new_tokens=1, top_k=0), "top_k must be positive, got 0"),
    "top_p": (lambda m: generate(m, [[1]], max_new_tokens=1, top_p=1.5), "top_p must be in (0, 1], got 1.5"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_arguments_are_clear_errors(case: str) -> None:
    call, message = ERRORS[case]
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call(llama_model())
