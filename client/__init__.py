"""The OpenAI-compatible adapter in front of Triton (no torch, no transformers)."""
