"""Checkpoints and task files load as data: what dadf writes loads with ``weights_only``; a file holding an object
that would run code when unpickled is refused, naming the file, and nothing in it runs."""
from __future__ import annotations

import collections
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from dadf.train import checkpoint


def _write_marker(path: str) -> str:
    Path(path).write_text("this ran while the checkpoint was loaded")
    return path


class RunsCodeWhenLoaded:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return _write_marker, (self.marker,)


def _poisoned(root: Path, marker: Path, step: int = 5) -> Path:
    return checkpoint.save(root, step, {"step": step, "method": {"nets": {}}, "payload": RunsCodeWhenLoaded(marker)})


def test_a_checkpoint_that_would_run_code_is_refused_naming_the_file(tmp_path):
    marker = tmp_path / "marker"
    folder = _poisoned(tmp_path / "checkpoints", marker)
    with pytest.raises(RuntimeError, match="_write_marker") as refused:
        checkpoint.load(folder)
    assert not marker.exists()
    assert type(refused.value).__name__ == "UnsafeCheckpoint" and str(folder / "state.pt") in str(refused.value)


def test_resume_stops_at_such_a_checkpoint_and_keeps_it(composer, dirs, tmp_path):
    """Not damage to step over: the run fails naming the file, which stays where it is (not set aside)."""
    from dadf.grid import store
    from dadf.grid.cells import expand
    from dadf.grid.runner import build
    from dadf.train.loop import Trainer

    overrides = [*dirs, "dataset=synthetic", "grid.classes=[3]", "method=aae", "grid.methods=[aae]",
                 "trainer.steps=2", "trainer.num_threads=1", "trainer.progress=false"]
    cell = expand(composer(overrides), overrides, composer)[0]
    store.write_cell_config(cell.dir, cell.cfg)
    marker = tmp_path / "marker"
    folder = _poisoned(cell.dir / "checkpoints", marker, step=1)
    method, data, schedule = build(cell.cfg)
    trainer = Trainer(cell.cfg.trainer, method, data, schedule, cell.dir, seed=0)
    with pytest.raises(RuntimeError, match=str(folder)) as refused:
        trainer.run(progress=False)
    assert folder.is_dir() and not marker.exists()
    assert type(refused.value).__name__ == "UnsafeCheckpoint"


def test_what_dadf_writes_loads_as_data(tmp_path):
    """RNG states of every library, numpy scalars (metric values), a scheduler's Counter: loaded as they were."""
    from dadf.train.loop import rng_state

    state = {"rng": [rng_state(), rng_state()], "selection": {"value": np.float64(0.75), "step": np.int64(3)},
             "sched": {"milestones": collections.Counter([30, 60])}, "gaussian": (0.5, 1.5), "bytes": b"\x00\x01",
             "nets": {"w": torch.arange(4.0)}}
    folder = checkpoint.save(tmp_path, 1, state)
    loaded = checkpoint.load(folder)
    np.random.set_state(loaded["rng"][0]["numpy"])
    random.setstate(loaded["rng"][0]["python"])
    assert np.random.random() == (np.random.set_state(state["rng"][0]["numpy"]), np.random.random())[1]
    assert loaded["selection"] == state["selection"] and loaded["sched"] == state["sched"]
    assert loaded["gaussian"] == (0.5, 1.5) and loaded["bytes"] == b"\x00\x01"
    assert torch.equal(loaded["nets"]["w"], state["nets"]["w"])


def test_a_trainers_checkpoint_holds_nothing_that_needs_trust(composer, dirs):
    from dadf.grid import store
    from dadf.grid.cells import expand
    from dadf.grid.runner import build
    from dadf.train.loop import Trainer

    overrides = [*dirs, "dataset=synthetic", "grid.classes=[3]", "method=ama", "grid.methods=[ama]",
                 "method.critic_steps=1", "trainer.steps=2", "trainer.num_threads=1", "trainer.progress=false"]
    cell = expand(composer(overrides), overrides, composer)[0]
    store.write_cell_config(cell.dir, cell.cfg)
    method, data, schedule = build(cell.cfg)
    Trainer(cell.cfg.trainer, method, data, schedule, cell.dir, seed=0).run(progress=False)
    path = checkpoint.latest(cell.dir / "checkpoints") / "state.pt"
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    assert unsafe and all(name.startswith("numpy.") for name in unsafe), unsafe  # np.random's state, by name
    loaded = checkpoint.load(path.parent)
    assert loaded["step"] == 2 and isinstance(loaded["method"]["scheds"]["eg"]["milestones"], collections.Counter)


def test_an_omasgan_task_file_that_would_run_code_is_refused(tmp_path):
    from dadf import config
    from dadf.methods import get_method
    from dadf.methods.base import DataInfo

    marker = tmp_path / "marker"
    task = tmp_path / "task1.pt"
    torch.save({"task": "task1", "nets": {}, "spec": RunsCodeWhenLoaded(marker)}, task)
    cfg = OmegaConf.merge(config.node("method", "omasgan"), {"from_task": str(task)})
    from accelerate import Accelerator

    with pytest.raises(ValueError, match=str(task)):
        get_method("omasgan")(cfg, DataInfo("tabular", (2,), 64, 16, 4, 4), Accelerator(cpu=True), 0)
    assert not marker.exists()


@pytest.mark.slow
def test_deepspeed_zero_optimiser_state_loads_as_data(tmp_path):
    """ZeRO 1-2 optimiser states hold DeepSpeed's own records (a stage enum, fragment addresses, a loss scaler),
    allowed by name."""
    pytest.importorskip("deepspeed", reason="deepspeed is not installed")
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    state = {"opts": [{"zero_stage": ZeroStageEnum.gradients, "loss_scaler": LossScaler(1.0),
                       "fragments": [fragment_address(numel=4, start=0)]}]}
    loaded = checkpoint.load(checkpoint.save(tmp_path, 1, state))["opts"][0]
    assert loaded["zero_stage"] == ZeroStageEnum.gradients and loaded["loss_scaler"].cur_scale == 1.0
    assert loaded["fragments"] == [fragment_address(numel=4, start=0)]
