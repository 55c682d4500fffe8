"""Benchmarks of megaspec against its peers; ``bench/train_step.py`` is the entry point."""
