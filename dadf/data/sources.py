"""A registry of datasets, each loaded into a `Source` of numpy arrays.

`load_source(name, root, ...)` is the one entry point: it validates the parameters against the loader's
signature, calls the loader, then applies the image transforms every image source shares (`size`, `channels`).
Loaders never write into `root` unless `download=True` (the shared data folder is read-only).

Relative `path` parameters (`idx`, `image_folder`) are taken relative to `root`.
"""
from __future__ import annotations

import contextlib
import gzip
import inspect
import io
import struct
import tarfile
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from .types import IMAGE, TABULAR, Source


class DataError(ValueError):
    """A dataset cannot be loaded as asked; the message says what is wrong and how to fix it."""


SOURCES: dict[str, Callable[..., Source]] = {}
_DEFAULT_SIZE: dict[str, int] = {}  # sources whose native resolution is not what experiments use

# The shared, read-only data folder sits next to the repository: <repo>/../shared/data.
DEFAULT_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data"

TABULAR_CLASSES = ("inlier", "outlier")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def register(name: str, *, default_size: int | None = None):
    """Register a loader `fn(root: Path, download: bool, *, params...) -> Source` under `name`."""

    def wrap(fn: Callable[..., Source]) -> Callable[..., Source]:
        if name in SOURCES:
            raise ValueError(f"source {name!r} is registered twice")
        SOURCES[name] = fn
        if default_size is not None:
            _DEFAULT_SIZE[name] = default_size
        return fn

    return wrap


def list_sources() -> list[str]:
    return sorted(SOURCES)


def load_source(
    name: str,
    /,
    root: str | Path | None = None,
    *,
    download: bool = False,
    size: int | None = None,
    channels: int | None = None,
    **params,
) -> Source:
    """Load dataset `name` from `root` (default: the shared data folder) as a `Source`.

    `size` resizes images to size×size (bilinear, antialiased); `channels` converts 1<->3 channels.
    Both apply to image sources only. Extra keyword `params` go to the loader (`name` is positional-only so that
    a loader may take a `name` parameter, as `odds` does).
    """
    if name not in SOURCES:
        raise DataError(f"unknown data source {name!r}; valid names: {', '.join(list_sources())}")
    loader = SOURCES[name]
    _check_params(name, loader, params)
    root = Path(root) if root is not None else DEFAULT_ROOT
    src = loader(root, download, **params)
    meta = {"root": str(root), **src.meta}
    if src.kind == TABULAR:
        if size is not None or channels is not None:
            raise DataError(
                f"{name} is a tabular source: size/channels apply to images only; "
                "remove dataset.size and dataset.channels"
            )
        meta.update(size=None, channels=None)
        return Source(src.name, src.kind, src.parts, src.classes, meta)
    size = size if size is not None else _DEFAULT_SIZE.get(name)
    meta.update(original_shape=src.sample_shape, size=size, channels=channels)
    parts = {part: (transform_images(x, size, channels), y) for part, (x, y) in src.parts.items()}
    return Source(src.name, src.kind, parts, src.classes, meta)


def _check_params(name: str, loader: Callable, params: dict) -> None:
    """Loaders declare their parameters keyword-only; anything else is a typo worth a clear error."""
    declared = [p for p in inspect.signature(loader).parameters.values() if p.kind == p.KEYWORD_ONLY]
    valid = [p.name for p in declared]
    required = [p.name for p in declared if p.default is p.empty]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise DataError(
            f"source {name!r} got unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(valid) or '(none)'}"
        )
    missing = [p for p in required if p not in params]
    if missing:
        raise DataError(f"source {name!r} needs parameter(s) {', '.join(missing)}")


# ---------------------------------------------------------------- image transforms (shared by all image sources)


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


# ---------------------------------------------------------------- helpers


def _missing_files_error(source: str, folder: Path, missing: Iterable[Path], downloadable: bool) -> DataError:
    """`missing`: every expected file that is absent, so that one error shows all there is to copy."""
    listing = "\n  ".join(str(p) for p in missing)
    elsewhere = "point dataset.root at a folder that holds them"
    fix = (
        f"set dataset.download=true to download them there, or {elsewhere}"
        if downloadable
        else f"dadf cannot download this dataset: copy the files there, or {elsewhere}"
    )
    return DataError(f"{source}: data not found in {folder}. Missing files:\n  {listing}\nTo fix: {fix}.")


