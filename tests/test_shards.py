import json
import tarfile

import numpy as np
import pytest

from dadf.data import shards as shards_mod
from dadf.data.shards import (
    ShardError,
    build_shards,
    load_source_from_shards,
    read_index,
    rebuild_command,
    sample_key,
    stream_samples,
)
from dadf.data.types import Source

REBUILD = "python jobs/build_shards.py dataset="


@pytest.fixture
def image_source():
    rng = np.random.default_rng(0)
    parts = {
        "train": (rng.integers(0, 256, (100, 1, 8, 8), dtype=np.uint8), rng.integers(0, 10, 100)),
        "test": (rng.integers(0, 256, (40, 1, 8, 8), dtype=np.uint8), rng.integers(0, 10, 40)),
    }
    return Source("img", "image", parts, tuple(f"c{i}" for i in range(10)), meta={"url": "x", "size": [8, 8]})


@pytest.fixture
def tabular_source():
    rng = np.random.default_rng(1)
    y = (rng.random(60) < 0.2).astype(np.int64)
    return Source("tab", "tabular", {"all": (rng.normal(size=(60, 5)).astype(np.float32), y)}, ("inlier", "outlier"))


@pytest.fixture
def built(tmp_path, image_source):
    out = tmp_path / "img"
    build_shards(image_source, out, dataset_name="img", samples_per_shard=16, min_shards=3)
    return out


def shard_keys(path) -> list[str]:
    """Sample keys of a shard, in file order."""
    with tarfile.open(path) as tar:
        return [m.name.split(".", 1)[0] for m in tar if m.name.endswith(".x.npy")]


def assert_same_source(a: Source, b: Source):
    assert (a.name, a.kind, a.classes, a.meta) == (b.name, b.kind, b.classes, b.meta)
    assert list(a.parts) == list(b.parts)
    for part in a.parts:
        (xa, ya), (xb, yb) = a.parts[part], b.parts[part]
        assert xa.dtype == xb.dtype and xa.shape == xb.shape and ya.dtype == yb.dtype
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


# ------------------------------------------------------------------------------------------ build/load


def test_round_trip_image(built, image_source):
    assert_same_source(load_source_from_shards(built), image_source)


@pytest.mark.parametrize("verify", [True, False])
def test_round_trip_tabular(tmp_path, tabular_source, verify):
    build_shards(tabular_source, tmp_path / "tab", dataset_name="tab", samples_per_shard=7)
    assert_same_source(load_source_from_shards(tmp_path / "tab", verify=verify), tabular_source)


def test_samples_are_shuffled(built):
    index = read_index(built)
    first = index["parts"]["train"]["shards"][0]
    keys = shard_keys(built / first["file"])
    assert len(keys) == first["count"]
    assert keys != [sample_key("train", i) for i in range(first["count"])]
    assert all(k.startswith("train_") for k in keys)


def test_build_is_deterministic_per_seed(tmp_path, image_source):
    def sums(name, seed):
        index = build_shards(image_source, tmp_path / name, dataset_name="img", min_shards=2, seed=seed)
        return [s["sha256"] for s in index["parts"]["train"]["shards"]]

    assert sums("a", 0) == sums("b", 0)
    assert sums("a", 0) != sums("c", 1)


@pytest.mark.parametrize(
    "n,per_shard,min_shards,expected",
    [(100, 16, 3, 7), (100, 16, 8, 8), (100, 2000, 8, 8), (5, 2000, 8, 5), (1, 10, 8, 1), (100, 10, 1, 10)],
)
def test_shard_count_rule(tmp_path, n, per_shard, min_shards, expected):
    src = Source("s", "tabular", {"all": (np.zeros((n, 2), np.float32), np.zeros(n, np.int64))}, ("inlier", "outlier"))
    index = build_shards(src, tmp_path / "s", dataset_name="s", samples_per_shard=per_shard, min_shards=min_shards)
    shards = index["parts"]["all"]["shards"]
    assert len(shards) == expected
    assert sum(s["count"] for s in shards) == n and min(s["count"] for s in shards) >= 1
    assert max(s["count"] for s in shards) - min(s["count"] for s in shards) <= 1  # balanced
    assert [s["file"] for s in shards] == [f"all-{k:06d}.tar" for k in range(expected)]


