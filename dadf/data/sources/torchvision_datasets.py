"""torchvision's datasets, whose classes are fixed: MNIST, Fashion-MNIST and KMNIST (idx files read here, torchvision
only downloads them), CIFAR-10, CIFAR-100 and SVHN (arrays taken from torchvision's dataset objects)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..types import IMAGE, Source
from . import register
from .classes import CIFAR10, CIFAR100, DIGITS, FASHION, KMNIST
from .files import DataError, absent, missing_files_error
from .idx import IDX_PARTS, present_parts, present_prefixes, read_idx_folder

_TRAIN_TEST = ("train", "test")


def _register_idx_download(name: str, dataset_cls: str, folder_name: str, classes: tuple[str, ...],
                           either_part: bool = False) -> None:
    """MNIST-like: read the idx files ourselves (torchvision would unpack into root); torchvision only downloads.
    `either_part`: the files of one part alone (a published test set) load as a one-part source."""

    def parts_of(root: Path) -> tuple[str, ...]:
        return present_parts(root / folder_name / "raw") if either_part else _TRAIN_TEST

    @register(name, classes=classes, parts=parts_of)
    def load(root: Path, download: bool) -> Source:
        folder = root / folder_name / "raw"
        prefixes = present_prefixes(folder) if either_part and not download else IDX_PARTS
        try:
            parts = read_idx_folder(name, folder, prefixes, downloadable=True)
        except DataError:  # files missing or corrupt: torchvision downloads those whose checksum is not right
            if not download:
                raise
            import torchvision.datasets

            getattr(torchvision.datasets, dataset_cls)(str(root), train=True, download=True)
            parts = read_idx_folder(name, folder, IDX_PARTS, downloadable=True)
        return Source(name, IMAGE, parts, classes, {"folder": str(folder)})


_register_idx_download("mnist", "MNIST", "MNIST", DIGITS)
_register_idx_download("fmnist", "FashionMNIST", "FashionMNIST", FASHION)
_register_idx_download("kmnist", "KMNIST", "KMNIST", KMNIST, either_part=True)


_TRAIN_FLAG = {"train": {"train": True}, "test": {"train": False}}


def _torchvision_source(
    name: str,
    root: Path,
    download: bool,
    expected: list[Path],
    dataset: str,
    splits: dict[str, dict],
    *,
    channels_last: bool,
    classes: tuple[str, ...],
) -> Source:
    """Build each part as `torchvision.datasets.<dataset>(root, **splits[part])` and take its arrays directly;
    the class names are torchvision's where it has them, else `classes`.

    The files are checked first so that a missing dataset gives our error (and torchvision is imported only then).
    """
    missing = absent(expected)
    if missing and not download:
        raise missing_files_error(name, root, missing, downloadable=True)
    import torchvision.datasets

    make = getattr(torchvision.datasets, dataset)
    try:
        datasets = {part: make(str(root), download=download, **kwargs) for part, kwargs in splits.items()}
    except RuntimeError as err:  # torchvision's "Dataset not found or corrupted" / failed download
        if missing:  # it was asked to download them
            raise DataError(f"{name}: torchvision could not download it into {root}: {err}") from err
        files = "\n  ".join(str(p) for p in expected)
        raise DataError(
            f"{name}: torchvision could not load it from {root} ({err}): one of these files is corrupt or "
            f"truncated:\n  {files}\nTo fix: set dataset.download=true, which downloads again the files whose "
            "checksum is wrong, or copy intact copies there."
        ) from err
    parts = {}
    for part, ds in datasets.items():
        x = np.asarray(ds.data, dtype=np.uint8)
        x = x.transpose(0, 3, 1, 2) if channels_last else x
        labels = ds.labels if hasattr(ds, "labels") else ds.targets
        parts[part] = (np.ascontiguousarray(x), np.asarray(labels, dtype=np.int64))
    classes = tuple(getattr(datasets["train"], "classes", None) or classes)
    return Source(name, IMAGE, parts, classes, {})


@register("cifar10", classes=CIFAR10, parts=_TRAIN_TEST)
def load_cifar10(root: Path, download: bool) -> Source:
    folder = root / "cifar-10-batches-py"
    expected = [folder / f"data_batch_{i}" for i in range(1, 6)] + [folder / "test_batch"]
    return _torchvision_source("cifar10", root, download, expected, "CIFAR10", _TRAIN_FLAG, channels_last=True,
                               classes=CIFAR10)


@register("cifar100", classes=CIFAR100, parts=_TRAIN_TEST)
def load_cifar100(root: Path, download: bool) -> Source:
    folder = root / "cifar-100-python"
    expected = [folder / "train", folder / "test", folder / "meta"]
    return _torchvision_source("cifar100", root, download, expected, "CIFAR100", _TRAIN_FLAG, channels_last=True,
                               classes=CIFAR100)


@register("svhn", classes=DIGITS, parts=_TRAIN_TEST)
def load_svhn(root: Path, download: bool) -> Source:
    # torchvision already maps SVHN's label 10 (digit 0) to 0 and stores the images NCHW (CIFAR's are NHWC).
    expected = [root / "train_32x32.mat", root / "test_32x32.mat"]
    splits = {"train": {"split": "train"}, "test": {"split": "test"}}
    return _torchvision_source("svhn", root, download, expected, "SVHN", splits, channels_last=False, classes=DIGITS)
