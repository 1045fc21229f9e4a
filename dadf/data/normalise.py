"""Rows to the float32 the networks take: images to [-1, 1], tabular features standardised with the training
normals' statistics. One `Normaliser` for rows held in memory and rows read from the shards (stream.py)."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from dadf.data.types import IMAGE


class Normaliser:
    """``norm(rows)``: raw rows (numpy) to a float32 tensor. ``mean``/``std`` are used for tabular rows only."""

    def __init__(self, kind: str, mean=None, std=None):
        self.kind, self.mean, self.std = kind, mean, std

    # The two fits differ in the last bits (float32 statistics of the rows held, float64 sums over chunks): each
    # path keeps its own, so that the results of its cells stay what they were.
    @classmethod
    def fit(cls, kind: str, train: np.ndarray) -> Normaliser:
        """Fitted to the training normals held in memory."""
        if kind == IMAGE:
            return cls(kind)
        mean = train.mean(0) if len(train) else 0.0
        std = train.std(0) if len(train) else 1.0
        return cls(kind, mean, np.where(std > 0, std, 1.0))

    @classmethod
    def fit_chunks(cls, kind: str, chunks: Iterable[np.ndarray]) -> Normaliser:
        """Fitted to the training normals read in chunks, one pass (the streaming path)."""
        if kind == IMAGE:
            return cls(kind)
        total = sq = 0.0
        n = 0
        for chunk in chunks:
            a = chunk.astype(np.float64)
            total, sq, n = total + a.sum(0), sq + (a * a).sum(0), n + len(a)
        n = max(n, 1)
        mean = np.asarray(total / n, np.float32)
        std = np.sqrt(np.maximum(sq / n - (total / n) ** 2, 0)).astype(np.float32)
        return cls(kind, mean, np.where(std > 0, std, 1.0).astype(np.float32))

    def __call__(self, a: np.ndarray) -> torch.Tensor:
        if self.kind == IMAGE:
            return torch.from_numpy(a.astype(np.float32) / 127.5 - 1.0)
        return torch.from_numpy(((a - self.mean) / self.std).astype(np.float32))
