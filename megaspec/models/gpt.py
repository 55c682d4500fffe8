"""GPT-style language model: embedding -> block sequence -> final norm -> output layer -> loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from megaspec.builders import ColumnLinear, ColumnLinearBuilder, EmbeddingBuilder, NormBuilder
from megaspec.context import LayerContext
from megaspec.inference import InferenceState
from megaspec.layers.block_sequence import BlockSequence, BlockSequenceSpec
from megaspec.layers.slots import building_slot
from megaspec.parallel import (
    InitMethod,
    LinearCrossEntropyLayer,
    ParallelGroups,
    VocabParallelEmbedding,
    column_parallel_matmul,
    default_chunk_tokens,
    gather_from_tensor_parallel_region,
    linear_cross_entropy,
    normal_init,
    ones_init,
    padded_rows_init,
    padded_vocab_size,
    vocab_parallel_cross_entropy,
)
from megaspec.transformer_config import TransformerConfig

VOCAB_PADDING_MULTIPLE = 128


@dataclass(frozen=True)
class GPTSubmodules:
    """The slots of :class:`GPTModel`. ``output_layer`` is unused when embeddings are tied."""

    blocks: BlockSequenceSpec
    final_norm: NormBuilder
    output_layer: ColumnLinearBuilder
    embedding: EmbeddingBuilder = VocabParallelEmbedding


class GPTModel(nn.Module):
    """A decoder-only language model.

    The vocabulary is padded to a multiple of ``tensor-parallel size x 128`` so every rank
    holds an equal, GPU-friendly slice; padded rows start at zero and padded logits are left
    out of the loss and of returned logits, so padding never changes results.

    Initialisation draws every full weight from torch's default CPU generator in construction
    order: build inside ``megaspec.parallel.seeded_initialization(seed)`` (or after
    ``torch.manual_seed(seed)``) and every tensor-parallel size gives the same full weights.

    Raises:
        ValueError: if the block spec builds a number of layers other than
            ``config.num_layers``, or for any invalid layer setting (see the layers).
    """

    def __init__(
        self,
        *,
        config: TransformerConfig,
        vocab_size: int,
        submodules: GPTSubmodules,
        groups: ParallelGroups | None = None,
        tie_embeddings: bool = False,
    ) -> None:
        super().__init__()
        groups = ParallelGroups.single() if groups is None else groups
        self.config = config
        self.groups = groups
        self.vocab_size = vocab_size
        self.padded_vocab_size = padded_vocab_size(vocab_size, groups, VOCAB_PADDING_MULTIPLE)
        self.tie_embeddings = tie_embeddings
        vocab_init = padded_rows_init(normal_init(config.init_std), vocab_size)
        with building_slot(
            owner="GPTModel", slot="embedding", builder=submodules.embedding, interface=EmbeddingBuilder
        ) as slot:
            self.embedding = slot.checked(
                submodules.embedding(
                    num_embeddings=self.padded_vocab_size,
                    embedding_dim=config.hidden_size,
                    groups=groups,
                    init_method=vocab_init,
                    sequence_parallel=config.sequence_parallel,
                    params_dtype=config.params_dtype,
                )
            )
        self.blocks = BlockSequence(config=config, groups=groups, spec=submodules.blocks)
        with building_slot(
            owner="GPTModel", slot="final_norm", builder=submodules.final_norm, interface=NormBuilder
        ) as slot:
            self.final_norm = slot.checked(
                submodules.final_norm(
                    hidden_size=config.hidden_size,
                    config=config,
                    groups=groups,
                    sharded_input=config.sequence_parallel,
                    init_method=ones_init(),
                )
            )
        self.output_layer = None if tie_embeddings else self._build_output_layer(submodules, vocab_init)

    def _build_output_layer(self, submodules: GPTSubmodules, vocab_init: InitMethod) -> ColumnLinear:
        config = self.config
        with building_slot(
            owner="GPTModel",
            slot="output_layer",
            builder=submodules.output_layer,
            interface=ColumnLinearBuilder,
        ) as slot:
            return slot.checked(
                submodules.output_layer(
                    input_size=config.hidden_size,
                    output_size=self.padded_vocab_size,
                    groups=self.groups,
                    init_method=vocab_init,
                    bias=False,
                    gather_output=False,
                    sequence_parallel=config.sequence_parallel,
                    stacked_parts=1,
                    params_dtype=config.params_dtype,
                )
            )

    def forward(
        self,
        input_ids: Tensor,
        position_ids: Tensor | None = None,
        labels: Tensor | None = None,
        *,
        attention_mask: Tensor | None = None,
        inference: InferenceState | None = None,
    ) -> Tensor:
        """Logits, or per-token losses when ``labels`` are given.

        Args:
            input_ids: ``[batch, sequence]`` token ids.
            position_ids: ``[batch, sequence]``; by default counted on from the cached tokens,
                or with an ``attention_mask`` from each row's first real token, as
                transformers does (``cumsum(mask) - 1``, 0 on padding).
            labels: ``[batch, sequence]`` target ids (already shifted); ``-100`` is ignored.
            attention_mask: ``[batch, cached + sequence]``, 1 for real tokens and 0 for
                padding (on the left), as in transformers; ``None``: no padding.
            inference: caches of an incremental decoding (:mod:`megaspec.inference`):
                ``input_ids`` follow its ``length`` cached tokens, and the call advances it.

        Returns:
            ``[batch, sequence, vocab_size]`` logits (gathered over tensor-parallel ranks,
            padding removed) when ``labels`` is ``None``; otherwise ``[batch, sequence]``
            float32 losses (0 where the label is ``-100``).

        Raises:
            ValueError: under sequence parallelism, if the sequence length is not divisible
                by the tensor-parallel size, or with ``inference`` (a decode step of one token
                cannot be split over ranks); if ``attention_mask`` has the wrong shape.
        """
        self._check_sequence_split(input_ids.shape[1], inference)
        context = _layer_context(input_ids, position_ids, attention_mask, inference)
        hidden = self.embedding(input_ids.t())  # [s, b, h] ([s / tp, b, h] when SP)
        hidden = self.blocks(hidden, context=context)
        if inference is not None:
            inference.advance(input_ids.shape[1])
        hidden = self.final_norm(hidden)
        if labels is not None:
            losses = self._losses(hidden, labels.t())  # [s, b]
            # A copy, not a view: FSDP2 warns about (and cannot hook) outputs that are views.
            return losses.t().contiguous()  # [b, s]
        logits = self._output_logits(hidden)  # [s, b, padded_vocab / tp]
        full = gather_from_tensor_parallel_region(logits, self.groups.tensor)
        return full[..., : self.vocab_size].transpose(0, 1)

    def _check_sequence_split(self, sequence: int, inference: InferenceState | None) -> None:
        tp = self.groups.tensor_size
        if not self.config.sequence_parallel or tp == 1:
            return
        if inference is not None:
            raise ValueError(
                f"GPTModel: incremental decoding does not run under sequence parallelism: a "
                f"decode step of one token cannot be split over {tp} tensor-parallel ranks; "
                f"build the model with sequence_parallel=False to generate"
            )
        if sequence % tp != 0:
            raise ValueError(
                f"GPTModel: sequence length {sequence} is not divisible by the tensor-parallel "
                f"size {tp}, which sequence parallelism needs"
            )

    def _losses(self, hidden: Tensor, target: Tensor) -> Tensor:
        """``[s, b]`` float32 losses of the final norm's output ``hidden`` (``[s, b, h]``,
        ``[s / tp, b, h]`` under sequence parallelism) against ``target`` (``[s, b]``)."""
        if not self.config.fused_cross_entropy:
            logits = self._output_logits(hidden)  # [s, b, padded_vocab / tp]
            return vocab_parallel_cross_entropy(logits, target, self.groups, vocab_size=self.vocab_size)
        chunk_tokens = self.config.cross_entropy_chunk_tokens
        if self.output_layer is None:
            return linear_cross_entropy(
                hidden,
                self.embedding.weight,
                target,
                self.groups,
                sequence_parallel=self.config.sequence_parallel,
                vocab_size=self.vocab_size,
                chunk_tokens=chunk_tokens,
                compiled=self.config.fuse_elementwise,
            )
        if isinstance(self.output_layer, LinearCrossEntropyLayer):
            return self.output_layer.linear_cross_entropy(
                hidden,
                target,
                vocab_size=self.vocab_size,
                chunk_tokens=chunk_tokens,
                compiled=self.config.fuse_elementwise,
            )
        return self._checkpointed_losses(hidden, target, chunk_tokens)

    def _checkpointed_losses(self, hidden: Tensor, target: Tensor, chunk_tokens: int | None) -> Tensor:
        """The losses of any output layer (a LoRA-adapted one, a user's), exact and without
        full logits: its own ``forward`` and the loss run on a few sequence positions at a
        time and are recomputed in the backward pass (activation checkpointing)."""
        tp = self.groups.tensor_size
        # Under sequence parallelism the layer gathers every rank's slice of a chunk, so a
        # chunk's rows are [rank, position]: the targets are reordered to match.
        ranks = tp if self.config.sequence_parallel else 1
        local_positions, batch = hidden.shape[0], hidden.shape[1]
        if chunk_tokens is None:
            chunk_tokens = default_chunk_tokens(self.padded_vocab_size // tp)
        positions = max(1, chunk_tokens // (batch * ranks))
        target_by_rank = target.reshape(ranks, local_positions, batch)
        parts = []
        for start in range(0, local_positions, positions):
            end = min(start + positions, local_positions)
            chunk_target = target_by_rank[:, start:end].reshape(-1, batch)  # [ranks * p, b]
            losses: Tensor = checkpoint(
                self._layer_losses, hidden[start:end], chunk_target, use_reentrant=False
            )
            parts.append(losses.view(ranks, end - start, batch))
        return torch.cat(parts, dim=1).reshape(target.shape)

    def _layer_losses(self, hidden: Tensor, target: Tensor) -> Tensor:
        logits = self._output_logits(hidden)
        return vocab_parallel_cross_entropy(logits, target, self.groups, vocab_size=self.vocab_size)

    def _output_logits(self, hidden: Tensor) -> Tensor:
        if self.output_layer is not None:
            return self.output_layer(hidden)
        return column_parallel_matmul(
            hidden,
            self.embedding.weight,
            None,
            self.groups,
            sequence_parallel=self.config.sequence_parallel,
        )

    def summary(self) -> str:
        """A short, human-readable description of what was built (``print(model)`` has all)."""
        local = sum(parameter.numel() for parameter in self.parameters())
        lines = [
            f"GPTModel: {len(self.blocks.layers)} layers, hidden {self.config.hidden_size}, "
            f"tensor-parallel size {self.groups.tensor_size}"
            f"{', sequence parallel' if self.config.sequence_parallel else ''}",
            f"  parameters on this rank: {local:,}",
            *(f"  {line}" for line in _describe_layers(self.blocks.layers)),
            f"  embeddings: {'tied' if self.tie_embeddings else 'untied'}",
        ]
        if self.padded_vocab_size != self.vocab_size:
            lines.append(
                f"  note: vocabulary {self.vocab_size} padded to {self.padded_vocab_size} (a "
                f"multiple of tensor-parallel size {self.groups.tensor_size} x "
                f"{VOCAB_PADDING_MULTIPLE}); padded entries are excluded from logits and loss"
            )
        return "\n".join(lines)


def _layer_context(
    input_ids: Tensor,
    position_ids: Tensor | None,
    attention_mask: Tensor | None,
    inference: InferenceState | None,
) -> LayerContext:
    """The context of one call: positions (default or given), padding mask, caches."""
    batch, sequence = input_ids.shape
    cached = 0 if inference is None else inference.length
    key_padding = _key_padding(attention_mask, batch, cached + sequence)
    if position_ids is None:
        position_ids = _default_positions(attention_mask, batch, sequence, cached, input_ids.device)
    return LayerContext.for_positions(position_ids, attention_mask=key_padding, inference=inference)


def _key_padding(attention_mask: Tensor | None, batch: int, length: int) -> Tensor | None:
    """``attention_mask`` as bool, or ``None`` when it is absent or pads nothing.

    Raises:
        ValueError: if it is not ``[batch, length]`` (cached + this call's tokens).
    """
    if attention_mask is None:
        return None
    if tuple(attention_mask.shape) != (batch, length):
        raise ValueError(
            f"GPTModel: attention_mask must be [batch, cached + sequence] = [{batch}, {length}], "
            f"got {list(attention_mask.shape)}"
        )
    real = attention_mask.to(torch.bool)
    # Without padding the attention keeps its fastest (is_causal) path.
    return None if bool(real.all()) else real


def _default_positions(
    attention_mask: Tensor | None, batch: int, sequence: int, cached: int, device: torch.device
) -> Tensor:
    """``[batch, sequence]`` positions of this call's tokens, after ``cached`` tokens.

    With a mask, as transformers' ``generate`` counts them: each row from 0 at its first real
    token (``cumsum(mask) - 1``), padding at 0; RoPE then sees a left-padded prompt exactly as
    the same prompt alone.
    """
    if attention_mask is None:
        return torch.arange(cached, cached + sequence, device=device).expand(batch, sequence)
    mask = attention_mask.long()
    positions = (mask.cumsum(dim=-1) - 1).masked_fill(mask == 0, 0)
    return positions[:, -sequence:]


def _describe_layers(layers: nn.ModuleList) -> list[str]:
    """One line per run of consecutive layers with the same classes in their slots."""
    described = [
        f"{type(layer).__name__}("
        + ", ".join(f"{name}={type(child).__name__}" for name, child in layer.named_children())
        + ")"
        for layer in layers
    ]
    lines: list[str] = []
    start = 0
    for index in range(1, len(described) + 1):
        if index == len(described) or described[index] != described[start]:
            span = f"layer {start}" if index - start == 1 else f"layers {start}-{index - 1}"
            lines.append(f"{span}: {described[start]}")
            start = index
    return lines
