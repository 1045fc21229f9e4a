"""Training that streams from the shards (trainer.data=stream; dadf/data/stream.py): how the stream splits the shards
over ranks and workers, its resumable position, the launch-time choice (auto), and streaming cells end to end."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dadf.data import normalise, placement, shards, stream
from dadf.data.types import TABULAR, Source
from dadf.grid import store
from dadf.grid.cells import expand
from dadf.train import checkpoint

REPO = Path(__file__).resolve().parents[1]
DIGITS = ["grid=quickstart", "method=ae", "protocol.target_class=3", "trainer.progress=false",
          "trainer.num_threads=1"]


def numbered_shards(tmp_path, n=203, samples_per_shard=17) -> Path:
    """Tabular shards whose row i holds the value i (so every row read back names its own key); uneven shards."""
    x = np.repeat(np.arange(n, dtype=np.float32)[:, None], 3, axis=1)
    y = (np.arange(n) % 5 == 0).astype(np.int64)
    out = tmp_path / "numbered"
    shards.build_shards(Source("numbered", TABULAR, {"all": (x, y)}, ("inlier", "outlier")), out,
                        dataset_name="numbered", samples_per_shard=samples_per_shard, min_shards=8)
    return out


def all_rows(out: Path, keep=None) -> stream.ShardRows:
    table = stream.scan(out)
    part = table.parts[(0, "all")]
    idx = np.arange(len(part.cls)) if keep is None else np.flatnonzero(keep(np.arange(len(part.cls))))
    return stream.ShardRows(table, part.file_id[idx], part.offset[idx], normalise.Normaliser(TABULAR, 0.0, 1.0))


def draw(rows, micro, rank, world, workers, count, seed=5, state=None):
    s = stream.ShardStream(rows, torch.arange(len(rows)), micro, seed, rank, world, workers=workers)
    if state is not None:
        s.load_state_dict(state)
    out = []
    for _ in range(count):
        b = s.next_micro("cpu")
        out.append((b["label"].clone(), b["x"][:, 0].clone()))
    return out, s


def test_scan_reads_labels_and_rows_read_back_by_key(tmp_path):
    out = numbered_shards(tmp_path)
    rows = all_rows(out)
    assert rows.table.parts[(0, "all")].cls.tolist() == (np.arange(203) % 5 == 0).astype(int).tolist()
    pick = torch.tensor([200, 3, 77])
    raw = rows[pick].raw()
    assert raw[:, 0].tolist() == [200.0, 3.0, 77.0]
    assert rows[10:13].raw()[:, 1].tolist() == [10.0, 11.0, 12.0]


# Reader workers start from a forkserver that imports torch: seconds each time, so those cases are slow.
WORKERS = [0, pytest.param(2, marks=pytest.mark.slow)]


@pytest.mark.parametrize("workers", WORKERS)
def test_two_ranks_by_two_workers_read_each_row_once_and_every_row_of_an_epoch(tmp_path, workers):
    rows = all_rows(numbered_shards(tmp_path))
    micro = 7
    seen = {}
    for rank in (0, 1):
        s = stream.ShardStream(rows, torch.arange(len(rows)), micro, seed=5, rank=rank, world=2, workers=workers)
        batches = s.epoch_plan(0)[1]
        got = [s.next_micro("cpu") for _ in range(batches)]
        assert s.state_dict()["epoch"] == 1 and s.state_dict()["position"] == 0  # both ranks end the epoch together
        keys = torch.cat([b["label"] for b in got])
        values = torch.cat([b["x"][:, 0] for b in got])
        assert torch.equal(keys.double(), values.double())  # each row read from the shard its key names
        seen[rank] = set(keys.tolist())
        assert len(seen[rank]) == len(keys)  # no row twice within a rank
    assert not seen[0] & seen[1]  # no row on both ranks
    # No loss: the rows no rank drew are fewer than one micro-batch per rank (the equal-batches cut), all from the
    # rank that held more.
    missing = set(range(len(rows))) - seen[0] - seen[1]
    shares = []
    s0 = stream.ShardStream(rows, torch.arange(len(rows)), micro, seed=5, rank=0, world=2)
    blocks_0 = s0.epoch_plan(0)[0]
    s1 = stream.ShardStream(rows, torch.arange(len(rows)), micro, seed=5, rank=1, world=2)
    for s, blocks in ((s0, blocks_0), (s1, s1.epoch_plan(0)[0])):
        shares.append(sum(len(s.members[f]) for b in blocks for f in b))
    assert sum(shares) == len(rows)
    assert len(missing) == sum(shares) - 2 * (min(shares) // micro) * micro


@pytest.mark.slow
def test_the_batches_do_not_depend_on_the_number_of_workers(tmp_path):
    rows = all_rows(numbered_shards(tmp_path))
    ref, _ = draw(rows, 9, rank=1, world=2, workers=0, count=30)  # more than two epochs
    for workers in (1, 2):
        got, _ = draw(rows, 9, rank=1, world=2, workers=workers, count=30)
        assert all(torch.equal(a[0], b[0]) for a, b in zip(ref, got)), workers


def test_equal_batches_per_rank_on_uneven_shards(tmp_path):
    # Keep most rows of the first rows' shards only: the ranks' shares differ a lot, epoch after epoch.
    rows = all_rows(numbered_shards(tmp_path), keep=lambda i: (i < 60) | (i % 7 == 0))
    ranks = [stream.ShardStream(rows, torch.arange(len(rows)), 4, seed=1, rank=r, world=2) for r in (0, 1)]
    uneven = 0
    for epoch in range(4):
        plans = [s.epoch_plan(epoch) for s in ranks]
        shares = [sum(len(s.members[f]) for b in plan[0] for f in b) for s, plan in zip(ranks, plans)]
        uneven += abs(shares[0] - shares[1]) >= 4
        assert plans[0][1] == plans[1][1] == min(shares) // 4
    assert uneven  # the case this test is about did occur
    drawn = []
    for rank in (0, 1):
        _, s = draw(rows, 4, rank, 2, 0, count=0)
        n = 0
        while s.state_dict()["epoch"] < 3:
            s.next_micro("cpu")
            n += 1
        drawn.append(n)
    assert drawn[0] == drawn[1]


@pytest.mark.parametrize("workers", WORKERS)
def test_stream_position_round_trip(tmp_path, workers):
    rows = all_rows(numbered_shards(tmp_path))
    full, _ = draw(rows, 6, 0, 1, 0, count=60)
    first, s = draw(rows, 6, 0, 1, workers, count=23)
    state = s.state_dict()
    rest, _ = draw(rows, 6, 0, 1, workers, count=37, state=state)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full, first + rest))
    with pytest.raises(ValueError, match="same number of processes"):
        draw(rows, 6, 0, 2, 0, count=1, state=state)


def test_a_micro_batch_larger_than_a_ranks_share_is_refused(tmp_path):
    rows = all_rows(numbered_shards(tmp_path))
    with pytest.raises(ValueError, match="less than one micro-batch.*fewer processes"):
        stream.ShardStream(rows, torch.arange(len(rows)), 150, seed=0, rank=0, world=2)


def test_memory_budget_values(tmp_path):
    from omegaconf import OmegaConf

    def budget(v):
        return placement.budget_bytes(OmegaConf.create({"memory_budget": v}), free_bytes=1000)

    assert budget(0.5) == 500 and budget("2KB") == 2048 and budget("1.5 GB") == int(1.5 * 2**30)
    assert budget(4096) == 4096
    for bad in ("lots", -1, 0, 1.5):
        with pytest.raises(ValueError, match="memory_budget"):
            budget(bad)


def test_auto_compares_the_indexed_size_with_the_budget(tmp_path):
    from omegaconf import OmegaConf

    from dadf.data.datasets import source_params

    dcfg = OmegaConf.create({"name": "numbered", "source": "csv_table", "size": None, "channels": None, "params": {}})
    x = np.zeros((100, 10), np.float32)  # 100 rows x 10 x (4 raw + 4 float32) bytes = 8,000 bytes in memory
    shards.build_shards(Source("numbered", TABULAR, {"all": (x, np.zeros(100, np.int64))}, ("inlier", "outlier")),
                        tmp_path / "numbered", dataset_name="numbered", source_params=source_params(dcfg))

    def mode(data, budget, trainable=True):
        cell = OmegaConf.create({"dataset": dcfg, "protocol": {"name": "tabular"},
                                 "trainer": {"data": data, "memory_budget": budget}})
        return placement.resolve_data_mode(cell, tmp_path, trainable, free_bytes=16_000)

    assert mode("auto", 8000) == "memory" and mode("auto", 7999) == "stream"
    assert mode("auto", 0.5) == "memory" and mode("auto", 0.4) == "stream"  # fractions of the 16,000 free bytes
    assert mode("auto", 10, trainable=False) == "memory"  # a fitted method keeps its rows in memory
    assert mode("memory", 10) == "memory" and mode("stream", 10**9) == "stream"  # asked for: never re-decided
    assert mode("auto", 10) == "stream"
    (tmp_path / "numbered" / "index.json").unlink()
    assert mode("auto", 10) == "memory"  # shards not built yet: a source that declares its classes, taken as fitting


@pytest.mark.slow
def test_auto_decides_at_launch_by_budget_and_is_frozen(composer, dirs, tmp_path):
    from dadf.data.datasets import ensure_shards
    from dadf.data.pipeline import prepare_cell_data

    base = [*dirs, *DIGITS]
    ensure_shards(composer(base).dataset, tmp_path / "shards")  # the index gives the size
    memory = expand(composer(base + ["trainer.data=memory"]), base + ["trainer.data=memory"], composer)[0]
    fits = expand(composer(base), base, composer)[0]  # auto, default budget: digits fit
    assert fits.cfg.trainer.data == "memory" and fits.id == memory.id
    tiny = base + ["trainer.memory_budget=1KB"]
    streamed = expand(composer(tiny), tiny, composer)[0]
    assert streamed.cfg.trainer.data == "stream" and streamed.id != memory.id
    forced = expand(composer(base + ["trainer.data=stream"]), base + ["trainer.data=stream"], composer)[0]
    assert forced.id == streamed.id  # the id says how the data is read, not why
    # A resume reads the frozen choice: a budget changed in cell.yaml since is not looked at again.
    store.write_cell_config(streamed.dir, streamed.cfg)
    cfg = store.read_cell_config(streamed.dir)
    cfg.trainer.memory_budget = "1000GB"
    data = prepare_cell_data(cfg)
    assert isinstance(data.train_x, stream.ShardRows)
    assert data.train_x.to("cpu").shape == (len(data.train_label), 1, 8, 8)


def test_unknown_data_mode_and_streaming_a_fitted_method_are_refused(composer, dirs):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as err:  # not a data mode: refused when composing
        composer([*dirs, *DIGITS, "trainer.data=disk"])
    assert "Invalid value 'disk', expected one of [auto, memory, stream]" in str(err.value.__cause__)
    shallow = [*dirs, *(o for o in DIGITS if o != "method=ae"), "method=ocsvm", "trainer.data=stream"]
    with pytest.raises(ValueError, match="'ocsvm' is fitted on all its training rows.*trainer.data=memory"):
        expand(composer(shallow), shallow, composer)


def _train(cell_dir: Path, wait_for_checkpoint=False) -> subprocess.CompletedProcess | None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "jobs" / "train.py"), f"cell={cell_dir}", "--no-progress"]
    if not wait_for_checkpoint:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    with open(cell_dir / "killed-run.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while not checkpoint.complete_checkpoints(cell_dir / "checkpoints") and proc.poll() is None:
            assert time.time() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        below = _descendants(proc.pid)  # its reader workers and their forkserver
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, (cell_dir / "killed-run.log").read_text()[-3000:]
    deadline = time.time() + 30  # nothing it started may read on with nobody to hand the rows to
    while [p for p in below if _alive(p)] and time.time() < deadline:
        time.sleep(0.1)
    assert not [p for p in below if _alive(p)], f"processes outlived the killed cell: {below}"
    return None


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        out = subprocess.run(["pgrep", "-P", str(todo.pop())], capture_output=True, text=True).stdout
        found += [int(p) for p in out.split()]
        todo += [int(p) for p in out.split()]
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cell(composer, runs: Path, shards_dir: Path, extra=()):
    overrides = [f"runs_dir={runs}", f"shards_dir={shards_dir}", *DIGITS, *extra]
    cell = expand(composer(overrides), overrides, composer)[0]
    store.write_cell_config(cell.dir, cell.cfg)
    return cell


@pytest.mark.slow
def test_a_killed_streaming_cell_resumes_to_the_uninterrupted_result(composer, tmp_path):
    extra = ["trainer.data=stream", "trainer.steps=1200", "trainer.checkpoint_every=25", "trainer.data_workers=2"]
    whole = _cell(composer, tmp_path / "whole", tmp_path / "shards", [*extra[:3], "trainer.data_workers=0"])
    killed = _cell(composer, tmp_path / "killed", tmp_path / "shards", extra)
    assert whole.id == killed.id  # the workers are outside the identity: they do not change the result
    done = _train(whole.dir)
    assert done.returncode == 0, done.stderr[-3000:]
    _train(killed.dir, wait_for_checkpoint=True)  # SIGKILL once a checkpoint exists
    assert not (killed.dir / "metrics.json").exists(), "the kill came after training ended; make the cell longer"
    resumed_from = checkpoint.complete_checkpoints(killed.dir / "checkpoints")[-1][0]
    assert 0 < resumed_from < 1200
    done = _train(killed.dir)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = (np.load(c.dir / "scores.npz") for c in (whole, killed))
    assert np.array_equal(a["scores"], b["scores"])  # bit-exact on CPU
    wa, wb = (checkpoint.load(checkpoint.latest(c.dir / "checkpoints"))["method"] for c in (whole, killed))
    assert str(wa) == str(wb)


@pytest.mark.slow
def test_streaming_and_in_memory_cells_reach_the_same_auroc(composer, tmp_path):
    results = {}
    for mode in ("memory", "stream"):
        cell = _cell(composer, tmp_path / mode, tmp_path / "shards", [f"trainer.data={mode}", "trainer.steps=300"])
        done = _train(cell.dir)
        assert done.returncode == 0, done.stderr[-3000:]
        results[mode] = store.read_json(cell.dir / "metrics.json")["metrics"]["auroc"]
    assert results["memory"] > 0.9 and abs(results["memory"] - results["stream"]) < 0.03, results


@pytest.mark.slow
def test_two_process_streaming_cell_ends_on_uneven_shards(composer, dirs, tmp_path):
    # The normals of one class lie unevenly over the shards: the ranks' shares differ, the run must not hang.
    from test_distributed import make_cell, run_worker

    from dadf.data.pipeline import prepare_cell_data

    cell = make_cell(composer, dirs, ["trainer.steps=30", "trainer.data=stream", "trainer.data_workers=1"],
                     method="ae")
    data = prepare_cell_data(cell.cfg)
    ranks = [stream.ShardStream(data.train_x, data.train_label, 16, seed=0, rank=r, world=2) for r in (0, 1)]
    shares = [sum(len(s.members[f]) for b in s.epoch_plan(0)[0] for f in b) for s in ranks]
    assert shares[0] != shares[1], shares  # uneven: the case this test is about
    run_worker(cell.dir, tmp_path / "out", 2)
    r0, r1 = (torch.load(tmp_path / "out" / f"rank{r}.pt") for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    for net in r0["nets"]:
        for k, v in r0["nets"][net].items():
            assert torch.equal(v, r1["nets"][net][k]), f"ranks differ in {net}.{k}"


def test_the_split_from_labels_and_attributes_in_the_shards_equals_the_in_memory_split(tmp_path):
    from dadf.data import protocols
    from dadf.data.types import IMAGE

    rng = np.random.default_rng(0)
    parts = {p: (rng.integers(0, 256, (n, 1, 4, 4), dtype=np.uint8), rng.integers(0, 3, n)) for p, n in
             (("train", 90), ("test", 40))}
    attributes = {p: rng.integers(0, 2, (len(y), 2), dtype=np.uint8) for p, (_, y) in parts.items()}
    source = Source("attrs", IMAGE, parts, ("a", "b", "c"), attribute_names=("Bald", "Bangs"), attributes=attributes)
    out = tmp_path / "attrs"
    shards.build_shards(source, out, dataset_name="attrs", samples_per_shard=16)
    table = stream.scan(out)
    labels_only = stream.label_source(out, table, 0)
    loaded = shards.load_source_from_shards(out)
    for name, params in (("attribute", {"attribute": "Bangs", "val_fraction": 0.2}), ("ovr", {"target_class": 1})):
        a = protocols.make_split(name, loaded, seed=3, params=params)
        b = protocols.make_split(name, labels_only, seed=3, params=params)
        for subset in ("train", "val", "test"):
            for field in ("part", "index", "label", "truth", "cls"):
                assert np.array_equal(getattr(getattr(a, subset), field), getattr(getattr(b, subset), field))
        # and the rows read by offset are the rows the in-memory path gathers
        rows = stream.ShardRows.of(table, a.test, normalise.Normaliser(IMAGE))
        gathered = np.stack([loaded.parts[p][0][i] for p, i in zip(a.test.part, a.test.index)])
        assert np.array_equal(rows.raw(), gathered)


@pytest.mark.slow
def test_the_first_launch_of_a_grid_decides_auto_from_the_shards_it_builds(tmp_path):
    # digits declares its classes, so expanding needs no shards; the launcher still builds them first for auto
    # cells, so the first launch decides as every later one does.
    from conftest import run_job

    args = [f"runs_dir={tmp_path / 'runs'}", f"shards_dir={tmp_path / 'shards'}", *DIGITS, "trainer.steps=20",
            "trainer.memory_budget=1KB", "launcher=debug"]
    for _ in range(2):
        done = run_job("launch_grid.py", *args)
        assert done.returncode == 0, done.stderr[-3000:]
    cells = list((tmp_path / "runs" / "quickstart").glob("ae-*"))
    assert len(cells) == 1, cells  # the second launch found the same cell finished
    assert store.read_cell_config(cells[0]).trainer.data == "stream"
