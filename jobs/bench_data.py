"""Data-path throughput for MNIST: samples/s through dadf's in-memory path, WebDataset streaming with 0/1/2
DataLoader workers, and torchvision's MNIST dataset with a DataLoader. Prints a table, writes JSON.

    python jobs/bench_data.py --root ../shared/data [--batch-size 256 --out bench/bench_data.json]
"""
from __future__ import annotations

import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import _checkout  # noqa: F401 -- first: refuses to run with another checkout's dadf
import torch
from hydra import compose, initialize_config_dir

from dadf.config import CONFIG_DIR


def _timed(fn) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = fn()
    return n, time.perf_counter() - t0


def bench_in_memory(shard_dir: Path, batch_size: int) -> dict:
    from dadf.data.shards import load_source_from_shards
    from dadf.train.batches import BatchStream

    t0 = time.perf_counter()
    source = load_source_from_shards(shard_dir)
    x, y = source.parts["train"]
    tensors = {"x": torch.from_numpy(x).float().div_(127.5).sub_(1), "y": torch.from_numpy(y)}
    load_s = time.perf_counter() - t0
    stream = BatchStream(tensors, batch_size, seed=0)
    steps = len(y) // batch_size
    n, epoch_s = _timed(lambda: sum(len(next(stream)["x"]) for _ in range(steps)))
    return {"path": "in-memory (shards -> tensors -> BatchStream)", "workers": 0, "samples": n,
            "load_s": round(load_s, 3), "epoch_s": round(epoch_s, 3),
            "samples_per_s": round(n / epoch_s), "samples_per_s_incl_load": round(n / (epoch_s + load_s))}


def _to_tensor(sample):
    key, x, cls = sample
    return torch.from_numpy(x).float().div_(127.5).sub_(1), cls


def bench_stream(shard_dir: Path, batch_size: int, workers: int) -> dict:
    import webdataset as wds

    from dadf.data.shards import stream_samples

    pipeline = stream_samples(shard_dir, "train").compose(wds.map(_to_tensor))
    loader = torch.utils.data.DataLoader(pipeline, batch_size=batch_size, num_workers=workers)
    n, s = _timed(lambda: sum(len(xb) for xb, _ in loader))
    return {"path": "WebDataset streaming", "workers": workers, "samples": n, "epoch_s": round(s, 3),
            "samples_per_s": round(n / s)}


def bench_torchvision(raw_dir: Path, batch_size: int, workers: int) -> dict:
    import torchvision
    from torchvision import transforms

    with tempfile.TemporaryDirectory() as tmp:
        # torchvision unpacks next to the files it verifies: give it a copy, never the read-only originals.
        shutil.copytree(raw_dir, Path(tmp) / "MNIST" / "raw")
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
        ds = torchvision.datasets.MNIST(tmp, train=True, download=True, transform=tf)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers)
        n, s = _timed(lambda: sum(len(xb) for xb, _ in loader))
    return {"path": "torchvision MNIST + DataLoader", "workers": workers, "samples": n, "epoch_s": round(s, 3),
            "samples_per_s": round(n / s)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from dadf.data.pipeline import data_root, ensure_shards

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="../shared/data", help="folder holding MNIST/raw")
    parser.add_argument("--shards-dir", default="shards")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", default="bench/bench_data.json")
    args = parser.parse_args(argv)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        dcfg = compose(config_name="config", overrides=["dataset=mnist", f"dataset.root={args.root}"]).dataset
    batch_size, out = args.batch_size, Path(args.out)
    t0 = time.perf_counter()
    shard_dir = ensure_shards(dcfg, args.shards_dir)
    build_s = time.perf_counter() - t0
    rows = [bench_in_memory(shard_dir, batch_size)]
    rows += [bench_stream(shard_dir, batch_size, w) for w in (0, 1, 2)]
    rows += [bench_torchvision(Path(data_root(dcfg)) / "MNIST" / "raw", batch_size, w) for w in (0, 2)]
    print(f"MNIST train (60,000 samples), batch {batch_size}, {torch.get_num_threads()} torch threads; "
          f"shards ready in {build_s:.1f}s")
    print(f"| {'path':<46} | workers | samples/s |")
    print(f"|{'-' * 48}|---------|-----------|")
    for r in rows:
        print(f"| {r['path']:<46} | {r['workers']:>7} | {r['samples_per_s']:>9,} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"batch_size": batch_size, "machine": platform.processor() or platform.machine(),
                               "torch_threads": torch.get_num_threads(), "shards_ready_s": round(build_s, 2),
                               "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
