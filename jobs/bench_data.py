"""Data-path throughput. Prints tables, writes JSON.

1. MNIST: samples/s through dadf's in-memory path, WebDataset streaming with 0/1/2 DataLoader workers, and
   torchvision's MNIST dataset with a DataLoader (skipped with --skip-mnist or when MNIST is not under --root).
2. Streaming for PIAD's 64x64 nets: the trainer's shard stream (trainer.data=stream, dadf/data/stream.py) over
   synthetic 3x64x64 shards with 0/2/4 reader workers, against what a training step consumes: PIAD (wide64 nets,
   n_critic=3, as for LSUN and CelebA) measured here on CPU, and a GPU's rate given with --gpu-samples-per-s
   (this script does not measure a GPU). Says for each worker count whether streaming would starve the step.

    python jobs/bench_data.py --root /data [--batch-size 256 --out bench/bench_data.json]
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


# PIAD 64x64 (wide64, bf16) on an H100-class GPU: an ASSUMED rate, not measured by dadf (no GPU here); measure
# one with jobs/gpu_check.py's step timing on your card and pass it as --gpu-samples-per-s.
GPU_SAMPLES_PER_S = 4000


def _synthetic_shards(out: Path, n: int) -> Path:
    import numpy as np

    from dadf.data.shards import build_shards
    from dadf.data.types import IMAGE, Source

    x = np.random.default_rng(0).integers(0, 256, (n, 3, 64, 64), dtype=np.uint8)
    y = np.zeros(n, np.int64)
    build_shards(Source("synthetic64", IMAGE, {"train": (x, y)}, ("normal",)), out, dataset_name="synthetic64",
                 samples_per_shard=256)
    return out


def bench_shard_stream(shard_dir: Path, micro: int, workers: int) -> dict:
    import numpy as np

    from dadf.data import normalise, stream

    table = stream.scan(shard_dir)
    part = table.parts[(0, "train")]
    rows = stream.ShardRows(table, part.file_id, part.offset, normalise.Normaliser("image"))
    s = stream.ShardStream(rows, torch.zeros(len(rows), dtype=torch.long), micro, seed=0, workers=workers)
    s.next_micro("cpu")  # the workers start: not counted
    batches = s.epoch_plan(0)[1] - 1
    n, secs = _timed(lambda: sum(len(s.next_micro("cpu")["x"]) for _ in range(batches)))
    s.close()
    return {"path": "shard stream (trainer.data=stream)", "workers": workers, "samples": int(n),
            "epoch_s": round(secs, 3), "samples_per_s": round(n / secs), "rows": int(np.prod(part.cls.shape))}


def bench_piad_step(batch: int, steps: int) -> dict:
    """Samples/s one PIAD trainer step consumes on this CPU (64x64, wide64 nets, n_critic=3, random VGG)."""
    from dadf.config import node
    from dadf.methods import get_method
    from dadf.methods.base import DataInfo
    from dadf.methods.interface import StepContext
    from dadf.train.loop import Schedule, make_accelerator
    from dadf.train.strategy import make_strategy

    tcfg = node("trainer", "default")
    tcfg.batch_size, tcfg.steps, tcfg.device = batch, 1_000_000, "cpu"
    mcfg = node("method", "piad")
    mcfg.widths, mcfg.n_critic, mcfg.vgg_weights = "wide64", 3, "random"
    acc = make_accelerator(tcfg)
    sched = Schedule(tcfg, n_train=100 * batch, world=1)
    info = DataInfo(kind="image", shape=(3, 64, 64), n_train=100 * batch, batch_size=batch, steps_per_epoch=100,
                    total_steps=sched.total)
    method = get_method("piad")(mcfg, info, make_strategy(tcfg, acc, sched, "piad"), 0)
    x = torch.rand((batch, 3, 64, 64), generator=torch.Generator().manual_seed(0)) * 2 - 1
    data = {"x": x, "label": torch.zeros(batch, dtype=torch.long)}

    def run(first: int, count: int) -> int:
        for i in range(first, first + count):
            method.begin(StepContext(step=i, global_batch=batch))
            method.train_step(data, i)
        return count * batch

    run(0, 4)  # one critic-and-generator cycle to warm up
    n, secs = _timed(lambda: run(4, steps))
    return {"path": "PIAD 64x64 train step (CPU, wide64, n_critic=3)", "workers": 0, "samples": n,
            "epoch_s": round(secs, 3), "samples_per_s": round(n / secs, 1)}


def piad_streaming(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        shard_dir = _synthetic_shards(Path(tmp) / "synthetic64", args.stream_samples)
        rows = [bench_shard_stream(shard_dir, args.piad_batch, w) for w in (0, 2, 4)]
    step = bench_piad_step(args.piad_batch, args.piad_steps)
    consumers = {"cpu (measured)": step["samples_per_s"], "gpu (--gpu-samples-per-s)": args.gpu_samples_per_s}
    print(f"\nStreaming 3x64x64 shards ({args.stream_samples} samples, micro-batch {args.piad_batch}) against "
          f"PIAD's consumption ({', '.join(f'{k}: {v:,} samples/s' for k, v in consumers.items())})")
    print(f"| {'workers':>7} | {'stream samples/s':>16} | {'vs CPU step':>12} | {'vs GPU step':>12} |")
    print(f"|{'-' * 9}|{'-' * 18}|{'-' * 14}|{'-' * 14}|")
    for r in rows:
        r["starves"] = {k: r["samples_per_s"] < v for k, v in consumers.items()}
        cpu, gpu = (r["samples_per_s"] / v for v in consumers.values())
        print(f"| {r['workers']:>7} | {r['samples_per_s']:>16,} | {cpu:>11.1f}x | {gpu:>11.2f}x |")
    for name, rate in consumers.items():
        enough = [r["workers"] for r in rows if r["samples_per_s"] >= rate]
        print(f"{name}: " + (f"streaming keeps up from {enough[0]} worker(s)" if enough else
                             f"streaming would starve it with up to {rows[-1]['workers']} workers: more workers, "
                             f"faster storage, or trainer.data=memory where the data fits"))
    return {"stream": rows, "piad_step": step, "gpu_samples_per_s": args.gpu_samples_per_s,
            "gpu_samples_per_s_note": "given, not measured" if args.gpu_samples_per_s != GPU_SAMPLES_PER_S
            else f"default {GPU_SAMPLES_PER_S}: assumed for PIAD 64x64 on an H100-class GPU, not measured"}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data", help="folder holding MNIST/raw (default ./data)")
    parser.add_argument("--shards-dir", default="shards")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", default="bench/bench_data.json")
    parser.add_argument("--skip-mnist", action="store_true")
    parser.add_argument("--stream-samples", type=int, default=4096, help="synthetic 3x64x64 samples to stream")
    parser.add_argument("--piad-batch", type=int, default=64)
    parser.add_argument("--piad-steps", type=int, default=8, help="PIAD steps timed on CPU (after 4 warm-up)")
    parser.add_argument("--gpu-samples-per-s", type=float, default=GPU_SAMPLES_PER_S,
                        help="what a PIAD 64x64 step consumes on your GPU (default: an assumed H100-class rate)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    report = {"batch_size": args.batch_size, "machine": platform.processor() or platform.machine(),
              "torch_threads": torch.get_num_threads()}
    if not args.skip_mnist and (Path(args.root) / "MNIST" / "raw").is_dir():
        report.update(mnist(args))
    report["piad_streaming"] = piad_streaming(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def mnist(args) -> dict:
    from dadf.data.datasets import data_root, ensure_shards

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        dcfg = compose(config_name="config", overrides=["dataset=mnist", f"dataset.root={args.root}"]).dataset
    batch_size = args.batch_size
    t0 = time.perf_counter()
    shard_dir = ensure_shards(dcfg, args.shards_dir).folder
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
    return {"shards_ready_s": round(build_s, 2), "results": rows}


if __name__ == "__main__":
    sys.exit(main())