def _absent(paths: Iterable[Path]) -> list[Path]:
    return [p for p in paths if not p.exists()]


def _corrupt_file_error(path: Path | str, problem: str, downloadable: bool) -> DataError:
    fix = (
        "delete it and set dataset.download=true to download it again, or copy an intact copy there"
        if downloadable
        else "copy an intact copy of it there (dadf cannot download this dataset)"
    )
    return DataError(f"{path} is corrupt or truncated ({problem}). To fix: {fix}.")


@contextlib.contextmanager
def _reading(path: Path | str, downloadable: bool = False):
    """Name the file when a decoder fails on it: gzip, zlib, zipfile, tarfile, PIL and scipy raise bare EOFError,
    zlib.error, BadGzipFile, IndexError... that say neither which file it was nor that the file is damaged."""
    try:
        yield
    except (DataError, FileNotFoundError, PermissionError):
        raise  # already say what is wrong and name the file
    except Exception as exn:  # noqa: BLE001 -- whatever a decoder raises on this file means the file is bad
        module = type(exn).__module__.split(".")[0]  # "zlib.error" says more than "error"
        kind = type(exn).__name__ if module == "builtins" else f"{module}.{type(exn).__name__}"
        raise _corrupt_file_error(path, f"{kind}: {exn}", downloadable) from exn


