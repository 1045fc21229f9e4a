"""The slurm launcher's plan without a cluster: resources by method kind, arrays split to the cluster's limits,
limits read from scontrol / sacctmgr (stand-in commands on PATH) or the launcher settings, submitting up to the
user's job limit."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dadf.grid import slurm
from dadf.grid.cells import Cell, expand


def _grid(composer, tmp_path, *overrides):
    overrides = [f"runs_dir={tmp_path}/runs", f"shards_dir={tmp_path}/shards", "launcher=slurm", *overrides]
    base = composer(overrides)
    return expand(base, overrides, composer), base.launcher


def _by_method(cells, lcfg):
    return {c.cfg.method.name: slurm.resources_for(c.cfg, lcfg) for c in cells}


def test_torch_methods_get_a_gpu_and_shallow_ones_none(composer, tmp_path):
    cells, lcfg = _grid(composer, tmp_path, "grid.methods=[ae,deep_svdd,iforest,ocsvm,pyod]", "grid.classes=[0]")
    res = _by_method(cells, lcfg)
    assert {m: (r.gpus, r.ntasks) for m, r in res.items()} == {
        "ae": (1, 1), "deep_svdd": (1, 1), "iforest": (0, 1), "ocsvm": (0, 1), "pyod": (0, 1)}
    # one array per kind; the sbatch script of the torch group asks for the GPU, the shallow one for none
    groups = slurm.array_plan(cells, lcfg, slurm.Limits())
    assert [(r.gpus, [len(a) for a in arrays]) for r, arrays in groups] == [(1, [2]), (0, [3])]
    texts = []
    for r, _ in groups:
        ex = slurm._executor(tmp_path / "logs", r, lcfg)
        ex.parameters["map_count"] = 2
        texts.append(ex._make_submission_file_text("python -m submitit.core._submit X", "uid"))
    assert "#SBATCH --gpus-per-node=1" in texts[0] and "--gpus-per-node" not in texts[1]


def test_the_users_gpus_and_resources_win_and_cpu_cells_go_to_cpu_partition(composer, tmp_path):
    cells, lcfg = _grid(composer, tmp_path, "grid.methods=[ae,deep_svdd,iforest,kde]", "grid.classes=[0]",
                        "launcher.gpus=2", "launcher.partition=gpu", "launcher.cpu_partition=cpu",
                        "launcher.resources={deep_svdd:{gpus:0},iforest:{gpus:1},kde:{partition:big}}")
    res = _by_method(cells, lcfg)
    assert {m: (r.gpus, r.ntasks, r.partition) for m, r in res.items()} == {
        "ae": (2, 2, "gpu"), "deep_svdd": (0, 1, "cpu"), "iforest": (1, 1, "gpu"), "kde": (2, 2, "big")}
    cells, lcfg = _grid(composer, tmp_path, "grid.methods=[ae,iforest]", "grid.classes=[0]", "launcher.gpus=0")
    assert {m: (r.gpus, r.partition) for m, r in _by_method(cells, lcfg).items()} == {
        "ae": (0, None), "iforest": (0, None)}


def _fake_cells(n, method="ae", dataset="digits"):
    data = {"method": {"name": method}, "dataset": {"name": dataset}}
    return [Cell(f"{method}-{i}", data, Path(f"/nowhere/{method}-{i}")) for i in range(n)]


def test_groups_split_into_arrays_within_the_limits():
    lcfg = OmegaConf.structured(slurm.SlurmLauncher)
    cells = _fake_cells(50) + _fake_cells(5, "iforest")
    groups = slurm.array_plan(cells, lcfg, slurm.Limits(max_array_size=20))
    assert [(r.gpus, [len(a) for a in arrays]) for r, arrays in groups] == [(1, [20, 20, 10]), (0, [5])]
    assert [c.id for a in groups[0][1] for c in a] == [c.id for c in cells[:50]]  # grid order kept
    # an array larger than the user's job limit would be refused whole
    groups = slurm.array_plan(cells, lcfg, slurm.Limits(max_array_size=20, max_submit_jobs=12))
    assert [[len(a) for a in arrays] for _, arrays in groups] == [[12, 12, 12, 12, 2], [5]]
    assert [[len(a) for a in arrays] for _, arrays in slurm.array_plan(cells, lcfg, slurm.Limits())] == [[50], [5]]


def _fake_commands(bin_dir: Path, **scripts: str) -> str:
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"])  # the stand-ins first, then cat and seq


SCONTROL = """cat <<'EOF'
Configuration data as of 2024-01-01T00:00:00
AccountingStorageEnforce = associations,limits,qos
AccountingStorageType   = accounting_storage/slurmdbd
MaxArraySize            = 300
EOF"""


def test_limits_come_from_the_settings_the_cluster_or_slurms_defaults(tmp_path, monkeypatch):
    lcfg = OmegaConf.structured(slurm.SlurmLauncher)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no SLURM commands at all: the defaults, no failure
    limits = slurm.cluster_limits(lcfg)
    assert (limits.max_array_size, limits.max_submit_jobs) == (1001, None)
    assert limits.source == {"max_array_size": "SLURM default", "max_submit_jobs": "SLURM default"}
    assert [[len(a) for a in arrays] for _, arrays in slurm.array_plan(_fake_cells(1200), lcfg)] == [[1001, 199]]

    monkeypatch.setenv("PATH", _fake_commands(tmp_path / "bin", scontrol=SCONTROL,
                                              sacctmgr='printf "500\\n\\n200\\n"'))
    limits = slurm.cluster_limits(lcfg)
    assert (limits.max_array_size, limits.max_submit_jobs) == (300, 200)
    assert limits.source == {"max_array_size": "scontrol", "max_submit_jobs": "sacctmgr"}

    lcfg.max_array_size, lcfg.max_submit_jobs = 20, 1000
    limits = slurm.cluster_limits(lcfg)
    assert (limits.max_array_size, limits.max_submit_jobs) == (20, 1000)
    assert limits.source == {"max_array_size": "launcher setting", "max_submit_jobs": "launcher setting"}

    # no accounting database: sacctmgr is not asked (it would only fail)
    lcfg.max_array_size, lcfg.max_submit_jobs = None, None
    monkeypatch.setenv("PATH", _fake_commands(tmp_path / "bin2", scontrol=SCONTROL.replace("slurmdbd", "none"),
                                              sacctmgr="exit 1"))
    assert slurm.cluster_limits(lcfg).max_submit_jobs is None
    monkeypatch.setenv("PATH", _fake_commands(tmp_path / "bin3", scontrol="exit 1", sacctmgr="exit 1"))
    assert slurm.cluster_limits(lcfg).source["max_array_size"] == "SLURM default"


def test_a_launch_submits_up_to_the_users_job_limit_and_says_how_many_wait(tmp_path, monkeypatch, capsys):
    # 7 jobs of the user already queued, max_submit_jobs 20: 13 cells go out; of the 36 left, 35 are unfinished
    monkeypatch.setenv("PATH", _fake_commands(tmp_path / "bin", scontrol=SCONTROL.replace("slurmdbd", "none"),
                                              squeue='case "$*" in *--me*) seq 7 ;; *) ;; esac'))
    lcfg = OmegaConf.structured(slurm.SlurmLauncher)
    lcfg.max_submit_jobs = 20
    cells = _fake_cells(50)
    for c in cells:
        c.dir = tmp_path / "grid" / c.id
    done = {cells[0].id, cells[30].id}
    prepared, submitted = [], []

    def prepare(batch, force, retry_failed):
        prepared.extend(c.id for c in batch)
        return [c for c in batch if c.id not in done], [c for c in batch if c.id in done]

    monkeypatch.setattr(slurm, "submit", lambda todo, *a, **k: submitted.extend(todo) or {c.id: "1" for c in todo})
    monkeypatch.setattr(slurm.store, "is_done", lambda d: Path(d).name in done)
    finished, queued, todo, _ = slurm.run_slurm(cells, lcfg, False, True, prepare)
    assert len(todo) == 13 and todo == submitted and [c.id for c in finished] == [cells[0].id]
    assert prepared == [c.id for c in cells[:14]]  # cells beyond the room are left untouched on disk
    out = capsys.readouterr().out
    assert "35 cells wait for the next launch: max_submit_jobs=20 (launcher setting) and 7 of your jobs" in out


def test_new_launcher_keys_are_accepted_and_bad_values_refused(composer, tmp_path):
    lcfg = composer(["launcher=slurm", "launcher.max_array_size=20", "launcher.max_submit_jobs=100",
                     "launcher.cpu_partition=cpu", "launcher.gpus=null"]).launcher
    slurm.check_config(lcfg)
    for key in ("max_array_size", "max_submit_jobs"):
        with pytest.raises(ValueError, match=f"launcher.{key}=0: give at least 1"):
            slurm.check_config(OmegaConf.merge(lcfg, {key: 0}))
    valid = r"unknown key\(s\) \['max_array'\]; valid keys: .*cpu_partition.*max_array_size.*max_submit_jobs"
    with pytest.raises(ValueError, match=valid):
        slurm.check_config(OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(lcfg)), {"max_array": 5}))
    with pytest.raises(ValueError, match=r"resources.ae: unknown key\(s\) \['cpu_partition'\]"):
        slurm.check_config(OmegaConf.merge(lcfg, {"resources": {"ae": {"cpu_partition": "x"}}}))
