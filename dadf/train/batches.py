"""An endless, seeded, resumable stream of training batches from in-memory tensors.

The trainer owns the step count, so the stream never ends: epochs are consecutive seeded permutations, and a
batch may span two of them. Its state is (epoch, position), so a resumed run draws exactly the batches the
uninterrupted run would have drawn.

`make_batch_stream` picks it, or for rows of the shards (``trainer.data=stream``) dadf.data.stream.ShardStream;
both give the trainer each step's micro-batches of this rank through ``rank_batches`` and are Stateful.
"""
from __future__ import annotations

import torch


class BatchStream:
    def __init__(self, tensors: dict[str, torch.Tensor], batch_size: int, seed: int):
        sizes = {len(t) for t in tensors.values()}
        if len(sizes) != 1 or 0 in sizes:
            raise ValueError(f"batch tensors must be non-empty and equally long, got sizes {sorted(sizes)}")
        self.tensors = tensors
        self.n = sizes.pop()
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> torch.Tensor:
        """The epoch's order, drawn on the CPU (the same on every device) and kept where the tensors are: one copy
        per epoch, none per step."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g).to(self.tensors["x"].device)

    def next_indices(self) -> torch.Tensor:
        parts, need = [], self.batch_size
        while need:
            take = min(need, self.n - self.position)
            parts.append(self._perm[self.position : self.position + take])
            self.position += take
            need -= take
            if self.position == self.n:
                self.epoch += 1
                self.position = 0
                self._perm = self._permutation(self.epoch)
        return torch.cat(parts)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        idx = self.next_indices()
        return {k: t[idx] for k, t in self.tensors.items()}

    def rank_batches(self, sched, rank: int, world: int, device):
        """(first global row, micro-batch) of each of this step's micro-batches on this rank: its rows of one
        global batch."""
        idx = self.next_indices()
        device = torch.device(device)
        for m in range(sched.accumulate):
            lo, hi = sched.rows(m, rank, world)
            rows = idx[lo:hi]
            yield lo, {k: _to(v[rows], device) for k, v in self.tensors.items()}

    def close(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "n": self.n}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind", "memory") != "memory":
            raise ValueError(f"the checkpoint holds a {state['kind']} stream's position, this cell trains in memory: "
                             f"its trainer.data changed since the save")
        if state["n"] != self.n or state["seed"] != self.seed:
            raise ValueError(
                f"checkpointed batch stream was over {state['n']} samples with seed {state['seed']}, "
                f"this one is over {self.n} with seed {self.seed}: the cell's data or seed changed since the save"
            )
        self.epoch, self.position = state["epoch"], state["position"]
        self._perm = self._permutation(self.epoch)


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; a CPU batch bound for a GPU goes through pinned memory, so the copy is asynchronous."""
    if device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def make_batch_stream(tensors: dict, sched, seed: int, rank: int, world: int, tcfg):
    """The in-memory stream over ``tensors``, or a shard stream when ``tensors["x"]`` are rows of the shards."""
    from dadf.data.stream import ShardRows, ShardStream

    if isinstance(tensors["x"], ShardRows):
        return ShardStream(tensors["x"], tensors["label"], sched.micro, seed, rank, world,
                           workers=int(tcfg.get("data_workers", 0)))
    return BatchStream(tensors, sched.global_batch, seed=seed)