def _resolve(root: Path, path: str | Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else root / path


def _split_stratified(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Halve every class with a seeded permutation: first half -> train, second half -> test (sorted indices)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        half = len(idx) // 2
        train.append(idx[:half])
        test.append(idx[half:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _decode_images(blobs: list[bytes], names: list[str], what: str) -> np.ndarray:
    """Decode encoded images of one size into uint8 (N, C, H, W): grey if every image is grey, else RGB.
    `names` (file or archive member of each blob) name a blob that does not decode."""
    images = []
    for blob, name in zip(blobs, names):
        with _reading(name):
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


# ---------------------------------------------------------------- idx (MNIST format)

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path, *, downloadable: bool = False) -> np.ndarray:
    """Read one idx file (plain or .gz) into a native-endian array; `downloadable`: whether the error for a bad
    file may suggest dataset.download=true."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with _reading(path, downloadable), opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise _corrupt_file_error(path, "not an idx file: bad magic number", downloadable)
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _corrupt_file_error(path, f"the header stops at byte {len(data)}", downloadable)
    dims = struct.unpack(f">{ndim}I", data[4:header])
    count = int(np.prod(dims))
    if len(data) - header != count * dtype.itemsize:
        raise _corrupt_file_error(path, f"header says {dims}, payload has {len(data) - header} bytes", downloadable)
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


_IDX_PARTS = {"train": "train", "t10k": "test"}


def _idx_stems(prefix: str) -> tuple[str, str]:
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx_folder(
    name: str, folder: Path, prefixes: Iterable[str], downloadable: bool
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The parts of an MNIST-format folder (`train-*` -> "train", `t10k-*` -> "test") for `prefixes`; an absent
    file (plain or .gz) is an error that names every absent one."""
    files = {stem: _idx_file(folder, stem) for prefix in prefixes for stem in _idx_stems(prefix)}
    missing = [folder / f"{stem}.gz" for stem, path in files.items() if path is None]
    if missing:
        raise _missing_files_error(name, folder, missing, downloadable)
    parts = {}
    for prefix in prefixes:
        images, labels = (files[stem] for stem in _idx_stems(prefix))
        x = read_idx(images, downloadable=downloadable)
        y = read_idx(labels, downloadable=downloadable).astype(np.int64)
        if len(x) != len(y):
            raise DataError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels; one of them is "
                            "corrupt or from another dataset: copy intact ones there")
        parts[_IDX_PARTS[prefix]] = (np.ascontiguousarray(x[:, None] if x.ndim == 3 else x, dtype=np.uint8), y)
    return parts


def _idx_source(name: str, folder: Path, classes: Iterable[str] | None, prefixes: Iterable[str] | None) -> Source:
    """`prefixes` None: whichever parts have a file in the folder (all are expected when none has)."""
    if prefixes is None:
        prefixes = [p for p in _IDX_PARTS if any(_idx_file(folder, s) for s in _idx_stems(p))] or list(_IDX_PARTS)
    parts = _read_idx_folder(name, folder, prefixes, downloadable=False)
    n_labels = max(int(y.max()) for _, y in parts.values()) + 1
    classes = tuple(classes) if classes is not None else tuple(str(i) for i in range(n_labels))
    if len(classes) < n_labels:
        raise DataError(f"{name}: labels go up to {n_labels - 1} but only {len(classes)} class names were given")
    return Source(name, IMAGE, parts, classes, {"folder": str(folder)})


@register("idx")
def load_idx(root: Path, download: bool, *, path: str, classes: list[str] | None = None) -> Source:
    return _idx_source("idx", _resolve(root, path), classes, prefixes=None)


@register("notmnist")
def load_notmnist(root: Path, download: bool) -> Source:
    # Ships only the t10k files, so the source has the single part "test".
    return _idx_source("notmnist", root / "notMNIST" / "raw", "ABCDEFGHIJ", prefixes=["t10k"])


def _torchvision_idx(name: str, dataset_cls: str, folder_name: str, classes: tuple[str, ...]):
    """MNIST-like: read the idx files ourselves (torchvision would unpack into root); torchvision only downloads."""

    def load(root: Path, download: bool) -> Source:
        folder = root / folder_name / "raw"
        try:
            parts = _read_idx_folder(name, folder, _IDX_PARTS, downloadable=True)
        except DataError:  # files missing or corrupt: torchvision downloads those whose checksum is not right
            if not download:
                raise
            import torchvision.datasets

            getattr(torchvision.datasets, dataset_cls)(str(root), train=True, download=True)
            parts = _read_idx_folder(name, folder, _IDX_PARTS, downloadable=True)
        return Source(name, IMAGE, parts, classes, {"folder": str(folder)})

    return load


register("mnist")(_torchvision_idx("mnist", "MNIST", "MNIST", tuple(str(i) for i in range(10))))
register("fmnist")(
    _torchvision_idx(
        "fmnist",
        "FashionMNIST",
        "FashionMNIST",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    )
)


# ---------------------------------------------------------------- other torchvision datasets


_TRAIN_FLAG = {"train": {"train": True}, "test": {"train": False}}


def _torchvision_source(
    name: str,
    root: Path,
    download: bool,
    expected: list[Path],
    dataset: str,
    splits: dict[str, dict],
    channels_last: bool,
) -> Source:
    """Build each part as `torchvision.datasets.<dataset>(root, **splits[part])` and take its arrays directly.

    The files are checked first so that a missing dataset gives our error (and torchvision is imported only then).
    """
    missing = _absent(expected)
    if missing and not download:
        raise _missing_files_error(name, root, missing, downloadable=True)
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
    classes = tuple(getattr(datasets["train"], "classes", None) or (str(i) for i in range(10)))
    return Source(name, IMAGE, parts, classes, {})


@register("cifar10")
def load_cifar10(root: Path, download: bool) -> Source:
    folder = root / "cifar-10-batches-py"
    expected = [folder / f"data_batch_{i}" for i in range(1, 6)] + [folder / "test_batch"]
    return _torchvision_source("cifar10", root, download, expected, "CIFAR10", _TRAIN_FLAG, channels_last=True)


@register("cifar100")
def load_cifar100(root: Path, download: bool) -> Source:
    folder = root / "cifar-100-python"
    expected = [folder / "train", folder / "test", folder / "meta"]
    return _torchvision_source("cifar100", root, download, expected, "CIFAR100", _TRAIN_FLAG, channels_last=True)


@register("svhn")
def load_svhn(root: Path, download: bool) -> Source:
    # torchvision already maps SVHN's label 10 (digit 0) to 0 and stores the images NCHW (CIFAR's are NHWC).
    expected = [root / "train_32x32.mat", root / "test_32x32.mat"]
    splits = {"train": {"split": "train"}, "test": {"split": "test"}}
    return _torchvision_source("svhn", root, download, expected, "SVHN", splits, channels_last=False)


# ---------------------------------------------------------------- omniglot (zips of PNGs)


@register("omniglot", default_size=28)
def load_omniglot(root: Path, download: bool, *, invert: bool = True) -> Source:
    """Omniglot's background "small" sets as one OOD part "test"; the class is the alphabet."""
    folder = root / "omniglot"
    zips = [folder / "images_background_small1.zip", folder / "images_background_small2.zip"]
    missing = _absent(zips)
    if missing:
        raise _missing_files_error("omniglot", folder, missing, downloadable=False)
    alphabets, blobs, names = [], [], []
    for path in zips:
        with _reading(path), zipfile.ZipFile(path) as archive:
            for member in sorted(n for n in archive.namelist() if n.lower().endswith(".png")):
                alphabets.append(member.split("/")[-3])  # <set>/<alphabet>/<character>/<file>.png
                blobs.append(archive.read(member))
                names.append(f"{path}/{member}")
    x = _decode_images(blobs, names, "omniglot")
    if invert:
        # Omniglot draws black strokes on white; MNIST-like data has bright strokes on black, which is what an
        # MNIST/FMNIST-trained model expects of an OOD set.
        x = 255 - x
    classes = tuple(sorted(set(alphabets)))
    y = np.searchsorted(classes, alphabets).astype(np.int64)
    return Source("omniglot", IMAGE, {"test": (x, y)}, classes, {"inverted": invert, "files": [str(z) for z in zips]})


# ---------------------------------------------------------------- image folders and tars


def _folder_entries(path: Path) -> Iterator[tuple[str, str, str, bytes]]:
    for file in path.glob("*/*/*"):
        if file.is_file() and file.suffix.lower() in _IMAGE_SUFFIXES and not file.name.startswith("."):
            yield file.parent.parent.name, file.parent.name, file.name, file.read_bytes()


def _tar_entries(path: Path) -> Iterator[tuple[str, str, str, bytes]]:
    # Sequential iteration reads a compressed tar in one pass, without extracting anything to disk.
    with _reading(path), tarfile.open(path, "r:*") as archive:
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
            "give dataset.path as <path>/<part>/<class>/*.png|jpg or a tar of that layout"
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


def _image_folder_source(name: str, path: Path, split_test: bool, seed: int = 0) -> Source:
    parts, classes = _read_image_folder(path)
    meta = {"path": str(path), "split_test": split_test}
    if split_test:
        if set(parts) != {"test"}:
            raise DataError(
                f"{name}: split_test=true halves a lone 'test' part, but {path} has parts {sorted(parts)}; "
                "set dataset.split_test=false"
            )
        x, y = parts["test"]
        train, test = _split_stratified(y, seed)
        parts = {"train": (x[train], y[train]), "test": (x[test], y[test])}
        meta["split"] = f"original test part halved per class (seeded permutation, seed {seed})"
    return Source(name, IMAGE, parts, classes, meta)


@register("image_folder")
def load_image_folder(root: Path, download: bool, *, path: str, split_test: bool = False) -> Source:
    return _image_folder_source("image_folder", _resolve(root, path), split_test)


@register("cifar10_jpg")
def load_cifar10_jpg(root: Path, download: bool, *, split_test: bool = True) -> Source:
    """CIFAR-10's test set re-encoded as JPEG; halved into train/test since it ships only the test part."""
    path = root / "cifar10-jpg" / "cifar10_test_jpg.tar.gz"
    if not path.is_file():
        raise _missing_files_error("cifar10_jpg", path.parent, [path], downloadable=False)
    return _image_folder_source("cifar10_jpg", path, split_test)


# ---------------------------------------------------------------- scikit-learn digits


@register("digits")
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
    return Source("digits", IMAGE, parts, tuple(str(i) for i in range(10)), meta)


# ---------------------------------------------------------------- tabular: ODDS .mat files


def _tabular_source(name: str, x: np.ndarray, y: np.ndarray, meta: dict) -> Source:
    y = np.asarray(y, dtype=np.int64).ravel()
    meta = {**meta, "n_outliers": int(y.sum()), "n_features": int(x.shape[1])}
    return Source(name, TABULAR, {"all": (np.asarray(x, dtype=np.float32), y)}, TABULAR_CLASSES, meta)


def _odds_source(source: str, root: Path, name: str) -> Source:
    from scipy.io import loadmat

    path = root / "odds" / f"{name}.mat"
    if not path.is_file():
        raise _missing_files_error(source, path.parent, [path], downloadable=False)
    with _reading(path):
        mat = loadmat(path)
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path} lacks the ODDS keys X and y (found {sorted(k for k in mat if not k.startswith('_'))})")
    return _tabular_source(source, mat["X"], mat["y"], {"file": str(path)})


@register("odds")
def load_odds(root: Path, download: bool, *, name: str) -> Source:
    return _odds_source("odds", root, name)


@register("thyroid")
def load_thyroid(root: Path, download: bool) -> Source:
    return _odds_source("thyroid", root, "thyroid")


@register("arrhythmia")
def load_arrhythmia(root: Path, download: bool) -> Source:
    return _odds_source("arrhythmia", root, "arrhythmia")


# ---------------------------------------------------------------- tabular: KDD Cup 99

KDD_COLUMNS = (
    "duration protocol_type service flag src_bytes dst_bytes land wrong_fragment urgent hot num_failed_logins "
    "logged_in num_compromised root_shell su_attempted num_root num_file_creations num_shells num_access_files "
    "num_outbound_cmds is_host_login is_guest_login count srv_count serror_rate srv_serror_rate rerror_rate "
    "srv_rerror_rate same_srv_rate diff_srv_rate srv_diff_host_rate dst_host_count dst_host_srv_count "
    "dst_host_same_srv_rate dst_host_diff_srv_rate dst_host_same_src_port_rate dst_host_srv_diff_host_rate "
    "dst_host_serror_rate dst_host_srv_serror_rate dst_host_rerror_rate dst_host_srv_rerror_rate"
).split()
# ALAD's preprocessing one-hots the symbolic columns and the binary flags: 121 features on the 10% file.
KDD_ONE_HOT = ("protocol_type", "service", "flag", "land", "logged_in", "is_host_login", "is_guest_login")


@register("kdd99")
def load_kdd99(root: Path, download: bool, *, file: str = "kddcup.data_10_percent.gz") -> Source:
    """KDD Cup 99 with "normal." traffic as the outlier class (the papers' convention, ~20% of the 10% file).

    One-hot categories are the sorted values seen in the loaded file, so `corrected.gz` may give a different width;
    continuous columns are min-max scaled to [0, 1] over the loaded file (constant columns become 0).
    """
    path = root / "kddcup99" / file
    if not path.is_file():
        raise _missing_files_error("kdd99", path.parent, [path], downloadable=False)
    one_hot_idx = [KDD_COLUMNS.index(c) for c in KDD_ONE_HOT]
    numeric_idx = [i for i in range(len(KDD_COLUMNS)) if i not in one_hot_idx]
    label_idx = len(KDD_COLUMNS)
    with _reading(path):
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            text = f.read()
        # numpy's C parser is several times faster than csv.reader on 494k rows.
        numeric = np.loadtxt(io.BytesIO(text), delimiter=",", usecols=numeric_idx, dtype=np.float64)
        # bytes, not str: numpy sizes the field itself and parses several times faster than into unicode.
        symbolic = np.loadtxt(io.BytesIO(text), delimiter=",", usecols=one_hot_idx + [label_idx], dtype=bytes)
    encoded = [np.unique(symbolic[:, j], return_inverse=True) for j in range(len(KDD_ONE_HOT))]
    # Continuous columns first, then each one-hot block; written straight into float32 to spare a 480 MB copy.
    x = np.zeros((len(numeric), numeric.shape[1] + sum(len(v) for v, _ in encoded)), dtype=np.float32)
    x[:, : numeric.shape[1]] = _min_max(numeric)
    names, categories = [KDD_COLUMNS[i] for i in numeric_idx], {}
    offset, rows = numeric.shape[1], np.arange(len(x))
    for column, (values, codes) in zip(KDD_ONE_HOT, encoded):
        x[rows, offset + codes] = 1.0
        offset += len(values)
        categories[column] = [v.decode() for v in values]
        names += [f"{column}={v}" for v in categories[column]]
    y = (symbolic[:, -1] == b"normal.").astype(np.int64)
    meta = {
        "file": str(path),
        "features": names,
        "categories": categories,
        "scaling": "continuous columns min-max scaled to [0, 1] over this file; one-hot columns are 0/1",
        "outlier_class": "normal.",
    }
    return _tabular_source("kdd99", x, y, meta)


def _min_max(x: np.ndarray) -> np.ndarray:
    low, span = x.min(axis=0), np.ptp(x, axis=0)
    return (x - low) / np.where(span > 0, span, 1.0)


# ---------------------------------------------------------------- synthetic (tests; no files)


@register("synthetic")
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
    return Source("synthetic", IMAGE, parts, tuple(str(i) for i in range(n_classes)), {"seed": seed})


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
    return _tabular_source("synthetic", x[order], y[order], {"seed": seed})
