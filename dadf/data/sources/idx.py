"""MNIST's idx format: the reader, folders of `train-*`/`t10k-*` files, and the sources `idx` (any such folder) and
`notmnist`. MNIST and Fashion-MNIST read their idx files here too (torchvision_datasets.py)."""
from __future__ import annotations

import gzip
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..types import IMAGE, Source
from . import register
from .classes import LETTERS_A_TO_J, numbered
from .files import DataError, corrupt_file_error, missing_files_error, reading, resolve

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_PARTS = {"train": "train", "t10k": "test"}  # file prefix -> part


def read_idx(path: str | Path, *, downloadable: bool = False) -> np.ndarray:
    """Read one idx file (plain or .gz) into a native-endian array; `downloadable`: whether the error for a bad
    file may suggest dataset.download=true."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with reading(path, downloadable), opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise corrupt_file_error(path, "not an idx file: bad magic number", downloadable)
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise corrupt_file_error(path, f"the header stops at byte {len(data)}", downloadable)
    dims = struct.unpack(f">{ndim}I", data[4:header])
    count = int(np.prod(dims))
    if len(data) - header != count * dtype.itemsize:
        raise corrupt_file_error(path, f"header says {dims}, payload has {len(data) - header} bytes", downloadable)
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_stems(prefix: str) -> tuple[str, str]:
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx_folder(
    name: str, folder: Path, prefixes: Iterable[str], downloadable: bool
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The parts of an MNIST-format folder (`train-*` -> "train", `t10k-*` -> "test") for `prefixes`; an absent
    file (plain or .gz) is an error that names every absent one."""
    files = {stem: _idx_file(folder, stem) for prefix in prefixes for stem in _idx_stems(prefix)}
    missing = [folder / f"{stem}.gz" for stem, path in files.items() if path is None]
    if missing:
        raise missing_files_error(name, folder, missing, downloadable)
    parts = {}
    for prefix in prefixes:
        images, labels = (files[stem] for stem in _idx_stems(prefix))
        x = read_idx(images, downloadable=downloadable)
        y = read_idx(labels, downloadable=downloadable).astype(np.int64)
        if len(x) != len(y):
            raise DataError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels; one of them is "
                            "corrupt or from another dataset: copy intact ones there")
        parts[IDX_PARTS[prefix]] = (np.ascontiguousarray(x[:, None] if x.ndim == 3 else x, dtype=np.uint8), y)
    return parts


def present_prefixes(folder: Path) -> list[str]:
    """The prefixes (train, t10k) with at least one of their files in `folder`; all of them when none has one."""
    return [p for p in IDX_PARTS if any(_idx_file(folder, s) for s in _idx_stems(p))] or list(IDX_PARTS)


def present_parts(folder: Path) -> tuple[str, ...]:
    """The parts an idx folder gives, from its file names alone."""
    return tuple(IDX_PARTS[p] for p in present_prefixes(folder))


def _idx_source(name: str, folder: Path, classes: Iterable[str] | None, prefixes: Iterable[str] | None) -> Source:
    """`prefixes` None: whichever parts have a file in the folder (all are expected when none has)."""
    if prefixes is None:
        prefixes = present_prefixes(folder)
    parts = read_idx_folder(name, folder, prefixes, downloadable=False)
    n_labels = max(int(y.max()) for _, y in parts.values()) + 1
    classes = tuple(classes) if classes is not None else numbered(n_labels)
    if len(classes) < n_labels:
        raise DataError(f"{name}: labels go up to {n_labels - 1} but only {len(classes)} class names were given")
    return Source(name, IMAGE, parts, classes, {"folder": str(folder)})


@register("idx", parts=lambda root, *, path, **_: present_parts(resolve(root, path)),
          generic="<root>/<params.path>/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (MNIST's format, either "
                  "part alone too); classes numbered from the labels, or params.classes")
def load_idx(root: Path, download: bool, *, path: str, classes: list[str] | None = None) -> Source:
    return _idx_source("idx", resolve(root, path), classes, prefixes=None)


@register("notmnist", classes=LETTERS_A_TO_J, parts=("test",))
def load_notmnist(root: Path, download: bool) -> Source:
    # Ships only the t10k files, so the source has the single part "test".
    return _idx_source("notmnist", root / "notMNIST" / "raw", LETTERS_A_TO_J, prefixes=["t10k"])
