"""Tensor-parallel import and export on two spawned gloo processes.

Every family imports straight into a TP=2 model (each rank reading only its slices of the
safetensors files) and gives transformers' logits on every rank within 1e-5, with and
without sequence parallelism; a megaspec run directory does the same; a TP=2 model exports a
checkpoint bitwise equal to the one it came from; and together the ranks read each sharded
tensor's bytes exactly once (replicated ones once per rank).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

import megaspec
from megaspec.checkpoint import (
    export_hf,
    llama_architecture,
    load_hf_weights,
    model_data_from_hf,
    open_hf_checkpoint,
)
from megaspec.checkpoint.hf_weights import hf_weight_mappings
from megaspec.config import ModelConfig, RunConfig, from_data
from megaspec.parallel import ParallelGroups, seeded_initialization
from megaspec.training import save_trained_model
from tests.helpers.distributed import run_on_ranks
from tests.helpers.hf_models import FAMILIES, hf_logits, save, tiny_model, tokens

TOLERANCE = 1e-5
BYTES_FAMILY = "llama_tied"  # biases (replicated row-parallel ones too) and a tied vocabulary
EXPORT_FAMILY = "qwen3"


def import_on_each_rank(
    directories: dict[str, str], run_directory: str, export_root: str
) -> dict[str, Any]:
    """Runs on every rank: logits of each import, bytes read, and one export."""
    groups = ParallelGroups.tensor_parallel_over_world()
    assert groups.tensor_size == 2
    input_ids = tokens()
    logits: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for family, directory in directories.items():
            logits[family] = megaspec.from_pretrained(directory, groups=groups).model(input_ids)
        qwen2 = megaspec.from_pretrained(directories["qwen2"], groups=groups, sequence_parallel=True)
        assert qwen2.model.config.sequence_parallel and qwen2.model.padded_vocab_size == 512
        logits["qwen2 sequence parallel"] = qwen2.model(input_ids)
        run = megaspec.from_pretrained(run_directory, groups=groups)
        logits["run directory"] = run.model(input_ids)
    exported = megaspec.from_pretrained(directories[EXPORT_FAMILY], groups=groups)
    target = Path(export_root) / EXPORT_FAMILY
    export_hf(exported.model, exported.config, target, template=exported.hf_config, max_shard_bytes=40_000)
    return {"logits": logits, "bytes_read": bytes_read_by_import(directories[BYTES_FAMILY], groups)}


def bytes_read_by_import(directory: str, groups: ParallelGroups) -> int:
    with open_hf_checkpoint(directory) as checkpoint:
        config = from_data(ModelConfig, model_data_from_hf(checkpoint.config))
        with seeded_initialization(0):
            model = config.build(groups)
        load_hf_weights(model, llama_architecture(config), checkpoint.tensors)
        return checkpoint.tensors.bytes_read


def saved_tensors(directory: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(directory.glob("*.safetensors")):
        tensors.update(safetensors.torch.load_file(path))
    return tensors


def test_tensor_parallel_import_and_export(tmp_path: Path) -> None:
    models = {family: tiny_model(family) for family in FAMILIES}
    directories = {
        family: save(model, tmp_path / family, max_shard_size="40KB") for family, model in models.items()
    }
    single = megaspec.from_pretrained(directories["llama3"])
    run_directory = tmp_path / "run"
    save_trained_model(single.model, RunConfig(model=single.config), run_directory)
    export_root = tmp_path / "exported"

    paths = {family: str(directory) for family, directory in directories.items()}
    results = run_on_ranks(2, import_on_each_rank, paths, str(run_directory), str(export_root))

    input_ids = tokens()
    expected = {family: hf_logits(model, input_ids) for family, model in models.items()}
    expected["qwen2 sequence parallel"] = expected["qwen2"]
    expected["run directory"] = expected["llama3"]
    for rank, result in enumerate(results):
        for case, logits in result["logits"].items():
            assert logits.shape == (2, 40, 300), (rank, case)
            message = f"rank {rank}: {case}"
            torch.testing.assert_close(logits, expected[case], rtol=0, atol=TOLERANCE, msg=message)

    original = saved_tensors(directories[EXPORT_FAMILY])
    written = saved_tensors(export_root / EXPORT_FAMILY)
    assert written.keys() == original.keys()
    assert all(torch.equal(written[name], tensor) for name, tensor in original.items())
    assert (export_root / EXPORT_FAMILY / "model.safetensors.index.json").is_file()

    config = from_data(ModelConfig, model_data_from_hf(models[BYTES_FAMILY].config))
    total = replicated = 0
    for mapping in hf_weight_mappings(llama_architecture(config)):
        size = sum(math.prod(shape) for shape in mapping.hf_shapes) * 4  # float32
        total += size
        replicated += size if mapping.layout == "whole" else 0
    bytes_read = [result["bytes_read"] for result in results]
    assert sum(bytes_read) == total + replicated  # each sharded byte read by one rank only
    assert all(read < 0.75 * total for read in bytes_read)
