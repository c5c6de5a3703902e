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
    "short-1-3": lambda n: texts(n, 1, 3, seed=4),
    "mixed-5-60": lambda n: texts(n, 5, 60, seed=0),
    "queries-5-20": lambda n: texts(n, 5, 20, seed=1),
    "documents-20-400": lambda n: texts(n, 20, 400, seed=2),
}


def images(n: int, seed: int = 3, smallest: int = 64, largest: int = 1024) -> list[bytes]:
    """`n` PNG images of seeded random sizes and aspect ratios (gradients plus noise)."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w, h = (int(v) for v in rng.integers(smallest, largest + 1, size=2))
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], axis=-1)
        noise = rng.integers(0, 64, size=(h, w, 3))
        buf = io.BytesIO()
        Image.fromarray(((base + noise) % 256).astype(np.uint8)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out
