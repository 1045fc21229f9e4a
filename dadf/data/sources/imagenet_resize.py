"""ImageNet (resize), the OOD set the ODIN authors published: 10,000 images from ImageNet's test set downscaled to
32×32 (JPEG), as a folder `<root>/Imagenet_resize/` or that folder as `<root>/Imagenet_resize.tar.gz` (or .tar).
Images are read at any depth (the published archive nests them in `Imagenet_resize/Imagenet_resize/`), in path
order. An OOD set: one class, one part ("test")."""
from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np

from ..types import IMAGE, Source
from . import register
from .files import DataError, missing_files_error, reading
from .folders import _IMAGE_SUFFIXES, _decode_images

CLASSES = ("imagenet_resize",)
FOLDER = "Imagenet_resize"
ARCHIVES = ("Imagenet_resize.tar.gz", "Imagenet_resize.tar")


def _is_image(name: str) -> bool:
    leaf = Path(name).name
    return Path(leaf).suffix.lower() in _IMAGE_SUFFIXES and not leaf.startswith(".")


def _from_folder(folder: Path) -> list[tuple[str, bytes]]:
    files = [f for f in folder.rglob("*") if f.is_file() and _is_image(f.name)]
    return [(str(f.relative_to(folder)), f.read_bytes()) for f in files]


def _from_tar(path: Path) -> list[tuple[str, bytes]]:
    with reading(path), tarfile.open(path, "r:*") as archive:  # one sequential pass, nothing extracted to disk
        return [(m.name, archive.extractfile(m).read()) for m in archive if m.isfile() and _is_image(m.name)]


@register("imagenet_resize", classes=CLASSES, parts=("test",))
def load_imagenet_resize(root: Path, download: bool) -> Source:
    folder = root / FOLDER
    archives = [root / a for a in ARCHIVES]
    if folder.is_dir():
        where, entries = folder, _from_folder(folder)
    else:
        where = next((a for a in archives if a.is_file()), None)
        if where is None:
            error = missing_files_error("imagenet_resize", root, [folder], downloadable=False)
            raise DataError(f"{error} The folder may also be there as {' or '.join(ARCHIVES)}.")
        entries = _from_tar(where)
    if not entries:
        raise DataError(f"imagenet_resize: no .jpg/.jpeg/.png images in {where}; expected ODIN's Imagenet_resize "
                        "folder (10,000 32×32 JPEGs) or its archive")
    entries.sort()  # path order: the same rows from the folder and from its tar
    x = _decode_images([blob for _, blob in entries], [f"{where}/{name}" for name, _ in entries],
                       f"imagenet_resize {where}")
    return Source("imagenet_resize", IMAGE, {"test": (x, np.zeros(len(x), dtype=np.int64))}, CLASSES,
                  {"path": str(where)})
