"""A mixer config type registered for the config tests, with fields of its own."""

from __future__ import annotations

from dataclasses import dataclass, field

from megaspec.config import MixerConfig, register_mixer
from megaspec.schema import at_least, checks


@register_mixer("probe")
@dataclass(frozen=True, kw_only=True)
class ProbeMixerConfig(MixerConfig):
    """``mixer: {type: probe}``: never built, only resolved, saved and loaded."""

    kernel_size: int = field(default=4, metadata=checks(at_least(1)))
    gate: bool = False