def test_index_content(built):
    index = read_index(built)
    assert index == json.loads((built / "index.json").read_text())
    assert {k: index[k] for k in ("format", "dataset", "name", "kind", "classes", "sample_shape", "dtype")} == {
        "format": 1, "dataset": "img", "name": "img", "kind": "image", "classes": [f"c{i}" for i in range(10)],
        "sample_shape": [1, 8, 8], "dtype": "uint8",
    }
    assert index["meta"] == {"url": "x", "size": [8, 8]} and index["source_params"] == {}
    assert {p: e["count"] for p, e in index["parts"].items()} == {"train": 100, "test": 40}
    for entry in index["parts"].values():
        for shard in entry["shards"]:
            assert shard["sha256"] == shards_mod._sha256(built / shard["file"])
    assert sorted(p.name for p in built.iterdir()) == sorted(
        ["index.json"] + [s["file"] for e in index["parts"].values() for s in e["shards"]]
    )


def test_source_params_recorded(tmp_path, tabular_source):
    index = build_shards(tabular_source, tmp_path / "t", dataset_name="t", source_params={"size": 28, "seed": 1})
    assert read_index(tmp_path / "t")["source_params"] == index["source_params"] == {"size": 28, "seed": 1}


def test_atomic_build_leaves_no_tmp_and_replaces_old(tmp_path, image_source, tabular_source):
    out = tmp_path / "ds"
    build_shards(image_source, out, dataset_name="ds", min_shards=2)
    build_shards(tabular_source, out, dataset_name="ds", min_shards=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert_same_source(load_source_from_shards(out), tabular_source)
    assert not any(p.name.startswith("train-") for p in out.iterdir())  # old shards gone


def test_failed_build_keeps_old_shards(tmp_path, image_source, tabular_source, monkeypatch):
    out = tmp_path / "ds"
    build_shards(image_source, out, dataset_name="ds", min_shards=2)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(shards_mod, "_write_shard", boom)
    with pytest.raises(OSError, match="disk full"):
        build_shards(tabular_source, out, dataset_name="ds")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert_same_source(load_source_from_shards(out), image_source)


def test_build_rejects_bad_part_name(tmp_path):
    src = Source("s", "tabular", {"a.b": (np.zeros((3, 2), np.float32), np.zeros(3, np.int64))}, ("i", "o"))
    with pytest.raises(ShardError, match="part name 'a.b'"):
        build_shards(src, tmp_path / "s", dataset_name="s")


# ------------------------------------------------------------------------------------------ corruption


def first_shard(out, part="train"):
    return out / read_index(out)["parts"][part]["shards"][0]["file"]


def test_rebuild_command():
    assert rebuild_command("mnist") == "python jobs/build_shards.py dataset=mnist"


def test_truncated_shard(built):
    path = first_shard(built)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(ShardError) as e:
        load_source_from_shards(built)
    assert path.name in str(e.value) and REBUILD + "img" in str(e.value) and "checksum mismatch" in str(e.value)
    with pytest.raises(ShardError) as e:
        load_source_from_shards(built, verify=False)
    count = read_index(built)["parts"]["train"]["shards"][0]["count"]
    assert path.name in str(e.value) and REBUILD + "img" in str(e.value)
    assert "truncated: read" in str(e.value) and f"of {count} samples" in str(e.value)


def test_flipped_byte(built):
    path = first_shard(built)
    data = bytearray(path.read_bytes())
    data[1024 + 200] ^= 0xFF  # inside the first sample's payload
    path.write_bytes(bytes(data))
    with pytest.raises(ShardError) as e:
        load_source_from_shards(built)
    assert path.name in str(e.value) and "checksum mismatch" in str(e.value) and REBUILD + "img" in str(e.value)


def test_missing_shard_and_index(built):
    path = first_shard(built, "test")
    path.unlink()
    with pytest.raises(ShardError, match=f"{path.name}: missing shard file.*{REBUILD}img"):
        load_source_from_shards(built)
    (built / "index.json").unlink()
    with pytest.raises(ShardError, match=f"index.json: missing index.*{REBUILD}img"):
        load_source_from_shards(built)


def test_count_mismatch(built):
    index = json.loads((built / "index.json").read_text())
    index["parts"]["train"]["shards"][0]["count"] -= 1
    (built / "index.json").write_text(json.dumps(index))
    with pytest.raises(ShardError, match="count mismatch.*index says"):
        load_source_from_shards(built, verify=False)


# ------------------------------------------------------------------------------------------- streaming


def all_keys(src: Source, part: str) -> set[str]:
    return {sample_key(part, i) for i in range(len(src.parts[part][1]))}


def test_stream_two_ranks(built, image_source):
    x, y = image_source.parts["train"]
    got = []
    for rank in (0, 1):
        rows = list(stream_samples(built, "train", rank=rank, world_size=2))
        for key, xi, cls in rows:
            i = int(key.split("_")[1])
            assert xi.dtype == x.dtype and np.array_equal(xi, x[i]) and cls == y[i]
        got.append({k for k, _, _ in rows})
    assert not (got[0] & got[1]) and got[0] | got[1] == all_keys(image_source, "train")
    assert len(got[0]) + len(got[1]) == 100


@pytest.mark.parametrize("shuffle", [False, True])
def test_rank_reads_only_its_shards(built, image_source, shuffle):
    # Delete rank 1's shards: rank 0 must still stream fine, so it never opens them.
    shards = read_index(built)["parts"]["train"]["shards"]
    order = np.random.default_rng(5).permutation(len(shards)) if shuffle else np.arange(len(shards))
    for k in order[1::2]:
        (built / shards[k]["file"]).unlink()
    keys = {k for k, _, _ in stream_samples(built, "train", rank=0, world_size=2, shuffle_shards=shuffle, seed=5)}
    assert keys == set().union(*(set(shard_keys(built / shards[k]["file"])) for k in order[0::2]))
    with pytest.raises(ShardError, match=f"missing shard file.*{REBUILD}img"):
        list(stream_samples(built, "train", rank=1, world_size=2, shuffle_shards=shuffle, seed=5))


def test_stream_keys_filter(built):
    wanted = {sample_key("test", i) for i in (0, 7, 39)}
    assert {k for k, _, _ in stream_samples(built, "test", keys=wanted)} == wanted


def test_stream_corrupt_shard(built):
    path = first_shard(built)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2 + 100)  # cut inside a member
    with pytest.raises(ShardError) as e:
        list(stream_samples(built, "train"))
    assert path.name in str(e.value) and REBUILD + "img" in str(e.value)


