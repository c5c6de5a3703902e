"""Offline build: Hugging Face checkpoint → validated engine → Triton model repository."""
