"""Behaviour of the dataset registry: shapes, determinism, transforms, errors, file formats, and the real data."""
from __future__ import annotations

import gzip
import io
import struct
import sys
import tarfile
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dadf.data import sources
from dadf.data.sources import DataError, list_sources, load_source, read_idx
from dadf.data.types import IMAGE, TABULAR

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def needs(*relative: str):
    """Skip unless every file exists under the shared data folder."""
    missing = [p for p in relative if not (DATA / p).exists()]
    return pytest.mark.skipif(bool(missing), reason=f"real data absent: {', '.join(str(DATA / p) for p in missing)}")


# ---------------------------------------------------------------- registry and parameters


def test_registry_lists_every_source():
    expected = {
        "mnist", "fmnist", "cifar10", "cifar100", "svhn", "idx", "notmnist", "omniglot", "image_folder",
        "cifar10_jpg", "odds", "thyroid", "arrhythmia", "kdd99", "digits", "synthetic",
    }  # fmt: skip
    assert expected <= set(list_sources())
    assert list_sources() == sorted(sources.SOURCES)


def test_unknown_source_lists_valid_names():
    with pytest.raises(DataError) as err:
        load_source("mnits")
    assert "mnits" in str(err.value)
    for name in ("mnist", "digits", "synthetic", "kdd99"):
        assert name in str(err.value)


def test_unknown_parameter_lists_valid_ones():
    with pytest.raises(DataError, match="n_classes") as err:
        load_source("synthetic", n_clases=3)
    assert "n_clases" in str(err.value)


def test_missing_required_parameter():
    with pytest.raises(DataError, match="path"):
        load_source("image_folder")


# ---------------------------------------------------------------- declared classes


@pytest.mark.parametrize("name, params", [("digits", {}), ("synthetic", {}), ("synthetic", {"n_classes": 4}),
                                          ("synthetic", {"kind": "tabular", "n_samples": 50})])
def test_a_source_loads_the_classes_it_declares(name, params):
    assert load_source(name, **params).classes == sources.declared_classes(name, params)


def test_sources_known_by_their_data_only_declare_no_classes():
    assert sources.declared_classes("idx", {"path": "x"}) is None
    assert sources.declared_classes("image_folder", {"path": "x"}) is None
    with pytest.raises(DataError, match="n_classes"):
        sources.declared_classes("synthetic", {"n_clases": 3})


# ---------------------------------------------------------------- digits and synthetic


def test_digits_shapes_split_and_scaling():
    src = load_source("digits")
    assert src.kind == IMAGE and src.classes == tuple("0123456789")
    (xtr, ytr), (_, yte) = src.parts["train"], src.parts["test"]
    assert set(src.parts) == {"train", "test"}
    assert len(ytr) + len(yte) == 1797 and abs(len(ytr) - len(yte)) <= 1
    assert xtr.dtype == np.uint8 and xtr.shape[1:] == (1, 8, 8) and ytr.dtype == np.int64
    assert xtr.max() == 255 and xtr.min() == 0
    # Stratified: every class is split about in half.
    assert np.all(np.abs(np.bincount(ytr, minlength=10) - np.bincount(yte, minlength=10)) <= 1)


def test_digits_is_deterministic():
    a, b = load_source("digits"), load_source("digits")
    for part in a.parts:
        np.testing.assert_array_equal(a.parts[part][0], b.parts[part][0])
        np.testing.assert_array_equal(a.parts[part][1], b.parts[part][1])


def test_synthetic_images_are_separable_and_seeded():
    src = load_source("synthetic", n_classes=4, n_per_class=20, n_test_per_class=10, shape=(3, 6, 6))
    (xtr, ytr), (xte, yte) = src.parts["train"], src.parts["test"]
    assert src.classes == ("0", "1", "2", "3")
    assert xtr.shape == (80, 3, 6, 6) and xte.shape == (40, 3, 6, 6) and xtr.dtype == np.uint8
    assert ytr.dtype == np.int64 and np.all(np.bincount(ytr) == 20)
    # A nearest-class-mean rule separates every test sample.
    means = np.stack([xtr[ytr == c].reshape(-1, 108).mean(0) for c in range(4)]).astype(np.float64)
    dist = ((xte.reshape(-1, 108)[:, None].astype(np.float64) - means[None]) ** 2).sum(-1)
    assert np.all(dist.argmin(1) == yte)
    again = load_source("synthetic", n_classes=4, n_per_class=20, n_test_per_class=10, shape=(3, 6, 6))
    np.testing.assert_array_equal(xtr, again.parts["train"][0])
    other = load_source("synthetic", n_classes=4, n_per_class=20, n_test_per_class=10, shape=(3, 6, 6), seed=1)
    assert not np.array_equal(xtr, other.parts["train"][0])


