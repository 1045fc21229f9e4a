"""COIL-100 from its image folder: `<root>/coil-100/obj<k>__<angle>.png`, 100 objects (k = 1..100) photographed
every 5 degrees (72 views each, 128×128 RGB). The class and the angle come from the file name; one part, "test"
(COIL-100 has no split: GPND's protocol pools it), rows ordered by object then angle."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..types import IMAGE, Source
from . import register
from .files import DataError, missing_files_error
from .folders import _decode_images

CLASSES = tuple(f"obj{k}" for k in range(1, 101))
_NAME = re.compile(r"obj(\d+)__(\d+)\.png", re.IGNORECASE)


def parse_name(name: str) -> tuple[int, int] | None:
    """(class index 0..99, angle in degrees) of a COIL-100 file name; None for any other file."""
    m = _NAME.fullmatch(name)
    return (int(m[1]) - 1, int(m[2])) if m else None


@register("coil100", classes=CLASSES, parts=("test",))
def load_coil100(root: Path, download: bool) -> Source:
    folder = root / "coil-100"
    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    found = [(parse_name(f.name), f) for f in files]
    found = [(key, f) for key, f in found if key is not None]
    if not found:
        raise missing_files_error("coil100", folder, [folder / "obj1__0.png", folder / "...",
                                                      folder / "obj100__355.png"], downloadable=False)
    bad = [f.name for (cls, angle), f in found if not (0 <= cls < len(CLASSES) and 0 <= angle < 360)]
    if bad:
        raise DataError(f"coil100: {bad[:5]} in {folder} name no COIL-100 view (obj1..obj100, angle 0..355)")
    found.sort(key=lambda e: e[0])
    x = _decode_images([f.read_bytes() for _, f in found], [str(f) for _, f in found], f"coil100 {folder}")
    y = np.array([cls for (cls, _), _ in found], dtype=np.int64)
    meta = {"folder": str(folder), "angles": sorted({angle for (_, angle), _ in found})}
    return Source("coil100", IMAGE, {"test": (x, y)}, CLASSES, meta)
