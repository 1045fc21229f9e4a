"""Training from a cell's WebDataset shards without loading them (``trainer.data=stream``): the readers.

- ``scan``: where each sample's row lies in its shard (file, byte offset), its class and attributes, read from the
  table the build recorded (``<part>.rows.npy``, shards of a chunked source), else from the tar headers with seeks:
  the rows are not read, so the protocol's split is made from labels and attributes alone.
- ``ShardRows``: rows read on demand by offset. ``rows[i:j]``, ``rows[mask]`` and ``rows[index]`` are views;
  ``rows.to(device)`` reads and normalises them. The val/test split and the methods' start/end hooks use it.
- ``ShardStream``: this rank's endless, seeded, resumable stream of training micro-batches. Per epoch the shards
  holding training rows are permuted (seeded) and dealt to the ranks (``order[rank::world]``); a rank's shards are
  read ahead by DataLoader workers (worker w reads shards w, w+W, ..., which the DataLoader returns in order) and
  shuffled in blocks of ``shuffle_shards`` shards (the seeded buffer). Every rank draws the same number of
  micro-batches per epoch, the smallest rank share computed from the shard counts, so uneven shards never leave a
  rank waiting in a collective. Its state is (epoch, micro-batch in epoch); a resume re-reads at most one block.
  The order depends on the seed, world size, micro-batch and buffer, never on the number of workers.

Whether a cell streams is decided at launch (placement.py); its split and rows are put together in pipeline.py.
"""
from __future__ import annotations

import functools
import math
import multiprocessing
import os
import select
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dadf.data import shards
from dadf.data.normalise import Normaliser
from dadf.data.shards import BuiltShards, RowLayout
from dadf.data.types import PRIMARY, Source, Subset

# Shards shuffled together, the seeded buffer: 4 x 2,000 rows by default (the shards are shuffled when built too).
# It shapes the batches: changing it changes every streaming cell's result.
SHUFFLE_SHARDS = 4

# --------------------------------------------------------------------------------------------------------------
# Where each row lies.


@dataclass(frozen=True)
class PartRows:
    """One part of one shard folder: per original row index, its shard file, payload offset and class."""

    file_id: np.ndarray  # int32 into Table.files
    offset: np.ndarray  # int64: first byte of the row's raw values (after the .npy header)
    cls: np.ndarray  # int64
    attributes: np.ndarray  # uint8 (rows, attributes): the ".attr" members (no columns when the source has none)


@dataclass
class Table:
    files: list[str]
    parts: dict[tuple[int, str], PartRows]  # (source id, part) -> rows
    shape: tuple[int, ...]
    dtype: np.dtype


def _walk(path: str, part: str, layout: RowLayout, rebuild: str):
    """{row: payload offset}, {row: cls}, {row: .attr bytes} of one shard, from its tar headers (seeks over the
    payloads)."""
    hlen = len(layout.header)
    with open(path, "rb") as f:
        def read(offset: int, size: int) -> bytes:  # buffered: a seek within the buffer reads nothing new
            f.seek(offset)
            return f.read(size)

        got = shards.read_members(path, part, rebuild, read, os.fstat(f.fileno()).st_size)
        offsets = {}
        for row, (offset, n) in zip(got.rows, got.x):
            if n != hlen + layout.nbytes or read(offset, hlen) != layout.header:
                raise shards.shard_error(path, f"sample {shards.sample_key(part, row)!r} is not a {layout.shape} "
                                         f"{layout.dtype} row", rebuild)
            offsets[row] = offset + hlen
    return offsets, got.classes, got.attributes


