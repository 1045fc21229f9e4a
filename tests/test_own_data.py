"""A researcher's own data without writing a loader: ODDS/ADBench tables (.mat or .npz) through `odds`,
named after the table everywhere; CSV tables; image arrays; KMNIST; `split_test` on any one-part source; and the
launch-time refusal of a protocol that needs a train part on a one-part dataset. All on files written here."""
from __future__ import annotations

import csv
import gzip
import shlex
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import run_job

from dadf.data import datasets, pipeline, shards, sources
from dadf.data.sources import DataError, load_source
from dadf.data.sources.split_test import halve_per_class
from dadf.data.types import IMAGE, TABULAR
from dadf.grid.cells import expand
from dadf.grid.validate import check_cells


def _table(n: int = 60, d: int = 4, outliers: int = 9, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = np.zeros(n, dtype=np.int64)
    y[:outliers] = 1
    x[y == 1] += 6.0  # far outliers: any detector finds them
    return x, y


def _write_odds(root: Path, name: str, suffix: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x, y = _table(seed=seed)
    (root / "odds").mkdir(parents=True, exist_ok=True)
    if suffix == ".mat":
        from scipy.io import savemat

        savemat(root / "odds" / f"{name}.mat", {"X": x, "y": y[:, None].astype(np.float64)})  # ODDS: y a column
    else:
        np.savez(root / "odds" / f"{name}.npz", X=x, y=y)  # ADBench
    return x, y


# ---------------------------------------------------------------------------------------------- odds: .mat / .npz
@pytest.mark.parametrize("suffix", [".mat", ".npz"])
def test_odds_reads_a_mat_or_an_npz_table(tmp_path, suffix):
    x, y = _write_odds(tmp_path, "cardio", suffix)
    src = load_source("odds", tmp_path, name="cardio")
    assert src.kind == TABULAR and set(src.parts) == {"all"} and src.classes == ("inlier", "outlier")
    got_x, got_y = src.parts["all"]
    np.testing.assert_allclose(got_x, x.astype(np.float32))
    assert got_y.tolist() == y.tolist() and src.meta["file"].endswith(f"cardio{suffix}")


def test_a_missing_table_names_both_paths_tried_and_where_to_put_it(tmp_path):
    with pytest.raises(DataError) as err:
        load_source("odds", tmp_path, name="cardio")
    text = str(err.value)
    assert str(tmp_path / "odds" / "cardio.mat") in text and str(tmp_path / "odds" / "cardio.npz") in text
    assert "X" in text and "y" in text and "dataset.root" in text


def test_a_table_without_the_keys_or_with_other_labels_says_what_to_save(tmp_path):
    (tmp_path / "odds").mkdir()
    np.savez(tmp_path / "odds" / "a.npz", data=np.zeros((3, 2)), labels=np.zeros(3))
    with pytest.raises(DataError, match=r"lacks the ODDS/ADBench keys X and y \(found \['data', 'labels'\]\)"):
        load_source("odds", tmp_path, name="a")
    np.savez(tmp_path / "odds" / "b.npz", X=np.zeros((3, 2)), y=np.array([0, 2, 1]))
    with pytest.raises(DataError, match=r"y must be 1 \(anomalous\) or 0 \(normal\); found values \[0, 1, 2\]"):
        load_source("odds", tmp_path, name="b")


def _tabular_cells(composer, dirs, root, *names_and_more):
    overrides = [*dirs, "grid=tabular", "dataset=odds", "grid.axes.dataset=[odds]", f"dataset.root={root}", "seed=0",
                 *names_and_more]
    return expand(composer(overrides), overrides, composer)


def test_an_odds_table_is_named_after_its_file_in_cells_and_shards(composer, dirs, tmp_path):
    _write_odds(tmp_path / "data", "cardio", ".npz")
    _write_odds(tmp_path / "data", "wine", ".mat", seed=1)
    cardio = _tabular_cells(composer, dirs, tmp_path / "data", "dataset.params.name=cardio")
    assert [c.cfg.method.name for c in cardio] == list(composer(["grid=tabular"]).grid.methods)
    for cell in cardio:
        assert cell.cfg.dataset.name == "cardio" and cell.cfg.cell.dataset == "cardio"
        assert cell.id.startswith(f"{cell.cfg.method.name}-cardio-tabular-s0-")
        assert cell.cfg.dataset.top_k_percent is None  # the split's anomaly ratio fills it (engineer D2)
    assert check_cells(cardio) == []  # a source that declares itself tabular needs no top_k_percent to say so
    wine = _tabular_cells(composer, dirs, tmp_path / "data", "dataset.params.name=wine")
    assert all(c.id.startswith(f"{c.cfg.method.name}-wine-tabular-s0-") for c in wine)
    # Two tables never share shards: each gets the folder of its name, built from its own file.
    built = {c.cfg.dataset.name: datasets.ensure_shards(c.cfg.dataset, c.cfg.paths.shards_dir).folder for c in
             (cardio[0], wine[0])}
    assert built == {"cardio": tmp_path / "shards" / "cardio", "wine": tmp_path / "shards" / "wine"}
    assert pipeline.load_dataset(cardio[0].cfg.dataset, tmp_path / "shards").parts["all"][1].sum() == 9


def test_the_rebuild_command_of_a_named_table_composes_it_again(composer, dirs, tmp_path):
    _write_odds(tmp_path / "data", "cardio", ".npz")
    cell = _tabular_cells(composer, dirs, tmp_path / "data", "dataset.params.name=cardio", "method=ae")[0]
    assert datasets.dataset_option(cell.cfg.dataset) == "odds"  # no cardio.yaml: the generic file
    again = composer(["dataset=odds", *datasets.rebuild_overrides(cell.cfg.dataset)]).dataset
    assert again.name == "cardio" and datasets.source_params(again) == datasets.source_params(cell.cfg.dataset)


def test_the_documented_command_line_names_the_dataset_after_the_table(composer, dirs, tmp_path):
    """`grid=tabular dataset=odds dataset.params.name=cardio` as typed: `dataset=` narrows the grid's dataset axis."""
    _write_odds(tmp_path / "data", "cardio", ".npz")
    overrides = [*dirs, "grid=tabular", "dataset=odds", "dataset.params.name=cardio",
                 f"dataset.root={tmp_path / 'data'}", "seed=0", "method=ae"]
    (cell,) = expand(composer(overrides), overrides, composer)
    assert cell.id.startswith("ae-cardio-tabular-s0-") and cell.cfg.dataset.name == "cardio"


@pytest.mark.parametrize("option, overrides, key", [
    ("odds", [], "dataset.params.name"),
    ("csv_table", ["dataset.params.path=t.csv", "dataset.params.label_column=y"], "dataset.name"),
])
def test_a_dataset_of_ones_own_without_a_name_says_which_key_to_set(composer, dirs, option, overrides, key):
    """Before any data is read: the required key, and the two ways to set it (a value, or an axis of values)."""
    from dadf.grid.cells import GridError

    overrides = [*dirs, "grid=tabular", f"dataset={option}", "grid.axes.dataset=[]", *overrides]
    fixes = rf"{key} is required and not set .*{key}=<value>.*grid.axes.{key}=\[<values>\]"
    with pytest.raises(GridError, match=fixes):
        expand(composer(overrides), overrides, composer)
    with pytest.raises(DataError, match="dataset.params.name"):
        load_source("odds", name="???")


# ---------------------------------------------------------------------------------------------- CSV tables
def _write_csv(path: Path, rows: list[list], header: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def test_a_csv_table_with_a_named_label_column(tmp_path):
    x, y = _table(n=20, d=2, outliers=3)
    labels = np.where(y == 1, "fraud", "ok")
    _write_csv(tmp_path / "tables" / "credit.csv", [[a, lab, b] for (a, b), lab in zip(x, labels)],
               ["amount", "Class", "age"])
    src = load_source("csv_table", tmp_path, path="tables/credit.csv", label_column="Class",
                      anomaly_values=["fraud"])
    got_x, got_y = src.parts["all"]
    assert src.kind == TABULAR and got_x.shape == (20, 2) and got_y.tolist() == y.tolist()
    np.testing.assert_allclose(got_x, x.astype(np.float32), rtol=1e-6)
    assert src.meta["features"] == ["amount", "age"]
    only_age = load_source("csv_table", tmp_path, path="tables/credit.csv", label_column="Class",
                           anomaly_values=["fraud"], columns=["age"])
    assert only_age.parts["all"][0].shape == (20, 1)


def test_a_csv_label_of_1_means_anomalous_by_default_and_matches_as_a_number(tmp_path):
    _write_csv(tmp_path / "t.csv", [[0.5, "1.0"], [0.1, "0.0"], [0.2, "0"]], ["f", "y"])
    assert load_source("csv_table", tmp_path, path="t.csv", label_column="y").parts["all"][1].tolist() == [1, 0, 0]


@pytest.mark.parametrize("rows, params, message", [
    ([[1, 0], [2, 1]], {"label_column": "label"}, r"no column 'label' .*columns: \['f', 'y'\]"),
    ([["a", 0], [2, 1]], {"label_column": "y"}, r"line 2, column 'f' holds 'a', not a number"),
    ([[1, 0], [2, 0]], {"label_column": "y"}, r"0 of 2 rows .*anomaly_values"),
])
def test_a_bad_csv_table_is_named_with_the_fix(tmp_path, rows, params, message):
    _write_csv(tmp_path / "t.csv", rows, ["f", "y"])
    with pytest.raises(DataError, match=message):
        load_source("csv_table", tmp_path, path="t.csv", **params)


# ---------------------------------------------------------------------------------------------- image arrays
def _images(n_per_class: int = 6, classes=(0, 1, 2), shape=(5, 6), seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.asarray(classes), n_per_class)
    x = rng.integers(0, 256, (len(y), *shape), dtype=np.uint8)
    return x, y


@pytest.mark.parametrize("layout", ["grey", "hwc", "chw", "float01"])
def test_image_arrays_read_every_common_layout(tmp_path, layout):
    grey, y = _images()
    rgb = np.stack([grey, 255 - grey, grey // 2], axis=1)  # (N, 3, H, W)
    x, want = {"grey": (grey, grey[:, None]), "hwc": (rgb.transpose(0, 2, 3, 1), rgb), "chw": (rgb, rgb),
               "float01": (grey / 255.0, grey[:, None])}[layout]
    np.savez(tmp_path / "a.npz", x=x, y=y)
    src = load_source("image_arrays", tmp_path, path="a.npz")
    assert src.kind == IMAGE and set(src.parts) == {"test"} and src.classes == ("0", "1", "2")
    got_x, got_y = src.parts["test"]
    assert got_x.dtype == np.uint8 and got_y.tolist() == y.tolist()
    np.testing.assert_array_equal(got_x, want)


def test_image_arrays_with_train_and_test_parts_and_named_labels(tmp_path):
    x, y = _images(classes=("cat", "dog"))
    np.savez(tmp_path / "med.npz", train_images=x[::2], train_labels=y[::2, None], test_images=x[1::2],
             test_labels=y[1::2, None], val_images=x[:2], val_labels=y[:2, None])  # MedMNIST's keys
    src = load_source("image_arrays", tmp_path, path="med.npz")
    assert set(src.parts) == {"train", "test"} and src.classes == ("cat", "dog")
    assert sources.declared_parts("image_arrays", tmp_path, {"path": "med.npz"}) == ("train", "test")
    assert [src.classes[c] for c in src.parts["test"][1]] == y[1::2].tolist()
    np.savez(tmp_path / "other.npz", pixels=x, target=y)
    with pytest.raises(DataError, match=r"holds arrays \['pixels', 'target'\].*dataset.params.images"):
        load_source("image_arrays", tmp_path, path="other.npz")
    named = load_source("image_arrays", tmp_path, path="other.npz", images="pixels", labels="target")
    assert len(named.parts["test"][1]) == len(y)


# ---------------------------------------------------------------------------------------------- split_test
def test_split_test_halves_any_one_part_source_per_class_seeded(tmp_path):
    x, y = _images(n_per_class=7, classes=(0, 1, 2, 3))
    np.savez(tmp_path / "a.npz", x=x, y=y)
    src = load_source("image_arrays", tmp_path, path="a.npz", split_test=True)
    assert set(src.parts) == {"train", "test"} and src.meta["split_test"] is True
    (xtr, ytr), (xte, yte) = src.parts["train"], src.parts["test"]
    assert np.bincount(ytr).tolist() == [3] * 4 and np.bincount(yte).tolist() == [4] * 4  # odd: test gets one more
    # Disjoint and complete: every original row is in exactly one half.
    rows = {r.tobytes() for r in x}
    assert len(rows) == len(x) and {r.tobytes() for r in xtr} | {r.tobytes() for r in xte} == rows
    assert not {r.tobytes() for r in xtr} & {r.tobytes() for r in xte}
    again = load_source("image_arrays", tmp_path, path="a.npz", split_test=True)
    np.testing.assert_array_equal(again.parts["train"][0], xtr)
    assert sources.declared_parts("image_arrays", tmp_path, {"path": "a.npz", "split_test": True}) == \
        ("train", "test")


def test_split_test_is_the_same_for_every_source(tmp_path):
    """image_folder's split_test (the one it had) and the generic one give the same halves of the same rows."""
    from PIL import Image

    x, y = _images(n_per_class=5, classes=(0, 1))
    for i, (img, cls) in enumerate(zip(x, y)):
        (tmp_path / "tree" / "test" / f"c{cls}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp_path / "tree" / "test" / f"c{cls}" / f"{i:02d}.png")
    folder = load_source("image_folder", tmp_path, path="tree", split_test=True)
    train, test = halve_per_class(y)
    np.testing.assert_array_equal(folder.parts["train"][0][:, 0], x[train])
    np.testing.assert_array_equal(folder.parts["test"][0][:, 0], x[test])


def test_split_test_on_a_source_with_two_parts_names_the_key(tmp_path):
    with pytest.raises(DataError, match=r"has parts \['test', 'train'\]; remove dataset.params.split_test"):
        load_source("digits", split_test=True)


# ---------------------------------------------------------------------------------------------- KMNIST
def _write_idx(folder: Path, prefix: str, x: np.ndarray, y: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    images = struct.pack(">4B3I", 0, 0, 0x08, 3, *x.shape) + x.astype(np.uint8).tobytes()
    labels = struct.pack(">4BI", 0, 0, 0x08, 1, len(y)) + y.astype(np.uint8).tobytes()
    (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
    (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))


def test_kmnist_reads_torchvisions_layout_with_its_ten_classes(tmp_path):
    x, y = _images(n_per_class=4, classes=tuple(range(10)), shape=(28, 28))
    _write_idx(tmp_path / "KMNIST" / "raw", "t10k", x, y)
    assert sources.declared_classes("kmnist") == ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
    test_only = load_source("kmnist", tmp_path)  # the published test set alone: one part
    assert set(test_only.parts) == {"test"} and test_only.classes == sources.declared_classes("kmnist")
    assert test_only.sample_shape == (1, 28, 28) and test_only.parts["test"][1].tolist() == y.tolist()
    assert sources.declared_parts("kmnist", tmp_path) == ("test",)
    assert set(load_source("kmnist", tmp_path, split_test=True).parts) == {"train", "test"}
    _write_idx(tmp_path / "KMNIST" / "raw", "train", x, y)
    assert set(load_source("kmnist", tmp_path).parts) == {"train", "test"}
    assert sources.declared_parts("kmnist", tmp_path) == ("train", "test")


def test_kmnist_without_files_lists_them(tmp_path):
    with pytest.raises(DataError, match="KMNIST/raw") as err:
        load_source("kmnist", tmp_path)
    assert "t10k-images-idx3-ubyte.gz" in str(err.value) and "dataset.download=true" in str(err.value)


# ---------------------------------------------------------------------------------------------- checked at launch
def _kmnist_test_only(root: Path) -> None:
    x, y = _images(n_per_class=6, classes=tuple(range(10)), shape=(28, 28))
    _write_idx(root / "KMNIST" / "raw", "t10k", x, y)


def test_a_protocol_that_trains_on_a_one_part_dataset_is_refused_with_the_fix(composer, dirs, tmp_path):
    _kmnist_test_only(tmp_path / "data")
    overrides = [*dirs, "grid=mnist_ovr", "dataset=kmnist", f"dataset.root={tmp_path / 'data'}", "method=ae",
                 "protocol.target_class=0"]
    problems = check_cells(expand(composer(overrides), overrides, composer))
    assert problems == ["protocol=ovr trains on a part of its own, but dataset=kmnist has one part only ('test'): "
                        "every cell would fail; halve it per class into train and test with "
                        "dataset.params.split_test=true"]
    halved = [*overrides, "dataset.params.split_test=true"]
    assert check_cells(expand(composer(halved), halved, composer)) == []
    gpnd = [*overrides, "protocol=gpnd"]  # pools every part: one part is enough
    assert check_cells(expand(composer(gpnd), gpnd, composer)) == []


def test_a_file_without_split_test_is_told_to_add_the_key(composer, dirs):
    overrides = [*dirs, "grid=mnist_ovr", "dataset=notmnist", "method=ae", "protocol.target_class=0"]  # no data
    (problem,) = check_cells(expand(composer(overrides), overrides, composer))
    assert problem.endswith("dataset=notmnist has one part only ('test'): every cell would fail; halve it per class "
                            "into train and test with +dataset.params.split_test=true")


def test_the_parts_of_built_shards_are_checked_too(composer, dirs, tmp_path):
    """Classes known from the data only: the launcher builds the shards first, and their index gives the parts."""
    x, y = _images(n_per_class=4, classes=(0, 1))
    np.savez(tmp_path / "a.npz", x=x, y=y)
    overrides = [*dirs, "grid=mnist_ovr", "dataset=image_arrays", "dataset.name=mine", f"dataset.root={tmp_path}",
                 "dataset.params.path=a.npz", "method=ae"]
    cfg = composer(overrides)
    datasets.ensure_shards(cfg.dataset, cfg.shards_dir)
    (tmp_path / "a.npz").unlink()  # the check reads the shards' index, not the file
    problems = check_cells(expand(cfg, overrides, composer))
    assert len(problems) == 1 and problems[0].endswith("with dataset.params.split_test=true [all 2 cells]")


def test_the_one_part_check_reads_no_data(composer, dirs, tmp_path):
    """The parts come from file names: a one-part dataset whose images are garbage is still refused at launch."""
    raw = tmp_path / "data" / "KMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (raw / stem).write_bytes(b"not an idx file")
    overrides = [*dirs, "grid=mnist_ovr", "dataset=kmnist", f"dataset.root={tmp_path / 'data'}", "method=ae",
                 "protocol.target_class=0"]
    problems = check_cells(expand(composer(overrides), overrides, composer))
    assert len(problems) == 1 and "dataset.params.split_test=true" in problems[0]


@pytest.mark.slow
def test_the_launcher_refuses_it_before_any_cell_runs(tmp_path):
    _kmnist_test_only(tmp_path / "data")
    runs = tmp_path / "runs"
    r = run_job("launch_grid.py", f"runs_dir={runs}", f"shards_dir={tmp_path / 'shards'}", "grid=mnist_ovr",
                "dataset=kmnist", f"dataset.root={tmp_path / 'data'}", "method=ae", "grid.classes=[0,1]",
                timeout=300)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and errors[0].endswith("dataset.params.split_test=true [all 2 cells]"), r.stderr
    assert not runs.exists() or not any(runs.iterdir())


# ---------------------------------------------------------------------------------------------- the generic sources
def test_the_generic_sources_are_listed_with_what_they_read():
    generic = sources.generic_sources()
    assert list(generic) == ["csv_table", "idx", "image_arrays", "image_folder", "odds"]
    assert all(text for text in generic.values()) and ".npz" in generic["odds"]
    config_dir = datasets.PACKAGE_DATASETS
    assert all((config_dir / f"{name}.yaml").is_file() for name in generic)  # each has its template


# ------------------------------------------------------------------------------------- a config folder of one's own
def test_a_dataset_file_in_ones_own_config_folder_is_what_the_rebuild_command_composes(composer, tmp_path):
    """Dataset files are looked up on the launch's search path: a file of the user's folder (hydra.searchpath) is
    the `dataset=` option of the printed command, which carries that search path and composes the file again."""
    mine = tmp_path / "my_configs"
    (mine / "dataset").mkdir(parents=True)
    (mine / "dataset" / "tiny_synthetic.yaml").write_text(
        "name: tiny_synthetic\nsource: synthetic\nroot: null\ndownload: false\nsize: 4\nchannels: null\n"
        "params: {n_classes: 2, n_per_class: 6, n_test_per_class: 3}\ntop_k_percent: null\n")
    searchpath = [f"file://{mine}"]
    dcfg = composer([f"hydra.searchpath=[file://{mine}]", "dataset=tiny_synthetic"]).dataset
    assert datasets.dataset_option(dcfg) == "synthetic"  # without the user's folder: the source's file
    assert datasets.dataset_option(dcfg, [str(mine)]) == "tiny_synthetic"  # file:// is optional
    built = datasets.ensure_shards(dcfg, tmp_path / "shards", searchpath=searchpath)
    argv = shlex.split(built.rebuild)
    assert argv[:3] == ["python", "jobs/build_shards.py", "dataset=tiny_synthetic"]
    assert f"hydra.searchpath=[file://{mine}]" in argv and "force=true" in argv
    again = composer(argv[2:])
    assert again.dataset.name == "tiny_synthetic" and Path(again.shards_dir) == (tmp_path / "shards").resolve()
    assert datasets.source_params(again.dataset) == datasets.source_params(dcfg)
    assert shards.BuiltShards.open(built.folder).rebuild == built.rebuild  # the index records the same command


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_the_tabular_grid_runs_on_a_table_of_ones_own(tmp_path):
    _write_odds(tmp_path / "data", "cardio", ".npz")
    r = run_job("launch_grid.py", f"runs_dir={tmp_path / 'runs'}", f"shards_dir={tmp_path / 'shards'}",
                "grid=tabular", "dataset=odds", "grid.axes.dataset=[odds]", "dataset.params.name=cardio",
                f"dataset.root={tmp_path / 'data'}", "dataset.top_k_percent=15", "trainer.steps=20", "seed=0",
                "launcher=debug", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "shards" / "cardio" / "index.json").is_file()
    table = (tmp_path / "runs" / "tabular" / "table.md").read_text()
    assert "cardio" in table, table
    cells = sorted(p.name for p in (tmp_path / "runs" / "tabular").iterdir() if p.is_dir())
    assert len(cells) >= 5 and all("-cardio-tabular-s0-" in c for c in cells), cells
