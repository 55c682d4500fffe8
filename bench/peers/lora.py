"""LoRA on every linear of every layer, base frozen: megaspec + ``megaspec.peft``, HF + PEFT.

Both build the base model exactly as ``megaspec`` and ``hf`` of bench/train_step.py do (bf16),
then add rank-``RANK`` adapters (``alpha = ALPHA``, no dropout, ``B = 0``: a fresh adapter
changes nothing) to every linear of every layer and freeze everything else.

The two do not hold the same adapter weights, and cannot: megaspec's attention has one fused
``linear_qkv`` and its MLP one fused ``linear_fc1`` (``[gate; up]``), and LoRA on a fused
linear has one ``A`` (``[rank, hidden]``) and one stacked ``B``. HF's Llama has separate
``q_proj``, ``k_proj``, ``v_proj`` and ``gate_proj``, ``up_proj``, each with its own ``A``.
The ``B`` weights are the same size; PEFT holds ``3 * rank * hidden`` more ``A`` weights per
layer (:func:`lora_parameters`), and its q/k/v (gate/up) updates may each have rank ``RANK``
where megaspec's joint one has rank ``RANK`` in all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.config import BenchConfig
from bench.peers.base import Built, Peer, Variant, unavailable
from bench.peers.hf_llama import causal_lm_loss, new_llama
from bench.peers.megaspec_gpt import build_megaspec

RANK = 16
ALPHA = 32
MEGASPEC_TARGETS = ("*.linear_qkv", "*.linear_proj", "*.linear_fc1", "*.linear_fc2")
PEFT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraParameters:
    """Adapter weights of a whole model: ``a`` in the ``[rank, input]`` matrices, ``b`` in the
    ``[output, rank]`` ones."""

    a: int
    b: int

    @property
    def total(self) -> int:
        """``a + b``: what training updates."""
        return self.a + self.b


def adapted_linears(config: BenchConfig, *, fused: bool) -> list[tuple[str, int, int]]:
    """One layer's adapted linears as ``(name, input, output)``: megaspec's fused ones
    (``fused``) or HF's separate ones."""
    head_dim = config.hidden_size // config.num_heads
    hidden, ffn = config.hidden_size, config.ffn_hidden_size
    query, key_value = config.num_heads * head_dim, config.num_kv_heads * head_dim
    if fused:
        return [
            ("linear_qkv", hidden, query + 2 * key_value), ("linear_proj", query, hidden),
            ("linear_fc1", hidden, 2 * ffn), ("linear_fc2", ffn, hidden),
        ]  # fmt: skip
    return [
        ("q_proj", hidden, query), ("k_proj", hidden, key_value), ("v_proj", hidden, key_value),
        ("o_proj", query, hidden), ("gate_proj", hidden, ffn), ("up_proj", hidden, ffn),
        ("down_proj", ffn, hidden),
    ]  # fmt: skip


def lora_parameters(config: BenchConfig, *, fused: bool, rank: int = RANK) -> LoraParameters:
    """The adapter weights LoRA of ``rank`` on every linear of every layer should have."""
    linears = adapted_linears(config, fused=fused)
    a = config.num_layers * rank * sum(size_in for _, size_in, _ in linears)
    b = config.num_layers * rank * sum(size_out for _, _, size_out in linears)
    return LoraParameters(a, b)


def counted_lora_parameters(model: torch.nn.Module) -> LoraParameters:
    """The trainable weights of ``model``, split by name into ``lora_A`` and the rest.

    Both libraries name their matrices ``lora_A`` and ``lora_B``; a trainable weight of
    another name counts as ``b``, so that it shows as a difference from the expected count.
    """
    a = b = 0
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            if "lora_A" in name:
                a += parameter.numel()
            else:
                b += parameter.numel()
    return LoraParameters(a, b)


def build_megaspec_lora(config: BenchConfig, device: torch.device) -> Built:
    """``megaspec``'s model with ``megaspec.peft`` LoRA on qkv, proj, fc1 and fc2, base frozen."""
    from megaspec.peft import LoraConfig, add_adapter, train_adapters_only

    built = build_megaspec(config, device, fused=True)
    # Adapters are drawn on the CPU and moved to the default device, as the base weights were.
    with torch.device(device):
        add_adapter(built.model, LoraConfig(rank=RANK, alpha=ALPHA, targets=MEGASPEC_TARGETS))
    train_adapters_only(built.model)
    return built


def build_hf_peft(config: BenchConfig, device: torch.device) -> Built:
    """``hf``'s model in PEFT's ``get_peft_model`` with LoRA on its seven linears, base frozen.

    ``autocast_adapter_dtype=False`` keeps the adapters bf16 like the base (and like
    megaspec's); PEFT's default would make them float32 and compute them in float32.
    """
    try:
        import peft
        from peft import LoraConfig, get_peft_model
    except Exception as error:  # any import failure means the peer cannot run
        raise unavailable(error) from error
    print(f"peft {peft.__version__}")
    settings = LoraConfig(
        r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, bias="none", target_modules=list(PEFT_TARGETS)
    )
    model = get_peft_model(new_llama(config, device), settings, autocast_adapter_dtype=False)
    model.print_trainable_parameters()
    return Built(model=model, loss=causal_lm_loss(model))


MEGASPEC_LORA = Peer("megaspec-lora", "megaspec + LoRA", [Variant("", build_megaspec_lora)])
HF_PEFT = Peer("hf-peft", "HF + PEFT", [Variant("", build_hf_peft)])
