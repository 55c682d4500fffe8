"""``megaspec generate``: continue prompts with a trained or imported model."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from megaspec.checkpoint import from_pretrained
from megaspec.checkpoint.hf import CONFIG_FILE as HF_CONFIG_FILE
from megaspec.data import ByteTokenizer
from megaspec.generate import generate

DESCRIPTION = (
    "Continue one or more prompts with a model from a megaspec run directory (bytes: the "
    "byte-level tokenizer `megaspec train` uses) or a Hugging Face directory (its tokenizer, "
    "which needs the `transformers` package). Prompts of different lengths are generated as "
    "one left-padded batch with key/value caches. --temperature 0 is greedy."
)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


@dataclass(frozen=True)
class Tokenizer:
    """Text to token ids and back."""

    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]
    eos_token_id: int | None
    pad_token_id: int


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``megaspec generate``."""
    option = parser.add_argument
    option("source", type=Path, metavar="MODEL", help="a megaspec run directory or a Hugging Face directory")
    option("--prompt", action="append", required=True, metavar="TEXT",
           help="a prompt; repeat for a batch")  # fmt: skip
    option("--max-new-tokens", type=int, default=64, metavar="N", help="tokens to add (%(default)s)")
    option("--temperature", type=float, default=0.8, help="0 for greedy (%(default)s)")
    option("--top-k", type=int, default=None, metavar="K", help="keep the K most likely tokens")
    option("--top-p", type=float, default=None, metavar="P", help="nucleus sampling: keep mass P")
    option("--seed", type=int, default=0, help="seeds the sampling (%(default)s)")
    option("--device", default="cpu", help="torch device, e.g. cuda (%(default)s)")


def hf_tokenizer(directory: Path) -> Tokenizer:
    """The tokenizer saved in a Hugging Face directory.

    Raises:
        ValueError: if ``transformers`` is missing or the directory has no tokenizer.
    """
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(f"{directory}: no tokenizer ({', '.join(TOKENIZER_FILES)} missing)")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ValueError("a Hugging Face model's tokenizer needs the transformers package") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError) as error:
        raise ValueError(f"{directory}: no usable tokenizer ({error})") from None
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or 0)
    return Tokenizer(
        encode=lambda text: list(tokenizer.encode(text)),
        decode=lambda ids: str(tokenizer.decode(ids, skip_special_tokens=True)),
        eos_token_id=eos,
        pad_token_id=pad,
    )


def byte_tokenizer() -> Tokenizer:
    """The byte-level tokenizer of ``megaspec train``'s models."""
    tokenizer = ByteTokenizer()
    return Tokenizer(
        encode=lambda text: tokenizer.encode_tensor(text).tolist(),
        decode=lambda ids: tokenizer.decode(torch.tensor(ids, dtype=torch.long)),
        eos_token_id=None,
        pad_token_id=0,
    )


def completions(arguments: argparse.Namespace) -> list[str]:
    """Every prompt with its generated continuation, decoded together (up to an end token)."""
    tokenizer = hf_tokenizer(arguments.source) if (arguments.source / HF_CONFIG_FILE).is_file() else byte_tokenizer()
    model = from_pretrained(arguments.source, device=arguments.device).model
    prompts = [tokenizer.encode(text) for text in arguments.prompt]
    if any(len(prompt) == 0 for prompt in prompts):
        raise ValueError("--prompt: every prompt must have at least one token")
    tokens = generate(
        model,
        [torch.tensor(prompt, dtype=torch.long, device=arguments.device) for prompt in prompts],
        max_new_tokens=arguments.max_new_tokens,
        temperature=arguments.temperature,
        top_k=arguments.top_k,
        top_p=arguments.top_p,
        generator=torch.Generator().manual_seed(arguments.seed),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    longest = max(len(prompt) for prompt in prompts)
    return [
        _decoded(tokenizer, prompt, row[longest:].tolist()) for prompt, row in zip(prompts, tokens.cpu())
    ]


def _decoded(tokenizer: Tokenizer, prompt: Sequence[int], new: Sequence[int]) -> str:
    kept = list(new)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id in kept:
        kept = kept[: kept.index(tokenizer.eos_token_id)]
    return tokenizer.decode([*prompt, *kept])


def check_device(name: str) -> None:
    """Refuse a device this torch cannot use, before any model is loaded.

    Raises:
        ValueError: for a malformed name or an unavailable CUDA device.
    """
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this torch has no usable CUDA device")


def run_generate(arguments: argparse.Namespace) -> int:
    """Run ``megaspec generate``; returns the exit code (2 for a bad model or argument)."""
    try:
        if arguments.max_new_tokens < 0:
            raise ValueError(f"--max-new-tokens: must be >= 0, got {arguments.max_new_tokens}")
        check_device(arguments.device)
        texts = completions(arguments)
    except (ValueError, OSError) as error:  # CheckpointError is a ValueError
        print(f"megaspec generate: {error}", file=sys.stderr)
        return 2
    for text in texts:
        print(text)
    return 0
