"""Pooling exactly as sentence-transformers' `Pooling` module computes it (the mode comes from the
checkpoint: export/pooling.py reads it)."""

from __future__ import annotations

import torch

from graphs.settings import PoolingMode


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: PoolingMode) -> torch.Tensor:
    """`[batch, seq, hidden]` → `[batch, hidden]` in fp32, ignoring padded positions."""
    hidden = hidden.float()
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return torch.where(m > 0, hidden, torch.full_like(hidden, -1e9)).max(dim=1).values
    if mode == "lasttoken":
        # Position of the last attended token: right or left padding alike.
        positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
        last = (mask * positions).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    summed = (hidden * m).sum(dim=1)
    counts = m.sum(dim=1).clamp(min=1e-9)
    return summed / (counts if mode == "mean" else counts.sqrt())
