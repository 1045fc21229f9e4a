"""Train and evaluate one cell on one or several processes: the step loop, resume, preemption, selection, scoring.

    step = newest complete checkpoint's step, or 0
    while step < total:
        global batch = next(stream); each rank takes its rows of each micro-batch; method.train_step(...)
        step += 1; every sync_every steps all ranks agree on (non-finite loss, preemption signal)
        maybe log / validate / save
    load the selected state; the caller (dadf/grid/runner.py) scores the test set (score_distributed)

Distributed: run the same command under torchrun (or a SLURM job with several tasks). ``trainer.batch_size`` is
the GLOBAL batch of one optimiser step (all ranks and micro-batches together), so the learning rate needs no
scaling rule: 1, 2 or 8 processes follow the same optimisation path (BatchNorm included: ``trainer.sync_bn``
normalises over the global batch), and so does gradient accumulation for nets without BatchNorm (BatchNorm
normalises each micro-batch on its own).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import warnings
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from omegaconf import DictConfig

from dadf.atomic import atomic_write
from dadf.checks import refuse
from dadf.config import TRAIN_CRITERION, selection_problem, trainer_problems
from dadf.data.pipeline import CellData
from dadf.eval.metrics import detection_metrics
from dadf.methods.base import Method
from dadf.methods.interface import StepContext
from dadf.train import checkpoint, outputs, tracking
from dadf.train.batches import make_batch_stream
from dadf.train.preemption import PreemptionGuard

PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}  # trainer.precision -> Accelerate's mixed_precision
# trainer.sync_every=null: steps between the ranks' agreement (one host sync) by device type. On a GPU a sync per
# step stalls the launch queue; 50 steps keep a preemption's reaction well inside a scheduler's warning time.
SYNC_EVERY = {"cpu": 1, "cuda": 50}


class NonFiniteLoss(RuntimeError):
    pass


@dataclasses.dataclass
class TrainOutcome:
    """What training ended with: the steps run and how the final state was selected."""

    steps: int
    selection: dict


def _cache_optional_package_checks() -> None:
    """Accelerate asks importlib whether the optional ``lomo_optim`` is installed at every optimiser step: a search
    of the file system, a tenth of a small net's step on CPU. The answer cannot change while a process runs."""
    import functools

    import accelerate.accelerator
    import accelerate.optimizer

    for module in (accelerate.optimizer, accelerate.accelerator):
        check = getattr(module, "is_lomo_available", None)
        if check is not None and not hasattr(check, "cache_info"):
            module.is_lomo_available = functools.cache(check)


def make_accelerator(tcfg: DictConfig) -> Accelerator:
    from accelerate.state import AcceleratorState

    _cache_optional_package_checks()
    refuse(trainer_problems(tcfg))  # a cell runs from its cell.yaml, which may have been edited by hand
    cpu = tcfg.device == "cpu" or not torch.cuda.is_available()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cpu and world > 1 and not torch.distributed.is_initialized():
        # Accelerate picks gloo for CPU processes only when told it runs on CPU.
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    AcceleratorState._reset_state()  # several cells in one process (debug launcher) may differ in precision
    accelerator = Accelerator(cpu=cpu, mixed_precision=PRECISIONS[tcfg.precision],
                              dynamo_backend="inductor" if tcfg.compile else "no")
    if accelerator.device.type == "cuda":
        # cuDNN picks the fastest convolution algorithm per shape (the shapes of a cell repeat every step)
        torch.backends.cudnn.benchmark = True
    if accelerator.num_processes != world:
        raise RuntimeError(
            f"this process sees {accelerator.num_processes} process(es) but WORLD_SIZE={world}: the processes do not "
            f"form one group. On CPU launch with torchrun (not `accelerate launch --cpu`), which sets the rendezvous")
    return accelerator


def effective_precision(accelerator: Accelerator, requested: str) -> str:
    if requested == "fp16" and accelerator.device.type == "cpu":
        return "fp32"  # Accelerate has no fp16 autocast or loss scaler on CPU: the maths runs in fp32
    return requested


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
    if state.get("cuda") and torch.cuda.is_available():
        # One state per device the writer saw; a resume may see fewer (or more) devices: restore those both have.
        saved, visible = state["cuda"], torch.cuda.device_count()
        for i in range(min(len(saved), visible)):
            torch.cuda.set_rng_state(saved[i], i)
        if len(saved) != visible:
            warnings.warn(f"the checkpoint holds the RNG states of {len(saved)} CUDA device(s), this process sees "
                          f"{visible}: restored the first {min(len(saved), visible)}")


