"""Train and evaluate one cell: the step loop, resume from the newest complete checkpoint, scoring, results.

    step = restored or 0
    while step < total: batch = next(stream); method.train_step(batch, step); step += 1; maybe log / save
"""
from __future__ import annotations

import json
import math
import random
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf

from dadf.data.pipeline import CellData, prepare_cell_data
from dadf.eval.metrics import detection_metrics
from dadf.grid import store
from dadf.methods import get_method
from dadf.methods.base import DataInfo, Method
from dadf.grid.cells import identity
from dadf.provenance import code_version, config_hash, hardware
from dadf.train import checkpoint
from dadf.train.batches import BatchStream


class NonFiniteLoss(RuntimeError):
    pass


def make_accelerator(tcfg: DictConfig) -> Accelerator:
    precisions = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
    if tcfg.precision not in precisions:
        raise ValueError(f"trainer.precision={tcfg.precision!r}; choose one of {sorted(precisions)}")
    if tcfg.device not in ("auto", "cpu"):
        raise ValueError(f"trainer.device={tcfg.device!r}; choose auto or cpu")
    cpu = tcfg.device == "cpu" or not torch.cuda.is_available()
    return Accelerator(cpu=cpu, mixed_precision=precisions[tcfg.precision])


def total_steps(tcfg: DictConfig, n_train: int) -> int:
    if tcfg.steps is not None:
        return int(tcfg.steps)
    return int(tcfg.epochs) * math.ceil(n_train / int(tcfg.batch_size))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_finite(losses: dict[str, torch.Tensor], step: int) -> None:
    values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
    if not bool(torch.isfinite(values).all()):  # one host sync per step for all losses together
        bad = [f"{k}={v.item()}" for k, v in losses.items() if not math.isfinite(v.item())]
        raise NonFiniteLoss(f"non-finite loss at step {step}: {', '.join(bad)}; lower the learning rate, "
                            f"use trainer.precision=fp32, or check the inputs for NaNs")


def train(method: Method, data: CellData, cfg: DictConfig, cell_dir: Path, progress: bool) -> int:
    tcfg = cfg.trainer
    device = method.accelerator.device
    keep = data.train_label == 0 if not method.uses_labelled_anomalies else torch.ones_like(data.train_label, dtype=torch.bool)
    tensors = {"x": data.train_x[keep], "label": data.train_label[keep]}
    stream = BatchStream(tensors, int(tcfg.batch_size), seed=int(cfg.seed))
    total = total_steps(tcfg, len(tensors["x"]))
    ckpt_dir = cell_dir / "checkpoints"
    step = 0
    last = checkpoint.latest(ckpt_dir)
    if last is not None:
        state = checkpoint.load(last)
        method.load_state_dict(state["method"])
        stream.load_state_dict(state["batches"])
        set_rng_state(state["rng"])
        step = state["step"]
    else:
        method.on_train_start(tensors["x"])

    def save():
        checkpoint.save(ckpt_dir, step, {"step": step, "method": method.state_dict(), "batches": stream.state_dict(),
                                         "rng": rng_state()}, keep=int(tcfg.keep_checkpoints))

    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=step, desc=cfg.cell.id, disable=not progress, leave=False)
    with open(cell_dir / "log.jsonl", "a") as log:
        while step < total:
            batch = {k: v.to(device, non_blocking=True) for k, v in next(stream).items()}
            losses = method.train_step(batch, step)
            step += 1
            check_finite(losses, step)
            bar.update(1)
            if step % int(tcfg.log_every) == 0 or step == total:
                log.write(json.dumps({"step": step, **{k: float(v) for k, v in losses.items()}}) + "\n")
                log.flush()
            if step % int(tcfg.checkpoint_every) == 0 or step == total:
                save()
    bar.close()
    return total


def score_batched(method: Method, x: torch.Tensor, batch_size: int) -> np.ndarray:
    device = method.accelerator.device
    out = [method.score(x[i : i + batch_size].to(device)).detach().float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0)


def evaluate(cfg: DictConfig, cell_dir: Path, progress: bool = False) -> dict:
    """Train (or resume) and score one cell; returns its metrics (also written to metrics.json)."""
    t0 = time.time()
    seed_everything(int(cfg.seed))
    if cfg.trainer.num_threads is not None:
        torch.set_num_threads(int(cfg.trainer.num_threads))
    accelerator = make_accelerator(cfg.trainer)
    data = prepare_cell_data(cfg)
    info = DataInfo(kind=data.kind, shape=data.shape, n_train=len(data.train_x))
    method = get_method(cfg.method.name)(cfg.method, info, accelerator, int(cfg.seed))
    steps = None
    if method.trainable:
        steps = train(method, data, cfg, cell_dir, progress)
    else:
        method.fit(data.train_x[data.train_label == 0])
    scores = score_batched(method, data.test_x, int(cfg.trainer.eval_batch_size))
    truth = data.test_truth.numpy()
    metrics = detection_metrics(truth, scores, data.top_k_percent)
    store.write_scores(cell_dir, scores=scores, truth=truth, cls=data.test_cls.numpy())
    target = cfg.protocol.get("target_class")
    result = {
        "metrics": metrics,
        "cell": OmegaConf.to_container(cfg.cell, resolve=True),
        "config_hash": config_hash(identity(cfg)),
        "target_class_name": data.classes[int(target)] if target is not None and data.kind == "image" else None,
        "split": data.split.counts(),
        "steps": steps,
        "selection": "last",
        "seed": int(cfg.seed),
        "wall_time_s": round(time.time() - t0, 3),
        "hardware": hardware(accelerator.device, accelerator.num_processes, cfg.trainer.precision),
        "code": code_version(),
    }
    store.write_json(cell_dir / "metrics.json", result)
    return result


def run_cell(cell_dir: str | Path, progress: bool = False) -> dict:
    """Run one cell folder to completion, recording its state; re-raises after recording a failure."""
    cell_dir = Path(cell_dir)
    cfg = store.read_cell_config(cell_dir)
    store.write_status(cell_dir, store.RUNNING)
    try:
        result = evaluate(cfg, cell_dir, progress)
    except BaseException as e:
        store.write_status(cell_dir, store.FAILED, reason=f"{type(e).__name__}: {e}",
                           traceback=traceback.format_exc()[-6000:])
        raise
    store.write_status(cell_dir, store.DONE, auroc=result["metrics"].get("auroc"), wall_time_s=result["wall_time_s"])
    return result
