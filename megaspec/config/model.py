"""The language-model config: width, vocabulary, decoder blocks and model-level weights."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from megaspec.backends import torch as torch_backend
from megaspec.builders import Embedding, EmbeddingBuilder
from megaspec.config.blocks import BlockSequenceConfig, RepeatSequenceConfig
from megaspec.config.slots import NormConfig, RMSNormConfig
from megaspec.config.weights import LinearConfig, WeightConfig, configured_column_linear
from megaspec.layers.slots import checked_module
from megaspec.models import GPTModel, GPTSubmodules
from megaspec.parallel import InitMethod, ParallelGroups
from megaspec.parameter_settings import tag_module_parameters
from megaspec.schema import ConfigError, checks, join_path, positive
from megaspec.transformer_config import ModelWideSettings, TransformerConfig


@dataclass(frozen=True, kw_only=True)
class ModelConfig(ModelWideSettings):
    """A decoder-only language model: the model-wide settings every layer shares
    (``hidden_size``, ``init_std``, ``norm_epsilon``, ``fuse_elementwise``), the vocabulary,
    the decoder's blocks and the model-level weights.

    ``embedding`` and ``output_layer`` set those weights (initialisation default: normal with
    ``init_std``; embeddings are exempt from weight decay unless ``weight_decay: true``).
    """

    vocab_size: int = field(default=256, metadata=checks(positive))
    tie_embeddings: bool = False
    decoder: BlockSequenceConfig = field(default_factory=RepeatSequenceConfig)
    final_norm: NormConfig = field(default_factory=RMSNormConfig)
    embedding: WeightConfig = field(default_factory=WeightConfig)
    output_layer: LinearConfig = field(default_factory=LinearConfig)

    def validate(self) -> None:
        super().validate()
        self.check_tensor_parallel(1)

    def check_tensor_parallel(self, tensor_parallel_size: int) -> None:
        """Checks of every block against the model width and the tensor-parallel size.

        Raises:
            ConfigError: naming the full path below this config, e.g.
                ``decoder.block.mixer.num_heads``.
        """
        for path, block in self.decoder.named_blocks():
            try:
                block.check_model(self.hidden_size, tensor_parallel_size)
            except ConfigError as error:
                raise error.under(join_path("decoder", path)) from None

    def transformer_config(
        self, *, sequence_parallel: bool = False, params_dtype: torch.dtype = torch.float32
    ) -> TransformerConfig:
        """The model-wide settings every layer receives."""
        return TransformerConfig(
            hidden_size=self.hidden_size,
            num_layers=self.decoder.num_layers,
            norm_epsilon=self.norm_epsilon,
            init_std=self.init_std,
            fuse_elementwise=self.fuse_elementwise,
            recompute=self.recompute,
            fused_cross_entropy=self.fused_cross_entropy,
            cross_entropy_chunk_tokens=self.cross_entropy_chunk_tokens,
            sequence_parallel=sequence_parallel,
            params_dtype=params_dtype,
        )

    def submodules(self, transformer: TransformerConfig) -> GPTSubmodules:
        """The spec this config stands for: the standard GPT spec with configured slots."""
        standard = torch_backend.gpt_submodules(self.decoder.spec(1.0))
        return replace(
            standard,
            final_norm=self.final_norm.builder(1.0),
            output_layer=configured_column_linear(
                standard.output_layer,
                self.output_layer,
                transformer,
                1.0,
                valid_rows=self.vocab_size,
                apply_peft=False,
            ),
            embedding=_configured_embedding(
                standard.embedding, self.embedding, transformer, self.vocab_size
            ),
        )

    def build(
        self,
        groups: ParallelGroups | None = None,
        *,
        sequence_parallel: bool = False,
        params_dtype: torch.dtype = torch.float32,
    ) -> GPTModel:
        """Build the model (seed with ``megaspec.parallel.seeded_initialization``)."""
        groups = ParallelGroups.single() if groups is None else groups
        self.check_tensor_parallel(groups.tensor_size)
        transformer = self.transformer_config(
            sequence_parallel=sequence_parallel, params_dtype=params_dtype
        )
        return GPTModel(
            config=transformer,
            vocab_size=self.vocab_size,
            submodules=self.submodules(transformer),
            groups=groups,
            tie_embeddings=self.tie_embeddings,
        )


def _configured_embedding(
    builder: EmbeddingBuilder, weight: WeightConfig, model: TransformerConfig, vocab: int
) -> EmbeddingBuilder:
    def build(
        *,
        num_embeddings: int,
        embedding_dim: int,
        groups: ParallelGroups,
        init_method: InitMethod,
        sequence_parallel: bool,
        params_dtype: torch.dtype,
    ) -> Embedding:
        embedding = builder(
            num_embeddings=num_embeddings,
            embedding_dim=embedding_dim,
            groups=groups,
            init_method=weight.init_method(init_method, model, valid_rows=vocab),
            sequence_parallel=sequence_parallel,
            params_dtype=params_dtype,
        )
        # Embeddings are exempt from weight decay unless the config asks for it.
        tag_module_parameters(
            checked_module(embedding, owner="ModelConfig", slot="embedding", builder=builder),
            lr_scale=weight.lr_scale,
            weight_decay=False if weight.weight_decay is None else weight.weight_decay,
            apply_peft=bool(weight.apply_peft),
        )
        return embedding

    return build