def scan(built: BuiltShards | Path, source_id: int = PRIMARY, table: Table | None = None) -> Table:
    """Add one shard folder's rows to ``table`` (a new one by default); checks every count against the index."""
    built = BuiltShards.of(built)
    out_dir, index, rebuild = built.folder, built.index, built.rebuild
    layout = RowLayout(index["sample_shape"], index["dtype"])
    if table is None:
        table = Table([], {}, layout.shape, layout.dtype)
    elif (table.shape, table.dtype) != (layout.shape, layout.dtype):
        raise shards.ShardError(f"shards in {out_dir} hold {layout.shape} {layout.dtype} rows, unlike the cell's "
                                f"{table.shape} {table.dtype}: set the OOD dataset's size and channels to match")
    for part, entry in index["parts"].items():
        n = int(entry["count"])
        names = index.get("attributes", ())
        if (out_dir / shards.row_table_name(part)).is_file():
            table.parts[(source_id, part)] = _recorded_rows(out_dir, part, entry, layout, table, len(names), rebuild)
            continue
        rows = PartRows(np.full(n, -1, np.int32), np.zeros(n, np.int64), np.zeros(n, np.int64),
                        np.zeros((n, len(names)), np.uint8))
        for shard in entry["shards"]:
            path = str(out_dir / shard["file"])
            if not os.path.isfile(path):
                raise shards.shard_error(path, "missing shard file", rebuild)
            offsets, classes, attributes = _walk(path, part, layout, rebuild)
            got = sorted(set(offsets) & set(classes))
            if len(got) != int(shard["count"]) or (got and (got[0] < 0 or got[-1] >= n)):
                raise shards.shard_error(path, f"read {len(got)} complete samples, index says {shard['count']}",
                                         rebuild)
            table.files.append(path)
            idx = np.asarray(got, np.int64)
            rows.file_id[idx] = len(table.files) - 1
            rows.offset[idx] = [offsets[r] for r in got]
            rows.cls[idx] = [classes[r] for r in got]
            if names:
                lacking = [r for r in got if len(attributes.get(r, b"")) != len(names)]
                if lacking:
                    raise shards.shard_error(path, f"sample {lacking[0]} lacks its {len(names)} attributes (.attr "
                                             f"member)", rebuild)
                rows.attributes[idx] = [shards.decode_attributes(attributes[r]) for r in got]
        if (rows.file_id < 0).any():
            raise shards.shard_error(out_dir, f"part {part!r} misses {int((rows.file_id < 0).sum())} of {n} samples",
                                     rebuild)
        table.parts[(source_id, part)] = rows
    return table


def _recorded_rows(out_dir: Path, part: str, entry: dict, layout: RowLayout, table: Table, n_attributes: int,
                   rebuild: str) -> PartRows:
    """The part's rows from the table its build recorded (`shards._write_row_table`), checked against the index and
    the tars' sizes (a truncated tar fails here, as the walk would)."""
    path = out_dir / shards.row_table_name(part)
    n, files = int(entry["count"]), [str(out_dir / s["file"]) for s in entry["shards"]]
    try:
        rec = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exn:
        raise shards.shard_error(path, f"unreadable ({exn})", rebuild) from exn
    counts = [int(s["count"]) for s in entry["shards"]]
    if (rec.dtype != shards.row_table_dtype(n_attributes) or len(rec) != n
            or (n and rec["shard"].min() < 0)
            or np.bincount(rec["shard"], minlength=len(files)).tolist() != counts
            or not np.array_equal(np.sort(rec["row"]), np.arange(n))):
        raise shards.shard_error(path, f"does not match the index's {n} samples in {len(files)} shards", rebuild)
    for k, file in enumerate(files):
        if not os.path.isfile(file):
            raise shards.shard_error(file, "missing shard file", rebuild)
        mine = rec["offset"][rec["shard"] == k]
        if len(mine) and mine.max() + layout.nbytes > os.path.getsize(file):
            raise shards.shard_error(file, "truncated (shorter than its recorded rows)", rebuild)
    first = len(table.files)
    table.files.extend(files)
    rows = PartRows(np.empty(n, np.int32), np.empty(n, np.int64), np.empty(n, np.int64),
                    np.zeros((n, n_attributes), np.uint8))
    order = rec["row"]
    rows.file_id[order], rows.offset[order], rows.cls[order] = first + rec["shard"], rec["offset"], rec["cls"]
    if n_attributes:
        rows.attributes[order] = rec["attributes"]
    return rows


