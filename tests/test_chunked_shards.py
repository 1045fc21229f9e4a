"""Shards built from a source read in chunks (`ChunkedSource`, e.g. LSUN): the same bytes as the same rows held in
memory, built without ever holding the rows."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from test_paper_datasets import lsun_root  # noqa: F401 -- the tiny LSUN LMDB fixture

from dadf.data import normalise, shards, stream
from dadf.data.sources import load_source, lsun
from dadf.data.sources.split_test import halve
from dadf.data.types import IMAGE, ChunkedSource, Source

SHAPE = (3, 8, 8)


def _rows(part: str, start: int, n: int, shape=SHAPE) -> np.ndarray:
    """Rows start..start+n of a part, each a function of its index alone: any chunking gives the same rows."""
    return np.stack([np.random.default_rng([len(part), i]).integers(0, 256, shape, dtype=np.uint8)
                     for i in range(start, start + n)]) if n else np.empty((0, *shape), np.uint8)


def _labels(counts: dict[str, int]) -> dict[str, np.ndarray]:
    return {part: np.arange(n, dtype=np.int64) % 3 for part, n in counts.items()}


def _attributes(counts: dict[str, int]) -> dict[str, np.ndarray]:
    return {part: (np.arange(2 * n).reshape(n, 2) % 3 == 0).astype(np.uint8) for part, n in counts.items()}


def _chunked(counts: dict[str, int], chunk: int, attributes: bool = True, shape=SHAPE) -> ChunkedSource:
    def read(part: str):
        for start in range(0, counts[part], chunk):
            yield _rows(part, start, min(chunk, counts[part] - start), shape)  # a fresh array each time

    names = ("Bald", "Bangs") if attributes else ()
    return ChunkedSource("t", IMAGE, _labels(counts), ("a", "b", "c"), shape, "uint8", read, {"k": 1}, names,
                         _attributes(counts) if attributes else {})


def _in_memory(counts: dict[str, int], attributes: bool = True) -> Source:
    labels = _labels(counts)
    names = ("Bald", "Bangs") if attributes else ()
    return Source("t", IMAGE, {p: (_rows(p, 0, n), labels[p]) for p, n in counts.items()}, ("a", "b", "c"),
                  {"k": 1}, names, _attributes(counts) if attributes else {})


def _files(folder: Path) -> dict[str, bytes]:
    """Every file the shards of an in-memory source have (a chunked source's also has its row tables)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.endswith(".rows.npy")}


def _build(src, out: Path, **kw) -> dict:
    return shards.build_shards(src, out, dataset_name="t", samples_per_shard=kw.pop("samples_per_shard", 4),
                               min_shards=kw.pop("min_shards", 3), seed=5, **kw)


@pytest.mark.parametrize("chunk", [1, 3, 1000])
@pytest.mark.parametrize("attributes", [True, False])
def test_chunked_source_gives_the_shards_of_the_same_rows_in_memory(tmp_path, chunk, attributes):
    counts = {"train": 23, "test": 10, "val": 0}
    memory = _build(_in_memory(counts, attributes), tmp_path / "memory")
    chunked = _build(_chunked(counts, chunk, attributes), tmp_path / "chunked")
    assert chunked == memory
    assert _files(tmp_path / "chunked") == _files(tmp_path / "memory")  # every file, byte for byte; no spill left
    assert sorted(p.name for p in (tmp_path / "chunked").glob("*.rows.npy")) == sorted(
        shards.row_table_name(part) for part in counts)
    assert not list((tmp_path / "memory").glob("*.rows.npy"))  # in-memory sources' folders stay as they were
    back = shards.load_source_from_shards(tmp_path / "chunked")
    np.testing.assert_array_equal(back.parts["train"][0], _rows("train", 0, 23))


def test_chunked_build_never_holds_the_rows(tmp_path):
    """Peak traced memory (numpy reports its buffers to tracemalloc) stays near one chunk (0.6 MB) plus one shard
    (1.2 MB) plus fixed buffers (measured: 3.7 MB), far below the 37 MB of rows: a builder that gathered the chunks,
    or read them into one array, would fail here."""
    n, chunk, per_shard, shape = 3000, 50, 100, (3, 64, 64)
    _build(_chunked({"train": 20}, 5, shape=shape), tmp_path / "warm-up")  # first-use imports and caches
    total = n * int(np.prod(shape))
    tracemalloc.start()
    try:
        _build(_chunked({"train": n}, chunk, False, shape), tmp_path / "s", samples_per_shard=per_shard, min_shards=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < total / 4, (peak, total)
    assert shards.read_index(tmp_path / "s")["parts"]["train"]["count"] == n


def test_halving_a_chunked_source_gives_the_halves_in_memory():
    counts = {"test": 31}
    memory, chunked = halve(_in_memory(counts)), halve(_chunked(counts, 4))
    assert isinstance(chunked, ChunkedSource) and chunked.meta == memory.meta
    whole = chunked.to_source()
    for part, (x, y) in memory.parts.items():
        np.testing.assert_array_equal(whole.parts[part][0], x)
        np.testing.assert_array_equal(whole.parts[part][1], y)
        np.testing.assert_array_equal(whole.attributes[part], memory.attributes[part])


def test_chunks_unlike_what_the_source_declares_are_refused(tmp_path):
    src = _chunked({"train": 5}, 2, attributes=False)
    wrong_shape = ChunkedSource("t", IMAGE, src.labels, src.classes, (3, 4, 4), "uint8", src.read)
    with pytest.raises(ValueError, match=r"'train'.*after 0 rows.*declares 5 rows of uint8 \(3, 4, 4\)"):
        _build(wrong_shape, tmp_path / "a")
    too_few = ChunkedSource("t", IMAGE, {"train": np.zeros(7, np.int64)}, src.classes, SHAPE, "uint8", src.read)
    with pytest.raises(ValueError, match=r"'train': read 5 rows, its labels say 7"):
        _build(too_few, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not list(tmp_path.glob("b*"))  # no scratch or spill left behind


@pytest.mark.parametrize("transform", [{}, {"size": 8, "channels": 1}])
def test_lsun_is_built_chunk_by_chunk_as_it_is_loaded_whole(lsun_root, tmp_path, monkeypatch, transform):  # noqa: F811
    monkeypatch.setattr(lsun, "CHUNK_ROWS", 2)  # several chunks per category
    chunked = load_source("lsun", lsun_root, resolution=16, chunked=True, **transform)
    assert isinstance(chunked, ChunkedSource)
    assert chunked.sample_shape == ((1, 8, 8) if transform else (3, 16, 16))
    whole = load_source("lsun", lsun_root, resolution=16, **transform)  # read whole, as before
    assert isinstance(whole, Source)
    _build(chunked, tmp_path / "chunked", samples_per_shard=2)
    _build(whole, tmp_path / "memory", samples_per_shard=2)
    assert _files(tmp_path / "chunked") == _files(tmp_path / "memory")
    back = shards.load_source_from_shards(tmp_path / "chunked")
    _tables_equal(stream.scan(tmp_path / "chunked"), stream.scan(tmp_path / "memory"))  # recorded = walked
    for part, (x, y) in whole.parts.items():
        np.testing.assert_array_equal(back.parts[part][0], x)
        np.testing.assert_array_equal(back.parts[part][1], y)


def _tables_equal(a: stream.Table, b: stream.Table) -> None:
    assert [Path(f).name for f in a.files] == [Path(f).name for f in b.files] and a.parts.keys() == b.parts.keys()
    for key, rows in a.parts.items():
        for field in ("file_id", "offset", "cls", "attributes"):
            np.testing.assert_array_equal(getattr(rows, field), getattr(b.parts[key], field))


def test_streaming_reads_the_recorded_rows_and_walks_the_tars_without_them(tmp_path):
    counts = {"train": 23, "test": 10}
    out = tmp_path / "s"
    _build(_chunked(counts, 4), out)
    recorded = stream.scan(out)
    for part in counts:  # as if built before the tables: every tar header is walked
        (out / shards.row_table_name(part)).rename(tmp_path / shards.row_table_name(part))
    walked = stream.scan(out)
    _tables_equal(recorded, walked)
    np.testing.assert_array_equal(recorded.parts[(0, "train")].attributes, _attributes(counts)["train"])
    for part, n in counts.items():
        subset_rows = stream.ShardRows(recorded, recorded.parts[(0, part)].file_id, recorded.parts[(0, part)].offset,
                                       normalise.Normaliser(IMAGE))
        np.testing.assert_array_equal(subset_rows.raw(), _rows(part, 0, n))


def test_a_row_table_that_does_not_match_its_shards_is_refused(tmp_path):
    out = tmp_path / "s"
    _build(_chunked({"train": 23}, 4, attributes=False), out)
    tar = out / shards.read_index(out)["parts"]["train"]["shards"][-1]["file"]
    tar.write_bytes(tar.read_bytes()[:2000])
    with pytest.raises(shards.ShardError, match=r"truncated.*rebuild with: python jobs/build_shards.py"):
        stream.scan(out)
    table = np.load(out / "train.rows.npy")
    np.save(out / "train.rows.npy", table[:-1])
    with pytest.raises(shards.ShardError, match=r"train.rows.npy: does not match the index's 23 samples"):
        stream.scan(out)
