"""Run one cell folder: read its frozen config, hold its lock, record its state, build data and method, train
(dadf/train), score, and write metrics, scores and reconstructions through the store's atomic writer.

Every launcher runs cells through :func:`run_cell`: the local workers, the debug launcher, ``jobs/train.py`` and
the submitit job :class:`CellJob`. Only rank 0 writes files; every rank trains and scores.

States written to ``status.json``: ``running`` (with host, pid and a heartbeat file), then ``done``, ``failed``
(with the reason and traceback) or ``requeued`` (preempted after saving a checkpoint; the next run resumes).
"""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from dadf.atomic import atomic_write
from dadf.data.pipeline import CellData, prepare_cell_data
from dadf.eval.metrics import detection_metrics
from dadf.grid import locks, store
from dadf.grid.cells import identity
from dadf.methods import get_method
from dadf.methods.base import DataInfo, Method
from dadf.provenance import code_version, config_hash, hardware
from dadf.train.loop import Schedule, Trainer, effective_precision, make_accelerator, score_distributed, seed_everything
from dadf.train.preemption import Preempted, PreemptionGuard
from dadf.train.strategy import make_strategy


class CellBusy(locks.Busy):
    """Another process is running this cell right now."""


class DiskFull(OSError):
    """A write failed for lack of space; every further cell would fail the same way, so launchers stop."""


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def build(cfg: DictConfig) -> tuple[Method, CellData, Schedule | None]:
    """The data and method of a cell (its networks wrapped by trainer.strategy), as every rank builds them."""
    seed_everything(int(cfg.seed))
    if cfg.trainer.num_threads is not None:
        torch.set_num_threads(int(cfg.trainer.num_threads))
    accelerator = make_accelerator(cfg.trainer)
    data = prepare_cell_data(cfg)
    cls = get_method(cfg.method.name)
    n_train = int((data.train_label == 0).sum()) if not cls.uses_labelled_anomalies else len(data.train_x)
    schedule = Schedule(cfg.trainer, n_train, accelerator.num_processes) if cls.trainable else None
    info = DataInfo(kind=data.kind, shape=data.shape, n_train=n_train,
                    batch_size=schedule.global_batch if schedule else len(data.train_x),
                    steps_per_epoch=schedule.steps_per_epoch if schedule else 0,
                    total_steps=schedule.total if schedule else 0)
    strategy = make_strategy(cfg.trainer, accelerator, schedule, str(cfg.method.name))
    method = cls(cfg.method, info, strategy, int(cfg.seed))
    return method, data, schedule


def top_k_setting(cfg: DictConfig, data: CellData) -> dict | None:
    """The top-k% rule of the cell's precision/recall/F1, or None when it has none: k is dataset.top_k_percent or,
    left null on a protocol with a ``top_k_rule`` (tabular), the test split's anomaly ratio; the rule is the
    protocol's ``top_k_rule`` (a cell frozen before that setting existed ran ``round``)."""
    k, source = data.top_k_percent, "dataset.top_k_percent"
    has_rule = "top_k_rule" in cfg.protocol
    if k is None and has_rule:
        truth = data.test_truth.numpy()
        k, source = (100.0 * float(truth.mean()) if len(truth) else 0.0), "the test split's anomaly ratio"
    if k is None:
        return None
    return {"percent": float(k), "from": source, "rule": str(cfg.protocol.top_k_rule) if has_rule else "round"}


def write_artifact(cell_dir: Path, relpath: str, write) -> None:
    """A file the method emitted (``Method.emit``), written into its cell folder."""
    atomic_write(cell_dir / relpath, write, binary=True)


def write_reconstructions(method: Method, data: CellData, cell: store.CellDir, n: int = 8) -> None:
    """A few normal and anomalous test inputs with their reconstructions, for the report's picture grid. The main
    process alone calls it: ``reconstruct`` runs the bare networks (``TorchMethod.bare``), never a DDP wrapper, whose
    forward would wait for the other processes."""
    truth = data.test_truth.numpy()
    rows = np.concatenate([np.flatnonzero(truth == 0)[:n], np.flatnonzero(truth == 1)[:n]])
    if not len(rows):
        return
    x = data.test_x[rows].to(method.accelerator.device)
    with torch.no_grad():
        x_hat = method.reconstruct(x).float().cpu().numpy()
    cell.write_recon(x=x.cpu().numpy(), x_hat=x_hat, truth=truth[rows])