def test_synthetic_tabular_has_far_outliers():
    src = load_source("synthetic", kind="tabular", dim=5, n_samples=400, outlier_fraction=0.1)
    assert src.kind == TABULAR and set(src.parts) == {"all"} and src.classes == ("inlier", "outlier")
    x, y = src.parts["all"]
    assert x.shape == (400, 5) and x.dtype == np.float32 and y.dtype == np.int64
    assert y.sum() == 40 and src.meta["n_outliers"] == 40
    norms = np.linalg.norm(x, axis=1)
    assert norms[y == 1].min() > norms[y == 0].max()
    np.testing.assert_array_equal(x, load_source("synthetic", kind="tabular", dim=5, n_samples=400).parts["all"][0])


# ---------------------------------------------------------------- shared image transforms


def test_resize_and_grey_to_rgb():
    src = load_source("synthetic", n_classes=2, n_per_class=3, n_test_per_class=2, size=16, channels=3)
    x, _ = src.parts["train"]
    assert x.shape == (6, 3, 16, 16) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[:, 0], x[:, 2])
    assert src.meta["original_shape"] == (1, 8, 8)
    assert src.meta["size"] == 16 and src.meta["channels"] == 3


def test_rgb_to_grey_is_luminance():
    rgb = load_source("synthetic", n_classes=2, n_per_class=3, n_test_per_class=2, shape=(3, 4, 4))
    grey = load_source("synthetic", n_classes=2, n_per_class=3, n_test_per_class=2, shape=(3, 4, 4), channels=1)
    x, g = rgb.parts["train"][0].astype(np.float64), grey.parts["train"][0]
    assert g.shape == (6, 1, 4, 4)
    expected = np.rint(0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])
    assert np.abs(g[:, 0].astype(np.float64) - expected).max() <= 1


def test_downsizing_is_antialiased():
    checker = (np.indices((16, 16)).sum(0) % 2 * 255).astype(np.uint8)[None, None]
    small = sources.resize(checker, 4)
    assert small.shape == (1, 1, 4, 4)
    assert np.all(np.abs(small.astype(int) - 128) <= 2)  # averaged, not sampled
    flat = np.full((2, 1, 5, 7), 77, dtype=np.uint8)
    assert np.all(sources.resize(flat, 3) == 77)


def test_size_and_channels_are_rejected_for_tabular():
    with pytest.raises(DataError, match="tabular"):
        load_source("synthetic", kind="tabular", size=8)
    with pytest.raises(DataError, match="channels"):
        load_source("synthetic", channels=2)


# ---------------------------------------------------------------- missing files


def test_missing_mnist_names_expected_files_and_download(tmp_path):
    with pytest.raises(DataError) as err:
        load_source("mnist", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz") in message
    assert "dataset.download=true" in message


@pytest.mark.parametrize(
    "name, expected",
    [("cifar10", "cifar-10-batches-py/data_batch_1"), ("svhn", "train_32x32.mat"), ("fmnist", "FashionMNIST/raw")],
)
def test_missing_downloadable_sets(tmp_path, name, expected):
    with pytest.raises(DataError) as err:
        load_source(name, tmp_path)
    assert str(tmp_path / expected) in str(err.value) and "dataset.download=true" in str(err.value)


@pytest.mark.parametrize("name", ["notmnist", "omniglot", "cifar10_jpg", "thyroid", "kdd99"])
def test_missing_local_only_sets_say_they_cannot_download(tmp_path, name):
    with pytest.raises(DataError, match="cannot download") as err:
        load_source(name, tmp_path)
    assert str(tmp_path) in str(err.value)


# ---------------------------------------------------------------- idx files


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def write_idx_part(folder: Path, prefix: str, x: np.ndarray, y: np.ndarray, gz: bool) -> None:
    ext = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", x)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", y)


def test_idx_folder_plain_and_gz(tmp_path):
    rng = np.random.default_rng(0)
    xtr, ytr = rng.integers(0, 256, (5, 4, 3)), np.array([0, 1, 2, 1, 0])
    xte, yte = rng.integers(0, 256, (3, 4, 3)), np.array([2, 2, 0])
    write_idx_part(tmp_path, "train", xtr, ytr, gz=False)
    write_idx_part(tmp_path, "t10k", xte, yte, gz=True)
    src = load_source("idx", path=str(tmp_path), classes=["a", "b", "c"])
    assert src.classes == ("a", "b", "c") and set(src.parts) == {"train", "test"}
    np.testing.assert_array_equal(src.parts["train"][0], xtr[:, None])
    np.testing.assert_array_equal(src.parts["test"][1], yte)
    assert src.parts["test"][0].dtype == np.uint8 and src.parts["test"][1].dtype == np.int64


