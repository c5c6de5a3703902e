"""SPLADE (naver/splade-v3, opensearch's and prithivida's SPLADE models, any `*ForMaskedLM` saved as
sentence-transformers' `SparseEncoder`: a fill-mask `Transformer` or the older `MLMTransformer`, then
`SpladePooling` with max and relu; its module kind marks the checkpoint): each vocabulary id's largest
`log(1 + relu(logit))` over the positions (graphs/splade.py), served by `/embed_sparse` as its non-zero
entries. The graph's vocabulary-wide output never leaves the engine's host: the host sends each row's
non-zero (id, weight) pairs (runtime/compact.py), so the encoder sits behind a host on every target."""

from __future__ import annotations

from contract import SPARSE_VECTOR
from export.families.base import Family
from export.heads import Head, HeadOutput
from export.towers.text import TextTower
from graphs.splade import splade

VOCABULARY_WEIGHTS = Head("splade", (HeadOutput(SPARSE_VECTOR, compact=True),), ("sparse",))

FAMILY = Family(
    name="splade",
    model_types=("bert", "distilbert", "roberta", "xlm-roberta", "electra", "modernbert"),
    towers=(TextTower(splade, head=VOCABULARY_WEIGHTS),),
    pooling="max",  # over positions, of log(1 + relu(logits)): the graph's own
    normalize=False,
    output="max over positions of log(1 + relu(MLM logits)), sent as its non-zero entries",
    dimension_key="vocab_size",
    task="sparse",
    auto_class="AutoModelForMaskedLM",
    markers=("SpladePooling",),
)
