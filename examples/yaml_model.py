"""Example: configure a model from YAML and plug a custom mixer in by registry.

``ConvMixerSettings`` registers the causal convolution mixer of ``examples/custom_mixer.py``
as ``mixer: {type: conv}`` with one decorator; YAML files then use it by name. The config
resolves in layers (defaults -> YAML files -> ``dotted.path=value`` overrides), builds the
same typed spec a Python user would write, and trains with per-weight learning-rate scales
turned into optimizer parameter groups.

Run: ``python -m examples.yaml_model [FILE.yaml ...] [dotted.path=value ...]``, e.g.
``python -m examples.yaml_model examples/configs/hybrid.yaml model.decoder.num_blocks=3``
(default: ``examples/configs/hybrid.yaml``, 20 steps).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from examples.custom_mixer import CausalConvMixer, ConvMixerConfig
from megaspec.builders import MixerBuilder
from megaspec.config import ConfigError, MixerConfig, RunConfig, register_mixer, resolve
from megaspec.optim import parameter_groups
from megaspec.parallel import seeded_initialization

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "hybrid.yaml"


@register_mixer("conv")
@dataclass(frozen=True, kw_only=True)
class ConvMixerSettings(MixerConfig):
    """``mixer: {type: conv, kernel_size: 4}``: the causal convolution mixer."""

    kernel_size: int = 4

    def validate(self) -> None:
        super().validate()
        if self.kernel_size < 1:
            raise ConfigError("kernel_size", f"must be >= 1, got {self.kernel_size}")

    def builder(self, lr_scale: float) -> MixerBuilder:
        return CausalConvMixer.as_mixer_submodule(ConvMixerConfig(kernel_size=self.kernel_size))


def resolve_run(arguments: list[str]) -> RunConfig:
    """YAML files and overrides from the command line (default: the hybrid example)."""
    files = [argument for argument in arguments if argument.endswith((".yaml", ".yml"))]
    overrides = [argument for argument in arguments if argument not in files]
    return resolve(RunConfig, files=files or [DEFAULT_CONFIG], overrides=overrides)


def train(config: RunConfig, steps: int) -> list[float]:
    """Train ``steps`` AdamW steps on one fixed batch of bytes; return the losses."""
    with seeded_initialization(config.training.seed):
        model = config.model.build()
    print(model.summary())
    optimizer = torch.optim.AdamW(
        parameter_groups(
            model,
            learning_rate=config.training.learning_rate,
            weight_decay=config.training.weight_decay,
        )
    )
    generator = torch.Generator().manual_seed(config.training.seed)
    tokens = torch.randint(0, config.model.vocab_size, (8, 65), generator=generator)
    losses = []
    for step in range(steps):
        loss = model(tokens[:, :-1], labels=tokens[:, 1:]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        print(f"step {step:2d}  loss {loss.item():.4f}")
    return losses


def main(arguments: list[str] | None = None) -> None:
    train(resolve_run(arguments or []), steps=20)


if __name__ == "__main__":
    main(sys.argv[1:])
