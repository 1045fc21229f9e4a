"""LSUN scene categories from torchvision's LMDB layout: `<root>/lsun/<category>_<split>_lmdb/` (data.mdb; keys =
image ids, values = encoded images, WebP in the published files). Read with the `lmdb` package (`dadf[lsun]`), in key
order. Classes = the categories asked for, in that order; parts "train" and "test" (LSUN's val split, 300 images per
category). LSUN's images differ in size: each is resized so its shorter side is `resolution`, then centre-cropped
(PIAD downscales LSUN to 64×64)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from ..types import IMAGE, Source
from . import register
from .files import DataError, absent, missing_files_error, reading

CATEGORIES = ("bedroom", "bridge", "church_outdoor", "classroom", "conference_room", "dining_room", "kitchen",
              "living_room", "restaurant", "tower")
_PARTS = {"train": "train", "test": "val"}  # dadf part -> LSUN split


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


def _read_lmdb(folder: Path, resolution: int, limit: int | None) -> list[np.ndarray]:
    lmdb = _open_lmdb()
    images = []
    with reading(folder):
        env = lmdb.open(str(folder), readonly=True, lock=False, readahead=False, meminit=False, subdir=True)
        try:
            with env.begin(write=False) as txn:
                for key, blob in txn.cursor():
                    if limit is not None and len(images) >= limit:
                        break
                    with reading(f"{folder} key {key.decode(errors='replace')}"):
                        image = Image.open(io.BytesIO(blob))
                        image.load()
                    images.append(square(image, resolution))
        finally:
            env.close()
    return images


@register("lsun", classes=lambda categories, **_: _check_categories(categories), parts=("train", "test"))
def load_lsun(root: Path, download: bool, *, categories: list | tuple = ("bedroom", "conference_room"),
              resolution: int = 64, max_per_category: int | None = None) -> Source:
    """`max_per_category`: the first N images (key order) of each category and split; null = all of them
    (bedroom's train split alone is ~3 M images, ~37 GB at 64×64)."""
    categories = _check_categories(categories)
    folders = {(c, s): lmdb_folder(root, c, s) for c in categories for s in _PARTS.values()}
    missing = absent(folders.values())
    if missing:
        raise missing_files_error("lsun", root / "lsun", missing, downloadable=False)
    if max_per_category is not None and max_per_category < 1:
        raise DataError(f"lsun: max_per_category={max_per_category} must be >= 1, or null for every image")
    parts = {}
    for part, split in _PARTS.items():
        rows = [_read_lmdb(folders[c, split], resolution, max_per_category) for c in categories]
        y = np.concatenate([np.full(len(r), k, dtype=np.int64) for k, r in enumerate(rows)])
        images = [image for r in rows for image in r]  # one copy into the array, not one per category as well
        x = np.stack(images) if images else np.empty((0, 3, resolution, resolution), np.uint8)
        parts[part] = (x, y)
    meta = {"categories": list(categories), "resolution": resolution, "max_per_category": max_per_category}
    return Source("lsun", IMAGE, parts, categories, meta)