def test_idx_folder_with_only_t10k_has_only_test(tmp_path):
    write_idx_part(tmp_path, "t10k", np.zeros((2, 2, 2)), np.array([0, 3]), gz=True)
    src = load_source("idx", path=str(tmp_path))
    assert set(src.parts) == {"test"} and src.classes == ("0", "1", "2", "3")


def test_idx_reader_rejects_garbage(tmp_path):
    bad = tmp_path / "x-ubyte"
    bad.write_bytes(b"\x01\x02\x03\x04hello")
    with pytest.raises(DataError, match="idx"):
        read_idx(bad)
    short = tmp_path / "short-ubyte"
    short.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"abc")
    with pytest.raises(DataError, match="truncated"):
        read_idx(short)


def fake_torchvision(monkeypatch, **datasets) -> None:
    """Stand-ins for torchvision dataset classes (no network, and no slow torch import)."""
    module = types.ModuleType("torchvision.datasets")
    module.__dict__.update(datasets)
    package = types.ModuleType("torchvision")
    package.datasets = module
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", module)


def test_mnist_download_goes_through_torchvision_then_idx(tmp_path, monkeypatch):
    calls = []

    def fake_mnist(root, train, download):  # stands in for the network download
        calls.append((root, train, download))
        raw = Path(root) / "MNIST" / "raw"
        raw.mkdir(parents=True)
        write_idx_part(raw, "train", np.ones((4, 28, 28)), np.arange(4), gz=False)
        write_idx_part(raw, "t10k", np.ones((2, 28, 28)), np.arange(2), gz=False)

    fake_torchvision(monkeypatch, MNIST=fake_mnist)
    src = load_source("mnist", tmp_path, download=True)
    assert calls == [(str(tmp_path), True, True)]
    assert src.parts["train"][0].shape == (4, 1, 28, 28) and len(src.parts["test"][1]) == 2


def test_cifar10_arrays_come_from_torchvision_attributes(tmp_path, monkeypatch):
    data = {True: np.arange(2 * 4 * 4 * 3).reshape(2, 4, 4, 3) % 256, False: np.zeros((1, 4, 4, 3))}

    def fake_cifar(root, train, download):
        return types.SimpleNamespace(data=data[train].astype(np.uint8), targets=[1, 0][: len(data[train])],
                                     classes=["cat", "dog"])  # fmt: skip

    fake_torchvision(monkeypatch, CIFAR10=fake_cifar)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).touch()
    src = load_source("cifar10", tmp_path)
    x, y = src.parts["train"]
    assert x.shape == (2, 3, 4, 4) and src.classes == ("cat", "dog")
    np.testing.assert_array_equal(x[1, 2], data[True][1, :, :, 2])
    assert y.tolist() == [1, 0] and y.dtype == np.int64


# ---------------------------------------------------------------- image folders and tars


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def make_image_tree(rng) -> dict[str, bytes]:
    """<part>/<class>/<file> -> PNG bytes: 2 parts, classes b and a, 3 RGB 5×6 images each."""
    return {
        f"{part}/{cls}/{i:02d}.png": png_bytes(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8))
        for part in ("train", "test")
        for cls in ("b", "a")
        for i in range(3)
    }


def test_image_folder_and_tar_give_the_same_source(tmp_path):
    tree = make_image_tree(np.random.default_rng(0))
    folder = tmp_path / "tree"
    for name, data in tree.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in reversed(list(tree)):  # the member order must not matter
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(tree[name])
            tar.addfile(info, io.BytesIO(tree[name]))
    a = load_source("image_folder", path=str(folder))
    b = load_source("image_folder", tmp_path, path="tree.tar.gz")  # relative to root
    assert a.classes == b.classes == ("a", "b") and set(a.parts) == {"train", "test"}
    x, y = a.parts["train"]
    assert x.shape == (6, 3, 5, 6) and x.dtype == np.uint8 and y.tolist() == [0, 0, 0, 1, 1, 1]
    first = np.asarray(Image.open(io.BytesIO(tree["train/a/00.png"]))).transpose(2, 0, 1)
    np.testing.assert_array_equal(x[0], first)
    for part in a.parts:
        np.testing.assert_array_equal(a.parts[part][0], b.parts[part][0])
        np.testing.assert_array_equal(a.parts[part][1], b.parts[part][1])


