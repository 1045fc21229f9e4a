"""Training cost and detection quality of registered methods on one dataset / protocol for a fixed budget.

For each method named on the command line: train and score one cell (the real trainer, in-process), then time
training steps of a fresh copy (s/step, samples/s) and count FLOPs of one step with torch.utils.flop_counter
(forward + backward, every network, divided by the global batch: FLOPs per sample-iteration). Prints a table and
writes JSON. A method joins by name; ``name:key=value,...`` benchmarks a variant (e.g. ama:recompute_fakes=true,
the authors' loop that recomputes G(E(x)) in every critic step).

    python jobs/bench_methods.py ama simplex_ae ama:recompute_fakes=true --dataset mnist --root /data \
        --protocol ovr --target-class 3 --steps 200 --batch-size 64 [--precision bf16] [--out bench/...json]
    python jobs/bench_methods.py ama ama:recompute_fakes=true --steps 0 --batch-size 4 --time-steps 1 \
        --set '+dataset.params.shape=[3,32,32]'       # FLOPs of the CIFAR-10 networks without the data
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import _checkout  # noqa: F401 -- first: refuses to run with another checkout's dadf
import torch
from hydra import compose, initialize_config_dir

from dadf.config import CONFIG_DIR


def parse_variant(spec: str) -> tuple[str, list[str]]:
    """'ama:recompute_fakes=true,critic_steps=2' -> ('ama', ['method.recompute_fakes=true', ...])."""
    name, _, rest = spec.partition(":")
    overrides = [f"method.{kv}" for kv in rest.split(",") if kv]
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise SystemExit(f"error: variant {spec!r}: write name:key=value[,key=value]")
    return name, overrides


def flops_per_step(method, batch: dict, step: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    from dadf.methods.interface import StepContext

    counter = FlopCounterMode(display=False)
    method.begin(StepContext(step=step, global_batch=len(batch["x"])))
    with counter:
        method.train_step(batch, step)
    return counter.get_total_flops()


def time_steps(method, tensors: dict, batch_size: int, steps: int, start: int) -> float:
    """Seconds per optimiser step over ``steps`` steps (after one warm-up step), synchronised on GPU."""
    from dadf.methods.interface import StepContext

    device = method.accelerator.device
    n = len(tensors["x"])

    def batch(s):
        idx = torch.arange(s * batch_size, (s + 1) * batch_size) % n
        return {k: v[idx].to(device) for k, v in tensors.items()}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    method.begin(StepContext(step=start, global_batch=batch_size))
    method.train_step(batch(0), start)
    sync()
    t0 = time.perf_counter()
    for s in range(1, steps + 1):
        method.begin(StepContext(step=start + s, global_batch=batch_size))
        method.train_step(batch(s), start + s)
    sync()
    return (time.perf_counter() - t0) / steps


def bench_one(spec: str, args, runs_dir: Path, shards_dir: Path) -> dict:
    from dadf.grid import store
    from dadf.grid.cells import expand
    from dadf.grid.launch import launch
    from dadf.grid.runner import build

    name, method_overrides = parse_variant(spec)
    overrides = [f"runs_dir={runs_dir}", f"shards_dir={shards_dir}", f"dataset={args.dataset}",
                 f"protocol={args.protocol}", "launcher=debug", f"grid.methods=[{name}]", f"method={name}",
                 *method_overrides, f"trainer.steps={max(args.steps, 1)}", f"trainer.batch_size={args.batch_size}",
                 f"trainer.precision={args.precision}", "trainer.progress=false", "grid.axes={}",
                 f"grid.name=bench_{name}", "force=true"]
    if args.root:
        overrides.append(f"dataset.root={args.root}")
    overrides += args.set
    overrides.append(f"grid.classes=[{args.target_class}]" if args.target_class is not None else "grid.classes=null")
    if args.device:
        overrides.append(f"trainer.device={args.device}")
    comp = lambda o: compose(config_name="config", overrides=list(o))  # noqa: E731
    cells = expand(comp(overrides), overrides, comp)
    if len(cells) != 1:
        raise SystemExit(f"error: {spec} expands to {len(cells)} cells; name one dataset/protocol/class")
    row = {"method": spec, "cell": cells[0].id}
    if args.steps > 0:
        summary = launch(cells, comp(overrides).launcher)
        if summary.failed:
            status = store.CellDir(cells[0].dir).read_status(verify=False)
            raise SystemExit(f"error: {spec} failed: {status.get('reason')}")
        result = store.CellDir(cells[0].dir).read_metrics()
        row.update(auroc=result["metrics"].get("auroc"), f1=result["metrics"].get("f1"),
                   train_and_score_s=result["wall_time_s"], steps=result["steps"])
    # Timing and FLOPs on a fresh copy, outside the trainer (no checkpoints or logging in the measurement).
    method, data, schedule = build(cells[0].cfg)
    keep = data.train_label == 0 if not method.uses_labelled_anomalies else torch.ones_like(data.train_label).bool()
    tensors = {"x": data.train_x[keep], "label": data.train_label[keep]}
    bs = schedule.global_batch
    idx = torch.arange(bs) % len(tensors["x"])
    # Count FLOPs at a step where every phase is on (e.g. AMA's atypical selection from epoch 11).
    late = 20 * schedule.steps_per_epoch
    flops = flops_per_step(method, {k: v[idx].to(method.accelerator.device) for k, v in tensors.items()}, late)
    s_step = time_steps(method, tensors, bs, args.time_steps, late + 1)
    row.update(batch_size=bs, s_per_step=s_step, samples_per_s=bs / s_step,
               gflop_per_sample_iteration=flops / bs / 1e9, shape=list(data.shape),
               device=str(method.accelerator.device), precision=args.precision)
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("methods", nargs="+", help="registered method names, or name:key=value,... variants")
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--root", default=None, help="dataset.root (e.g. /data)")
    ap.add_argument("--protocol", default="ovr")
    ap.add_argument("--target-class", type=int, default=0, help="class of ovr/loo; -1 for none (tabular, ood)")
    ap.add_argument("--steps", type=int, default=100, help="training budget of the AUROC run (0: timing only)")
    ap.add_argument("--time-steps", type=int, default=5, help="steps timed for s/step")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--device", default=None, choices=[None, "auto", "cpu"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work", default=None, help="folder for runs/shards (default: a temporary folder)")
    ap.add_argument("--set", action="append", default=[], metavar="OVERRIDE",
                    help="an extra Hydra override for every method, e.g. +dataset.params.shape=[3,32,32]")
    ap.add_argument("--out", default="bench/bench_methods.json")
    args = ap.parse_args(argv)
    if args.target_class is not None and args.target_class < 0:
        args.target_class = None
    if args.threads:
        torch.set_num_threads(args.threads)
    from dadf.methods import available

    unknown = [m for m in args.methods if parse_variant(m)[0] not in available()]
    if unknown:
        raise SystemExit(f"error: unknown method(s) {unknown}; registered: {', '.join(available())}")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_methods_"))
    rows = []
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        for spec in args.methods:
            rows.append(bench_one(spec, args, work / "runs", work / "shards"))
            r = rows[-1]
            print(f"{r['method']:<32} auroc={r.get('auroc') or float('nan'):.4f}  {r['s_per_step']:.4f} s/step  "
                  f"{r['samples_per_s']:.1f} samples/s  {r['gflop_per_sample_iteration']:.3f} GFLOP/sample-iter  "
                  f"(train+score {r.get('train_and_score_s', float('nan'))} s)", flush=True)
    out = {"dataset": args.dataset, "protocol": args.protocol, "target_class": args.target_class,
           "steps": args.steps, "host": platform.node(), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
