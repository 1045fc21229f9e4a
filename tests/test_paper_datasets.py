"""The papers' remaining datasets: LSUN, CelebA with its attributes, COIL-100 and ImageNet (resize), each
read from tiny files in its public layout written here; per-sample attributes through the shards; the `attribute`
protocol; the grids that use them, with the papers' numbers beside their cells."""
from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dadf.data import protocols, shards
from dadf.data.protocols import ProtocolError, make_split
from dadf.data.sources import DataError, declared_classes, load_source
from dadf.data.sources.celeba import ATTRIBUTES
from dadf.data.types import Source


def _png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return buf.getvalue()


def _flat(h: int, w: int, rgb) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, np.uint8), (h, w, 3)).copy()


# ----------------------------------------------------------------------------------------------------------------- LSUN

def _write_lmdb(folder: Path, images: dict[bytes, bytes]) -> None:
    import lmdb

    folder.parent.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(folder), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key, blob in images.items():
            txn.put(key, blob)
    env.close()


@pytest.fixture
def lsun_root(tmp_path):
    """bedroom / conference_room, train and val, as torchvision's LMDB folders: WebP images of mixed sizes whose
    centre is one colour (the class) and whose border (cut by the centre crop) another."""
    pytest.importorskip("lmdb", reason="the lmdb package (pip install 'dadf[lsun]') is not installed")
    counts = {("bedroom", "train"): 5, ("conference_room", "train"): 3, ("bedroom", "val"): 2,
              ("conference_room", "val"): 2}
    for (category, split), n in counts.items():
        value = 40 if category == "bedroom" else 200
        images = {}
        for i in range(n):
            w, h = (48, 32) if i % 2 else (32, 40)
            image = _flat(h, w, (value, value, value))
            image[:, :4] = image[:, -4:] = 255 - value  # left/right border: cropped away on wide images
            images[f"{category}{i:04d}".encode()] = _png(image, "WEBP")
        _write_lmdb(tmp_path / "lsun" / f"{category}_{split}_lmdb", images)
    return tmp_path


def test_lsun_reads_torchvision_lmdb_layout(lsun_root):
    src = load_source("lsun", lsun_root, resolution=16)
    assert src.classes == ("bedroom", "conference_room")
    assert {p: x.shape for p, (x, _) in src.parts.items()} == {"train": (8, 3, 16, 16), "test": (4, 3, 16, 16)}
    np.testing.assert_array_equal(src.parts["train"][1], [0] * 5 + [1] * 3)
    np.testing.assert_array_equal(src.parts["test"][1], [0, 0, 1, 1])
    x, y = src.parts["train"]
    wide = x[1]  # 48x32: shorter side to 16, centre crop drops the borders
    assert np.abs(wide.astype(int) - 40).max() <= 2
    centre = x[:, :, 8, 8].astype(int)  # the class colour (tall images keep their borders)
    assert np.abs(centre - np.where(y == 0, 40, 200)[:, None]).max() <= 2
    again = load_source("lsun", lsun_root, resolution=16)
    np.testing.assert_array_equal(again.parts["train"][0], x)


def test_lsun_categories_and_limit(lsun_root):
    src = load_source("lsun", lsun_root, resolution=8, categories=["conference_room"], max_per_category=1)
    assert src.classes == ("conference_room",) and len(src.parts["train"][1]) == 1
    assert declared_classes("lsun") == ("bedroom", "conference_room")
    with pytest.raises(DataError, match="bedrom.*bedroom"):
        load_source("lsun", lsun_root, categories=["bedrom"])


def test_lsun_missing_files_and_missing_lmdb(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"(?s)lsun: data not found .*bedroom_train_lmdb.*copy the files there"):
        load_source("lsun", tmp_path)
    for category in ("bedroom", "conference_room"):
        for split in ("train", "val"):
            (tmp_path / "lsun" / f"{category}_{split}_lmdb").mkdir(parents=True)
    monkeypatch.setitem(sys.modules, "lmdb", None)  # as if it were not installed
    with pytest.raises(DataError, match=r"lmdb package.*pip install 'dadf\[lsun\]'"):
        load_source("lsun", tmp_path)