def test_image_folder_split_test_is_stratified_and_seeded(tmp_path):
    rng = np.random.default_rng(1)
    for cls in ("x", "y"):
        (tmp_path / "test" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(tmp_path / "test" / cls / f"{i}.png")
    src = load_source("image_folder", path=str(tmp_path), split_test=True)
    assert set(src.parts) == {"train", "test"} and src.meta["split_test"] is True
    assert src.parts["train"][0].shape == (6, 1, 4, 4)  # grey PNGs stay one channel
    assert np.bincount(src.parts["train"][1]).tolist() == [3, 3] == np.bincount(src.parts["test"][1]).tolist()
    again = load_source("image_folder", path=str(tmp_path), split_test=True)
    np.testing.assert_array_equal(src.parts["train"][0], again.parts["train"][0])


def test_image_folder_without_images_explains_layout(tmp_path):
    with pytest.raises(DataError, match="<part>/<class>"):
        load_source("image_folder", path=str(tmp_path))


def test_omniglot_classes_are_the_background_alphabets(tmp_path):
    (tmp_path / "omniglot").mkdir()
    blob = png_bytes(np.zeros((4, 4), dtype=np.uint8))
    for k, alphabet in ((1, "Latin"), (2, "Greek")):
        with zipfile.ZipFile(tmp_path / "omniglot" / f"images_background_small{k}.zip", "w") as z:
            z.writestr(f"images_background_small{k}/{alphabet}/character01/0001_01.png", blob)
    src = load_source("omniglot", tmp_path)
    assert src.classes == sources.declared_classes("omniglot") and len(src.classes) == 30
    assert [src.classes[c] for c in src.parts["test"][1]] == ["Latin", "Greek"]
    with zipfile.ZipFile(tmp_path / "omniglot" / "images_background_small2.zip", "a") as z:
        z.writestr("images_background_small2/Klingon/character01/0001_01.png", blob)
    with pytest.raises(DataError, match="Klingon"):
        load_source("omniglot", tmp_path)


# ---------------------------------------------------------------- real data (skipped when ../shared/data is absent)


@pytest.mark.slow
@needs("MNIST/raw/train-images-idx3-ubyte.gz", "MNIST/raw/t10k-images-idx3-ubyte.gz")
def test_real_mnist():
    src = load_source("mnist", DATA)
    assert len(src.parts["train"][1]) == 60000 and len(src.parts["test"][1]) == 10000
    assert src.sample_shape == (1, 28, 28) and src.parts["train"][0].dtype == np.uint8
    assert np.all(np.bincount(src.parts["test"][1]) > 800)


@pytest.mark.slow
@needs("notMNIST/raw/t10k-images-idx3-ubyte.gz")
def test_real_notmnist():
    src = load_source("notmnist", DATA)
    assert set(src.parts) == {"test"} and len(src.parts["test"][1]) == 10000
    assert src.classes == tuple("ABCDEFGHIJ") and src.sample_shape == (1, 28, 28)


@pytest.mark.slow
@needs("omniglot/images_background_small1.zip", "omniglot/images_background_small2.zip")
def test_real_omniglot():
    src = load_source("omniglot", DATA)
    x, y = src.parts["test"]
    assert set(src.parts) == {"test"} and x.shape == (5840, 1, 28, 28) and x.dtype == np.uint8
    # The classes are the background set's 30 alphabets (declared by the source), of which these files hold 8.
    assert len(src.classes) == 30 and len(np.unique(y)) == 8 and src.meta["original_shape"] == (1, 105, 105)
    assert x.mean() < 64  # inverted: bright strokes on a dark background, as in MNIST


@pytest.mark.slow
@needs("cifar10-jpg/cifar10_test_jpg.tar.gz")
def test_real_cifar10_jpg():
    src = load_source("cifar10_jpg", DATA)
    (xtr, ytr), (xte, yte) = src.parts["train"], src.parts["test"]
    assert xtr.shape == (5000, 3, 32, 32) and xte.shape == (5000, 3, 32, 32)
    assert np.bincount(ytr).tolist() == [500] * 10 == np.bincount(yte).tolist()
    assert src.classes[0] == "airplane" and src.meta["split_test"] is True


@pytest.mark.slow
@pytest.mark.parametrize("name, shape, outliers", [("thyroid", (3772, 6), 93), ("arrhythmia", (452, 274), 66)])
def test_real_odds(name, shape, outliers):
    if not (DATA / "odds" / f"{name}.mat").exists():
        pytest.skip(f"real data absent: {DATA / 'odds' / f'{name}.mat'}")
    src = load_source(name, DATA)
    x, y = src.parts["all"]
    assert x.shape == shape and x.dtype == np.float32 and int(y.sum()) == outliers
    np.testing.assert_array_equal(load_source("odds", DATA, name=name).parts["all"][0], x)


@pytest.mark.slow
@needs("kddcup99/kddcup.data_10_percent.gz")
def test_real_kdd99():
    src = load_source("kdd99", DATA)
    x, y = src.parts["all"]
    assert x.shape == (494021, 121) and x.dtype == np.float32
    assert int(y.sum()) == 97278  # "normal." rows are the outliers
    assert x.min() == 0.0 and x.max() == 1.0
    assert len(src.meta["features"]) == 121 and src.meta["categories"]["is_host_login"] == ["0"]
