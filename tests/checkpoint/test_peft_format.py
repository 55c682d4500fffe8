"""LoRA adapters in Hugging Face PEFT's format (megaspec.checkpoint.peft_format), against real
``transformers`` and ``peft``: the base exported with ``export_hf``, the adapter with
``export_peft``, ``peft.PeftModel.from_pretrained`` gives megaspec's logits (fp32, 1e-5) with
grouped-query attention (4 query heads per KV group), rsLoRA and dropout, every linear or a
few; the files written at tensor-parallel size 2 equal size 1's bitwise; every refusal has its
exact message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import peft
import pytest
import safetensors.torch
import torch
from transformers import AutoModelForCausalLM

from megaspec.checkpoint import (
    CheckpointError,
    export_hf,
    export_peft,
    load_adapters,
    save_adapters,
)
from megaspec.config import ModelConfig, resolve
from megaspec.models import GPTModel
from megaspec.parallel import ColumnParallelLinear, ParallelGroups, normal_init, seeded_initialization
from megaspec.peft import IA3Config, LoraConfig, adapter_parameters, add_adapter, merge
from tests.helpers.distributed import run_on_ranks
from tests.helpers.hf_models import hf_logits

TOLERANCE = 1e-5
VOCAB = 300
OVERRIDES = [
    "hidden_size=64", f"vocab_size={VOCAB}", "decoder.num_blocks=2", "decoder.block.mixer.num_heads=8",
    "decoder.block.mixer.num_query_groups=2", "decoder.block.mlp.ffn_hidden_size=96",
]  # fmt: skip
CONFIG = resolve(ModelConfig, overrides=OVERRIDES)
TOKENS = torch.randint(0, VOCAB, (2, 17), generator=torch.Generator().manual_seed(0))
EVERY_LINEAR = ("*.linear_qkv", "*.linear_proj", "*.linear_fc1", "*.linear_fc2")


def base(groups: ParallelGroups | None = None, config: ModelConfig = CONFIG) -> GPTModel:
    with seeded_initialization(0):
        return config.build(groups).eval()


def with_lora(model: GPTModel, lora: LoraConfig) -> GPTModel:
    """``model`` with ``lora``, its A and B random (B starts at 0: moved so that it matters)."""
    with seeded_initialization(1):
        add_adapter(model, lora)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for parameter in adapter_parameters(model):
            parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
    return model.eval()  # the new adapters' dropout, too


def megaspec_logits(model: GPTModel) -> torch.Tensor:
    with torch.no_grad():
        logits: torch.Tensor = model(TOKENS)
    return logits[..., :VOCAB]


def peft_logits(base_directory: Path, adapter_directory: Path) -> torch.Tensor:
    """Logits of transformers' model of ``base_directory`` with PEFT's adapter loaded,
    checking that PEFT built exactly the LoRA modules the file holds."""
    hf_model = AutoModelForCausalLM.from_pretrained(base_directory).eval()
    adapted = peft.PeftModel.from_pretrained(hf_model, adapter_directory).eval()
    built = {key.replace(".default.", ".") for key in adapted.state_dict() if ".lora_" in key}
    assert built == safetensors.torch.load_file(adapter_directory / "adapter_model.safetensors").keys()
    return hf_logits(adapted, TOKENS)


@pytest.mark.parametrize(
    ("lora", "target_modules"),
    [
        (LoraConfig(rank=4, alpha=8.0, targets=EVERY_LINEAR),
         ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]),
        (LoraConfig(rank=8, alpha=4.0, rank_stabilized=True, dropout=0.1, targets=EVERY_LINEAR),
         ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]),
        (LoraConfig(rank=2, targets=("blocks.layers.1.mixer.linear_qkv", "output_layer")),
         ["lm_head", "model.layers.1.self_attn.k_proj", "model.layers.1.self_attn.q_proj",
          "model.layers.1.self_attn.v_proj"]),
    ],
    ids=["every_linear", "rank_stabilized_dropout", "one_qkv_and_lm_head"],
)  # fmt: skip
def test_peft_loads_the_adapter_onto_the_exported_model_with_equal_logits(
    lora: LoraConfig, target_modules: list[str], tmp_path: Path
) -> None:
    model = base()
    export_hf(model, CONFIG, tmp_path / "base")
    with_lora(model, lora)
    export_peft(model, CONFIG, tmp_path / "adapter")
    document = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert document["peft_type"] == "LORA" and document["task_type"] == "CAUSAL_LM"
    assert (document["r"], document["lora_alpha"]) == (lora.rank, lora.alpha)
    assert (document["use_rslora"], document["lora_dropout"]) == (lora.rank_stabilized, lora.dropout)
    assert document["target_modules"] == target_modules
    expected = megaspec_logits(model)
    without_adapter = hf_logits(AutoModelForCausalLM.from_pretrained(tmp_path / "base").eval(), TOKENS)
    assert (expected - without_adapter).abs().max() > 0.1  # the adapter matters
    torch.testing.assert_close(peft_logits(tmp_path / "base", tmp_path / "adapter"), expected, rtol=0, atol=TOLERANCE)


def test_files_hold_peft_key_names_and_no_base_weight(tmp_path: Path) -> None:
    model = with_lora(base(), LoraConfig(rank=4, targets=EVERY_LINEAR))
    export_peft(model, CONFIG, tmp_path / "adapter")
    assert sorted(path.name for path in (tmp_path / "adapter").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]  # fmt: skip
    tensors = safetensors.torch.load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert len(tensors) == 2 * 7 * 2  # layers x PEFT modules x (A, B)
    prefix = "base_model.model.model.layers.0"
    assert tensors[f"{prefix}.self_attn.q_proj.lora_B.weight"].shape == (64, 4)
    assert tensors[f"{prefix}.self_attn.k_proj.lora_B.weight"].shape == (16, 4)  # 2 KV heads of 8
    assert tensors[f"{prefix}.mlp.up_proj.lora_A.weight"].shape == (4, 64)
    assert torch.equal(tensors[f"{prefix}.self_attn.q_proj.lora_A.weight"], tensors[f"{prefix}.self_attn.v_proj.lora_A.weight"])
    assert tensors[f"{prefix}.mlp.down_proj.lora_A.weight"].shape == (4, 96)


def export_at_tensor_parallel_size(adapters: str, target: str) -> dict[str, Any]:
    model = base(ParallelGroups.tensor_parallel_over_world())
    load_adapters(model, adapters)
    export_peft(model, CONFIG, target)
    return {}


def test_tensor_parallel_export_equals_the_single_process_one_bitwise(tmp_path: Path) -> None:
    # Not output_layer: megaspec's adapter files record its padded size, which differs
    # between tensor-parallel sizes 1 and 2 (384 and 512 rows), so load_adapters refuses it.
    model = with_lora(base(), LoraConfig(rank=4, rank_stabilized=True, targets=EVERY_LINEAR))
    save_adapters(model, tmp_path / "megaspec_adapters")
    export_peft(model, CONFIG, tmp_path / "tp1")
    run_on_ranks(2, export_at_tensor_parallel_size, str(tmp_path / "megaspec_adapters"), str(tmp_path / "tp2"))
    single = safetensors.torch.load_file(tmp_path / "tp1" / "adapter_model.safetensors")
    parallel = safetensors.torch.load_file(tmp_path / "tp2" / "adapter_model.safetensors")
    assert single.keys() == parallel.keys()
    assert all(torch.equal(single[key], parallel[key]) for key in single)
    config_text = (tmp_path / "tp1" / "adapter_config.json").read_text()
    assert (tmp_path / "tp2" / "adapter_config.json").read_text() == config_text


def test_refuses_a_model_no_llama_checkpoint_can_hold(tmp_path: Path) -> None:
    config = resolve(ModelConfig, overrides=[*OVERRIDES, "decoder.block.post_norms=true"])
    model = with_lora(base(config=config), LoraConfig(rank=4))
    message = "model config: decoder.block.post_norms: true cannot be written as a Hugging Face checkpoint (supported: false)"
    with pytest.raises(CheckpointError, match=rf"^{message}$".replace("(", r"\(").replace(")", r"\)")):
        export_peft(model, config, tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()


def test_refuses_an_adapter_name_that_is_not_attached(tmp_path: Path) -> None:
    model = with_lora(base(), LoraConfig(rank=4))
    with pytest.raises(ValueError, match=r"^cannot export 'other': no adapter of that name \(adapters: default\)$"):
        export_peft(model, CONFIG, tmp_path / "adapter", "other")


def test_refuses_an_ia3_adapter_and_points_to_save_adapters(tmp_path: Path) -> None:
    model = with_lora(base(), LoraConfig(rank=4))
    add_adapter(model, IA3Config(name="scales", targets=("*.linear_fc1",)))
    message = (
        "adapter 'scales' is 'ia3': PEFT's format holds one adapter type per file and export_peft "
        "writes LoRA only; save it with save_adapters (megaspec's adapter files hold any mix of types)"
    )
    with pytest.raises(ValueError, match=rf"^{message}$".replace("(", r"\(").replace(")", r"\)")):
        export_peft(model, CONFIG, tmp_path / "adapter", "scales")
    export_peft(model, CONFIG, tmp_path / "adapter")  # the LoRA beside it exports alone


def test_refuses_a_merged_adapter(tmp_path: Path) -> None:
    model = with_lora(base(), LoraConfig(rank=4, targets=("*.linear_qkv",)))
    merge(model)
    message = (
        r"^blocks.layers.0.mixer.linear_qkv: adapter 'default' is merged into the base weights; "
        r"unmerge it before exporting it \(PEFT would add it a second time\)$"
    )
    with pytest.raises(ValueError, match=message):
        export_peft(model, CONFIG, tmp_path / "adapter")


def test_refuses_a_linear_peft_has_no_name_for(tmp_path: Path) -> None:
    model = base()
    groups = ParallelGroups.single()
    mixer = model.get_submodule("blocks.layers.0.mixer")
    mixer.add_module("extra", ColumnParallelLinear(input_size=64, output_size=64, groups=groups, init_method=normal_init(0.02)))
    with_lora(model, LoraConfig(rank=4, targets=("*.extra", "*.linear_qkv")))
    message = (
        r"^blocks.layers.0.mixer.extra: adapter 'default' adapts a linear that Hugging Face PEFT's "
        r"Llama naming has no module for; save it with save_adapters instead$"
    )
    with pytest.raises(CheckpointError, match=message):
        export_peft(model, CONFIG, tmp_path / "adapter")


def test_refuses_a_non_empty_directory_unless_overwrite(tmp_path: Path) -> None:
    model = with_lora(base(), LoraConfig(rank=4))
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "notes.txt").write_text("keep")
    message = rf"^{tmp_path / 'adapter'}: directory exists and is not empty; pass overwrite=True to replace it$"
    with pytest.raises(CheckpointError, match=message):
        export_peft(model, CONFIG, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "notes.txt").read_text() == "keep"
    export_peft(model, CONFIG, tmp_path / "adapter", overwrite=True)
    assert sorted(path.name for path in (tmp_path / "adapter").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]  # fmt: skip
