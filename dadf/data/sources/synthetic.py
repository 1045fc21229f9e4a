"""Sources without files: scikit-learn's bundled `digits`, and `synthetic` data generated from a seed (tests and
smoke runs)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..types import IMAGE, TABULAR, Source
from . import register
from .classes import DIGITS, TABULAR_CLASSES, numbered
from .files import DataError
from .tabular import tabular_source


@register("digits", classes=DIGITS, parts=("train", "test"))
def load_digits(root: Path, download: bool) -> Source:
    """scikit-learn's 8×8 digits (bundled, no files), split 50/50 per class since it ships no split."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    x = np.rint(bunch.images * 255.0 / 16.0).astype(np.uint8)[:, None]
    y = bunch.target.astype(np.int64)
    train, test = train_test_split(np.arange(len(y)), test_size=0.5, random_state=0, stratify=y)
    train, test = np.sort(train), np.sort(test)
    parts = {"train": (x[train], y[train]), "test": (x[test], y[test])}
    meta = {"split": "stratified 50/50 (train_test_split, random_state=0)"}
    return Source("digits", IMAGE, parts, DIGITS, meta)


def _synthetic_classes(*, kind: str, n_classes: int, **_) -> tuple[str, ...]:
    """The classes `synthetic` generates for its parameters (called with all of them)."""
    return TABULAR_CLASSES if kind == TABULAR else numbered(n_classes)


@register("synthetic", classes=_synthetic_classes, kind=lambda *, kind, **_: kind,
          parts=lambda root, *, kind, **_: ("all",) if kind == TABULAR else ("train", "test"))
def load_synthetic(
    root: Path,
    download: bool,
    *,
    kind: str = IMAGE,
    n_classes: int = 10,
    n_per_class: int = 100,
    n_test_per_class: int = 50,
    shape: tuple[int, ...] | list[int] = (1, 8, 8),
    dim: int = 8,
    n_samples: int = 1000,
    outlier_fraction: float = 0.1,
    seed: int = 0,
) -> Source:
    """Easily separable data from a seed: image classes are random mean images plus small noise; tabular inliers
    are a unit Gaussian blob and outliers lie on a shell 8-12 units from its centre."""
    rng = np.random.default_rng(seed)
    if kind == IMAGE:
        return _synthetic_images(rng, n_classes, n_per_class, n_test_per_class, tuple(shape), seed)
    if kind == TABULAR:
        return _synthetic_tabular(rng, n_samples, dim, outlier_fraction, seed)
    raise DataError(f"synthetic: kind must be {IMAGE!r} or {TABULAR!r}, got {kind!r}")


def _synthetic_images(rng, n_classes: int, n_train: int, n_test: int, shape: tuple[int, ...], seed: int) -> Source:
    if len(shape) != 3:
        raise DataError(f"synthetic: shape must be (C, H, W), got {shape}")
    means = rng.uniform(0, 255, size=(n_classes, *shape))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(n_classes, dtype=np.int64), n)
        x = means[y] + rng.normal(0, 12, size=(len(y), *shape))
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), y

    parts = {"train": draw(n_train), "test": draw(n_test)}
    return Source("synthetic", IMAGE, parts, numbered(n_classes), {"seed": seed})


def _synthetic_tabular(rng, n_samples: int, dim: int, outlier_fraction: float, seed: int) -> Source:
    if not 0 <= outlier_fraction < 1:
        raise DataError(f"synthetic: outlier_fraction must be in [0, 1), got {outlier_fraction}")
    n_out = int(round(n_samples * outlier_fraction))
    inliers = rng.normal(size=(n_samples - n_out, dim))
    directions = rng.normal(size=(n_out, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    outliers = directions * rng.uniform(8, 12, size=(n_out, 1))
    x = np.concatenate([inliers, outliers])
    y = np.concatenate([np.zeros(len(inliers)), np.ones(n_out)])
    order = rng.permutation(len(y))
    return tabular_source("synthetic", x[order], y[order], {"seed": seed})
