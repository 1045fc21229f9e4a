"""The slurm launcher's config: key checking, resource groups, and the sbatch script it writes (no cluster needed)."""
from __future__ import annotations

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from dadf.config import CONFIG_DIR
from dadf.grid import slurm
from dadf.grid.cells import expand

from .slurm_helpers import REPO


@pytest.fixture
def compose_cfg():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        yield lambda overrides: compose(config_name="config", overrides=list(overrides))
    GlobalHydra.instance().clear()


def test_unknown_keys_are_refused_with_the_valid_list(compose_cfg):
    lcfg = compose_cfg(["launcher=slurm"]).launcher
    slurm.check_config(lcfg)  # the shipped file is valid
    lcfg = OmegaConf.create(OmegaConf.to_container(lcfg))  # as if edited in the YAML file (not struct)
    bad = OmegaConf.merge(lcfg, {"gpu": 1})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['gpu'\].*valid keys: .*gpus.*array_parallelism"):
        slurm.check_config(bad)
    bad = OmegaConf.merge(lcfg, {"resources": {"ae": {"gpus": 1, "walltime": 5}}})
    with pytest.raises(ValueError, match=r"resources.ae: unknown key\(s\) \['walltime'\].*time_min"):
        slurm.check_config(bad)
    with pytest.raises(ValueError, match="signal_delay_s"):
        slurm.check_config(OmegaConf.merge(lcfg, {"signal_delay_s": 0}))


@pytest.mark.slow
def test_cli_refuses_an_unknown_launcher_key(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "jobs" / "launch_grid.py"), "launcher=slurm",
                        "launcher.gpu=1", f"runs_dir={tmp_path}/runs", f"shards_dir={tmp_path}/shards"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "'launcher.gpu' is not a config key" in r.stderr and "gpus" in r.stderr and "signal_delay_s" in r.stderr


def test_resources_per_method_and_dataset_make_one_group_each(compose_cfg, tmp_path):
    overrides = [f"runs_dir={tmp_path}/runs", f"shards_dir={tmp_path}/shards", "launcher=slurm",
                 "grid.methods=[ae,deep_svdd,iforest]", "grid.classes=[0,1]",
                 "launcher.resources={digits:{mem_gb:2},ae:{gpus:2,time_min:30},ae/digits:{cpus:3},iforest:{cpus:1}}"]
    base = compose_cfg(overrides)
    cells = expand(base, overrides, compose_cfg)
    groups = slurm.plan(cells, base.launcher)
    by_method = {g[0].cfg.method.name: (res, [c.cfg.method.name for c in g]) for res, g in groups.items()}
    assert len(groups) == 3 and all(len(set(names)) == 1 and len(names) == 2 for _, names in by_method.values())
    ae = by_method["ae"][0]
    # dataset entry, then method, then method/dataset; the rest from the defaults
    assert (ae.gpus, ae.ntasks, ae.cpus, ae.mem_gb, ae.time_min) == (2, 2, 3, 2, 30)
    svdd = by_method["deep_svdd"][0]
    assert (svdd.gpus, svdd.ntasks, svdd.cpus, svdd.mem_gb) == (1, 1, base.launcher.cpus, 2)  # a torch method: 1 GPU
    iforest = by_method["iforest"][0]
    assert (iforest.gpus, iforest.ntasks, iforest.cpus) == (0, 1, 1)  # a shallow method: none


def test_sbatch_script_carries_the_settings(compose_cfg, tmp_path):
    lcfg = compose_cfg(["launcher=slurm", "launcher.partition=gpu", "launcher.account=lab", "launcher.qos=high",
                        "launcher.signal_delay_s=90", "launcher.array_parallelism=7",
                        "launcher.setup=['module load cuda/12.4','source /opt/venv/bin/activate']",
                        "+launcher.additional_parameters.mail_type=FAIL"]).launcher
    res = slurm.Resources(gpus=2, cpus=5, mem_gb=8, time_min=45, partition="gpu", account="lab", qos="high")
    ex = slurm._executor(tmp_path / "logs", res, lcfg)
    ex.parameters["map_count"] = 12
    text = ex._make_submission_file_text("python -m submitit.core._submit X", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --qos=high", "#SBATCH --time=45",
                 "#SBATCH --gpus-per-node=2", "#SBATCH --ntasks-per-node=2", "#SBATCH --cpus-per-task=5",
                 "#SBATCH --mem=8192M", "#SBATCH --signal=USR2@90", "#SBATCH --array=0-11%7",
                 "#SBATCH --mail-type=FAIL", "module load cuda/12.4", "source /opt/venv/bin/activate",
                 "export OMP_NUM_THREADS=5"):
        assert line in text, f"{line!r} missing from:\n{text}"
