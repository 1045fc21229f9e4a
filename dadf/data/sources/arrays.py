"""`image_arrays`: images and labels saved as arrays in one .npz file, in whichever common layout they come:

- one part: `x`/`y` or `images`/`labels` (or the keys `params.images`/`params.labels` name) -> part "test";
- two parts: `train_images`/`train_labels` and `test_images`/`test_labels` (MedMNIST's), or `x_train`/`y_train` and
  `x_test`/`y_test` (Keras's) -> parts "train" and "test" (a `val_*` part is not read).

Images may be (N, H, W) grey, (N, H, W, C) or (N, C, H, W) with C = 1 or 3, uint8 or floats in [0, 1]; the classes
are the distinct labels (sorted), or `params.classes` names them when the labels are 0..K-1.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..types import IMAGE, Source
from . import register
from .files import DataError, missing_files_error, reading, resolve

_ONE_PART = (("x", "y"), ("images", "labels"))
_TWO_PARTS = {"train": (("train_images", "train_labels"), ("x_train", "y_train")),
              "test": (("test_images", "test_labels"), ("x_test", "y_test"))}


def _keys(file: Path, keys: list[str], images: str | None, labels: str | None) -> dict[str, tuple[str, str]]:
    """{part: (images key, labels key)} of the file's layout, or an error listing the keys it has."""
    if images is not None or labels is not None:
        pair = (images or "x", labels or "y")
        missing = [k for k in pair if k not in keys]
        if missing:
            raise DataError(f"image_arrays: {file} has no array(s) {missing} (dataset.params.images / labels); "
                            f"its arrays: {keys}")
        return {"test": pair}
    for pair in _ONE_PART:
        if all(k in keys for k in pair):
            return {"test": pair}
    found = {part: next((p for p in pairs if all(k in keys for k in p)), None) for part, pairs in _TWO_PARTS.items()}
    if any(found.values()):
        return {part: pair for part, pair in found.items() if pair is not None}
    raise DataError(f"image_arrays: {file} holds arrays {keys}, none of the layouts read: x/y or images/labels (one "
                    "part), train_images/train_labels + test_images/test_labels or x_train/y_train + x_test/y_test; "
                    "name yours with dataset.params.images=<key> dataset.params.labels=<key>")


def _npz_parts(root: Path, *, path: str, images: str | None, labels: str | None, **_) -> tuple[str, ...] | None:
    """The parts, from the names of the file's arrays (the zip's directory: nothing is decompressed)."""
    file = resolve(root, path)
    try:
        with np.load(file, allow_pickle=False) as npz:
            return tuple(_keys(file, list(npz.files), images, labels))
    except (OSError, ValueError):  # absent or unreadable: loading it says what is wrong
        return None


def to_nchw_uint8(x: np.ndarray, what: str, channels_last: bool | None = None) -> np.ndarray:
    """Images as uint8 (N, C, H, W) from (N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3}; `channels_last`
    decides where the layout alone cannot ((N, 3, 5, 3))."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        first, last = x.shape[1] in (1, 3), x.shape[3] in (1, 3)
        if channels_last is None and first == last:
            raise DataError(f"{what}: images of shape {x.shape[1:]} could be channels first or last; set "
                            "dataset.params.channels_last=true (N, H, W, C) or false (N, C, H, W)")
        if channels_last if channels_last is not None else last:
            x = x.transpose(0, 3, 1, 2)
        if x.shape[1] not in (1, 3):
            raise DataError(f"{what}: images have {x.shape[1]} channels; dadf reads 1 (grey) or 3 (RGB)")
    else:
        raise DataError(f"{what}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W); got shape {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype == np.bool_:
        return np.ascontiguousarray(x.astype(np.uint8) * 255)
    if not np.issubdtype(x.dtype, np.number) or len(x) == 0:
        raise DataError(f"{what}: images must be numbers, got dtype {x.dtype}")
    low, high = float(x.min()), float(x.max())
    if np.issubdtype(x.dtype, np.floating) and 0.0 <= low and high <= 1.0:
        x = x * 255.0  # floats in [0, 1]
    elif not (0 <= low and high <= 255):
        raise DataError(f"{what}: pixel values span {low}..{high}; save uint8 0..255 or floats in [0, 1]")
    return np.ascontiguousarray(np.rint(x).astype(np.uint8))


def _classes(labels: dict[str, np.ndarray], names: list[str] | None, what: str):
    """(class names, {part: class index per row})."""
    every = np.concatenate([y.ravel() for y in labels.values()])
    if names is not None:
        if not np.issubdtype(every.dtype, np.integer) or every.min() < 0 or every.max() >= len(names):
            raise DataError(f"{what}: dataset.params.classes names {len(names)} classes, so the labels must be "
                            f"integers 0..{len(names) - 1}; they hold {np.unique(every)[:10].tolist()}")
        return tuple(str(n) for n in names), {p: y.ravel().astype(np.int64) for p, y in labels.items()}
    values = np.unique(every)  # numbers in numeric order, strings in text order
    index = {p: np.searchsorted(values, y.ravel()).astype(np.int64) for p, y in labels.items()}
    return tuple(str(v) for v in values.tolist()), index


@register("image_arrays", parts=_npz_parts,
          generic="<root>/<params.path>: a .npz of images and labels (x/y, images/labels, or train_/test_ pairs); "
                  "classes from the labels")
def load_image_arrays(root: Path, download: bool, *, path: str, images: str | None = None, labels: str | None = None,
                      classes: list[str] | None = None, channels_last: bool | None = None) -> Source:
    file = resolve(root, path)
    if not file.is_file():
        raise missing_files_error("image_arrays", file.parent, [file], downloadable=False)
    with reading(file), np.load(file, allow_pickle=False) as npz:
        layout = _keys(file, list(npz.files), images, labels)
        arrays = {part: (npz[xk], npz[yk]) for part, (xk, yk) in layout.items()}
    parts_x = {}
    for part, (x, y) in arrays.items():
        what = f"image_arrays {file} ({layout[part][0]})"
        if len(x) != y.size:
            raise DataError(f"{what}: {len(x)} images but {y.size} labels ({layout[part][1]})")
        parts_x[part] = to_nchw_uint8(x, what, channels_last)
    shapes = {x.shape[1:] for x in parts_x.values()}
    if len(shapes) > 1:
        raise DataError(f"image_arrays {file}: the parts' images differ in shape {sorted(shapes)}")
    names, ys = _classes({p: y for p, (_, y) in arrays.items()}, classes, f"image_arrays {file}")
    parts = {part: (parts_x[part], ys[part]) for part in arrays}
    meta = {"file": str(file), "keys": {p: list(k) for p, k in layout.items()}}
    return Source(file.stem, IMAGE, parts, names, meta)
