"""Adapter settings as typed configs, chosen by ``type:`` (``lora``, ``ia3``).

The same classes serve Python (``megaspec.peft.LoraConfig(rank=8)``, re-exported there) and a
run config's ``peft:`` section (``peft: {type: lora, rank: 8, targets: ["*.linear_qkv"]}``);
:mod:`megaspec.peft` builds the adapters they describe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from megaspec.schema import ConfigError, DynamicConfig, checks, positive, within

LoraInit = Literal["zeros", "gaussian", "svd"]


@dataclass(frozen=True, kw_only=True)
class AdapterConfig(DynamicConfig, registry_base=True):
    """One named adapter and the linears it wraps.

    Attributes:
        name: the adapter's name (several adapters live side by side, by name).
        targets: glob patterns over module names (``"blocks.layers.*.mixer.linear_qkv"``,
            ``"*.linear_fc1"``); ``None`` means every linear whose weight's config sets
            ``apply_peft`` (mixer and MLP linears by default). Each pattern must match.
    """

    name: str = "default"
    targets: tuple[str, ...] | None = None

    def validate(self) -> None:
        super().validate()
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError("name", f"must be letters, digits, '_' or '-', got {self.name!r}")
        if self.targets is not None and len(self.targets) == 0:
            raise ConfigError("targets", "must name at least one pattern, or be null for apply_peft")


@AdapterConfig.register("lora")
@dataclass(frozen=True, kw_only=True)
class LoraConfig(AdapterConfig):
    """Low-rank adaptation: ``y = base(x) + scale * B A dropout(x)``.

    Attributes:
        rank: ``r``, the inner width (at most ``min(input_size, output_size)`` of a layer).
        alpha: ``scale = alpha / r`` (or ``alpha / sqrt(r)`` with ``rank_stabilized``, rsLoRA).
        dropout: probability of dropping inputs of ``A`` while training.
        init: ``zeros`` (B = 0, A Kaiming-uniform as in PEFT: a fresh adapter changes
            nothing), ``gaussian`` (B = 0, A normal with std ``1 / r``), or ``svd`` (B = 0,
            A spans the base weight's top-``r`` right singular vectors, scaled by the square
            roots of their singular values: training starts in the weight's principal input
            directions; the base weight is not changed).
    """

    rank: int = field(default=8, metadata=checks(positive))
    alpha: float = field(default=16.0, metadata=checks(positive))
    rank_stabilized: bool = False
    dropout: float = field(default=0.0, metadata=checks(within(0, 1, open_high=True)))
    init: LoraInit = "zeros"

    @property
    def scale(self) -> float:
        """``alpha / r``, or ``alpha / sqrt(r)`` rank-stabilised."""
        return self.alpha / (self.rank**0.5 if self.rank_stabilized else self.rank)


@AdapterConfig.register("ia3")
@dataclass(frozen=True, kw_only=True)
class IA3Config(AdapterConfig):
    """(IA)^3: learned scales of a linear's output features (column-parallel bases) or input
    features (row-parallel bases), initialised to 1 (a fresh adapter changes nothing)."""
