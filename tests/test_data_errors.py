"""Errors about data files and shards: they name the file, and the fix they print works as printed."""
from __future__ import annotations

import gzip
import io
import os
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from dadf.config import CONFIG_DIR
from dadf.data import datasets, shards
from dadf.data.shards import ShardError
from dadf.data.sources import DataError, load_source

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def dataset_config(name: str, **values):
    dcfg = OmegaConf.load(Path(CONFIG_DIR) / "dataset" / f"{name}.yaml")
    for key, value in values.items():
        dcfg[key] = value
    return dcfg


def small_synthetic(tmp_path, **params):
    """A synthetic dataset config with a non-default root, size and params: all must reach the rebuild command."""
    return dataset_config("synthetic", root=str(tmp_path / "data folder"), size=4,
                          params={"n_per_class": 6, "n_test_per_class": 3, "seed": 3, **params})


def rebuild_argv(error: Exception) -> list[str]:
    return shlex.split(str(error).split("rebuild with: ", 1)[1])


def first_train_shard(out: Path) -> Path:
    return out / shards.read_index(out)["parts"]["train"]["shards"][0]["file"]


# ------------------------------------------------------------------------------------------ 1: the rebuild command


@pytest.mark.slow
def test_corrupt_shard_rebuild_command_runs_as_printed_and_rebuilds(tmp_path):
    """Defect: the printed rebuild command lacked force=true, shards_dir, dataset.root and params, so it rebuilt
    nothing (or another dataset) while reporting success."""
    dcfg, shards_root = small_synthetic(tmp_path), tmp_path / "shards"
    out = datasets.ensure_shards(dcfg, shards_root).folder
    before = shards.load_source_from_shards(out)
    shard = first_train_shard(out)
    data = bytearray(shard.read_bytes())
    data[600:700] = b"\xff" * 100  # overwrite part of the first sample
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError) as err:
        shards.load_source_from_shards(out)
    assert shard.name in str(err.value)
    argv = rebuild_argv(err.value)
    # Checked before running it: a command without them would build into the repository's own shards/.
    assert argv[:2] == ["python", "jobs/build_shards.py"] and "force=true" in argv
    assert f"shards_dir={shards_root.resolve()}" in argv
    done = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    after = shards.load_source_from_shards(out)  # verifies every checksum
    assert after.meta == before.meta and after.classes == before.classes
    for part, (x, y) in before.parts.items():
        np.testing.assert_array_equal(after.parts[part][0], x)
        np.testing.assert_array_equal(after.parts[part][1], y)


def test_mismatch_rebuild_command_composes_the_config_in_use(tmp_path, composer):
    """Defect: the command printed when shards were built from other settings dropped the settings in use."""
    shards_root = tmp_path / "shard's dir"  # a quote and a space: the command must still parse back exactly
    datasets.ensure_shards(small_synthetic(tmp_path), shards_root)
    wanted = small_synthetic(tmp_path, shape=[1, 6, 6], kind="image")
    wanted.channels = 3
    with pytest.raises(ShardError, match="now asks for") as err:
        datasets.ensure_shards(wanted, shards_root)
    argv = rebuild_argv(err.value)
    assert argv[:2] == ["python", "jobs/build_shards.py"]
    cfg = composer(argv[2:])
    assert cfg.force is True and Path(cfg.shards_dir) == shards_root.resolve()
    assert datasets.source_params(cfg.dataset) == datasets.source_params(wanted)
    assert datasets.data_root(cfg.dataset) == datasets.data_root(wanted)
    # A setting whose config file default is not null: dropping it must be spelled out too.
    omniglot = dataset_config("omniglot", size=None, root=str(tmp_path))
    composed = composer(["dataset=omniglot", *datasets.rebuild_overrides(omniglot)]).dataset
    assert datasets.source_params(composed) == datasets.source_params(omniglot)


# ------------------------------------------------------------------------------------------ 2: killed builds

_PAUSED_BUILD = """
import sys, time
from pathlib import Path
from dadf.data import shards, sources
write = shards._write_shard

def write_then_hang(*args, **kwargs):
    entry = write(*args, **kwargs)
    Path(sys.argv[2]).touch()  # one shard is in its temporary folder: the build is mid-way
    time.sleep(600)
    return entry

shards._write_shard = write_then_hang
shards.build_shards(sources.load_source("synthetic"), Path(sys.argv[1]), dataset_name="synthetic")
"""


