"""What a peer is: named ways to build a model and its loss, tried in order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bench.config import BenchConfig


class PeerUnavailable(Exception):
    """A peer that cannot run here (package missing, no GPU); the message says why."""


def unavailable(error: BaseException) -> PeerUnavailable:
    """The ``PeerUnavailable`` for an import that failed, naming the error."""
    return PeerUnavailable(f"{type(error).__name__}: {error}")


@dataclass
class Built:
    """A model ready to train and the function computing its loss.

    ``loss(inputs, labels)`` takes token ids ``[batch, sequence]`` and the next tokens
    ``[batch, sequence]`` (already shifted: ``labels[:, t]`` follows ``inputs[:, t]``) and
    returns the mean token cross-entropy, a float32 scalar. ``cleanup`` undoes what building
    set up beyond the model (process groups, patched modules); the driver calls it once.
    """

    model: nn.Module
    loss: Callable[[Tensor, Tensor], Tensor]
    cleanup: Callable[[], None] | None = None


Builder = Callable[[BenchConfig, torch.device], Built]


@dataclass(frozen=True)
class Variant:
    """One way to build a peer; ``change`` says what it does differently from the first one."""

    change: str
    build: Builder


@dataclass(frozen=True)
class Peer:
    """A framework the benchmark times.

    ``variants`` are tried in order until one builds and takes a first step (Megatron retries
    without its fusions). ``in_small`` puts the peer in ``--small``'s default set; an
    ``opt_in`` peer runs only when ``--only`` names it; a ``tensor_parallel`` peer builds
    ``BenchConfig.tensor_parallel`` ranks of one model (the others run only at 1).
    """

    name: str
    label: str
    variants: Sequence[Variant]
    in_small: bool = True
    opt_in: bool = False
    tensor_parallel: bool = False
