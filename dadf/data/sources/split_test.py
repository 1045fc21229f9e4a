"""`dataset.params.split_test=true`: a source that ships one part only (a test set, a single table) halved per class
into "train" and "test", so that protocols that train on a part of their own (loo, ovr, ood...) can use it.

Any source accepts the parameter (`load_source` applies it after the loader, before the image transforms). The
halves are a fixed function of the data: a permutation seeded with `SEED` (not the cell's seed), so every process,
relaunch and seed of a grid sees the same halves, and the shards hold them.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..types import ChunkedSource, Source
from .files import DataError

PARAM = "split_test"
SEED = 0


def halve_per_class(y: np.ndarray, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Halve every class with a seeded permutation: first half -> train, second half -> test (sorted indices).
    An odd class gives its extra row to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):  # one permutation per class, in class order: the order fixes the draws
        idx = rng.permutation(np.flatnonzero(y == c))
        half = len(idx) // 2
        train.append(idx[:half])
        test.append(idx[half:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def halve(src: Source | ChunkedSource, seed: int = SEED) -> Source | ChunkedSource:
    """`src`'s one part halved per class into "train" and "test" (a `ChunkedSource` stays one, halved chunk by
    chunk)."""
    labels = src.labels if isinstance(src, ChunkedSource) else {p: y for p, (_, y) in src.parts.items()}
    if len(labels) != 1:
        raise DataError(
            f"{src.name}: dataset.params.split_test=true halves a dataset that has one part, but this one has parts "
            f"{sorted(labels)}; remove dataset.params.split_test (or set it to false)"
        )
    (part, y), = labels.items()
    train, test = halve_per_class(y, seed)
    meta = {**src.meta, "split": f"original {part!r} part halved per class (seeded permutation, seed {seed})"}
    halves = {"train": train, "test": test}
    if isinstance(src, ChunkedSource):
        return src.select({h: (part, rows) for h, rows in halves.items()}, meta)
    x = src.parts[part][0]
    # per-sample attributes (CelebA's), where the source has them, follow their rows
    attributes = {h: src.attributes[part][rows] for h, rows in halves.items()} if src.attributes else {}
    return dataclasses.replace(src, parts={h: (x[rows], y[rows]) for h, rows in halves.items()}, meta=meta,
                               attributes=attributes)