def evaluate(cfg: DictConfig, cell: store.CellDir, progress: bool = False, workers: int = 1) -> dict:
    """Train (or resume) and score one cell; returns its metrics (rank 0 writes them to metrics.json). ``workers``:
    the cells running at once on this machine, recorded with the threads each uses."""
    t0 = time.time()
    # Preemption signals are caught from the start: one that comes during start-up stops training at its first step
    # boundary, with a checkpoint. One that training did not act on is passed on when training is over.
    with PreemptionGuard() as guard:
        method, data, schedule = build(cfg)
        accelerator = method.accelerator
        normals = data.train_x[data.train_label == 0]
        t_train = time.time()
        if method.trainable:
            # the trainer writes the cell's checkpoints and log where the cell folder says
            trainer = Trainer(cfg.trainer, method, data, schedule, cell, seed=int(cfg.seed), name=cfg.cell.id,
                              on_artifact=functools.partial(write_artifact, cell.path))
            outcome = trainer.run(progress, guard)
            steps, selection = outcome.steps, outcome.selection
        else:
            method.fit(normals)
            steps, selection = None, {"rule": "last"}
        train_s = time.time() - t_train
    method.on_train_end(normals)
    for relpath, write in method.take_artifacts():
        if accelerator.is_main_process:
            write_artifact(cell.path, relpath, write)
    all_scores = score_distributed(method, data.test_x, int(cfg.trainer.eval_batch_size))
    scores = all_scores.pop("score")
    truth = data.test_truth.numpy()
    top_k = top_k_setting(cfg, data)
    k, rule = (top_k["percent"], top_k["rule"]) if top_k else (None, "percentile")
    metrics = detection_metrics(truth, scores, k, rule)
    metrics_by_score = {name: detection_metrics(truth, v, k, rule) for name, v in all_scores.items()}
    target = cfg.protocol.get("target_class")
    precision = cfg.trainer.precision
    result = {
        "metrics": metrics,
        **({"metrics_by_score": metrics_by_score} if metrics_by_score else {}),
        "cell": OmegaConf.to_container(cfg.cell, resolve=True),
        # frozen with the cell; cell.yaml files written before it was stored there get it computed here
        "config_hash": cfg.cell.get("config_hash") or config_hash(identity(cfg)),
        "target_class_name": data.classes[int(target)] if target is not None and data.kind == "image" else None,
        "split": data.split.counts(),
        **({"top_k": top_k} if top_k else {}),
        # the hyper-parameters the method ran with, presets and "auto" values resolved (Method.effective_params)
        "effective_params": method.effective_params(),
        "steps": steps,
        "selection": selection,
        "seed": int(cfg.seed),
        "wall_time_s": round(time.time() - t0, 3),
        # seconds inside training (the step loop, or a shallow method's fit); the rest of the wall time is fixed cost
        "timing": {"train_s": round(train_s, 3), "start_s": round(t_train - t0, 3)},
        "hardware": {**hardware(accelerator.device, accelerator.num_processes, precision),
                     "precision_effective": effective_precision(accelerator, precision),
                     "global_batch": schedule.global_batch if schedule else None,
                     "accumulate": schedule.accumulate if schedule else None,
                     "threads": torch.get_num_threads(), "workers": int(workers),
                     "channels_last": bool(method.strategy.channels_last),
                     "sync_bn": bool(method.strategy.synced_bn)},
        "skipped_steps": dict(getattr(method, "skipped_steps", {})),
        "code": code_version(),
    }
    if accelerator.is_main_process:
        cell.write_scores(scores=scores, truth=truth, cls=data.test_cls.numpy(),
                          **{f"score_{k}": v for k, v in all_scores.items()})
        if hasattr(method, "reconstruct"):
            write_reconstructions(method, data, cell)
        cell.write_metrics(result)
    accelerator.wait_for_everyone()
    return result


class _Heartbeat:
    """Rewrites ``heartbeat.json`` (host, pid, time) every ``store.HEARTBEAT_S`` seconds while the cell runs, so
    ``status.py`` can tell a running cell from one whose process is gone."""

    def __init__(self, cell: store.CellDir):
        self.cell = cell
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="dadf-heartbeat", daemon=True)

    def _beat(self) -> None:
        while True:
            with contextlib.suppress(OSError):  # a full disk must not kill the cell from this thread
                self.cell.write_heartbeat()
            if self.stop.wait(store.HEARTBEAT_S):
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def _disk_full(e: BaseException) -> OSError | None:
    while e is not None:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return e
        e = e.__cause__ or e.__context__
    return None


