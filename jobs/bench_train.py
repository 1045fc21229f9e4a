"""Training-step throughput of every registered trainable method: samples/s for 1 and 2 processes (CPU: gloo via
torchrun), per precision, with and without torch.compile and channels_last, and the FLOPs of one step counted with
torch's flop counter (model-FLOPs utilisation where the peak is known). Prints a table, writes JSON.

    python jobs/bench_train.py                                    # all methods, 1x28x28 and 3x32x32, 1 and 2 procs
    python jobs/bench_train.py --methods ama,aae --procs 1 --precisions fp32,bf16,fp16 --compile 0,1 \
        --channels-last 0,1 --out bench/bench_train_gpu.json      # on a GPU

Inputs are random tensors of the data's shape: this measures the step, not the data path (see bench_data.py).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _checkout  # noqa: F401 -- first: refuses to run with another checkout's dadf

REPO = Path(__file__).resolve().parents[1]
# Dense peak TFLOP/s per precision (vendor datasheets; fp32 without TF32) for the model-FLOPs utilisation.
PEAK_TFLOPS = {"H100": {"fp32": 67.0, "bf16": 989.4, "fp16": 989.4}, "H200": {"fp32": 67.0, "bf16": 989.4,
                                                                               "fp16": 989.4}}


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split("x"))


def worker(a: argparse.Namespace) -> None:
    import torch
    from omegaconf import OmegaConf
    from torch.utils.flop_counter import FlopCounterMode

    from dadf import config
    from dadf.methods import get_method
    from dadf.methods.base import DataInfo
    from dadf.methods.interface import StepContext
    from dadf.train.loop import Schedule, make_accelerator
    from dadf.train.strategy import make_strategy

    torch.set_num_threads(a.threads)
    tcfg = OmegaConf.create({"precision": a.precision, "device": "auto", "compile": bool(a.compile),
                             "strategy": a.strategy, "zero_stage": a.zero_stage, "channels_last": bool(a.channels_last),
                             "batch_size": a.batch_size, "accumulate": 1, "steps": 10_000, "eval_every": None,
                             "sync_every": 1})
    acc = make_accelerator(tcfg)
    world = acc.num_processes
    shape = _shape(a.shape)
    schedule = Schedule(tcfg, n_train=10_000, world=world)
    micro = schedule.micro
    kind = "image" if len(shape) == 3 else "tabular"
    info = DataInfo(kind=kind, shape=shape, n_train=10_000, batch_size=a.batch_size, steps_per_epoch=100,
                    total_steps=10_000)
    mcfg = config.node("method", a.method)
    method = get_method(a.method)(mcfg, info, make_strategy(tcfg, acc, schedule), 0)
    g = torch.Generator().manual_seed(acc.process_index)
    x = (torch.rand((micro, *shape), generator=g) * 2 - 1).to(acc.device)
    if a.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    batch = {"x": x, "label": torch.zeros(micro, dtype=torch.long, device=acc.device)}
    method.on_train_start(x)
    sync = torch.cuda.synchronize if acc.device.type == "cuda" else (lambda: None)

    def step(i: int):
        method.begin(StepContext(step=i, batch_lo=acc.process_index * micro, global_batch=a.batch_size))
        return method.train_step(batch, i)

    for i in range(a.warmup):
        step(i)
    sync()
    t0 = time.perf_counter()
    for i in range(a.warmup, a.warmup + a.steps):
        step(i)
    sync()
    seconds = time.perf_counter() - t0
    flops = None
    if world == 1 and not a.compile:  # the counter sees eager ops; compiled graphs hide them
        with FlopCounterMode(display=False) as counter:
            step(a.warmup + a.steps)
        flops = counter.get_total_flops()
    if acc.is_main_process:
        strategy = a.strategy + (f":{a.zero_stage}" if a.strategy == "deepspeed" else "")
        row = {"method": a.method, "shape": a.shape, "procs": world, "strategy": strategy, "precision": a.precision,
               "compile": bool(a.compile), "channels_last": bool(a.channels_last), "global_batch": a.batch_size,
               "steps": a.steps, "s_per_step": seconds / a.steps,
               "samples_per_s": a.batch_size * a.steps / seconds,
               "flops_per_step": flops, "gflop_per_sample": flops / a.batch_size / 1e9 if flops else None,
               "device": torch.cuda.get_device_name() if acc.device.type == "cuda" else "cpu"}
        if flops and acc.device.type == "cuda":
            peak = next((v for k, v in PEAK_TFLOPS.items() if k in row["device"]), None)
            if peak:
                row["mfu"] = flops / (seconds / a.steps) / (peak[a.precision] * 1e12)
        Path(a.result).write_text(json.dumps(row))


def run_one(method: str, shape: str, procs: int, strategy: str, precision: str, compiled: int, cl: int, a) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "row.json"
        name, _, stage = strategy.partition(":")
        args = ["--worker", "--method", method, "--strategy", name, "--zero-stage", stage or "0", "--shape", shape,
                "--precision", precision, "--compile", str(compiled),
                "--channels-last", str(cl), "--batch-size", str(a.batch_size), "--steps", str(a.steps),
                "--warmup", str(a.warmup), "--threads", str(a.threads), "--result", str(result)]
        script = str(Path(__file__).resolve())
        cmd = ([sys.executable, script, *args] if procs == 1 else
               [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", script,
                *args])
        env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "PYTHONPATH": str(REPO)}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.timeout)
        if proc.returncode != 0 or not result.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"method": method, "shape": shape, "procs": procs, "strategy": strategy, "precision": precision,
                    "compile": bool(compiled), "channels_last": bool(cl), "error": " | ".join(tail)}
        return json.loads(result.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="all", help="comma-separated registered methods, or all (trainable ones)")
    p.add_argument("--shapes", default="1x28x28,3x32x32", help="sample shapes CxHxW (or D for tabular)")
    p.add_argument("--procs", default="1,2")
    p.add_argument("--strategies", default="ddp", help="ddp and/or deepspeed:<zero stage>, e.g. ddp,deepspeed:2")
    p.add_argument("--precisions", default="fp32")
    p.add_argument("--compile", default="0")
    p.add_argument("--channels-last", default="0")
    p.add_argument("--batch-size", type=int, default=64, help="global batch")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--out", default="bench/bench_train.json")
    # worker mode (one configuration, possibly under torchrun)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--shape", help=argparse.SUPPRESS)
    p.add_argument("--precision", help=argparse.SUPPRESS)
    p.add_argument("--strategy", default="ddp", help=argparse.SUPPRESS)
    p.add_argument("--zero-stage", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        a.compile, a.channels_last = int(a.compile), int(a.channels_last)
        worker(a)
        return 0

    from dadf.methods import available, get_method

    methods = [m for m in available() if get_method(m).trainable] if a.methods == "all" else a.methods.split(",")
    for m in methods:
        get_method(m)  # unknown names fail here, listing the registered ones
    grid = itertools.product(methods, a.shapes.split(","), [int(v) for v in a.procs.split(",")],
                             a.strategies.split(","), a.precisions.split(","), [int(v) for v in a.compile.split(",")],
                             [int(v) for v in a.channels_last.split(",")])
    rows = []
    print(f"global batch {a.batch_size}, {a.steps} timed steps after {a.warmup} warm-up, {a.threads} thread(s)/process")
    print("| method | shape | procs | strategy | precision | compile | channels_last | samples/s | s/step "
          "| GFLOP/sample | MFU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for method, shape, procs, strategy, precision, compiled, cl in grid:
        row = run_one(method, shape, procs, strategy, precision, compiled, cl, a)
        rows.append(row)
        if "error" in row:
            print(f"| {method} | {shape} | {procs} | {strategy} | {precision} | {compiled} | {cl} | failed: "
                  f"{row['error'][:120]} |||")
        else:
            gf = f"{row['gflop_per_sample']:.3f}" if row.get("gflop_per_sample") else "-"
            mfu = f"{row['mfu']:.1%}" if row.get("mfu") else "-"
            print(f"| {method} | {shape} | {procs} | {strategy} | {precision} | {compiled} | {cl} | "
                  f"{row['samples_per_s']:,.0f} | "
                  f"{row['s_per_step']:.4f} | {gf} | {mfu} |", flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "args": {k: v for k, v in vars(a).items() if k not in ("worker",)}},
                              indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