# --------------------------------------------------------------------------------------------------------------- CelebA

# name, partition (0 train, 1 valid, 2 test), attributes set to 1
CELEBA_ROWS = [
    ("000001.jpg", 0, ["Bald"]), ("000002.jpg", 0, []), ("000003.jpg", 0, ["Eyeglasses"]), ("000004.jpg", 0, []),
    ("000005.jpg", 1, []), ("000006.jpg", 2, ["Bald", "Smiling"]), ("000007.jpg", 2, []), ("000008.jpg", 2, []),
]


@pytest.fixture
def celeba_root(tmp_path):
    folder = tmp_path / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    lines = [str(len(CELEBA_ROWS)), " ".join(ATTRIBUTES)]
    for k, (name, _, on) in enumerate(CELEBA_ROWS):
        image = _flat(218, 178, (20 * k, 100, 250 - 20 * k))
        image[:39] = image[-39:] = 0  # outside the central 140x140: cropped away
        image[:, :19] = image[:, -19:] = 0
        Image.fromarray(image).save(folder / "img_align_celeba" / name, quality=95)
        lines.append(name + " " + " ".join(" 1" if a in on else "-1" for a in ATTRIBUTES))
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p, _ in CELEBA_ROWS))
    return tmp_path


def test_celeba_crop_resize_partition_and_attributes(celeba_root):
    src = load_source("celeba", celeba_root, resolution=8)
    assert src.classes == ("face",) and src.attribute_names == ATTRIBUTES
    assert {p: x.shape for p, (x, _) in src.parts.items()} == {"train": (4, 3, 8, 8), "val": (1, 3, 8, 8),
                                                               "test": (3, 3, 8, 8)}
    x = src.parts["test"][0]
    assert np.abs(x[0].astype(int) - np.array([100, 100, 150])[:, None, None]).max() <= 8  # image 6: centre only
    bald, glasses, smiling = (ATTRIBUTES.index(a) for a in ("Bald", "Eyeglasses", "Smiling"))
    np.testing.assert_array_equal(src.attributes["train"][:, bald], [1, 0, 0, 0])
    np.testing.assert_array_equal(src.attributes["train"][:, glasses], [0, 0, 1, 0])
    np.testing.assert_array_equal(src.attributes["test"][:, smiling], [1, 0, 0])
    assert src.attributes["test"].sum() == 2 and src.attributes["test"].dtype == np.uint8


def test_celeba_missing_and_damaged_files(tmp_path, celeba_root):
    with pytest.raises(DataError, match=r"(?s)celeba: data not found .*list_attr_celeba\.txt.*copy the files there"):
        load_source("celeba", tmp_path / "elsewhere")
    (celeba_root / "celeba" / "img_align_celeba" / "000007.jpg").unlink()
    with pytest.raises(DataError, match=r"000007\.jpg"):
        load_source("celeba", celeba_root)
    attr = celeba_root / "celeba" / "list_attr_celeba.txt"
    attr.write_text(attr.read_text().replace("Bald", "Bold"))
    with pytest.raises(DataError, match="not list_attr_celeba.txt"):
        load_source("celeba", celeba_root)


# ------------------------------------------------------------------------------------------------------------- COIL-100

