"""The method/trainer boundary: each micro-batch's step context comes from the trainer, the strategy steps the
optimisers once per step, and methods never import the trainer package."""
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from dadf.grid import store
from dadf.grid.cells import expand
from dadf.grid.runner import build
from dadf.methods.interface import SingleProcess, StepContext
from dadf.train.loop import Trainer
from dadf.train.strategy import make_strategy


def test_each_micro_batch_gets_its_step_context_and_the_optimiser_steps_after_the_last(composer, dirs):
    overrides = [*dirs, "dataset=synthetic", "grid.classes=[3]", "method=ae", "grid.methods=[ae]",
                 "trainer.steps=2", "trainer.batch_size=32", "trainer.accumulate=2", "trainer.num_threads=1"]
    cell = expand(composer(overrides), overrides, composer)[0]
    store.write_cell_config(cell.dir, cell.cfg)
    method, data, schedule = build(cell.cfg)
    seen, train_step = [], method.train_step

    def recording(batch, step):
        weights = [p.detach().clone() for p in method.nets["ae"].parameters()]
        seen.append((method.step_context, len(batch["x"]), weights))
        return train_step(batch, step)

    method.train_step = recording
    Trainer(cell.cfg.trainer, method, data, schedule, cell.dir, seed=0).run(progress=False)
    assert [(ctx, n) for ctx, n, _ in seen] == [
        (StepContext(step=s, micro=m, accumulate=2, batch_lo=16 * m, global_batch=32), 16)
        for s in (0, 1) for m in (0, 1)]
    same = [all(torch.equal(a, b) for a, b in zip(seen[i][2], seen[i + 1][2])) for i in range(3)]
    assert same == [True, False, True]  # no update between a step's micro-batches, one after the last


def test_methods_do_not_import_the_trainer_package():
    code = ("import sys, dadf.methods.ama, dadf.methods; "
            "assert not any(m.startswith('dadf.train') for m in sys.modules), sorted(sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_trainer_config_chooses_the_strategy():
    from accelerate import Accelerator

    tcfg = OmegaConf.create({"strategy": "ddp", "channels_last": False})
    assert type(make_strategy(tcfg, Accelerator(cpu=True), None)) is SingleProcess
    with pytest.raises(ValueError, match="trainer.strategy='fsdp' must be one of ddp, deepspeed"):
        make_strategy(OmegaConf.create({"strategy": "fsdp", "channels_last": False}), Accelerator(cpu=True), None)