def _safe_status(cell: store.CellDir, state: str, **fields) -> None:
    """Record a state; on a full disk the launcher still learns the reason from the exception, so carry on."""
    with contextlib.suppress(OSError):
        cell.write_status(state, **fields)


def run_cell(cell_dir: str | Path, progress: bool = False, workers: int = 1) -> dict:
    """Run one cell folder to completion, recording its state (rank 0); re-raises after recording a failure.

    A preemption is recorded as ``requeued`` (the checkpoint is saved) and re-raised as :class:`Preempted`. A cell
    that another process is running raises :class:`CellBusy` before anything is touched; a full disk raises
    :class:`DiskFull` after recording it.
    """
    cell = store.CellDir(cell_dir)
    cfg = cell.read_config()
    main = _rank() == 0
    lock = locks.hold(cell.lock, f"cell {cell.path.name}", busy=CellBusy) if main else None
    with lock or contextlib.nullcontext():
        if main:
            cell.write_status(store.RUNNING)
        try:
            with _Heartbeat(cell) if main else contextlib.nullcontext():
                result = evaluate(cfg, cell, progress, workers)
        except Preempted as p:
            if main:
                _safe_status(cell, store.REQUEUED, reason=str(p), step=p.step, signum=p.signum)
            raise
        except SystemExit as e:
            # Under submitit, a signal the step loop did not act on (one after training) reaches submitit's own
            # handler, which requeues the job and exits: the next run resumes from the newest checkpoint.
            if os.environ.get("SUBMITIT_EXECUTOR") in ("slurm", "local"):
                if main:
                    _safe_status(cell, store.REQUEUED, reason=f"signalled after training; the job was "
                                 f"requeued (exit {e.code}) and resumes from the newest checkpoint")
                raise
            _safe_status(cell, store.FAILED, reason=f"SystemExit: {e.code}",
                         traceback=traceback.format_exc()[-6000:])
            raise
        except KeyboardInterrupt:
            if main:  # a second Ctrl-C: no checkpoint now, but the newest complete one is still there
                _safe_status(cell, store.REQUEUED, signum=int(signal.SIGINT), reason="interrupted (Ctrl-C twice); "
                             "a rerun resumes from the newest complete checkpoint")
            raise
        except BaseException as e:
            full = _disk_full(e)
            if full is not None:
                reason = (f"disk full: no space left writing {full.filename or 'a file'} (under {cell.path}); free "
                          f"space and relaunch: the cell resumes from its newest complete checkpoint")
                _safe_status(cell, store.FAILED, reason=reason)
                raise DiskFull(errno.ENOSPC, reason) from e
            # Any rank may be the one that failed: the first writer names its rank.
            _safe_status(cell, store.FAILED, reason=f"{type(e).__name__}: {e}"
                         + (f" (rank {_rank()})" if _world() > 1 else ""), traceback=traceback.format_exc()[-6000:])
            raise
        if main:
            cell.write_status(store.DONE, auroc=result["metrics"].get("auroc"), wall_time_s=result["wall_time_s"])
    return result


class CellJob:
    """The callable a submitit job runs: one cell, read from its folder, on every task of the job.

    It holds only the cell folder, never a checkpoint path: a requeued or resubmitted job re-reads the folder and
    the trainer resumes from the newest complete checkpoint it finds there.
    """

    def __init__(self, cell_dir: str | Path):
        self.cell_dir = str(cell_dir)

    def __call__(self) -> dict | None:
        if int(os.environ.get("SLURM_NTASKS", "1")) > 1 or int(os.environ.get("SUBMITIT_LOCAL_NTASKS", "1")) > 1:
            import submitit

            # MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK for torch.distributed's env:// initialisation.
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        try:
            return run_cell(self.cell_dir)
        except Preempted as p:
            # The checkpoint is on disk; submitit's own handler now calls checkpoint() and requeues the job.
            p.forward()
            return None

    def checkpoint(self):
        """Called by submitit on preemption or timeout: resubmit the same cell folder, nothing else."""
        import submitit

        return submitit.helpers.DelayedSubmission(CellJob(self.cell_dir))

    def __repr__(self) -> str:
        return f"CellJob({self.cell_dir!r})"
