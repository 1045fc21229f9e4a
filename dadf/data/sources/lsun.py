"""LSUN scene categories from torchvision's LMDB layout: `<root>/lsun/<category>_<split>_lmdb/` (data.mdb; keys =
image ids, values = encoded images, WebP in the published files). Read with the `lmdb` package (`dadf[lsun]`), in key
order. Classes = the categories asked for, in that order; parts "train" and "test" (LSUN's val split, 300 images per
category). LSUN's images differ in size: each is resized so its shorter side is `resolution`, then centre-cropped
(PIAD downscales LSUN to 64×64). The source is chunked (`ChunkedSource`): the counts come from the LMDB headers and the
images are decoded CHUNK_ROWS at a time, so building its shards never holds the dataset."""
from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from ..types import IMAGE, ChunkedSource
from . import register
from .files import DataError, absent, missing_files_error, reading

CATEGORIES = ("bedroom", "bridge", "church_outdoor", "classroom", "conference_room", "dining_room", "kitchen",
              "living_room", "restaurant", "tower")
_PARTS = {"train": "train", "test": "val"}  # dadf part -> LSUN split
CHUNK_ROWS = 10_000  # images decoded at a time: ~120 MB at 64×64


def lmdb_folder(root: Path, category: str, split: str) -> Path:
    return root / "lsun" / f"{category}_{split}_lmdb"


def square(image: Image.Image, resolution: int) -> np.ndarray:
    """Shorter side to `resolution` (bilinear, antialiased), centre crop: uint8 (3, resolution, resolution)."""
    w, h = image.size
    scale = resolution / min(w, h)
    image = image.convert("RGB").resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))),
                                        Image.Resampling.BILINEAR)
    w, h = image.size
    left, top = (w - resolution) // 2, (h - resolution) // 2
    return np.asarray(image.crop((left, top, left + resolution, top + resolution))).transpose(2, 0, 1)


def _check_categories(categories) -> tuple[str, ...]:
    categories = tuple(categories)
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown or not categories or len(set(categories)) != len(categories):
        raise DataError(f"lsun: categories {list(categories)} must be distinct names among {', '.join(CATEGORIES)}")
    return categories


def _open_lmdb():
    try:
        import lmdb
    except ImportError as exn:
        raise DataError("lsun: reading LSUN's LMDB files needs the lmdb package; install it with "
                        "pip install 'dadf[lsun]' (or pip install lmdb)") from exn
    return lmdb


def _lmdb_env(folder: Path):
    return _open_lmdb().open(str(folder), readonly=True, lock=False, readahead=False, meminit=False, subdir=True)


def _count(folder: Path, limit: int | None) -> int:
    """Images in an LMDB folder (its entry count: nothing is read), at most `limit`."""
    with reading(folder):
        env = _lmdb_env(folder)
        try:
            n = int(env.stat()["entries"])
        finally:
            env.close()
    return n if limit is None else min(n, limit)


def _read_lmdb(folder: Path, resolution: int, n: int) -> Iterator[np.ndarray]:
    """The first `n` images of the folder (key order), squared, in uint8 chunks of at most CHUNK_ROWS."""
    images = []
    with reading(folder):
        env = _lmdb_env(folder)
        try:
            with env.begin(write=False) as txn:
                for k, (key, blob) in enumerate(txn.cursor()):
                    if k >= n:
                        break
                    with reading(f"{folder} key {key.decode(errors='replace')}"):
                        image = Image.open(io.BytesIO(blob))
                        image.load()
                    images.append(square(image, resolution))
                    if len(images) == CHUNK_ROWS:
                        yield np.stack(images)
                        images = []
        finally:
            env.close()
    if images:
        yield np.stack(images)


@register("lsun", classes=lambda categories, **_: _check_categories(categories), parts=("train", "test"))
def load_lsun(root: Path, download: bool, *, categories: list | tuple = ("bedroom", "conference_room"),
              resolution: int = 64, max_per_category: int | None = None) -> ChunkedSource:
    """`max_per_category`: the first N images (key order) of each category and split; null = all of them
    (bedroom's train split alone is ~3 M images, ~37 GB at 64×64: a `ChunkedSource`, read CHUNK_ROWS at a time)."""
    categories = _check_categories(categories)
    folders = {(c, s): lmdb_folder(root, c, s) for c in categories for s in _PARTS.values()}
    missing = absent(folders.values())
    if missing:
        raise missing_files_error("lsun", root / "lsun", missing, downloadable=False)
    if max_per_category is not None and max_per_category < 1:
        raise DataError(f"lsun: max_per_category={max_per_category} must be >= 1, or null for every image")
    counts = {key: _count(folder, max_per_category) for key, folder in folders.items()}
    labels = {part: np.concatenate([np.full(counts[c, split], k, dtype=np.int64) for k, c in enumerate(categories)])
              for part, split in _PARTS.items()}

    def read(part: str) -> Iterator[np.ndarray]:  # category after category, each in key order
        for c in categories:
            yield from _read_lmdb(folders[c, _PARTS[part]], resolution, counts[c, _PARTS[part]])

    meta = {"categories": list(categories), "resolution": resolution, "max_per_category": max_per_category}
    return ChunkedSource("lsun", IMAGE, labels, categories, (3, resolution, resolution), "uint8", read, meta)