def test_coil100_class_and_angle_from_file_names(tmp_path):
    folder = tmp_path / "coil-100"
    folder.mkdir()
    for obj, angle in [(100, 5), (1, 10), (2, 0), (1, 0), (1, 5), (100, 0)]:
        Image.fromarray(_flat(16, 16, (obj, angle, 7))).save(folder / f"obj{obj}__{angle}.png")
    (folder / "convertGroupppm2png.pl").write_text("not an image")  # shipped with the dataset: ignored
    src = load_source("coil100", tmp_path, size=8)
    assert len(src.classes) == 100 and src.classes[0] == "obj1" and src.classes[99] == "obj100"
    x, y = src.parts["test"]
    assert x.shape == (6, 3, 8, 8) and list(src.parts) == ["test"]
    np.testing.assert_array_equal(y, [0, 0, 0, 1, 99, 99])  # object, then angle order
    np.testing.assert_array_equal(x[:, 1, 0, 0], [0, 5, 10, 0, 0, 5])  # the angle painted in the green channel
    assert src.meta["angles"] == [0, 5, 10]
    with pytest.raises(DataError, match=r"(?s)coil100: data not found in .*coil-100.*obj1__0\.png"):
        load_source("coil100", tmp_path / "elsewhere")


# ---------------------------------------------------------------------------------------------------- ImageNet (resize)

def _imagenet_images() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    return {f"Imagenet_resize/{i}.jpg": _png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "JPEG")
            for i in range(5)}


def test_imagenet_resize_folder_and_tars_give_the_same_rows(tmp_path):
    images = _imagenet_images()
    folder_root, tar_root, tgz_root = tmp_path / "f", tmp_path / "t", tmp_path / "z"
    for name, blob in images.items():  # the published archive nests Imagenet_resize/Imagenet_resize/*.jpg
        path = folder_root / "Imagenet_resize" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    for root, archive, mode in ((tar_root, "Imagenet_resize.tar", "w"), (tgz_root, "Imagenet_resize.tar.gz", "w:gz")):
        root.mkdir()
        with tarfile.open(root / archive, mode) as tar:
            tar.add(folder_root / "Imagenet_resize", arcname="Imagenet_resize")
    loaded = [load_source("imagenet_resize", r) for r in (folder_root, tar_root, tgz_root)]
    x = loaded[0].parts["test"][0]
    assert x.shape == (5, 3, 32, 32) and loaded[0].classes == ("imagenet_resize",)
    assert list(loaded[0].parts) == ["test"] and (loaded[0].parts["test"][1] == 0).all()
    for other in loaded[1:]:
        np.testing.assert_array_equal(other.parts["test"][0], x)
    with pytest.raises(DataError, match=r"(?s)imagenet_resize: data not found .*Imagenet_resize.*Imagenet_resize\.tar"):
        load_source("imagenet_resize", tmp_path / "elsewhere")


# ------------------------------------------------------------------------------------------------- attributes in shards

def test_attributes_survive_the_shard_round_trip(celeba_root, tmp_path):
    src = load_source("celeba", celeba_root, resolution=8)
    index = shards.build_shards(src, tmp_path / "shards" / "celeba", dataset_name="celeba", samples_per_shard=2,
                                min_shards=2)
    assert index["attributes"] == list(ATTRIBUTES)
    back = shards.load_source_from_shards(tmp_path / "shards" / "celeba")
    assert back.attribute_names == ATTRIBUTES
    for part, (x, _) in src.parts.items():
        np.testing.assert_array_equal(back.parts[part][0], x)
        np.testing.assert_array_equal(back.attributes[part], src.attributes[part])
    # each sample's member: one "0"/"1" per attribute, in the index's order
    tar = next((tmp_path / "shards" / "celeba").glob("train-*.tar"))
    with tarfile.open(tar) as t:
        member = next(m for m in t if m.name.endswith(".attr"))
        blob = t.extractfile(member).read()
    assert len(blob) == len(ATTRIBUTES) and set(blob) <= set(b"01")
    assert shards.decode_attributes(blob).dtype == np.uint8


