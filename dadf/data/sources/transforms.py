"""The image transforms every image source shares: channel conversion (grey <-> RGB) and resizing."""
from __future__ import annotations

import numpy as np
from PIL import Image

from .files import DataError


def transform_images(x: np.ndarray, size: int | None, channels: int | None) -> np.ndarray:
    """Convert channels and resize a uint8 (N, C, H, W) batch; grey is made before resizing, RGB after (cheaper)."""
    if channels is not None and channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    if channels == 1:
        x = to_grey(x)
    if size is not None:
        x = resize(x, size)
    if channels == 3:
        x = to_rgb(x)
    return x


def to_grey(x: np.ndarray) -> np.ndarray:
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise DataError(f"cannot convert {x.shape[1]}-channel images to grey; only 3-channel RGB is supported")
    # ITU-R 601 luma, the weights PIL uses for RGB -> "L".
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    grey = np.tensordot(weights, x.astype(np.float32), axes=([0], [1]))
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)[:, None]


def to_rgb(x: np.ndarray) -> np.ndarray:
    if x.shape[1] == 3:
        return x
    if x.shape[1] != 1:
        raise DataError(f"cannot convert {x.shape[1]}-channel images to RGB; only 1-channel grey is supported")
    return np.repeat(x, 3, axis=1)


def resize(x: np.ndarray, size: int) -> np.ndarray:
    """Resize each channel with PIL's bilinear filter, which widens its support when shrinking (antialiased)."""
    if size < 1:
        raise DataError(f"size must be a positive number of pixels, got {size}")
    n, c, h, w = x.shape
    if (h, w) == (size, size):
        return x
    out = np.empty((n, c, size, size), dtype=np.uint8)
    for i in range(n):
        for j in range(c):
            out[i, j] = np.asarray(Image.fromarray(x[i, j]).resize((size, size), Image.Resampling.BILINEAR))
    return out
