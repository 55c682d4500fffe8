"""The ``megaspec`` command (``megaspec COMMAND --help`` for each):

* ``megaspec train``: train a small Llama-style byte-level model on the bundled text (about
  two minutes on two CPU cores with the defaults), save it and print a generated sample;
* ``megaspec inspect``: what a config builds, without building its weights;
* ``megaspec convert``: a model between megaspec, Hugging Face and Megatron-core formats;
* ``megaspec generate``: continue prompts with a megaspec or Hugging Face model;
* ``megaspec merge``: fold an adapter run's adapters into its base (``megaspec train --from
  DIR`` with a ``peft:`` section writes such a run).

``megaspec`` alone prints help; ``python -m megaspec`` is the same command.
"""

from megaspec.cli.main import build_parser, main, parse_arguments
from megaspec.cli.run_config import run_from_arguments

__all__ = ["build_parser", "main", "parse_arguments", "run_from_arguments"]
