"""Language models built from block sequences."""

from megaspec.models.gpt import GPTModel, GPTSubmodules

__all__ = ["GPTModel", "GPTSubmodules"]
