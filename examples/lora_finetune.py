"""Example: LoRA fine-tuning of a Hugging Face Llama on the bundled text, base weights frozen.

Nothing is downloaded: the example builds a tiny random Llama with ``transformers``, saves it
with ``save_pretrained`` and fine-tunes it through the same library calls as ``megaspec train
--from DIR`` with a ``peft:`` section (:mod:`megaspec.finetune`): the run config takes its
model from the checkpoint, a LoRA adapter is added to the attention and MLP linears, and only
the adapter trains. It shows the loss falling, checks that every base weight is bitwise
unchanged, reloads the saved adapter run onto a fresh base, and merges the adapters into the
base weights, which then compute the adapted model's logits.

Run: ``python -m examples.lora_finetune``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import Tensor
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedModel

import megaspec
from megaspec.finetune import finetune, load_adapter_run, resolve_finetune_run
from megaspec.peft import adapter_parameters, merge_and_unload

LORA = {"type": "lora", "rank": 8, "alpha": 16, "targets": ["*.linear_qkv", "*.linear_fc1"]}
TRAINING = {"steps": 30, "batch_size": 8, "sequence_length": 64, "learning_rate": 1e-2,
            "warmup_steps": 3, "eval_interval": 30, "eval_batches": 2}  # fmt: skip


def tiny_llama() -> PreTrainedModel:
    """A random Llama: hidden 64, 2 layers, 4 query heads sharing 2 KV heads, 256 tokens."""
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,  # the byte tokenizer of the bundled text
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def base_weights(model: torch.nn.Module) -> dict[str, Tensor]:
    """Every non-adapter weight, by its name in the plain model (wrappers' ``base_layer``
    steps removed)."""
    adapters = {id(parameter) for parameter in adapter_parameters(model)}
    return {
        name.replace(".base_layer", ""): parameter.detach().clone()
        for name, parameter in model.named_parameters()
        if id(parameter) not in adapters
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        base_dir, run_dir = Path(scratch) / "llama", Path(scratch) / "lora"
        tiny_llama().save_pretrained(base_dir)
        base = megaspec.from_pretrained(base_dir).model
        print(base.summary())
        run = resolve_finetune_run(base_dir, overrides=[{"peft": LORA, "training": TRAINING}])
        result = finetune(run, base=base_dir, output_dir=run_dir, progress=False)
        model = result.model.eval()
        losses = result.losses
        for step in (0, len(losses) // 2, len(losses) - 1):
            print(f"step {step + 1:2d}: loss {losses[step]:.4f}")
        trained = sum(parameter.numel() for parameter in adapter_parameters(model))
        print(f"trained {trained:,} adapter weights; validation loss {result.validation_losses[-1][1]:.4f}")

        before, after = base_weights(base), base_weights(model)
        unchanged = before.keys() == after.keys() and all(
            torch.equal(before[name], after[name]) for name in before
        )
        print(f"all {len(before)} base weights bitwise unchanged: {unchanged}")

        tokens = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(1))
        reloaded, _ = load_adapter_run(run_dir)  # a fresh base + the saved adapters
        with torch.no_grad():
            adapted = model(tokens)  # [batch, sequence, vocab]
            print(f"saved {sorted(path.name for path in run_dir.iterdir())}; reloaded: max "
                  f"|logits difference| = {(reloaded(tokens) - adapted).abs().max():.1e}")  # fmt: skip
            merged = merge_and_unload(model)(tokens)
        print(f"merged into the base: max |logits difference| = {(merged - adapted).abs().max():.1e}")


if __name__ == "__main__":
    main()
