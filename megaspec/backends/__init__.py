"""Providers that hand out builders for the standard slots.

``megaspec.backends.torch`` is pure PyTorch and always available. ``megaspec.backends.te``
builds the same slots on NVIDIA Transformer Engine (the ``te`` extra); importing it without
Transformer Engine is an ``ImportError`` naming the extra. ``megaspec.backends.fp8`` runs the
te modules in FP8, and ``megaspec.backends.portable`` names any model's weights as the torch
backend does, so checkpoints move between backends; neither needs Transformer Engine to
import. A backend is chosen explicitly; a missing optional package is an error, never a
silent fallback.
"""
