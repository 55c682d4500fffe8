"""The language-model config: width, vocabulary, decoder blocks and model-level weights."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from megaspec.builders import Embedding, EmbeddingBuilder
from megaspec.config.blocks import BlockSequenceConfig, RepeatSequenceConfig
from megaspec.config.schema import Config, ConfigError, join_path
from megaspec.config.slots import NormConfig, RMSNormConfig
from megaspec.config.weights import LinearConfig, WeightConfig, configured_column_linear
from megaspec.models import GPTModel, GPTSubmodules
from megaspec.parallel import (
    ColumnParallelLinear,
    InitMethod,
    ParallelGroups,
    VocabParallelEmbedding,
)
from megaspec.parameter_settings import tag_module_parameters
from megaspec.transformer_config import TransformerConfig


@dataclass(frozen=True, kw_only=True)
class ModelConfig(Config):
    """A decoder-only language model.

    ``embedding`` and ``output_layer`` set those weights (initialisation default: normal with
    ``init_std``; embeddings are exempt from weight decay unless ``weight_decay: true``).
    """

    hidden_size: int = 256
    vocab_size: int = 256
    init_std: float = 0.02
    norm_epsilon: float = 1e-5
    tie_embeddings: bool = False
    decoder: BlockSequenceConfig = field(default_factory=RepeatSequenceConfig)
    final_norm: NormConfig = field(default_factory=RMSNormConfig)
    embedding: WeightConfig = field(default_factory=WeightConfig)
    output_layer: LinearConfig = field(default_factory=LinearConfig)

    def validate(self) -> None:
        for name in ("hidden_size", "vocab_size", "init_std", "norm_epsilon"):
            value = getattr(self, name)
            if value <= 0:
                raise ConfigError(name, f"must be positive, got {value}")
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
            sequence_parallel=sequence_parallel,
            params_dtype=params_dtype,
        )

    def submodules(self, transformer: TransformerConfig) -> GPTSubmodules:
        """The spec this config stands for."""
        return GPTSubmodules(
            blocks=self.decoder.spec(1.0),
            final_norm=self.final_norm.builder(1.0),
            output_layer=configured_column_linear(
                ColumnParallelLinear,
                self.output_layer,
                transformer,
                1.0,
                valid_rows=self.vocab_size,
                apply_peft=False,
            ),
            embedding=_configured_embedding(self.embedding, transformer, self.vocab_size),
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


def _configured_embedding(weight: WeightConfig, model: TransformerConfig, vocab: int) -> EmbeddingBuilder:
    def build(
        *,
        num_embeddings: int,
        embedding_dim: int,
        groups: ParallelGroups,
        init_method: InitMethod,
        sequence_parallel: bool,
        params_dtype: torch.dtype,
    ) -> Embedding:
        embedding = VocabParallelEmbedding(
            num_embeddings=num_embeddings,
            embedding_dim=embedding_dim,
            groups=groups,
            init_method=weight.init_method(init_method, model, valid_rows=vocab),
            sequence_parallel=sequence_parallel,
            params_dtype=params_dtype,
        )
        # Embeddings are exempt from weight decay unless the config asks for it.
        tag_module_parameters(
            embedding,
            lr_scale=weight.lr_scale,
            weight_decay=False if weight.weight_decay is None else weight.weight_decay,
            apply_peft=bool(weight.apply_peft),
        )
        return embedding

    return build