@pytest.mark.slow
def test_killed_build_leaves_no_temporary_folder_behind(tmp_path):
    """Defect: a build killed mid-way left <dataset>.tmp-<pid>/ behind forever."""
    dcfg, shards_root = dataset_config("synthetic", root=str(tmp_path)), tmp_path / "shards"
    out, ready = shards_root / "synthetic", tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", _PAUSED_BUILD, str(out), str(ready)], cwd=REPO, env=ENV,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), child.stderr.read() if child.poll() is not None else "no shard written in 120 s"
        leftovers = list(shards_root.glob("synthetic.tmp-*"))
        assert len(leftovers) == 1
        datasets.ensure_shards(dcfg, shards_root)  # a build while the other one is alive keeps its folder
        assert leftovers[0].is_dir()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert leftovers[0].is_dir()  # what the kill leaves
    datasets.ensure_shards(dcfg, shards_root)  # the shards exist: no build, but the leftover goes
    assert sorted(p.name for p in shards_root.iterdir()) == ["synthetic", "synthetic.lock"]
    shards.load_source_from_shards(out)


def test_stale_build_folders_of_other_hosts_go_only_once_idle(tmp_path):
    """Defect: leftover scratch folders were never removed; another host's pid cannot be checked, so its folders
    go only once nothing in them changed for longer than a live build would take."""
    out, host = tmp_path / "ds", socket.gethostname()
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid is certainly not alive now
    idle = time.time() - shards.STALE_BUILD_S - 60
    folders = {
        f"ds.tmp-elsewhere-{os.getpid()}": None,  # another host, recently written: maybe alive
        f"ds.tmp-elsewhere-{dead.pid}": idle,  # another host, idle for too long
        f"ds.old-{host}-{dead.pid}": None,  # this host, owner gone
        f"ds.tmp-{host}-{os.getppid()}": None,  # this host, owner alive (this process's parent)
        "dsx.tmp-elsewhere-1": idle,  # another dataset's
    }
    for name, mtime in folders.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "all-000000.tar").touch()
        if mtime is not None:
            os.utime(tmp_path / name / "all-000000.tar", (mtime, mtime))
            os.utime(tmp_path / name, (mtime, mtime))
    src = load_source("synthetic", kind="tabular", n_samples=20)
    shards.build_shards(src, out, dataset_name="ds", min_shards=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["ds", f"ds.tmp-elsewhere-{os.getpid()}", f"ds.tmp-{host}-{os.getppid()}", "dsx.tmp-elsewhere-1"])


# ------------------------------------------------------------------------------------------ 3: corrupt raw files


def idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_folder(folder: Path, prefixes=("train", "t10k")) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix in prefixes:
        # Random pixels: they do not compress, so cutting the file in half cuts the deflate stream.
        x, y = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), (np.arange(40) % 10).astype(np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(y)))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garbage(path: Path) -> None:
    path.write_bytes(b"this is not the file you are looking for" * 10)


def flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))


