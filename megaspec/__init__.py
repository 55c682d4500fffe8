"""megaspec: Megatron-style transformers whose construction is checked by mypy."""