def label_source(built: BuiltShards | Path, table: Table, source_id: int) -> Source:
    """A `Source` whose rows hold no pixels (a zero-stride view): what protocols need to split, labels only."""
    index = BuiltShards.of(built).index
    empty = np.zeros((1, *table.shape), table.dtype)
    mine = {part: rows for (sid, part), rows in table.parts.items() if sid == source_id}
    parts = {part: (np.broadcast_to(empty, (len(rows.cls), *table.shape)), rows.cls) for part, rows in mine.items()}
    names = tuple(index.get("attributes", ()))
    return Source(name=index["name"], kind=index["kind"], parts=parts, classes=tuple(index["classes"]),
                  meta=index["meta"], attribute_names=names,
                  attributes={part: rows.attributes for part, rows in mine.items()} if names else {})


# --------------------------------------------------------------------------------------------------------------
# Rows read on demand.


def _read_rows(files: list[str], file_id: np.ndarray, offset: np.ndarray, nbytes: int) -> np.ndarray:
    """The raw bytes of the given rows, in the given order (one open per file; whole-file reads when dense)."""
    out = np.empty((len(file_id), nbytes), np.uint8)
    for fid in np.unique(file_id):
        where = np.flatnonzero(file_id == fid)
        with open(files[fid], "rb") as f:
            if len(where) * nbytes * 4 > os.fstat(f.fileno()).st_size:
                buf = np.frombuffer(f.read(), np.uint8)
                out[where] = buf[offset[where][:, None] + np.arange(nbytes)]
            else:
                for k in where:
                    out[k] = np.frombuffer(os.pread(f.fileno(), nbytes, int(offset[k])), np.uint8)
    return out


class ShardRows:
    """Rows of a cell's shards, read when asked for: indexing gives a view, ``to(device)`` the float tensor."""

    device = torch.device("cpu")

    def __init__(self, table: Table, file_id: np.ndarray, offset: np.ndarray, norm: Normaliser):
        self.table, self.file_id, self.offset, self.norm = table, file_id, offset, norm

    @classmethod
    def of(cls, table: Table, subset: Subset, norm: Normaliser) -> ShardRows:
        file_id = np.empty(len(subset), np.int32)
        offset = np.empty(len(subset), np.int64)
        for (sid, part), rows in table.parts.items():
            sel = np.flatnonzero((subset.source == sid) & (subset.part == part))
            file_id[sel], offset[sel] = rows.file_id[subset.index[sel]], rows.offset[subset.index[sel]]
        return cls(table, file_id, offset, norm)

    def __len__(self) -> int:
        return len(self.file_id)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.table.shape)

    def __getitem__(self, key) -> ShardRows:
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        if isinstance(key, (int, np.integer)):
            key = [key]
        return ShardRows(self.table, self.file_id[key], self.offset[key], self.norm)

    def raw(self) -> np.ndarray:
        nbytes = math.prod(self.table.shape) * self.table.dtype.itemsize
        flat = _read_rows(self.table.files, self.file_id, self.offset, nbytes)
        return flat.view(self.table.dtype).reshape(self.shape)

    def to(self, device, non_blocking: bool = False) -> torch.Tensor:
        return self.norm(self.raw()).to(device, non_blocking=non_blocking)

    def chunks(self, size: int = 65536) -> Iterator[np.ndarray]:
        """The raw rows, ``size`` at a time (one pass over rows too many to hold)."""
        for i in range(0, len(self), size):
            yield self[i : i + size].raw()


# --------------------------------------------------------------------------------------------------------------
# This rank's training stream.


def _as_is(item):
    return item


class _ShardReader(torch.utils.data.IterableDataset):
    """Yields (epoch, block, positions, raw rows) for one shard at a time, following ``plan``; worker w of W reads
    items w, w+W, ..., so the DataLoader (in order) hands them back in plan order whatever W is."""

    def __init__(self, stream: ShardStream, epoch: int, block: int):
        self.stream, self.epoch, self.block = stream, epoch, block

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        s = self.stream
        nbytes = math.prod(s.rows.table.shape) * s.rows.table.dtype.itemsize
        for k, (epoch, block, shard) in enumerate(s.plan(self.epoch, self.block)):
            if k % workers == worker:
                pos = s.members[shard]
                raw = _read_rows(s.rows.table.files, s.rows.file_id[pos], s.rows.offset[pos], nbytes)
                yield epoch, block, pos, raw


