"""BGE-M3's three heads over one XLM-RoBERTa pass, as FlagEmbedding's `BGEM3FlagModel` computes them
(`finetune/embedder/encoder_only/m3/modeling.py`, `inference/embedder/encoder_only/m3.py`):

- dense: the CLS hidden state, L2-normalised;
- sparse: each position's id and `relu(sparse_linear(h))`, zero at the tokenizer's cls, eos, pad and unk
  ids and at padding (the adapter keeps each id's largest weight, and only weights > 0, as
  `_process_token_weights` does);
- multi-vector: `colbert_linear(h)` at every position but CLS, masked, each vector L2-normalised (the
  adapter keeps positions 1 … n−1, as `_process_colbert_vecs` keeps `vecs[:n-1]` of `h[:, 1:]`).

The two linear layers are the checkpoint's `sparse_linear.pt` and `colbert_linear.pt` (state dicts of
`Linear(H, 1)` and `Linear(H, D)`, float16 in BAAI/bge-m3), read from the folder the backbone was loaded
from; they run in the backbone's dtype, and every output leaves in fp32.
"""

from __future__ import annotations

from pathlib import Path

import torch

from graphs.settings import GraphSettings

SPARSE_FILE, COLBERT_FILE = "sparse_linear.pt", "colbert_linear.pt"


def _linear(directory: Path, name: str, dtype: torch.dtype) -> torch.nn.Linear:
    state = torch.load(directory / name, map_location="cpu", weights_only=True)
    out_features, in_features = state["weight"].shape
    layer = torch.nn.Linear(in_features, out_features, bias="bias" in state)
    layer.load_state_dict(state)
    return layer.to(dtype)


class M3Graph(torch.nn.Module):
    """`(input_ids, attention_mask) → EMBEDDING [b, H], SPARSE_IDS [b, s], SPARSE_WEIGHTS [b, s],
    TOKEN_VECTORS [b, s, D]`."""

    def __init__(self, model: torch.nn.Module, dropped_ids: tuple[int, ...]) -> None:
        super().__init__()
        directory = Path(model.name_or_path)
        self.backbone = model
        self.sparse_linear = _linear(directory, SPARSE_FILE, model.dtype)
        self.colbert_linear = _linear(directory, COLBERT_FILE, model.dtype)
        self.register_buffer("dropped", torch.tensor(dropped_ids or (-1,), dtype=torch.int64), persistent=False)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        dense = torch.nn.functional.normalize(hidden[:, 0].float(), dim=-1)
        kept = (input_ids.unsqueeze(-1) != self.dropped).all(dim=-1) & (attention_mask > 0)
        weights = torch.relu(self.sparse_linear(hidden).float().squeeze(-1)) * kept
        vectors = torch.nn.functional.normalize(self.colbert_linear(hidden).float(), dim=-1)
        not_cls = attention_mask.clone()
        not_cls[:, 0] = 0
        return dense, input_ids * attention_mask, weights, vectors * not_cls.unsqueeze(-1).float()


def m3(model: torch.nn.Module, settings: GraphSettings) -> M3Graph:
    return M3Graph(model, settings.dropped_ids)
