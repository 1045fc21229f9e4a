"""Live training curves (trainer.tracker, dadf/train/tracking.py): TensorBoard event files in each cell folder, read
back with TensorBoard's own reader; nothing with tracker=none; a resumed cell continues its curves."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

from dadf.grid import store
from dadf.grid.cells import expand
from dadf.grid.runner import run_cell
from dadf.train import checkpoint, tracking

NO_TENSORBOARD = "tensorboard (the optional extra dadf[tracking]) is not installed: pip install -e '.[tracking]'"
BASE = ["dataset=synthetic", "grid.classes=[3]", "method=ae", "grid.methods=[ae]", "trainer.batch_size=32",
        "trainer.steps=12", "trainer.log_every=4", "trainer.num_threads=1", "trainer.progress=false"]


def _cell(composer, dirs, *extra):
    overrides = [*dirs, *BASE, *extra]
    cell = expand(composer(overrides), overrides, composer)[0]
    store.write_cell_config(cell.dir, cell.cfg)
    return cell


def _scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar curve of a run as TensorBoard shows it (its purge of steps a resumed run rewrote included)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_curves_land_in_the_cell_folder_named_by_the_cell(composer, dirs):
    pytest.importorskip("tensorboard", reason=NO_TENSORBOARD)
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    cell = _cell(composer, dirs, "trainer.tracker=tensorboard")
    run_cell(cell.dir)
    curves = _scalars(cell.dir)
    assert [s for s, _ in curves["train/rec"]] == [4, 8, 12]  # the autoencoder's loss, every log_every steps
    logged = [json.loads(line) for line in (cell.dir / "log.jsonl").read_text().splitlines()]
    assert [v for _, v in curves["train/rec"]] == pytest.approx([line["rec"] for line in logged])
    assert [v for _, v in curves["lr/ae"]] == pytest.approx([cell.cfg.method.lr] * 3)
    runs = EventMultiplexer().AddRunsFromDirectory(str(cell.dir.parent)).Runs()  # tensorboard --logdir runs/<grid>
    assert list(runs) == [cell.id]


def test_validation_values_are_curves_too(composer, dirs):
    pytest.importorskip("tensorboard", reason=NO_TENSORBOARD)
    cell = _cell(composer, dirs, "trainer.tracker=tensorboard", "trainer.selection=val_auroc", "trainer.eval_every=6",
                 "protocol.val_fraction=0.2", "protocol.val_anomalies=10")
    run_cell(cell.dir)
    assert [s for s, _ in _scalars(cell.dir)["val/val_auroc"]] == [6, 12]


def test_tracker_none_writes_nothing(composer, dirs):
    cell = _cell(composer, dirs, "trainer.tracker=none")
    run_cell(cell.dir)
    assert (cell.dir / "log.jsonl").exists()
    assert not list(cell.dir.rglob("events.out.tfevents.*")) and not (cell.dir / "wandb").exists()


def test_the_tracker_is_outside_the_cells_identity(composer, dirs):
    ids = {_cell(composer, dirs, f"trainer.tracker={t}").id for t in ("auto", "none", "tensorboard")}
    assert len(ids) == 1


def test_a_resumed_cell_continues_its_curves_without_a_second_copy(composer, dirs):
    """Killed after logging step 12 but before saving it: the rerun resumes from step 8 and logs 12 again; TensorBoard
    shows each step once, with the rerun's value (the same, as resume is exact)."""
    pytest.importorskip("tensorboard", reason=NO_TENSORBOARD)
    cell = _cell(composer, dirs, "trainer.tracker=tensorboard", "trainer.checkpoint_every=8")
    run_cell(cell.dir)
    first = _scalars(cell.dir)["train/rec"]
    shutil.rmtree(checkpoint.latest(cell.dir / "checkpoints"))  # the step-12 save never happened
    run_cell(cell.dir)
    assert len(list(cell.dir.glob("events.out.tfevents.*"))) == 2
    again = _scalars(cell.dir)["train/rec"]
    assert [s for s, _ in again] == [4, 8, 12]
    assert [v for _, v in again] == pytest.approx([v for _, v in first])


def test_a_bad_or_missing_tracker_is_refused_at_launch(composer, dirs):
    from hydra.errors import ConfigCompositionException

    from dadf.grid.validate import check_cells

    with pytest.raises(ConfigCompositionException) as err:  # not a tracker: refused when composing
        composer([*dirs, *BASE, "trainer.tracker=tensorbord"])
    assert "expected one of [auto, none, tensorboard, wandb, mlflow]" in str(err.value.__cause__)
    if tracking.problem("wandb") is None:
        pytest.skip("wandb is installed here")
    overrides = [*dirs, *BASE, "trainer.tracker=wandb"]
    problems = check_cells(expand(composer(overrides), overrides, composer))
    assert problems == ["trainer.tracker=wandb needs the package wandb, which is not installed: pip install wandb, "
                        "or trainer.tracker=none"], problems


def test_auto_is_tensorboard_when_installed_and_off_otherwise():
    code = ("import sys; sys.modules['tensorboard'] = None; from dadf.train import tracking; "
            "print(tracking.resolve('auto'), tracking.problem('tensorboard'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.startswith("none trainer.tracker=tensorboard needs the package tensorboard"), out.stdout
    assert 'pip install -e ".[tracking]"' in out.stdout
    installed = tracking.problem("tensorboard") is None
    assert tracking.resolve("auto") == ("tensorboard" if installed else "none")
