"""BGE-M3 (BAAI/bge-m3): an XLM-RoBERTa encoder with two heads of its own beside it, `sparse_linear.pt`
and `colbert_linear.pt`, which mark the checkpoint as this family's. One pass returns all three of
FlagEmbedding's `BGEM3FlagModel` outputs (graphs/bge_m3.py): the dense CLS vector (`/v1/embeddings`),
the lexical weights (`/embed_sparse`) and the ColBERT vectors (`/pooling` with `token_embed`, and MaxSim
reranking). The tokenizer frames `<s> … </s>`; 8,192 tokens."""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as mc

from contract import EMBEDDING, SPARSE_IDS, SPARSE_WEIGHTS, TOKEN_VECTORS
from export.families.base import Family
from export.heads import Head, HeadOutput
from export.towers.text import TextTower
from graphs.bge_m3 import COLBERT_FILE, SPARSE_FILE, m3

THREE_OUTPUTS = Head(
    "bge-m3",
    (
        HeadOutput(EMBEDDING),
        HeadOutput(SPARSE_IDS, 0, per_token=True, directed=False, dtype=mc.TYPE_INT64),
        HeadOutput(SPARSE_WEIGHTS, 0, per_token=True, directed=False),
        HeadOutput(TOKEN_VECTORS, per_token=True),
    ),
    ("embed", "sparse", "multivector"),
)

FAMILY = Family(
    name="bge-m3",
    model_types=("xlm-roberta",),
    towers=(TextTower(m3, head=THREE_OUTPUTS),),
    pooling="cls",
    output="CLS L2 (dense), relu(sparse_linear) per token (sparse), colbert_linear L2 per token but CLS",
    weight_files=(SPARSE_FILE, COLBERT_FILE),
)
