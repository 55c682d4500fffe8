"""LoRA adapters in Hugging Face PEFT's format, for the Llama-family checkpoints of ``export_hf``.

``export_peft`` writes one LoRA adapter of a model as ``adapter_config.json`` and
``adapter_model.safetensors`` with PEFT's key names, so that ``peft.PeftModel.from_pretrained``
loads it onto the ``transformers`` model :func:`~megaspec.checkpoint.export_hf` wrote.

megaspec fuses linears that Hugging Face keeps apart: ``linear_qkv`` is ``q_proj``, ``k_proj``
and ``v_proj`` packed per KV group, ``linear_fc1`` is ``[gate_proj; up_proj]``. A LoRA on a
fused linear (``y = W x + s B A x``) has one ``A`` shared by the parts and a ``B`` over the
stacked output, so each part's PEFT adapter is the same ``A`` and the rows of ``B`` that
belong to that part: exactly the rows the base weight's mapping picks
(:func:`~megaspec.checkpoint.hf_weights.hf_tensors`). ``o_proj``, ``down_proj`` and
``lm_head`` (vocabulary padding dropped) map one to one.

megaspec's own adapter files (:func:`~megaspec.checkpoint.save_adapters`) hold any mix of
adapter types and every linear; this format holds one LoRA adapter on the linears a
Hugging Face Llama has.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import safetensors.torch
from torch import Tensor

from megaspec.checkpoint.errors import CheckpointError
from megaspec.checkpoint.hf_config import LlamaArchitecture
from megaspec.checkpoint.hf_config_export import hf_config_from_model, llama_architecture
from megaspec.checkpoint.hf_weights import WeightMapping, hf_tensors, hf_weight_mappings
from megaspec.checkpoint.writing import StagedDirectory, check_target
from megaspec.config import LoraConfig, ModelConfig, PathLike
from megaspec.models import GPTModel
from megaspec.parallel import gather_full, sharding_of
from megaspec.peft import LoraAdapter, adapted_linears, check_adapter_names

CONFIG_FILE: Final = "adapter_config.json"
WEIGHTS_FILE: Final = "adapter_model.safetensors"
KEY_PREFIX: Final = "base_model.model."
"""PEFT's prefix before the ``transformers`` model's own module names."""

_ADAPTED_LAYOUTS: Final = ("qkv", "gated_fc1", "row_parallel", "vocab")


def export_peft(
    model: GPTModel,
    config: ModelConfig,
    directory: PathLike,
    adapter_name: str = "default",
    *,
    overwrite: bool = False,
) -> Path:
    """Write LoRA adapter ``adapter_name`` of ``model`` (built from ``config``) in PEFT's format.

    The directory holds ``adapter_config.json`` (``peft_type`` ``LORA``, ``task_type``
    ``CAUSAL_LM``, ``r``, ``lora_alpha``, ``use_rslora``, ``lora_dropout``, ``target_modules``)
    and ``adapter_model.safetensors`` (keys such as
    ``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``) in the adapter's
    dtype. Load it with ``peft.PeftModel.from_pretrained(hf_model, directory)`` onto the model
    :func:`~megaspec.checkpoint.export_hf` wrote from the same ``config``. Call it on every
    rank of a tensor-parallel model: the shards are gathered and rank 0 writes, atomically.

    Returns:
        The directory written.

    Raises:
        CheckpointError: before anything is written, for a config no Llama-family checkpoint
            can hold (as :func:`~megaspec.checkpoint.export_hf`), an adapter on a linear PEFT's
            Llama naming has no module for, or an existing non-empty ``directory`` without
            ``overwrite``.
        ValueError: for an adapter name the model does not have, an adapter that is not
            LoRA, an adapter merged into the base weights, or a model whose linears do not
            match ``config``.
    """
    hf_config_from_model(config)  # the same refusals as export_hf
    architecture = llama_architecture(config)
    adapters = _lora_adapters(model, adapter_name)
    mappings = _mappings_of(adapters, architecture)
    target = Path(directory)
    check_target(target, overwrite=overwrite)
    tensors: dict[str, Tensor] = {}
    for slot, adapter in adapters.items():  # every rank takes part in every gather
        lora_a = gather_full(adapter.lora_A, sharding_of(adapter.lora_A), model.groups).cpu()
        lora_b = gather_full(adapter.lora_B, sharding_of(adapter.lora_B), model.groups).cpu()
        tensors.update(_peft_tensors(mappings[slot], lora_a, lora_b, architecture))
    if model.groups.tensor_rank == 0:
        lora_config = adapters[next(iter(adapters))].config
        assert isinstance(lora_config, LoraConfig)  # _lora_adapters checked
        modules = [_module_name(name) for slot in adapters for name in mappings[slot].hf_names]
        document = peft_adapter_config(lora_config, _target_modules(modules, architecture))
        _write(target, document, tensors, overwrite=overwrite)
    return target


def _lora_adapters(model: GPTModel, name: str) -> dict[str, LoraAdapter]:
    """Adapter ``name`` on each slot that has it, checked to be an unmerged LoRA."""
    check_adapter_names(model, [name], "export")
    found: dict[str, LoraAdapter] = {}
    for slot, wrappers in adapted_linears(model).items():
        for wrapper in wrappers:
            if name not in wrapper.adapters:
                continue
            adapter = wrapper.adapter(name)
            if not isinstance(adapter, LoraAdapter):
                raise ValueError(
                    f"adapter {name!r} is {adapter.config.type_name!r}: PEFT's format holds one "
                    f"adapter type per file and export_peft writes LoRA only; save it with "
                    f"save_adapters (megaspec's adapter files hold any mix of types)"
                )
            if name in wrapper.merged:
                raise ValueError(
                    f"{slot}: adapter {name!r} is merged into the base weights; unmerge it "
                    f"before exporting it (PEFT would add it a second time)"
                )
            found[slot] = adapter
    return found


def _mappings_of(adapters: dict[str, LoraAdapter], architecture: LlamaArchitecture) -> dict[str, WeightMapping]:
    """The base weight mapping of each adapted slot, whose Hugging Face tensors name the
    PEFT modules and pick the rows of ``B``.

    Raises:
        CheckpointError: for a slot without a Hugging Face Llama module.
        ValueError: for a slot whose sizes differ from the config's.
    """
    by_parameter = {mapping.parameter: mapping for mapping in hf_weight_mappings(architecture)}
    mappings: dict[str, WeightMapping] = {}
    for slot, adapter in adapters.items():
        mapping = by_parameter.get(f"{slot}.weight")
        if mapping is None or mapping.layout not in _ADAPTED_LAYOUTS:
            raise CheckpointError(
                f"{slot}: adapter {adapter.config.name!r} adapts a linear that Hugging Face "
                f"PEFT's Llama naming has no module for; save it with save_adapters instead"
            )
        geometry = adapter.geometry
        rows = sum(shape[0] for shape in mapping.hf_shapes)
        columns = mapping.hf_shapes[0][1]
        if geometry.input_size != columns or (mapping.layout != "vocab" and geometry.output_size != rows):
            raise ValueError(
                f"{slot}: the model's linear is {geometry.output_size} x {geometry.input_size}, "
                f"the config's is {rows} x {columns}: the model was not built from this config"
            )
        mappings[slot] = mapping
    return mappings


def _module_name(hf_weight_name: str) -> str:
    """``model.layers.0.self_attn.q_proj`` of ``model.layers.0.self_attn.q_proj.weight``."""
    return hf_weight_name.removesuffix(".weight")


def _peft_tensors(
    mapping: WeightMapping, lora_a: Tensor, lora_b: Tensor, architecture: LlamaArchitecture
) -> dict[str, Tensor]:
    """PEFT's tensors of one slot's LoRA: ``A`` [rank, input] shared by the fused parts,
    ``B`` [output, rank] split into the parts' rows as the base weight is."""
    tensors: dict[str, Tensor] = {}
    for weight_name, rows in hf_tensors(mapping, lora_b, architecture).items():
        module = KEY_PREFIX + _module_name(weight_name)
        tensors[f"{module}.lora_A.weight"] = lora_a.clone()  # safetensors refuses shared memory
        tensors[f"{module}.lora_B.weight"] = rows.contiguous()
    return tensors