def _exit_with(pid: int, worker_id: int) -> None:
    """A reader worker ends when the cell's process does, however it ends (kill -9 included). Its parent is the
    forkserver, which outlives a killed cell, so torch's own watch on the parent never fires."""
    def watch() -> None:
        try:
            fd = os.pidfd_open(pid)  # readable once the process has exited
            select.select([fd], [], [])
        except (AttributeError, OSError):  # no pidfd (old kernel): look every second
            while True:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="dadf-cell-watch", daemon=True).start()


class ShardStream:
    """This rank's micro-batches of ``micro`` rows, endless over seeded epochs (see the module's docstring)."""

    def __init__(self, rows: ShardRows, labels: torch.Tensor, micro: int, seed: int, rank: int = 0, world: int = 1,
                 workers: int = 0, shuffle_shards: int = SHUFFLE_SHARDS):
        self.rows, self.labels, self.micro, self.seed = rows, labels, int(micro), int(seed)
        self.rank, self.world, self.shuffle_shards = rank, world, int(shuffle_shards)
        self.workers = 0 if multiprocessing.current_process().daemon else int(workers)  # daemons cannot fork
        order = np.lexsort((rows.offset, rows.file_id))  # each shard's rows in their stored order
        shard_ids, starts = np.unique(rows.file_id[order], return_index=True)
        self.shard_ids = shard_ids
        self.members = dict(zip(shard_ids.tolist(), np.split(order, starts[1:])))
        self.epoch = self.position = 0  # the next micro-batch: its epoch and its number in that epoch
        self._it = None
        self._epochs: dict[int, tuple[list[list[int]], int]] = {}
        self.epoch_plan(0)  # refuses now a rank share smaller than one micro-batch

    # -- the plan: a pure function of (seed, epoch, rank, world), the same in every process -----------------------
    def epoch_plan(self, epoch: int) -> tuple[list[list[int]], int]:
        """(this rank's shards in blocks, micro-batches every rank draws this epoch)."""
        if epoch not in self._epochs:
            g = np.random.default_rng([self.seed, epoch, 0x5EED])
            order = self.shard_ids[g.permutation(len(self.shard_ids))].tolist()
            counts = [sum(len(self.members[s]) for s in order[r :: self.world]) for r in range(self.world)]
            batches = min(counts) // self.micro
            if batches < 1:
                raise ValueError(
                    f"epoch {epoch}: a rank gets {min(counts)} training rows from its shards, less than one "
                    f"micro-batch of {self.micro}; use fewer processes or a smaller trainer.batch_size, or rebuild "
                    f"the shards with more, smaller shards (jobs/build_shards.py)")
            mine = order[self.rank :: self.world]
            blocks = [mine[i : i + self.shuffle_shards] for i in range(0, len(mine), self.shuffle_shards)]
            if len(self._epochs) > 4:  # the reader and the batcher may be an epoch apart
                self._epochs.clear()
            self._epochs[epoch] = (blocks, batches)
        return self._epochs[epoch]

    def _block_sizes(self, blocks) -> list[int]:
        return [sum(len(self.members[s]) for s in b) for b in blocks]

    def plan(self, epoch: int, block: int):
        """Endless (epoch, block, shard) items from the given block on: only blocks an epoch's batches reach."""
        while True:
            blocks, batches = self.epoch_plan(epoch)
            need, start = batches * self.micro, 0
            for b, size in enumerate(self._block_sizes(blocks)):
                if b >= block and start < need:
                    for shard in blocks[b]:
                        yield epoch, b, shard
                start += size
            epoch, block = epoch + 1, 0

    # -- reading --------------------------------------------------------------------------------------------------
    def _micro_batches(self):
        """(epoch, micro-batches drawn in it, positions, raw rows) of each micro-batch from (epoch, position) on."""
        epoch, drawn, micro = self.epoch, self.position, self.micro
        blocks, batches = self.epoch_plan(epoch)
        sizes, skip, block = self._block_sizes(blocks), drawn * micro, 0
        while skip >= sizes[block]:  # the block holding the next row (drawn < batches: it exists)
            skip, block = skip - sizes[block], block + 1
        # Workers come from a forkserver, not a fork of this process: a forked worker would inherit the cell's lock
        # (an flock lives as long as any copy of its descriptor), so a killed cell could not be rerun at once.
        loader = torch.utils.data.DataLoader(_ShardReader(self, epoch, block), batch_size=None, collate_fn=_as_is,
                                             num_workers=self.workers, prefetch_factor=2 if self.workers else None,
                                             multiprocessing_context="forkserver" if self.workers else None,
                                             worker_init_fn=functools.partial(_exit_with, os.getpid()))
        nbytes = math.prod(self.rows.table.shape) * self.rows.table.dtype.itemsize
        pos_buf, raw_buf, got = np.empty(0, np.int64), np.empty((0, nbytes), np.uint8), []
        for item_epoch, item_block, pos, raw in loader:
            if item_epoch != epoch:  # a new epoch: the rows the last one did not reach are dropped
                epoch, drawn = item_epoch, 0
                batches = self.epoch_plan(epoch)[1]
                pos_buf, raw_buf = pos_buf[:0], raw_buf[:0]
            got.append((np.asarray(pos), np.asarray(raw)))
            if len(got) < len(self.epoch_plan(epoch)[0][item_block]):
                continue
            pos, raw = np.concatenate([p for p, _ in got]), np.concatenate([r for _, r in got])
            perm = np.random.default_rng([self.seed, epoch, self.rank, item_block]).permutation(len(pos))[skip:]
            skip, got = 0, []
            pos_buf, raw_buf = np.concatenate([pos_buf, pos[perm]]), np.concatenate([raw_buf, raw[perm]])
            k = 0
            while len(pos_buf) - k >= micro and drawn < batches:
                drawn += 1
                yield epoch, drawn, pos_buf[k : k + micro], raw_buf[k : k + micro]
                k += micro
            pos_buf, raw_buf = pos_buf[k:], raw_buf[k:]

    def next_micro(self, device) -> dict[str, torch.Tensor]:
        if self._it is None:
            self._it = self._micro_batches()
        epoch, drawn, pos, raw = next(self._it)
        batches = self.epoch_plan(epoch)[1]
        self.epoch, self.position = (epoch + 1, 0) if drawn == batches else (epoch, drawn)
        x = self.rows.norm(raw.view(self.rows.table.dtype).reshape(len(raw), *self.rows.table.shape))
        label = self.labels[torch.from_numpy(pos)]
        if torch.device(device).type == "cuda":  # pinned: the copies to the GPU run asynchronously
            x, label = x.pin_memory(), label.pin_memory()
        return {"x": x.to(device, non_blocking=True), "label": label.to(device, non_blocking=True)}

    def __getstate__(self) -> dict:  # what a reader worker receives: the plan's inputs, not the running reader
        return {**self.__dict__, "_it": None, "labels": None}

    def rank_batches(self, sched, rank: int, world: int, device):
        """(first global row, micro-batch) of each of this step's micro-batches on this rank."""
        for m in range(sched.accumulate):
            yield sched.rows(m, rank, world)[0], self.next_micro(device)

    def close(self) -> None:
        self._it = None  # drops the DataLoader iterator: its workers exit

    def state_dict(self) -> dict:
        return {"kind": "shards", "epoch": self.epoch, "position": self.position, "seed": self.seed,
                "n": len(self.rows), "world": self.world, "micro": self.micro, "shuffle_shards": self.shuffle_shards}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        keys = ("kind", "seed", "n", "world", "micro", "shuffle_shards")
        if any(state.get(k) != mine[k] for k in keys):
            diff = {k: (state.get(k), mine[k]) for k in keys if state.get(k) != mine[k]}
            raise ValueError(f"checkpointed training stream differs from this run's as (saved, now): {diff}; a "
                             f"streaming cell resumes on the same number of processes and the same data")
        self.close()
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
