"""The peers the benchmark times, one module each, in the order they run."""

from __future__ import annotations

from bench.peers.base import Built, Peer, PeerUnavailable, Variant
from bench.peers.hf_liger import HF_LIGER
from bench.peers.hf_llama import HF, HF_COMPILED
from bench.peers.megaspec_gpt import MEGASPEC, MEGASPEC_COMPILED_LAYERS, MEGASPEC_EAGER
from bench.peers.megaspec_te import MEGASPEC_TE, MEGASPEC_TE_FP8, MEGASPEC_TE_FP8_CURRENT
from bench.peers.megatron_te import MEGATRON, MEGATRON_FP8, MEGATRON_FP8_CURRENT

# megaspec first: every ratio line compares it with a peer.
PEERS: tuple[Peer, ...] = (
    MEGASPEC,
    MEGASPEC_EAGER,
    MEGASPEC_COMPILED_LAYERS,
    MEGASPEC_TE,
    MEGASPEC_TE_FP8,
    MEGASPEC_TE_FP8_CURRENT,
    HF,
    HF_COMPILED,
    HF_LIGER,
    MEGATRON,
    MEGATRON_FP8,
    MEGATRON_FP8_CURRENT,
)

__all__ = ["PEERS", "Built", "Peer", "PeerUnavailable", "Variant"]
