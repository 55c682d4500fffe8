"""Hugging Face checkpoints in and out, against real transformers models of every supported
family (Llama with llama3 RoPE scaling, Llama tied with biases, Mistral, Qwen2, Qwen3; all
with grouped-query attention), on one process in float32.

Import (from a directory, a sharded directory or a model object) gives transformers' logits
within 1e-5; export loads back into transformers with the same logits; import then export
gives bitwise-equal tensors. Each refusal has its exact message.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch
from transformers import AutoModelForCausalLM

import megaspec
from megaspec.checkpoint import CheckpointError, export_hf
from megaspec.peft import IA3Config, LoraConfig, add_adapter
from tests.helpers.hf_models import FAMILIES, hf_logits, save, tiny_model, tokens

TOLERANCE = 1e-5


def saved_tensors(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory's safetensors files."""
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(directory.glob("*.safetensors")):
        tensors.update(safetensors.torch.load_file(path))
    return tensors


@pytest.fixture(scope="module", params=FAMILIES)
def checkpoint(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    """A family's name and its saved checkpoint directory (the model is rebuilt from it)."""
    family: str = request.param
    return family, save(tiny_model(family), tmp_path_factory.mktemp(family))


def test_import_matches_transformers_logits(checkpoint: tuple[str, Path]) -> None:
    family, directory = checkpoint
    reference = AutoModelForCausalLM.from_pretrained(directory).eval()
    imported = megaspec.from_pretrained(directory)
    input_ids = tokens()
    with torch.no_grad():
        logits = imported.model(input_ids)
    expected = hf_logits(reference, input_ids)
    assert logits.shape == expected.shape == (2, 40, 300)  # vocabulary padding removed
    torch.testing.assert_close(logits, expected, rtol=0, atol=TOLERANCE)
    assert imported.source_format == "huggingface"
    assert imported.config.tie_embeddings is (family == "llama_tied")


def test_export_loads_in_transformers_with_the_same_logits(
    checkpoint: tuple[str, Path], tmp_path: Path
) -> None:
    family, directory = checkpoint
    imported = megaspec.from_pretrained(directory)
    target = tmp_path / "out"
    exported = export_hf(imported.model, imported.config, target, template=imported.hf_config)
    reloaded = AutoModelForCausalLM.from_pretrained(exported).eval()
    architecture = json.loads((directory / "config.json").read_text())["architectures"][0]
    assert type(reloaded).__name__ == architecture
    input_ids = tokens()
    with torch.no_grad():
        logits = imported.model(input_ids)
    torch.testing.assert_close(hf_logits(reloaded, input_ids), logits, rtol=0, atol=TOLERANCE)


def test_import_then_export_is_bitwise_equal(checkpoint: tuple[str, Path], tmp_path: Path) -> None:
    _, directory = checkpoint
    imported = megaspec.from_pretrained(directory)
    target = tmp_path / "out"
    exported = export_hf(imported.model, imported.config, target, template=imported.hf_config)
    original, written = saved_tensors(directory), saved_tensors(exported)
    assert written.keys() == original.keys()
    for name, tensor in original.items():
        assert written[name].dtype == tensor.dtype
        assert torch.equal(written[name], tensor), name


@pytest.mark.parametrize("family", ["qwen2", "llama_tied"])
def test_import_from_model_object_and_sharded_directory(family: str, tmp_path: Path) -> None:
    model = tiny_model(family)
    directory = save(model, tmp_path / "sharded", max_shard_size="40KB")
    assert (directory / "model.safetensors.index.json").is_file()
    input_ids = tokens()
    expected = hf_logits(model, input_ids)
    for source in (model, directory):
        imported = megaspec.from_pretrained(source)
        with torch.no_grad():
            torch.testing.assert_close(imported.model(input_ids), expected, rtol=0, atol=TOLERANCE)


def test_export_shards_above_the_size_limit(tmp_path: Path) -> None:
    model = tiny_model("qwen3")
    imported = megaspec.from_pretrained(model)
    exported = export_hf(imported.model, imported.config, tmp_path / "out", max_shard_bytes=60_000)
    index = json.loads((exported / "model.safetensors.index.json").read_text())
    files = sorted(path.name for path in exported.glob("*.safetensors"))
    assert len(files) > 1 and sorted(set(index["weight_map"].values())) == files
    total = sum(tensor.numel() * 4 for tensor in saved_tensors(exported).values())
    assert index["metadata"]["total_size"] == total
    assert not (exported / "model.safetensors").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(exported).eval()
    input_ids = tokens()
    expected = hf_logits(model, input_ids)
    torch.testing.assert_close(hf_logits(reloaded, input_ids), expected, rtol=0, atol=TOLERANCE)


def test_bfloat16_import_and_export_keep_the_bits(tmp_path: Path) -> None:
    model = tiny_model("llama3").to(torch.bfloat16)
    directory = save(model, tmp_path / "bf16")
    imported = megaspec.from_pretrained(directory, dtype=torch.bfloat16)
    assert {parameter.dtype for parameter in imported.model.parameters()} == {torch.bfloat16}
    exported = export_hf(imported.model, imported.config, tmp_path / "out")
    assert json.loads((exported / "config.json").read_text())["dtype"] == "bfloat16"
    original, written = saved_tensors(directory), saved_tensors(exported)
    assert all(torch.equal(written[name], tensor) for name, tensor in original.items())


# --- refusals --------------------------------------------------------------------------------


def test_export_refuses_a_non_empty_directory_unless_asked(tmp_path: Path) -> None:
    imported = megaspec.from_pretrained(tiny_model("mistral"))
    target = tmp_path / "out"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError) as error:
        export_hf(imported.model, imported.config, target)
    assert str(error.value) == (
        f"{target}: directory exists and is not empty; pass overwrite=True to replace it"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]  # nothing staged left
    export_hf(imported.model, imported.config, target, overwrite=True)
    assert sorted(path.name for path in target.iterdir()) == ["config.json", "model.safetensors"]


