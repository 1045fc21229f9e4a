"""A cell folder's files are named in one place, dadf.grid.store.CellDir: no other module of dadf spells them, a
forced rerun clears what it must and keeps the rest, and the trainer writes where it is told."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import dadf
from dadf.grid import store
from dadf.grid.store import CellDir

PACKAGE = Path(dadf.__file__).parent
NAMES = (CellDir.CONFIG, CellDir.STATUS, CellDir.HEARTBEAT, CellDir.METRICS, CellDir.SCORES, CellDir.RECON,
         CellDir.LOG, CellDir.CHECKPOINTS, CellDir.SLURM, CellDir.PLOTS, CellDir.LOCK)
# (file, name) -> why that file may spell that name besides store.py
ALLOWED = {
    ("dadf/train/outputs.py", CellDir.CHECKPOINTS): "the trainer's own outputs; CellDir takes their names from it",
    ("dadf/train/outputs.py", CellDir.LOG): "the trainer's own outputs; CellDir takes their names from it",
    ("dadf/losses/perceptual.py", CellDir.CHECKPOINTS): "torch.hub's download folder, not a cell's",
    ("dadf/grid/report.py", CellDir.PLOTS): "the grid's own plots folder, beside its cells",
}


def _spellings(source: str) -> list[tuple[int, str]]:
    """(line, name) of every string that names a cell file as a path: the name itself, or a path that starts or
    ends with it ("*/cell.yaml", f"{folder}/status.json"). Docstrings, comments and prose in messages do not count."""
    tree = ast.parse(source)
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    f_parts = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in docstrings:
            continue
        text = node.value
        for name in NAMES:
            whole = text == name and id(node) not in f_parts  # f"{shard}.lock" is no cell's lock
            if whole or text.endswith(f"/{name}") or text.startswith(f"{name}/") or f"/{name}/" in text:
                found.append((node.lineno, name))
    return found


def test_no_module_but_the_store_names_a_cell_file():
    spelled = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE.parent))
        if rel == "dadf/grid/store.py":
            continue
        spelled += [f"{rel}:{line}: {name!r}" for line, name in _spellings(path.read_text())
                    if (rel, name) not in ALLOWED]
    assert not spelled, "cell file names belong to dadf.grid.store.CellDir:\n" + "\n".join(spelled)


def test_the_scan_finds_each_way_of_spelling_a_path():
    source = '''
"""A docstring naming metrics.json is prose."""
a = cell_dir / "metrics.json"
b = f"{folder}/status.json"
c = grid.glob("*/cell.yaml")
d = f"{root}/checkpoints/{step}"
e = f"{shard}.lock"
f = "no */cell.yaml)"
'''
    assert _spellings(source) == [(3, "metrics.json"), (4, "status.json"), (5, "cell.yaml"), (6, "checkpoints")]


# ---------------------------------------------------------------------------------------------------- a rerun

def _a_finished_cell(path: Path) -> CellDir:
    """A cell folder holding every file a run, the launcher, SLURM and the report leave behind."""
    cell = CellDir(path)
    cell.write_config({"cell": {"id": path.name, "method": "ae", "dataset": "digits", "protocol": "ovr"}})
    cell.write_status(store.DONE)
    cell.write_metrics({"metrics": {"auroc": 0.9}})
    cell.write_scores(scores=[0.1, 0.9])
    cell.write_recon(x=[0.0])
    cell.write_heartbeat()
    cell.log.write_text(json.dumps({"step": 1}) + "\n")
    (cell.checkpoints / "step-1").mkdir(parents=True)
    (cell.checkpoints / "best" / "step-1").mkdir(parents=True)
    store.write_json(cell.slurm, {"jobs": [{"job_id": "7_0"}]})
    cell.plots.mkdir()
    (cell.plots / "roc.png").write_bytes(b"png")
    cell.lock.touch()
    (path / "tasks").mkdir()
    (path / "tasks" / "task0.pt").write_bytes(b"task")  # a file the method emitted
    return cell


def test_a_rerun_clears_the_last_runs_results_state_curves_and_checkpoints(tmp_path):
    cell = _a_finished_cell(tmp_path / "c")
    cell.clear_for_rerun()
    for gone in (cell.metrics, cell.scores, cell.log, cell.status, cell.checkpoints):
        assert not gone.exists(), gone
    assert cell.read_status() == {"state": store.PENDING} and not cell.is_done()
    # kept: the config (written again), the jobs submitted (none is submitted twice), the lock (another process may
    # hold it) and what the next run writes over
    kept = {p.name for p in cell.path.iterdir()}
    assert kept == {CellDir.CONFIG, CellDir.SLURM, CellDir.LOCK, CellDir.HEARTBEAT, CellDir.RECON, CellDir.PLOTS,
                    "tasks"}
    assert set(CellDir.RERUN_CLEARS) == {CellDir.METRICS, CellDir.SCORES, CellDir.LOG, CellDir.STATUS,
                                         CellDir.CHECKPOINTS}


def test_a_rerun_of_a_folder_with_nothing_to_clear_is_quiet(tmp_path):
    cell = CellDir(tmp_path / "never-ran")
    cell.clear_for_rerun()  # no folder at all
    cell.path.mkdir()
    cell.clear_for_rerun()
    assert list(cell.path.iterdir()) == []


def test_a_forced_launch_clears_a_finished_cell_and_an_unforced_one_skips_it(tmp_path):
    from dadf.grid.cells import Cell
    from dadf.grid.launch import prepare

    cell = _a_finished_cell(tmp_path / "c")
    cell.lock.unlink()  # a lock file nobody holds is no obstacle either way; here: none at all
    grid_cell = Cell("c", {"cell": {"id": "c"}}, cell.path)
    todo, skipped = prepare([grid_cell], force=False, retry_failed=True)
    assert (todo, skipped) == ([], [grid_cell]) and cell.metrics.exists()
    todo, skipped = prepare([grid_cell], force=True, retry_failed=True)
    assert (todo, skipped) == ([grid_cell], [])
    assert not cell.metrics.exists() and not cell.checkpoints.exists() and cell.slurm.exists()


# ---------------------------------------------------------------------------------------------------- reads

def test_each_read_gives_the_stores_verdicts(tmp_path):
    cell = _a_finished_cell(tmp_path / "c")
    status, metrics = cell.read_status_and_metrics()
    assert status["state"] == store.DONE and metrics == {"metrics": {"auroc": 0.9}} == cell.read_metrics()
    cell.metrics.write_text("[1, 2]")  # parses, but is no result
    reason = f"unreadable: {cell.metrics} (a JSON list, not an object)"
    assert cell.read_status() == {"state": store.UNREADABLE, "reason": reason} == store.read_status(cell.path)
    assert cell.read_status(verify=False)["state"] == store.DONE  # what status.json says, unchecked
    with pytest.raises(store.Unreadable, match="not an object"):
        cell.read_metrics()
    cell.write_metrics({"metrics": {}})
    cell.cell_yaml.write_text("cell: [")
    assert cell.read_status()["state"] == store.UNREADABLE
    assert cell.read_status_and_metrics(verify_config=False)[0]["state"] == store.DONE  # the caller read cell.yaml
    cell.status.write_text("\x00garbage")
    assert cell.read_status_and_metrics(verify_config=False) == (
        {"state": store.UNREADABLE, "reason": store.read_status(cell.path)["reason"]}, None)
    assert str(cell.status) in cell.read_status()["reason"]


def test_a_grid_lists_its_cell_folders_by_their_config(tmp_path):
    for name in ("b", "a"):
        CellDir(tmp_path / name).write_config({"cell": {}})
    (tmp_path / "not-a-cell").mkdir()
    assert store.cell_folders(tmp_path) == ["a", "b"] == store.cell_ids(tmp_path)


# ---------------------------------------------------------------------------------------------------- the trainer

class _Paths:
    """Where training should write, as a cell folder gives it."""

    def __init__(self, root: Path):
        self.checkpoints, self.log = root / "elsewhere" / "ckpt", root / "curves.jsonl"


def test_the_trainer_writes_where_it_is_told(composer, dirs, tmp_path):
    from dadf.grid.cells import expand
    from dadf.grid.runner import build
    from dadf.train import checkpoint
    from dadf.train.loop import Trainer

    overrides = [*dirs, "dataset=synthetic", "grid.classes=[3]", "method=ae", "grid.methods=[ae]",
                 "trainer.steps=2", "trainer.log_every=1", "trainer.num_threads=1", "trainer.progress=false",
                 "trainer.tracker=none"]
    cell = expand(composer(overrides), overrides, composer)[0]
    method, data, schedule = build(cell.cfg)
    paths = _Paths(tmp_path)
    Trainer(cell.cfg.trainer, method, data, schedule, paths, seed=0).run(progress=False)
    assert checkpoint.latest(paths.checkpoints) is not None and paths.log.read_text()
    assert not CellDir(cell.dir).checkpoints.exists() and not CellDir(cell.dir).log.exists()