def test_shards_without_attributes_are_as_before(tmp_path):
    """No .attr member and no index key: the shards every existing dataset has load unchanged (not rebuilt)."""
    rng = np.random.default_rng(0)
    src = Source("t", "image", {"train": (rng.integers(0, 256, (6, 1, 4, 4), dtype=np.uint8), np.arange(6) % 2)},
                 ("a", "b"))
    index = shards.build_shards(src, tmp_path / "t", dataset_name="t", samples_per_shard=3, min_shards=1)
    assert "attributes" not in index
    with tarfile.open(tmp_path / "t" / "train-000000.tar") as t:
        assert {Path(m.name).suffixes[-1] for m in t} == {".npy", ".cls"}
    back = shards.load_source_from_shards(tmp_path / "t")
    assert back.attribute_names == () and back.attributes == {}


def test_attributes_that_do_not_match_their_rows_are_refused():
    x, y = np.zeros((3, 1, 2, 2), np.uint8), np.zeros(3, np.int64)
    with pytest.raises(ValueError, match=r"uint8 of shape \(3, 2\)"):
        Source("s", "image", {"train": (x, y)}, ("a",), attribute_names=("p", "q"),
               attributes={"train": np.zeros((2, 2), np.uint8)})
    with pytest.raises(ValueError, match="attributes are given for parts"):
        Source("s", "image", {"train": (x, y), "test": (x, y)}, ("a",), attribute_names=("p",),
               attributes={"train": np.zeros((3, 1), np.uint8)})


# --------------------------------------------------------------------------------------------------- attribute protocol

def _faces(seed: int = 0, n_train: int = 200, n_test: int = 100) -> Source:
    rng = np.random.default_rng(seed)
    parts, attributes = {}, {}
    for part, n in (("train", n_train), ("test", n_test)):
        parts[part] = (rng.integers(0, 256, (n, 3, 4, 4), dtype=np.uint8), np.zeros(n, np.int64))
        attributes[part] = np.stack([np.arange(n) % 4 == 0, np.arange(n) % 2 == 1], axis=1).astype(np.uint8)
    return Source("faces", "image", parts, ("face",), attribute_names=("Bald", "Bangs"), attributes=attributes)


def test_attribute_protocol_counts():
    src = _faces()
    split = make_split("attribute", src, seed=0, params={"attribute": "Bald"})
    counts = {"train_normal": 150, "test_normal": 75, "test_anomalous": 25}  # every 4th image is bald
    assert split.info["attribute"] == "Bald" and split.info["counts"] == counts
    assert split.counts()["train"]["normal"] == 150 and split.counts()["train"]["anomalous"] == 0
    assert split.counts()["test"] == {"total": 100, "normal": 75, "anomalous": 25, "labelled_anomalous": 25}
    assert (src.attributes["train"][split.train.index, 0] == 0).all()
    np.testing.assert_array_equal(split.test.truth, src.attributes["test"][split.test.index, 0])
    bangs = make_split("attribute", src, seed=0, params={"attribute": "Bangs"})
    assert bangs.info["counts"] == {"train_normal": 100, "test_normal": 50, "test_anomalous": 50}


def test_attribute_protocol_is_seeded():
    src, params = _faces(), {"attribute": "Bangs", "val_fraction": 0.2, "val_anomalies": 5}

    def key(s):
        return [tuple(getattr(s, part).index) for part in ("train", "val", "test")]

    a = make_split("attribute", src, seed=0, params=params)
    assert key(a) == key(make_split("attribute", src, seed=0, params=params))
    assert key(a) != key(make_split("attribute", src, seed=1, params=params))
    assert a.info["counts"]["train_normal"] == 80 and a.counts()["val"]["anomalous"] == 5


def test_attribute_protocol_errors():
    with pytest.raises(ProtocolError, match=r"attribute='Bold'.*valid values: one of Bald, Bangs"):
        make_split("attribute", _faces(), seed=0, params={"attribute": "Bold"})
    plain = Source("digits", "image", _faces().parts, ("face",))
    with pytest.raises(ProtocolError, match="dataset 'digits' has none"):
        make_split("attribute", plain, seed=0, params={"attribute": "Bald"})
    assert protocols.get("attribute").layout == "attribute"


