"""Fixed, seeded workloads."""

from __future__ import annotations

import random

WORDS = (
    "the of and to in is was for on that with as by at from it an be this are or which one have had not but what all "
    "were when we there can more if no out so said up its about into than them only other new some time could these "
    "two may first then do any like my now over such our man me even most made after also did many before must through "
    "embedding server vector latency throughput batch token model query document retrieval search index cluster"
).split()


def texts(n: int, min_words: int, max_words: int, seed: int = 0) -> list[str]:
    """`n` synthetic sentences of `min_words`–`max_words` words."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))) for _ in range(n)]


WORKLOADS = {
    "mixed-5-60": lambda n: texts(n, 5, 60, seed=0),
    "queries-5-20": lambda n: texts(n, 5, 20, seed=1),
    "documents-20-400": lambda n: texts(n, 20, 400, seed=2),
}
