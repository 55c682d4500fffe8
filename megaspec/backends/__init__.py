"""Providers that hand out builders for the standard slots.

``megaspec.backends.torch`` is pure PyTorch and always available. A backend is chosen
explicitly; a missing optional package is an error, never a silent fallback.
"""
