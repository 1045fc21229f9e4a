"""Where a cell's training rows live, decided at launch and frozen into its config: ``trainer.data=memory``
(loaded whole), ``stream`` (read from the shards as it trains; stream.py) or ``auto``, which compares the size the
shards' index gives with ``trainer.memory_budget``."""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from dadf.data.datasets import current_index, shard_dir

MODES = ("auto", "memory", "stream")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)


def budget_bytes(tcfg: DictConfig, free_bytes: int | None = None) -> int:
    """``trainer.memory_budget`` in bytes: a fraction (0, 1] of the free memory (the GPU's with data_on_device on a
    GPU, else this machine's), or a size ("16GB", "512MB", or bytes as an integer)."""
    value = tcfg.get("memory_budget", 0.5)
    if isinstance(value, str):
        m = _SIZE.match(value)
        if not m:
            raise ValueError(f"trainer.memory_budget={value!r} is not a size; write e.g. 16GB, 512MB, or a fraction "
                             f"0 < f <= 1 of the free memory")
        return int(float(m[1]) * 1024 ** " KMGT".index(m[2].upper() or " "))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"trainer.memory_budget={value!r}: give a fraction 0 < f <= 1 of the free memory or a size "
                         f"such as 16GB")
    if isinstance(value, int) and value > 1:
        return value
    if value > 1:
        raise ValueError(f"trainer.memory_budget={value} is neither a fraction (0 < f <= 1) nor whole bytes")
    return int(value * (free_bytes if free_bytes is not None else free_memory(tcfg)))


def free_memory(tcfg: DictConfig) -> int:
    """Free bytes where the training set would live: the GPU with data_on_device (when one is here), else RAM."""
    if tcfg.get("device", "auto") != "cpu" and tcfg.get("data_on_device", True) and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info()[0])
    try:  # MemAvailable: free plus what the kernel can reclaim (page cache), as `free` reports it
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def in_memory_bytes(index: dict) -> int:
    """What the in-memory path holds for these shards: the raw rows (cached Source) plus their float32 copies."""
    n = sum(int(p["count"]) for p in index["parts"].values())
    elements = math.prod(index["sample_shape"])
    return n * elements * (np.dtype(index["dtype"]).itemsize + 4)


def resolve_data_mode(cell: DictConfig, shards_root: str | Path, trainable: bool = True,
                      free_bytes: int | None = None) -> str:
    """``memory`` or ``stream`` for a cell about to be frozen; ``auto`` compares the size its shards' index gives
    (never the data) with the budget; a method that is not ``trainable`` (fitted once) keeps its rows in memory.
    Shards not built yet count as fitting: the launcher builds those of `auto` cells before it expands the grid
    (dadf/cli/launch.py), so only data that is not there yet is decided this way."""
    mode = cell.trainer.get("data", "memory")
    if mode not in MODES:
        raise ValueError(f"trainer.data={mode!r}; choose one of {', '.join(MODES)}")
    if mode == "memory":
        return mode
    if not trainable:  # fitted on all its rows at once: they must be in memory
        if mode == "stream":
            raise ValueError(f"method {cell.method.name!r} is fitted on all its training rows at once, so it cannot "
                             f"stream them; use trainer.data=memory (or auto)")
        return "memory"
    if mode == "stream":
        return mode
    # The trained dataset's shards (an OOD test set is not streamed). Built from other settings, they count as not
    # built: the build that replaces them comes after the decision.
    index = current_index(cell.dataset, shard_dir(cell.dataset, shards_root))
    if index is None:
        return "memory"
    return "stream" if in_memory_bytes(index) > budget_bytes(cell.trainer, free_bytes) else "memory"
