"""The te backend on a GPU: logits, weight portability, training in bf16 and FP8, errors.

Skipped (with the reason shown by ``pytest -ra``) without a CUDA GPU or Transformer Engine.
Small Llama models (hidden 128, 2 layers, dimensions multiples of 16 as FP8 needs): the
whole file takes seconds on an H100.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip(
        "the te backend tests need a CUDA GPU (and Transformer Engine: pip install 'megaspec[te]')",
        allow_module_level=True,
    )
pytest.importorskip(
    "transformer_engine.pytorch",
    reason="Transformer Engine is not installed (pip install 'megaspec[te]')",
)

from megaspec import AttentionConfig, GPTModel, MlpConfig, TransformerConfig  # noqa: E402
from megaspec.backends import te  # noqa: E402
from megaspec.backends import torch as torch_backend  # noqa: E402
from megaspec.backends.fp8 import Fp8Config, fp8_autocast  # noqa: E402
from megaspec.backends.portable import load_portable_state_dict, portable_state_dict  # noqa: E402
from megaspec.layers import MLP, BlockSequenceSpec, RMSNorm, TransformerLayer  # noqa: E402
from megaspec.models import GPTSubmodules  # noqa: E402
from megaspec.parallel import ParallelGroups, materialize, ones_init, seeded_initialization  # noqa: E402
from megaspec.training import resolve_run, train  # noqa: E402
from tests.helpers.presets import TE_SLOT_OVERRIDES  # noqa: E402

HIDDEN, LAYERS, VOCAB, BATCH, SEQUENCE = 128, 2, 256, 4, 64
ATTENTION = AttentionConfig(num_heads=4, num_query_groups=2)  # GQA: 2 query heads per group
MLP_CONFIG = MlpConfig(ffn_hidden_size=256, activation="silu", gated=True)


def torch_spec() -> GPTSubmodules:
    return torch_backend.llama_submodules(ATTENTION, MLP_CONFIG, LAYERS)


def te_spec(fuse_norms: bool) -> GPTSubmodules:
    return te.llama_submodules(ATTENTION, MLP_CONFIG, LAYERS, fuse_norms=fuse_norms)


def mixed_spec() -> GPTSubmodules:
    """te attention (its norm fused into QKV) with the torch backend's norm and MLP."""
    layer = replace(
        te.llama_layer_submodules(ATTENTION, MLP_CONFIG),
        pre_mlp_norm=RMSNorm,
        mlp=MLP.as_mlp_submodule(MLP_CONFIG, torch_backend.mlp_submodules()),
    )
    blocks = BlockSequenceSpec(pattern=[TransformerLayer.as_layer_submodule(layer)], num_layers=LAYERS)
    return te.gpt_submodules(blocks)


SPECS: dict[str, Callable[[], GPTSubmodules]] = {
    "te-fused-norms": lambda: te_spec(fuse_norms=True),
    "te-separate-norms": lambda: te_spec(fuse_norms=False),
    "te-attention-torch-mlp": mixed_spec,
}


def build(submodules: GPTSubmodules, dtype: torch.dtype, seed: int = 0) -> GPTModel:
    config = TransformerConfig(hidden_size=HIDDEN, num_layers=LAYERS, params_dtype=dtype)
    with seeded_initialization(seed), torch.device("cuda"):
        return GPTModel(config=config, vocab_size=VOCAB, submodules=submodules)


def random_tokens(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (BATCH, SEQUENCE), generator=generator).cuda()


@torch.no_grad()
def logits(model: GPTModel, tokens: torch.Tensor) -> torch.Tensor:
    output: torch.Tensor = model(tokens)  # [batch, sequence, vocab]
    return output.float()


def same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("name", list(SPECS))
def test_a_seed_gives_the_torch_backends_weights(name: str) -> None:
    # Same draws in the same order, same layouts (QKV per KV group, fc1 [gate; up]).
    te_model = build(SPECS[name](), torch.bfloat16, seed=5)
    torch_model = build(torch_spec(), torch.bfloat16, seed=5)
    assert same_weights(portable_state_dict(te_model), portable_state_dict(torch_model))


@pytest.mark.parametrize("name", list(SPECS))
def test_logits_match_the_torch_backend(name: str) -> None:
    """bf16 te logits are as close to the float32 torch reference as bf16 torch logits.

    Tolerance: te's mean absolute error at most 2x torch-bf16's and its largest error at most
    4x torch-bf16's largest (plus 1e-3): both backends round to bf16 at different points
    (fused norm + GEMM, flash/cuDNN attention), so neither error is zero, but a layout or
    scaling mistake would be orders of magnitude larger.
    """
    reference = build(torch_spec(), torch.float32, seed=1)
    weights = portable_state_dict(reference)
    torch_bf16 = build(torch_spec(), torch.bfloat16)
    te_bf16 = build(SPECS[name](), torch.bfloat16)
    load_portable_state_dict(torch_bf16, weights)
    load_portable_state_dict(te_bf16, weights)
    tokens = random_tokens()
    exact = logits(reference, tokens)
    torch_error = (logits(torch_bf16, tokens) - exact).abs()
    te_error = (logits(te_bf16, tokens) - exact).abs()
    assert te_error.mean() <= 2 * torch_error.mean() + 1e-3, (te_error.mean(), torch_error.mean())
    assert te_error.max() <= 4 * torch_error.max() + 1e-3, (te_error.max(), torch_error.max())