def _all_gather_objects(accelerator: Accelerator, obj) -> list:
    if accelerator.num_processes == 1:
        return [obj]
    out = [None] * accelerator.num_processes
    torch.distributed.all_gather_object(out, obj)
    return out


class Schedule:
    """The step arithmetic of one cell, checked once: global batch, per-rank micro-batch, budget, intervals."""

    def __init__(self, tcfg: DictConfig, n_train: int, world: int):
        refuse(trainer_problems(tcfg, world))  # ranges and the batch split over these processes
        self.global_batch = int(tcfg.batch_size)
        self.accumulate = int(tcfg.accumulate)
        self.micro = self.global_batch // (world * self.accumulate)
        self.steps_per_epoch = math.ceil(n_train / self.global_batch)
        self.total = int(tcfg.steps) if tcfg.steps is not None else int(tcfg.epochs) * self.steps_per_epoch
        self.eval_every = int(tcfg.eval_every) if tcfg.eval_every is not None else self.steps_per_epoch
        self.sync_every = int(tcfg.sync_every) if tcfg.get("sync_every") is not None else None  # None: by device

    def rows(self, micro: int, rank: int, world: int) -> tuple[int, int]:
        lo = (micro * world + rank) * self.micro
        return lo, lo + self.micro


class Trainer:
    """One cell's training on this process (one rank of possibly several).

    ``workdir`` receives the checkpoints and the log: a folder (they go in it as ``outputs.CHECKPOINTS`` and
    ``outputs.LOG_FILE``), or an object giving their paths as ``checkpoints`` and ``log`` (a grid's cell folder,
    dadf.grid.store.CellDir); ``seed`` fixes the batch order; ``name`` labels the progress bar;
    ``on_artifact(relpath, write)`` receives the files the method emits (``Method.emit``), on the main process,
    after each step. It knows nothing of grids beyond that.
    """

    def __init__(self, tcfg: DictConfig, method: Method, data: CellData, schedule: Schedule, workdir,
                 seed: int, name: str = "", on_artifact=None):
        self.tcfg, self.method, self.data, self.sched, self.name = tcfg, method, data, schedule, name
        self.on_artifact = on_artifact
        self.acc = method.accelerator
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        self.main = self.acc.is_main_process
        if isinstance(workdir, (str, os.PathLike)):
            self.ckpt_dir, self.log_path = Path(workdir) / outputs.CHECKPOINTS, Path(workdir) / outputs.LOG_FILE
        else:  # an object naming both paths
            self.ckpt_dir, self.log_path = Path(workdir.checkpoints), Path(workdir.log)
        self.selection = str(self.tcfg.selection)
        self.best: dict = {"value": None, "step": None}
        keep = data.train_label == 0 if not method.uses_labelled_anomalies else torch.ones_like(data.train_label,
                                                                                               dtype=torch.bool)
        self.tensors = {"x": data.train_x[keep], "label": data.train_label[keep]}
        if self.acc.device.type == "cuda" and self.tcfg.data_on_device and isinstance(data.train_x, torch.Tensor):
            # Small datasets live on the GPU: batches are gathered there, no host-to-device copy per step.
            self.tensors = {k: v.to(self.acc.device) for k, v in self.tensors.items()}
        self.stream = make_batch_stream(self.tensors, schedule, int(seed), self.rank, self.world, self.tcfg)
        self.sync_every = schedule.sync_every or SYNC_EVERY.get(self.acc.device.type, SYNC_EVERY["cuda"])
        self.total = method.planned_steps(schedule.total)
        self.step = 0
        self.curves = tracking.Curves()  # live curves (trainer.tracker), opened by run() at its first step

    # -- state -------------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"step": self.step, "method": self.method.state_dict(), "batches": self.stream.state_dict(),
                "rng": _all_gather_objects(self.acc, rng_state()), "world_size": self.world,
                "selection": dict(self.best)}

    def save(self) -> None:
        state = self.state()  # a collective: every rank takes part
        if self.main:
            checkpoint.save(self.ckpt_dir, self.step, state, keep=int(self.tcfg.keep_checkpoints))
        self.acc.wait_for_everyone()

    def _newest_intact(self) -> tuple[Path | None, dict | None]:
        """The newest checkpoint that loads. Damaged ones are set aside (after every rank has looked at them, all
        ranks skip the same ones) with a warning that names them, and the next older one is tried."""
        found, damaged = (None, None), []
        for _, folder in reversed(checkpoint.complete_checkpoints(self.ckpt_dir)):
            try:
                found = (folder, checkpoint.load(folder))
                break
            except checkpoint.CorruptCheckpoint as e:
                damaged.append((folder, e))
        self.acc.wait_for_everyone()
        for folder, e in damaged:
            if self.main:
                aside = checkpoint.set_aside(folder)
                warnings.warn(f"{e}; set aside as {aside}; resuming from "
                              f"{found[0] if found[0] else 'the start (no intact checkpoint left)'}")
        return found

    def resume(self) -> bool:
        last, state = self._newest_intact()
        if last is None:
            return False
        self.method.load_state_dict(state["method"])
        self.stream.load_state_dict(state["batches"])
        rngs = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]
        if len(rngs) == self.world:
            set_rng_state(rngs[self.rank])
        else:  # resumed on another number of processes: the method's noise() does not depend on it, the rest may
            warnings.warn(f"checkpoint {last} was written by {len(rngs)} process(es), this run has {self.world}: "
                          f"global RNG streams restart from rank 0's state")
            set_rng_state(rngs[0])
        self.step = state["step"]
        self.best = state.get("selection", self.best)
        return True

    def _rewind_log(self) -> None:
        """Cut log.jsonl back to the step training restarts from, so a resumed run's curves never jump back."""
        if not self.main or not self.log_path.exists():
            return
        kept = []
        for line in self.log_path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= self.step:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):  # a line cut short by a kill
                continue
        atomic_write(self.log_path, lambda f: f.writelines(kept))

    # -- the loop ----------------------------------------------------------------------------------------
    def run(self, progress: bool, guard: PreemptionGuard | None = None) -> TrainOutcome:
        """Train to the last step. With ``guard`` (already entered), a signal it caught before the loop (during
        start-up) stops the loop at its first step boundary; without, the loop installs its own."""
        if not self.resume():
            self.method.on_train_start(self.tensors["x"])
        self._rewind_log()
        if self.selection != "last":
            self._check_selection()
        self.curves = tracking.open_curves(self.tcfg.get("tracker", "auto"), self.log_path.parent, self.step, self.main)
        from tqdm.auto import tqdm

        bar = tqdm(total=self.total, initial=self.step, desc=self.name, disable=not (progress and self.main),
                   leave=False)
        bad = torch.zeros((), dtype=torch.long, device=self.acc.device)  # first step with a non-finite loss, or 0
        bad_losses: dict[str, torch.Tensor] = {}
        log_sums: dict[str, torch.Tensor] = {}
        log_count = 0
        with (contextlib.nullcontext(guard) if guard is not None else PreemptionGuard()) as guard, self.curves:
            while self.step < self.total:
                losses = self._one_step()
                self._hand_over_artifacts()  # before this step's checkpoint, which a resume would not rerun
                self.step += 1
                bar.update(1)
                finite = torch.stack([v.detach().float().reshape(()) for v in losses.values()]).isfinite().all()
                first_bad = (bad == 0) & ~finite  # kept on the device: no host sync inside the step
                bad = torch.where(first_bad, torch.full_like(bad, self.step), bad)
                for k, v in losses.items():
                    log_sums[k] = log_sums.get(k, 0) + v.detach().float()
                    bad_losses.setdefault(k, torch.full((), float("nan"), device=self.acc.device))
                    bad_losses[k] = torch.where(first_bad, v.detach().float(), bad_losses[k])
                log_count += 1
                at_end = self.step == self.total
                saving = self.step % int(self.tcfg.checkpoint_every) == 0 or at_end
                validating = self.selection != "last" and (self.step % self.sched.eval_every == 0 or at_end)
                # a state is checked for non-finite losses before it is saved or validated
                if self.step % self.sync_every == 0 or saving or validating:
                    bad_step, signum = self._agree(bad, guard)
                    if bad_step:
                        which = ", ".join(f"{k}={float(v)}" for k, v in bad_losses.items())
                        raise NonFiniteLoss(
                            f"non-finite loss at step {bad_step} ({which}); lower the learning rate, use "
                            f"trainer.precision=fp32, or check the inputs for NaNs")
                else:
                    signum = None
                if self.step % int(self.tcfg.log_every) == 0 or at_end:
                    self._log({k: v / log_count for k, v in log_sums.items()})
                    log_sums, log_count = {}, 0
                if validating:
                    self._validate()
                if signum is not None:
                    self.save()
                    raise guard.preempted(signum, self.step)
                if saving:
                    self.save()
        bar.close()
        self.stream.close()  # a shard stream's reader workers exit
        self._hand_over_artifacts()
        if self.selection == "last":
            return TrainOutcome(self.total, {"rule": "last", "step": self.total})
        if self.best["step"] is None:  # no validated state was eligible (e.g. a 50-epoch run, selection from 60)
            return TrainOutcome(self.total, {"rule": self.selection, "step": self.total, "value": None,
                                             "fallback": "last", "note": f"no state became eligible for "
                                             f"{self.selection} (a finite value from select_after on): the last "
                                             f"state was kept"})
        if self.best["step"] != self.total:
            best = checkpoint.latest(self.ckpt_dir / "best")
            self.method.load_state_dict(checkpoint.load(best)["method"])
        return TrainOutcome(self.total, {"rule": self.selection, "step": self.best["step"],
                                         "value": self.best["value"]})

    def _one_step(self) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        for m, (lo, batch) in enumerate(self.stream.rank_batches(self.sched, self.rank, self.world, self.acc.device)):
            if self.method.strategy.channels_last and batch["x"].dim() == 4:
                batch["x"] = batch["x"].contiguous(memory_format=torch.channels_last)
            self.method.begin(StepContext(step=self.step, micro=m, accumulate=self.sched.accumulate, batch_lo=lo,
                                          global_batch=self.sched.global_batch))
            last = m == self.sched.accumulate - 1
            with contextlib.nullcontext() if last else self.method.local_gradients():
                out = self.method.train_step(batch, self.step)
            for k, v in out.items():
                losses[k] = losses.get(k, 0) + v.detach() / self.sched.accumulate
        return losses

    def _hand_over_artifacts(self) -> None:
        for relpath, write in self.method.take_artifacts():  # every rank empties its queue; the main one writes
            if self.main and self.on_artifact is not None:
                self.on_artifact(relpath, write)

    def _agree(self, bad: torch.Tensor, guard: PreemptionGuard) -> tuple[int, int | None]:
        """(first non-finite step or 0, signal or None), the same on every rank: one small all-reduce."""
        flags = torch.stack([bad.to(torch.long), torch.tensor(guard.signum or 0, device=bad.device)])
        if self.world > 1:
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        bad_step, signum = (int(v) for v in flags.tolist())
        return bad_step, (signum or None)

    def _log(self, values: dict[str, torch.Tensor], **extra) -> None:
        if self.world > 1 and values:  # the mean over ranks, so the log describes the global batch
            keys = sorted(values)
            t = torch.stack([torch.as_tensor(values[k], device=self.acc.device, dtype=torch.float32) for k in keys])
            t = self.acc.reduce(t, reduction="mean")
            values = dict(zip(keys, t))
        if self.main:
            line = {"step": self.step, **{k: float(v) for k, v in values.items()}, **extra}
            with open(self.log_path, "a") as f:
                f.write(json.dumps(line) + "\n")
            self.curves.log({**{f"train/{k}": v for k, v in values.items()},
                             **tracking.learning_rates(getattr(self.method, "opts", {}))}, self.step)

    # -- model selection ---------------------------------------------------------------------------------
    def _check_selection(self) -> None:
        problem = selection_problem(self.selection, self.method.name, self.method.selection_criteria)
        if problem:  # checked at launch too; a cell.yaml may have been edited since
            raise ValueError(problem)
        if self.selection.startswith(TRAIN_CRITERION):
            return  # computed on the training normals, which every protocol has
        if self.selection == "val_auroc":
            truth = self.data.val_truth
            if len(truth) == 0 or truth.min() == truth.max():
                raise ValueError(
                    "trainer.selection=val_auroc needs a validation set with normal AND anomalous samples; set "
                    "protocol.val_fraction (normals) and protocol.val_anomalies (anomalies), or use selection=last")
        elif len(self.data.val_x) == 0 or (self.data.val_truth == 0).sum() == 0:
            raise ValueError(f"trainer.selection={self.selection} needs validation normals; set protocol.val_fraction, "
                             f"or select on the training normals: trainer.selection={TRAIN_CRITERION}{self.selection}")

    def _validate(self) -> None:
        """Every rank scores the whole (small) validation set, so all ranks take the same decision."""
        val_x, truth = self.data.val_x, self.data.val_truth.numpy()
        values: dict[str, float] = {}
        if truth.size and truth.min() != truth.max():
            scores = score_batched(self.method, val_x, int(self.tcfg.eval_batch_size))["score"]
            values["val_auroc"] = detection_metrics(truth, scores, None)["auroc"]
        normals = val_x[self.data.val_truth == 0].to(self.acc.device)
        if len(normals):
            values.update({k: float(v) for k, v in self.method.selection_scores(normals).items()})
        if self.selection.startswith(TRAIN_CRITERION):
            rows = self.tensors["x"][self.tensors["label"] == 0].to(self.acc.device)  # all of them: small tables
            values.update({TRAIN_CRITERION + k: float(v) for k, v in self.method.selection_scores(rows).items()})
        if self.selection not in values:
            raise ValueError(f"trainer.selection={self.selection!r} is not computed by method {self.method.name!r}; "
                             f"available: last, {', '.join(sorted(values))}")
        value = values[self.selection]
        # The papers select only after a warm-up (AMA: epoch 20, simplex AE: epoch 60); earlier states are logged.
        eligible = self.step >= float(self.tcfg.select_after) * self.sched.steps_per_epoch
        higher_is_better = self.selection == "val_auroc"
        improves = self.best["value"] is None or (value > self.best["value"] if higher_is_better
                                                  else value < self.best["value"])
        better = eligible and improves and math.isfinite(value)  # +inf means "not yet" (simplex before epoch 60)
        if better:
            self.best = {"value": value, "step": self.step}
            state = {"step": self.step, "method": self.method.state_dict()}  # collective under ZeRO: all ranks
            if self.main:
                checkpoint.save(self.ckpt_dir / "best", self.step, state, keep=1)
            self.acc.wait_for_everyone()
        if self.main:
            epoch = self.step / self.sched.steps_per_epoch
            with open(self.log_path, "a") as f:
                f.write(json.dumps({"step": self.step, "epoch": round(epoch, 3), **values}) + "\n")
            self.curves.log({f"val/{k}": v for k, v in values.items()}, self.step)


