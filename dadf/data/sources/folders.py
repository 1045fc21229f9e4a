"""Images in folders and archives: `image_folder` (a <part>/<class>/ tree, or a tar of one), `cifar10_jpg` (the
JPEG tar of CIFAR-10's test set) and `omniglot` (zips of PNGs)."""
from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..types import IMAGE, Source
from . import register
from .classes import CIFAR10, OMNIGLOT_ALPHABETS
from .files import DataError, absent, missing_files_error, reading, resolve

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _decode_images(blobs: list[bytes], names: list[str], what: str) -> np.ndarray:
    """Decode encoded images of one size into uint8 (N, C, H, W): grey if every image is grey, else RGB.
    `names` (file or archive member of each blob) name a blob that does not decode."""
    images = []
    for blob, name in zip(blobs, names):
        with reading(name):
            image = Image.open(io.BytesIO(blob))
            image.load()  # decode now, where a truncated image is still known by its name
        images.append(image)
    grey = all(im.mode in ("1", "L", "LA") for im in images)
    sizes = {im.size for im in images}
    if len(sizes) > 1:
        raise DataError(f"{what}: images have different sizes {sorted(sizes)[:5]}; resize them to one size first")
    mode = "L" if grey else "RGB"
    arrays = [np.asarray(im.convert(mode)) for im in images]
    x = np.stack(arrays)
    return x[:, None] if grey else x.transpose(0, 3, 1, 2)


def _declared_index(names: Sequence[str], classes: tuple[str, ...], what: str) -> np.ndarray:
    """Each of `names` (class names found in the files) as an index into the source's declared `classes`."""
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise DataError(f"{what}: classes {unknown} are not among this source's {len(classes)} classes "
                        f"({', '.join(classes)}); these files are not the dataset it reads")
    return np.array([index[n] for n in names], dtype=np.int64)


# ---------------------------------------------------------------- image folders and tars


def _folder_entries(path: Path) -> Iterator[tuple[str, str, str, bytes]]:
    for file in path.glob("*/*/*"):
        if file.is_file() and file.suffix.lower() in _IMAGE_SUFFIXES and not file.name.startswith("."):
            yield file.parent.parent.name, file.parent.name, file.name, file.read_bytes()


def _tar_entries(path: Path) -> Iterator[tuple[str, str, str, bytes]]:
    # Sequential iteration reads a compressed tar in one pass, without extracting anything to disk.
    with reading(path), tarfile.open(path, "r:*") as archive:
        for member in archive:
            names = Path(member.name).parts
            names = names[1:] if names and names[0] == "." else names
            if (
                member.isfile()
                and len(names) == 3
                and Path(names[2]).suffix.lower() in _IMAGE_SUFFIXES
                and not names[2].startswith(".")
            ):
                yield names[0], names[1], names[2], archive.extractfile(member).read()


def _read_image_folder(path: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[str, ...]]:
    if path.is_dir():
        entries = list(_folder_entries(path))
    elif path.is_file() and (path.name.endswith(".tar") or path.name.endswith(".tar.gz") or path.suffix == ".tgz"):
        entries = list(_tar_entries(path))
    else:
        raise DataError(
            f"image_folder: {path} is neither a folder nor a .tar/.tar.gz file; "
            "give dataset.params.path as <path>/<part>/<class>/*.png|jpg or a tar of that layout"
        )
    if not entries:
        raise DataError(f"image_folder: no images found in {path}; expected the layout <part>/<class>/*.png|jpg|jpeg")
    entries.sort(key=lambda e: e[:3])  # part, class, file name: the same order for a folder and its tar
    classes = tuple(sorted({cls for _, cls, _, _ in entries}))
    parts = {}
    for part in sorted({p for p, _, _, _ in entries}):
        rows = [(cls, file, blob) for p, cls, file, blob in entries if p == part]
        names = [f"{path}/{part}/{cls}/{file}" for cls, file, _ in rows]
        x = _decode_images([blob for _, _, blob in rows], names, f"image_folder {path}")
        y = np.searchsorted(classes, [cls for cls, _, _ in rows]).astype(np.int64)
        parts[part] = (x, y)
    return parts, classes


def _image_folder_source(name: str, path: Path) -> Source:
    parts, classes = _read_image_folder(path)
    return Source(name, IMAGE, parts, classes, {"path": str(path)})


def _folder_parts(root: Path, *, path: str) -> tuple[str, ...] | None:
    """The parts of an image folder from its sub-folder names (a tar's would need reading it whole: None)."""
    folder = resolve(root, path)
    if not folder.is_dir():
        return None
    return tuple(sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))) or None


@register("image_folder", parts=_folder_parts,
          generic="<root>/<params.path>/<part>/<class>/*.png|jpg (or a .tar/.tar.gz of that tree); classes from the "
                  "folder names")
def load_image_folder(root: Path, download: bool, *, path: str) -> Source:
    return _image_folder_source("image_folder", resolve(root, path))


# split_test: halved into train/test by default, since it ships only the test part.
@register("cifar10_jpg", classes=CIFAR10, parts=("test",), split_test=True)
def load_cifar10_jpg(root: Path, download: bool) -> Source:
    """CIFAR-10's test set re-encoded as JPEG."""
    path = root / "cifar10-jpg" / "cifar10_test_jpg.tar.gz"
    if not path.is_file():
        raise missing_files_error("cifar10_jpg", path.parent, [path], downloadable=False)
    src = _image_folder_source("cifar10_jpg", path)
    as_cifar = _declared_index(src.classes, CIFAR10, f"cifar10_jpg {path}")  # folder class index -> CIFAR-10's
    parts = {part: (x, as_cifar[y]) for part, (x, y) in src.parts.items()}
    return Source(src.name, src.kind, parts, CIFAR10, src.meta)


# ---------------------------------------------------------------- omniglot (zips of PNGs)


@register("omniglot", default_size=28, classes=OMNIGLOT_ALPHABETS, parts=("test",))
def load_omniglot(root: Path, download: bool, *, invert: bool = True) -> Source:
    """Omniglot's background "small" sets as one OOD part "test"; the class is the alphabet."""
    folder = root / "omniglot"
    zips = [folder / "images_background_small1.zip", folder / "images_background_small2.zip"]
    missing = absent(zips)
    if missing:
        raise missing_files_error("omniglot", folder, missing, downloadable=False)
    alphabets, blobs, names = [], [], []
    for path in zips:
        with reading(path), zipfile.ZipFile(path) as archive:
            for member in sorted(n for n in archive.namelist() if n.lower().endswith(".png")):
                alphabets.append(member.split("/")[-3])  # <set>/<alphabet>/<character>/<file>.png
                blobs.append(archive.read(member))
                names.append(f"{path}/{member}")
    y = _declared_index(alphabets, OMNIGLOT_ALPHABETS, f"omniglot {folder}")
    x = _decode_images(blobs, names, "omniglot")
    if invert:
        # Omniglot draws black strokes on white; MNIST-like data has bright strokes on black, which is what an
        # MNIST/FMNIST-trained model expects of an OOD set.
        x = 255 - x
    meta = {"inverted": invert, "files": [str(z) for z in zips]}
    return Source("omniglot", IMAGE, {"test": (x, y)}, OMNIGLOT_ALPHABETS, meta)
