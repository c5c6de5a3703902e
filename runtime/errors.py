"""Errors raised by the pure runtime functions for bad client input."""

from __future__ import annotations


class InputError(ValueError):
    """One request's input is invalid; the shell answers it with INVALID_ARG."""