def score_batched(method: Method, x: torch.Tensor, batch_size: int) -> dict[str, np.ndarray]:
    """All of the method's scores (``Method.scores``) for ``x``, batch by batch."""
    device = method.accelerator.device
    parts: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(x), batch_size):
        for k, v in method.scores(x[i : i + batch_size].to(device)).items():
            parts.setdefault(k, []).append(v.detach().float().cpu())
    if not parts:
        return {"score": np.zeros(0, dtype=np.float32)}
    return {k: torch.cat(v).numpy() for k, v in parts.items()}


def score_distributed(method: Method, x: torch.Tensor, batch_size: int) -> dict[str, np.ndarray]:
    """Each rank scores a contiguous part of ``x``; the parts are gathered so every rank has all scores in order."""
    acc = method.accelerator
    if acc.num_processes == 1:
        return score_batched(method, x, batch_size)
    bounds = np.linspace(0, len(x), acc.num_processes + 1).astype(int)
    lo, hi = bounds[acc.process_index], bounds[acc.process_index + 1]
    out = {}
    for k, v in sorted(score_batched(method, x[lo:hi], batch_size).items()):
        local = torch.from_numpy(v).to(acc.device, torch.float32)
        parts = acc.gather(acc.pad_across_processes(local, dim=0)).view(acc.num_processes, -1).cpu()
        out[k] = torch.cat([parts[r, : bounds[r + 1] - bounds[r]] for r in range(acc.num_processes)]).numpy()
    return out
