"""Typed export failures: every one stops the export."""

from __future__ import annotations


class ExportError(RuntimeError):
    """The checkpoint cannot be exported as asked."""


class ValidationError(ExportError):
    """An exported engine disagrees with the PyTorch reference beyond tolerance."""