def test_stream_truncated_at_member_boundary(built):
    path = first_shard(built)
    with open(path, "r+b") as f:
        f.truncate(3 * 2048)  # three whole samples (2 members of 1024 bytes each), no end marker
    with pytest.raises(ShardError, match=f"{path.name}: truncated: read 3 of"):
        list(stream_samples(built, "train"))


def test_stream_bad_arguments(built):
    with pytest.raises(ShardError, match="no part 'val'"):
        stream_samples(built, "val")
    with pytest.raises(ShardError, match="rank=2"):
        stream_samples(built, "train", rank=2, world_size=2)


def test_stream_through_dataloader_workers(built, image_source):
    torch = pytest.importorskip("torch")
    loader = torch.utils.data.DataLoader(
        stream_samples(built, "train"), batch_size=None, num_workers=2, multiprocessing_context="fork"
    )
    keys = [k for k, _, _ in loader]
    assert len(keys) == 100 and set(keys) == all_keys(image_source, "train")


# ------------------------------------------------------------------------------------------ first use


_FIRST_USE = """
import sys, time
from pathlib import Path
from omegaconf import OmegaConf
from dadf.data.pipeline import load_dataset
go, shards_root = Path(sys.argv[1]), sys.argv[2]
Path(sys.argv[3]).touch()
while not go.exists():
    time.sleep(0.01)
src = load_dataset(OmegaConf.create({"name": "synthetic", "source": "synthetic", "root": None, "download": False,
                                     "size": None, "channels": None, "params": {}}), shards_root)
print((Path(shards_root) / "synthetic" / "index.json").stat().st_ino, int(src.parts["train"][0].sum()))
"""


@pytest.mark.slow
def test_processes_starting_together_build_the_shards_once(tmp_path):
    """Ranks of a cell (or cells of an array) that all find the shards missing: one builds, the others read its
    build."""
    import subprocess
    import sys
    import time

    go, ready = tmp_path / "go", [tmp_path / f"ready{i}" for i in range(3)]
    procs = [subprocess.Popen([sys.executable, "-c", _FIRST_USE, str(go), str(tmp_path / "shards"), str(r)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in ready]
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()  # all imported: they look for the shards at the same moment
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    final = (tmp_path / "shards" / "synthetic" / "index.json").stat().st_ino
    seen = {tuple(out.split()) for out, _ in outs}
    assert len(seen) == 1 and int(next(iter(seen))[0]) == final, seen  # same build, never replaced under a reader
