"""Example: import a Hugging Face model, check it computes the same, train a step, export it.

Nothing is downloaded: the example builds a tiny random Qwen2 model with ``transformers``
(grouped-query attention, biases on q/k/v), saves it with ``save_pretrained`` to a temporary
directory, and imports it with ``megaspec.from_pretrained``, freezing the embedding through
an override (training settings may change, the architecture may not). It compares the logits
with transformers', takes one AdamW step, exports the trained model with
``megaspec.checkpoint.export_hf`` and loads the export back into transformers, which then
computes what megaspec computes.

Run: ``python -m examples.from_hf``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, Qwen2Config

import megaspec
from megaspec.checkpoint import export_hf
from megaspec.optim import parameter_groups

VOCAB = 320


def tiny_qwen2() -> PreTrainedModel:
    """A random Qwen2 model: hidden 64, 2 layers, 4 query heads sharing 2 KV heads."""
    config = Qwen2Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def max_difference(first: torch.Tensor, second: torch.Tensor) -> float:
    return float((first - second).abs().max())


def main() -> None:
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, VOCAB, (4, 33), generator=generator)  # [batch, sequence + 1]
    inputs, labels = tokens[:, :-1], tokens[:, 1:]
    with tempfile.TemporaryDirectory() as scratch:
        hf_directory = Path(scratch) / "qwen2"
        reference = tiny_qwen2()
        reference.save_pretrained(hf_directory)

        imported = megaspec.from_pretrained(hf_directory, overrides=["embedding.lr_scale=0"])
        model = imported.model
        print(model.summary())
        with torch.no_grad():
            difference = max_difference(model(inputs), reference(inputs).logits)
        print(f"imported: max |logits - transformers logits| = {difference:.1e}")

        model.train()
        optimizer = torch.optim.AdamW(parameter_groups(model, learning_rate=1e-3, weight_decay=0.0))
        loss = model(inputs, labels=labels).mean()  # per-token losses -> mean
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimizer.step()
        model.eval()
        print(f"one training step (embedding frozen): loss {loss.item():.4f}")

        exported = export_hf(
            model, imported.config, Path(scratch) / "trained", template=imported.hf_config
        )
        reloaded = AutoModelForCausalLM.from_pretrained(exported).eval()
        with torch.no_grad():
            difference = max_difference(reloaded(inputs).logits, model(inputs))
        print(f"exported {sorted(path.name for path in exported.iterdir())}")
        print(f"{type(reloaded).__name__} from the export: max |logits difference| = {difference:.1e}")


if __name__ == "__main__":
    main()