def _target_modules(modules: list[str], architecture: LlamaArchitecture) -> list[str]:
    """Short names (``q_proj``) when the adapter covers those projections in every layer
    (PEFT matches module names by suffix), else the exact module names it covers."""
    short = sorted({module.rsplit(".", 1)[-1] for module in modules})
    every = {
        _module_name(name)
        for mapping in hf_weight_mappings(architecture)
        if mapping.layout in _ADAPTED_LAYOUTS and mapping.parameter.endswith(".weight")
        for name in mapping.hf_names
    }
    covered = {module for module in every if module.rsplit(".", 1)[-1] in short}
    return short if covered == set(modules) else sorted(modules)


def peft_adapter_config(config: LoraConfig, target_modules: list[str]) -> dict[str, Any]:
    """PEFT's ``adapter_config.json`` data of a LoRA ``config`` on ``target_modules``.

    ``init`` is left out: it only matters before training (PEFT's ``init_lora_weights``
    does not change loaded weights).
    """
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": None,
        "revision": None,
        "inference_mode": True,
        "r": config.rank,
        "lora_alpha": int(config.alpha) if float(config.alpha).is_integer() else config.alpha,
        "use_rslora": config.rank_stabilized,
        "lora_dropout": config.dropout,
        "target_modules": target_modules,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_dora": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }


def _write(target: Path, document: dict[str, Any], tensors: dict[str, Tensor], *, overwrite: bool) -> None:
    staging = StagedDirectory(target, overwrite=overwrite)
    try:
        (staging.path / CONFIG_FILE).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        safetensors.torch.save_file(tensors, str(staging.path / WEIGHTS_FILE), metadata={"format": "pt"})
        staging.commit()
    except BaseException:
        staging.discard()
        raise