def test_weights_move_torch_to_te_and_back() -> None:
    source = build(torch_spec(), torch.bfloat16, seed=1)
    te_model = build(te_spec(fuse_norms=True), torch.bfloat16, seed=2)
    load_portable_state_dict(te_model, portable_state_dict(source))
    back = build(torch_spec(), torch.bfloat16, seed=3)
    load_portable_state_dict(back, portable_state_dict(te_model))
    assert same_weights(back.state_dict(), source.state_dict())
    tokens = random_tokens()
    assert torch.equal(logits(back, tokens), logits(source, tokens))
    # The te model's own names: a fused norm inside linear_qkv, TE's extra state kept.
    own = te_model.state_dict()
    assert "blocks.layers.0.mixer.linear_qkv.te_module.layer_norm_weight" in own
    assert "blocks.layers.0.mixer.linear_qkv.te_module._extra_state" in own


def test_meta_construction_materialises_the_eager_weights() -> None:
    config = TransformerConfig(hidden_size=HIDDEN, num_layers=LAYERS, params_dtype=torch.bfloat16)
    with seeded_initialization(4), torch.device("meta"):
        lazy = GPTModel(config=config, vocab_size=VOCAB, submodules=te_spec(fuse_norms=True))
    materialize(lazy, device="cuda")
    eager = build(te_spec(fuse_norms=True), torch.bfloat16, seed=4)
    assert same_weights(portable_state_dict(lazy), portable_state_dict(eager))
    tokens = random_tokens()
    assert torch.equal(logits(lazy, tokens), logits(eager, tokens))


def counting_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Rows counting up from random starts: each next token is the current one plus 1."""
    starts = torch.randint(0, VOCAB, (BATCH, 1), generator=torch.Generator().manual_seed(0))
    sequence = (starts + torch.arange(SEQUENCE + 1)) % VOCAB  # [batch, sequence + 1]
    return sequence[:, :-1].cuda(), sequence[:, 1:].cuda()


@pytest.mark.parametrize("recipe", [None, "delayed", "current"])
def test_fifty_adamw_steps_lower_the_loss(recipe: str | None) -> None:
    import transformer_engine.pytorch as te_pytorch

    available, reason = te_pytorch.is_fp8_available(return_reason=True)
    if recipe is not None and not available:
        pytest.skip(f"no FP8 on this GPU: {reason}")
    fp8 = None if recipe is None else Fp8Config(recipe=recipe)  # type: ignore[arg-type]
    model = build(te_spec(fuse_norms=True), torch.bfloat16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    inputs, labels = counting_batch()
    losses = []
    for _ in range(50):
        optimizer.zero_grad(set_to_none=True)
        with fp8_autocast(fp8):
            loss = model(inputs, labels=labels).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], losses
    qkv = model.blocks.layers[0].mixer.linear_qkv.te_module
    assert qkv.fp8 == (recipe is not None)  # the forward really ran in FP8 (or did not)
    # FP8 history stays with the te model; the portable weights load into the torch backend.
    back = build(torch_spec(), torch.bfloat16, seed=9)
    load_portable_state_dict(back, portable_state_dict(model))
    assert torch.equal(back.state_dict()["blocks.layers.0.input_norm.weight"], qkv.layer_norm_weight)
    # Loading into a te model leaves its (pickled) FP8 state alone: TE would refuse to unpickle it.
    load_portable_state_dict(model, portable_state_dict(back))


def test_norms_refuse_sharded_input_over_several_ranks() -> None:
    with pytest.raises(ValueError) as caught:
        te.TERMSNorm(
            hidden_size=HIDDEN,
            config=TransformerConfig(hidden_size=HIDDEN, num_layers=1),
            groups=ParallelGroups.layout_only(2),
            sharded_input=True,
            init_method=ones_init(),
        )
    assert str(caught.value) == (
        "TERMSNorm: a norm whose tensor-parallel ranks see different data (sequence "
        "parallelism, or QK-norm over sharded heads) is not supported on the te backend; "
        "use megaspec.layers.RMSNorm / LayerNorm for this slot"
    )


def test_fused_linears_refuse_sequence_parallel_over_several_ranks() -> None:
    build_fused = te.norm_column_linear(normalization="RMSNorm", eps=1e-5)
    with pytest.raises(ValueError, match="sequence parallelism is not supported"):
        build_fused(
            input_size=HIDDEN,
            output_size=HIDDEN,
            groups=ParallelGroups.layout_only(2),
            init_method=ones_init(),
            bias=False,
            gather_output=False,
            sequence_parallel=True,
            stacked_parts=1,
            params_dtype=torch.bfloat16,
        )


def test_the_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from examples import te_backend
    from tests.test_examples import check_example_output

    te_backend.main()
    output = capsys.readouterr().out
    assert "te, bf16: loss" in output and "te attention + torch MLP, bf16: loss" in output
    # 30 steps on counting sequences: well below a fresh model's log(256) = 5.55.
    assert all(loss < 4.5 for loss in check_example_output("te_backend", output))


@pytest.mark.parametrize("recipe", ["delayed", "current"])
def test_megaspec_train_with_te_slot_types_in_fp8(recipe: str) -> None:
    import transformer_engine.pytorch as te_pytorch

    available, reason = te_pytorch.is_fp8_available(return_reason=True)
    if not available:
        pytest.skip(f"no FP8 on this GPU: {reason}")
    run = resolve_run(
        preset="tiny",
        overrides=[
            *TE_SLOT_OVERRIDES,
            f"training.fp8={{recipe: {recipe}}}",
            "training.steps=4", "training.batch_size=4", "training.sequence_length=32",
            "training.warmup_steps=1", "training.eval_interval=4", "training.eval_batches=1",
        ],
    )  # fmt: skip
    result = train(run, device="cuda", progress=False, save_model=False)
    assert len(result.losses) == 4 and all(math.isfinite(loss) for loss in result.losses)
    qkv = result.model.get_submodule("blocks.layers.0.mixer.linear_qkv.te_module")
    assert qkv.fp8  # the last forward (validation) ran under the run's recipe