def test_export_of_a_model_with_adapters_says_what_to_do(tmp_path: Path) -> None:
    imported = megaspec.from_pretrained(tiny_model("llama3"))
    add_adapter(imported.model, LoraConfig(rank=2, targets=["*.linear_qkv"]))
    add_adapter(imported.model, IA3Config(name="scales", targets=["*.linear_fc2"]))
    with pytest.raises(ValueError) as error:
        export_hf(imported.model, imported.config, tmp_path / "out")
    assert str(error.value) == (
        "the model has adapters (default, scales): fold them in with "
        "megaspec.peft.merge_and_unload or drop them with unload first (adapters alone are "
        "written by save_adapters or export_peft)"
    )
    assert not (tmp_path / "out").exists()


def test_missing_shard_named_in_the_index(tmp_path: Path) -> None:
    directory = save(tiny_model("llama3"), tmp_path / "sharded", max_shard_size="40KB")
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[1]  # model-00002-of-000NN.safetensors
    (directory / shard).unlink()
    with pytest.raises(CheckpointError) as error:
        megaspec.from_pretrained(directory)
    assert str(error.value) == (
        f"model.safetensors.index.json: names shard '{shard}', which is missing from {directory}"
    )


def edit_config(directory: Path, **changes: object) -> None:
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))


def test_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path: Path) -> None:
    directory = save(tiny_model("qwen2"), tmp_path / "qwen2")
    edit_config(directory, num_key_value_heads=1)
    with pytest.raises(CheckpointError) as error:
        megaspec.from_pretrained(directory)
    assert str(error.value) == (
        "model.safetensors: model.layers.0.self_attn.k_proj.weight: shape [32, 64] does not "
        "match the config (expected [16, 64])"
    )


def test_missing_and_unexpected_tensors(tmp_path: Path) -> None:
    directory = save(tiny_model("llama3"), tmp_path / "untied")
    edit_config(directory, tie_word_embeddings=True)  # the file still holds lm_head.weight
    with pytest.raises(CheckpointError) as error:
        megaspec.from_pretrained(directory)
    assert str(error.value) == (
        f"{directory}: unexpected tensors the config does not describe: lm_head.weight "
        f"(tie_word_embeddings is true: the output layer is model.embed_tokens.weight)"
    )
    edit_config(directory, tie_word_embeddings=False, num_hidden_layers=3)
    with pytest.raises(CheckpointError) as error:
        megaspec.from_pretrained(directory)
    assert str(error.value) == (
        f"{directory}: missing tensors the config needs: model.layers.2.input_layernorm.weight, "
        f"model.layers.2.mlp.down_proj.weight, model.layers.2.mlp.gate_proj.weight, "
        f"model.layers.2.mlp.up_proj.weight, ... (9 in all)"
    )


def test_active_sliding_window_is_refused(tmp_path: Path) -> None:
    directory = save(tiny_model("mistral"), tmp_path / "mistral")
    edit_config(directory, sliding_window=4096)
    with pytest.raises(CheckpointError) as error:
        megaspec.from_pretrained(directory)
    assert str(error.value) == (
        "config.json: sliding_window: 4096 is not supported (sliding-window attention; "
        "supported: null)"
    )


def test_override_changing_the_architecture_is_refused() -> None:
    with pytest.raises(megaspec.config.ConfigError) as error:
        megaspec.from_pretrained(
            tiny_model("qwen3"), overrides=["decoder.block.mixer.num_query_groups=4"]
        )
    assert str(error.value) == (
        "decoder.block.mixer.num_query_groups: changes the architecture of the pretrained model "
        "(2 -> 4); growing or reshaping a pretrained model is not available yet (overrides may "
        "change apply_peft, cross_entropy_chunk_tokens, fuse_elementwise, fused_cross_entropy, "
        "init, init_std, lr_scale, recompute, recompute_core_attention, sdpa_backend, weight_decay)"
    )