def test_an_unknown_attribute_is_refused_at_launch_with_the_valid_ones(composer, dirs):
    from dadf.grid.cells import expand
    from dadf.grid.validate import check_cells

    overrides = [*dirs, "grid=piad_celeba", "grid.axes={protocol.attribute:[Bald,Bold]}", "seed=0"]
    problems = check_cells(expand(composer(overrides), overrides, composer))
    assert len(problems) == 1 and "protocol.attribute='Bold'" in problems[0]
    assert "Bald" in problems[0] and "Wearing_Hat" in problems[0] and "1 of 2 cells" in problems[0]
    overrides = [*dirs, "grid=quickstart", "protocol=attribute", "+protocol.attribute=Bald", "grid.classes=null",
                 "grid.methods=[ae]"]
    problems = check_cells(expand(composer(overrides), overrides, composer))
    assert len(problems) == 1 and "protocol=attribute does not fit dataset=digits" in problems[0]


def test_an_attribute_cell_runs_end_to_end_with_its_counts(composer, dirs, celeba_root):
    from conftest import run_one_cell

    overrides = [*dirs, "launcher=debug", "grid=piad_celeba", "+dataset.params.resolution=8",
                 f"dataset.root={celeba_root}", "grid.axes={protocol.attribute:[Bald]}", "method=iforest", "seed=0"]
    cell, metrics = run_one_cell(composer, overrides)
    assert metrics["split"]["train"]["normal"] == 3  # 4 train images, one bald
    assert metrics["split"]["test"]["normal"] == 2 and metrics["split"]["test"]["anomalous"] == 1
    assert 0.0 <= metrics["metrics"]["auroc"] <= 1.0


# ---------------------------------------------------------------------------------------------------------------- grids

GRIDS = {"piad_lsun": 3, "piad_celeba": 15, "piad_coil_gpnd": 30, "ama_ood_svhn": 9, "ama_ood_cifar": 9}


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_grids_expand_with_the_papers_numbers(grid_cells, grid):
    from omegaconf import OmegaConf

    from dadf.grid import layouts
    from dadf.grid.table import CellRecord
    from dadf.grid.validate import check_cells

    cells = grid_cells(grid)
    assert len(cells) == GRIDS[grid]
    assert check_cells(cells) == []
    records = [CellRecord(c.id, OmegaConf.to_container(c.cfg.cell), "pending", None, None, c.dir,
                          OmegaConf.to_container(c.cfg.protocol), c.cfg.dataset.num_classes) for c in cells]
    layout = layouts.get(protocols.get(str(cells[0].cfg.protocol.name)).layout)
    (table,) = layout.tables(records, ["auroc"], grid, None)
    covered = {c for paper in table.papers if paper.of is not None for c in paper.entry.values}
    # class columns: the papers give the average (COIL-100's 30 draws) or the one class (LSUN); else every column
    wanted = (["avg"] + [c for c in table.columns if grid == "piad_lsun"]) if layout.class_columns else table.columns
    missing = [c for c in wanted if c not in covered]
    assert not missing, f"grid {grid}: no published number for columns {missing}"


def test_ama_ood_cifar_keeps_its_cells_and_gains_imagenet(composer, dirs):
    from dadf.grid.cells import expand

    overrides = [*dirs, "grid=ama_ood_cifar", "seed=0"]
    ids = [c.id for c in expand(composer(overrides), overrides, composer)]
    assert "ama-cifar10-ood-svhn-secondarysvhn-s0-a69a0c" in ids  # the ids from before ImageNet (resize) joined
    assert "ama-cifar10-ood-cifar100-secondarycifar100-s0-a5a088" in ids
    assert any("imagenet_resize" in i for i in ids) and len(ids) == 3