def png_bytes(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_mnist(root: Path) -> Path:
    write_idx_folder(root / "MNIST" / "raw")
    return root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"


def make_notmnist(root: Path) -> Path:
    write_idx_folder(root / "notMNIST" / "raw", prefixes=("t10k",))
    return root / "notMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"


def make_odds(root: Path) -> Path:
    from scipy.io import savemat

    (root / "odds").mkdir()
    rng = np.random.default_rng(0)
    savemat(root / "odds" / "thyroid.mat", {"X": rng.normal(size=(300, 6)), "y": (rng.random((300, 1)) < 0.1) * 1.0},
            do_compression=True)
    return root / "odds" / "thyroid.mat"


def make_kdd99(root: Path) -> Path:
    (root / "kddcup99").mkdir()
    path = root / "kddcup99" / "kddcup.data_10_percent.gz"
    rows = [f"{k},tcp,http,SF,{181 + k},5450,0,0,0,0,0,1" + ",0" * 10 + f",{k % 9},8" + ",0.50" * 7 + ",9,9"
            + ",0.25" * 8 + (",normal." if k % 5 else ",smurf.") for k in range(300)]
    path.write_bytes(gzip.compress("\n".join(rows).encode() + b"\n"))
    return path


def make_omniglot(root: Path) -> Path:
    (root / "omniglot").mkdir()
    for k in (1, 2):
        with zipfile.ZipFile(root / "omniglot" / f"images_background_small{k}.zip", "w") as z:
            for i in range(20):
                z.writestr(f"images_background_small{k}/Latin/character01/{i:04d}_01.png", png_bytes(i))
    return root / "omniglot" / "images_background_small2.zip"


def make_cifar10_jpg(root: Path) -> Path:
    (root / "cifar10-jpg").mkdir()
    path = root / "cifar10-jpg" / "cifar10_test_jpg.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for k in range(40):
            blob = png_bytes(k)  # PNG, not JPEG: its chunk checksums catch damage that a JPEG decoder shrugs off
            info = tarfile.TarInfo(f"test/{('cat', 'dog')[k % 2]}/{k:04d}.png")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


CORRUPT_CASES = {
    "mnist": (make_mnist, {}, True),
    "notmnist": (make_notmnist, {}, False),
    "thyroid": (make_odds, {}, False),
    "kdd99": (make_kdd99, {}, False),
    "omniglot": (make_omniglot, {}, False),
    "cifar10_jpg": (make_cifar10_jpg, {}, False),
}


@pytest.mark.parametrize("damage", [truncate, garbage, flip_middle], ids=lambda f: f.__name__)
@pytest.mark.parametrize("name", list(CORRUPT_CASES))
def test_corrupt_raw_file_error_names_it_and_the_fix(tmp_path, name, damage):
    """Defect: a damaged raw file gave a bare EOFError / zlib.error / BadGzipFile / IndexError without its name."""
    make, params, downloadable = CORRUPT_CASES[name]
    path = make(tmp_path)
    load_source(name, tmp_path, **params)  # intact, it loads
    damage(path)
    with pytest.raises(DataError) as err:
        load_source(name, tmp_path, **params)
    message = str(err.value)
    assert str(path) in message and "corrupt or truncated" in message, message
    assert ("dataset.download=true" in message) == downloadable, message
    assert "intact copy" in message, message


def test_corrupt_torchvision_files_are_listed_with_the_download_fix(tmp_path):
    """Defect: torchvision's "Dataset not found or corrupted" came out naming only the root folder."""
    pytest.importorskip("torchvision")
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        garbage(folder / name)
    with pytest.raises(DataError) as err:
        load_source("cifar10", tmp_path)
    message = str(err.value)
    assert str(folder / "data_batch_1") in message and str(folder / "test_batch") in message, message
    assert "corrupt or truncated" in message and "dataset.download=true" in message, message


def test_undecodable_image_in_a_folder_is_named(tmp_path):
    """Defect: an image that does not decode gave PIL's error about a nameless in-memory buffer."""
    for k in range(3):
        (tmp_path / "imgs" / "test" / "cat").mkdir(parents=True, exist_ok=True)
        (tmp_path / "imgs" / "test" / "cat" / f"{k}.png").write_bytes(png_bytes())
    bad = tmp_path / "imgs" / "test" / "cat" / "1.png"
    truncate(bad)
    with pytest.raises(DataError, match="corrupt or truncated") as err:
        load_source("image_folder", tmp_path, path="imgs")
    assert str(bad) in str(err.value)


# ------------------------------------------------------------------------------------------ 4: missing files


def test_missing_files_error_lists_exactly_the_absent_ones(tmp_path):
    """Defect: the error listed every expected file, not which of them are absent."""
    raw = tmp_path / "MNIST" / "raw"
    write_idx_folder(raw, prefixes=("train",))  # 2 of MNIST's 4 files
    with pytest.raises(DataError) as err:
        load_source("mnist", tmp_path)
    message = str(err.value)
    assert str(raw) in message and "dataset.download=true" in message
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert str(raw / f"{stem}.gz") in message
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        assert stem not in message

    # An idx folder with half a part: the partner file is missing, not silently the whole part.
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes((raw / "train-images-idx3-ubyte.gz").read_bytes())
    (raw / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as err:
        load_source("idx", path=str(raw))
    missing = [line.strip() for line in str(err.value).splitlines() if line.startswith("  ")]
    assert missing == [str(raw / "train-labels-idx1-ubyte.gz"), str(raw / "t10k-labels-idx1-ubyte.gz")]

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for k in (1, 2, 4):
        (folder / f"data_batch_{k}").touch()
    with pytest.raises(DataError) as err:
        load_source("cifar10", tmp_path)
    missing = [line.strip() for line in str(err.value).splitlines() if line.startswith("  ")]
    assert missing == [str(folder / "data_batch_3"), str(folder / "data_batch_5"), str(folder / "test_batch")]


@pytest.mark.slow
def test_data_errors_reach_the_launcher_as_one_clean_line(tmp_path):
    """The launcher and build_shards.py catch ValueError: a corrupt raw file must be one, not an EOFError."""
    truncate(make_mnist(tmp_path))
    done = subprocess.run([sys.executable, "jobs/build_shards.py", "dataset=mnist", f"dataset.root={tmp_path}",
                           f"shards_dir={tmp_path / 'shards'}"], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode != 0
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "t10k-images-idx3-ubyte.gz is corrupt or truncated" in done.stderr
